import GRDB

/// The schema, as forward-only migrations.  A migration once released is
/// never edited: a change is a new migration appended here.  `StoreTests`
/// opens a database at every earlier version and migrates it forward.
enum Schema {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1 teams, keys, agents, sessions, events, runs, secrets, audit") { db in
            try db.execute(sql: """
                CREATE TABLE teams (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE api_keys (
                    id TEXT PRIMARY KEY,
                    team_id TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL CHECK (role IN ('admin','owner','member','viewer')),
                    hash TEXT NOT NULL UNIQUE,
                    prefix TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    revoked_at INTEGER,
                    last_used_at INTEGER
                );
                CREATE INDEX api_keys_team ON api_keys(team_id, created_at);
                CREATE TABLE agents (
                    id TEXT PRIMARY KEY,
                    team_id TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    spec TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    UNIQUE (team_id, name)
                );
                CREATE TABLE sessions (
                    id TEXT PRIMARY KEY,
                    team_id TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
                    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE RESTRICT,
                    title TEXT NOT NULL,
                    status TEXT NOT NULL DEFAULT 'idle',
                    sandbox_state TEXT NOT NULL DEFAULT 'none',
                    last_seq INTEGER NOT NULL DEFAULT 0,
                    active_run_id TEXT,
                    prompt_tokens INTEGER NOT NULL DEFAULT 0,
                    completion_tokens INTEGER NOT NULL DEFAULT 0,
                    cost_usd REAL NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    last_active_at INTEGER NOT NULL
                );
                CREATE INDEX sessions_team ON sessions(team_id, created_at DESC, id DESC);
                CREATE INDEX sessions_agent ON sessions(team_id, agent_id, created_at DESC, id DESC);
                CREATE INDEX sessions_status ON sessions(team_id, status, created_at DESC, id DESC);
                CREATE TABLE events (
                    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    run_id TEXT,
                    kind TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    data TEXT NOT NULL,
                    PRIMARY KEY (session_id, seq)
                ) WITHOUT ROWID;
                CREATE INDEX events_run ON events(run_id, seq) WHERE run_id IS NOT NULL;
                CREATE TABLE runs (
                    id TEXT PRIMARY KEY,
                    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
                    team_id TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
                    message_seq INTEGER NOT NULL,
                    error TEXT,
                    steps INTEGER NOT NULL DEFAULT 0,
                    prompt_tokens INTEGER NOT NULL DEFAULT 0,
                    completion_tokens INTEGER NOT NULL DEFAULT 0,
                    cost_usd REAL NOT NULL DEFAULT 0,
                    cancel_requested INTEGER NOT NULL DEFAULT 0,
                    lease_owner TEXT,
                    lease_until INTEGER,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER
                );
                CREATE INDEX runs_queue ON runs(state, created_at);
                CREATE INDEX runs_session ON runs(session_id, created_at);
                -- At most one run per session is running at a time.
                CREATE UNIQUE INDEX runs_one_running ON runs(session_id) WHERE state = 'running';
                CREATE TABLE secrets (
                    id TEXT PRIMARY KEY,
                    team_id TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
                    agent_id TEXT NOT NULL DEFAULT '',
                    name TEXT NOT NULL,
                    ciphertext BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    UNIQUE (team_id, agent_id, name)
                );
                CREATE TABLE audit (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    at INTEGER NOT NULL,
                    key_id TEXT,
                    team_id TEXT,
                    action TEXT NOT NULL,
                    resource TEXT NOT NULL,
                    resource_id TEXT,
                    detail TEXT
                );
                CREATE INDEX audit_team ON audit(team_id, id);
                """)
        }
        m.registerMigration("v2 dashboard sign-ins") { db in
            // One row per signed-in browser.  The cookie's value is never
            // stored, only its SHA-256; the key it was made from is referenced
            // so that revoking the key ends its sign-ins with it.
            try db.execute(sql: """
                CREATE TABLE ui_sessions (
                    token_hash TEXT PRIMARY KEY,
                    key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
                    csrf TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    last_seen_at INTEGER NOT NULL
                );
                CREATE INDEX ui_sessions_key ON ui_sessions(key_id);
                """)
        }
        m.registerMigration("v3 recent events") { db in
            // New events land here, in append order, and move into `events`
            // (clustered by session) in bulk: see Store.append.  No index:
            // the table stays below Store.recentEventsLimit rows, and its
            // readers scan it.  Existing stores start with it empty.
            try db.execute(sql: """
                CREATE TABLE events_recent (
                    n INTEGER PRIMARY KEY,
                    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
                    seq INTEGER NOT NULL,
                    run_id TEXT,
                    kind TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    data TEXT NOT NULL
                );
                """)
        }
        m.registerMigration("v4 team quotas, fair queue") { db in
            // A team's quotas: a JSON object (TeamQuotas), NULL for none.
            // The queue is served team by team (Store.claimRun): queued runs
            // by team, oldest first.
            try db.execute(sql: """
                ALTER TABLE teams ADD COLUMN quotas TEXT;
                CREATE INDEX runs_team_queue ON runs(state, team_id, created_at);
                """)
        }
        return m
    }

    /// Identifiers of every migration this binary knows, oldest first.
    static var known: [String] { migrator.migrations }
}
