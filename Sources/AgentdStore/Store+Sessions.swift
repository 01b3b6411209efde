import AgentdModel
import GRDB
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A run claimed by a worker, with its lease.
public struct RunClaim: Sendable, Equatable {
    public var run: Run
    public var teamID: String
    public var leaseUntil: Date
    /// The run was running under an earlier lease (a crashed worker/daemon).
    public var resumed: Bool
}

extension Store {
    // MARK: sessions

    /// One session by id, within a team unless the team is NULL (admins).
    static let sessionByIDSQL = "SELECT \(sessionColumns) FROM sessions WHERE id = ? AND (? IS NULL OR team_id = ?)"

    /// The columns `session(_:)` reads, by position (a lookup by name is a
    /// case-insensitive string search per column, on the API's hottest read).
    static let sessionColumns = """
        id, team_id, agent_id, title, status, sandbox_state, last_seq, active_run_id, prompt_tokens, \
        completion_tokens, cost_usd, created_at, updated_at
        """

    static func session(_ r: Row) -> Session {
        Session(id: r[0], teamID: r[1], agentID: r[2], title: r[3], status: r[4], sandboxState: r[5], lastSeq: r[6],
                activeRunID: r[7], usage: Usage(promptTokens: r[8], completionTokens: r[9], costUSD: r[10]),
                createdAt: Timestamp.date(millis: r[11]), updatedAt: Timestamp.date(millis: r[12]))
    }

    public func createSession(id: String, teamID: String, agentID: String, title: String, audit: AuditEntry?)
        async throws -> Session
    {
        try await write { db in
            let t = Store.now()
            if let limit = try Store.quota(db, team: teamID, "sessions") {
                let n = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sessions WHERE team_id = ?",
                                         arguments: [teamID]) ?? 0
                if n >= limit {
                    throw StoreError.quotaExceeded(quota: "sessions", message: "the team has \(n) sessions, its quota "
                                                   + "is \(limit): delete some, or ask an admin to raise the quota")
                }
            }
            try db.execute(sql: """
                INSERT INTO sessions(id, team_id, agent_id, title, created_at, updated_at, last_active_at)
                VALUES (?,?,?,?,?,?,?)
                """, arguments: [id, teamID, agentID, title, t, t, t])
            try Store.audit(db, audit)
            guard let row = try Row.fetchOne(db, sql: "SELECT \(Store.sessionColumns) FROM sessions WHERE id = ?", arguments: [id]) else {
                throw StoreError.internal("session vanished")
            }
            return Store.session(row)
        }
    }

    /// Through `FastReads` (the API's hottest read: GET /v1/sessions/{id}
    /// and every session route's scope check).
    public func session(id: String, teamID: String?) async throws -> Session? {
        try fastReads.session(id: id, teamID: teamID)
    }

    /// The same lookup through GRDB's pool (tests compare the two).
    func sessionThroughPool(id: String, teamID: String?) async throws -> Session? {
        try await read { db in
            try Row.fetchOne(db.cachedStatement(sql: Store.sessionByIDSQL), arguments: [id, teamID, teamID]).map(Store.session)
        }
    }

    /// Keyset pagination, newest first: cost independent of the page number.
    public func sessions(_ q: SessionQuery) async throws -> Page<Session> {
        try await read { db in
            var sql = "SELECT \(Store.sessionColumns) FROM sessions WHERE 1"
            var args: [any DatabaseValueConvertible & Sendable] = []
            if let t = q.teamID {
                sql += " AND team_id = ?"
                args.append(t)
            }
            if let a = q.agentID {
                sql += " AND agent_id = ?"
                args.append(a)
            }
            if let s = q.status {
                sql += " AND status = ?"
                args.append(s)
            }
            if let text = q.titleContains, !text.isEmpty {
                sql += " AND title LIKE ? ESCAPE '\\'"
                let escaped = text.replacing("\\", with: "\\\\").replacing("%", with: "\\%").replacing("_", with: "\\_")
                args.append("%" + escaped + "%")
            }
            if let cursor = q.cursor {
                let parts = cursor.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, let t = Int64(parts[0]) else { throw StoreError.conflict("invalid cursor") }
                sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
                args += [t, t, String(parts[1])]
            }
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            args.append(q.limit + 1)
            let rows = try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args))
            var sessions = rows.map(Store.session)
            var next: String? = nil
            if sessions.count > q.limit {
                sessions.removeLast()
                if let last = sessions.last { next = "\(Timestamp.millis(last.createdAt)):\(last.id)" }
            }
            return Page(data: sessions, nextCursor: next)
        }
    }

    public func sessionCount(teamID: String?) async throws -> Int {
        try await read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sessions WHERE (? IS NULL OR team_id = ?)",
                             arguments: [teamID, teamID]) ?? 0
        }
    }

    public func deleteSession(id: String, teamID: String?, audit: AuditEntry?) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM sessions WHERE id = ? AND (? IS NULL OR team_id = ?)",
                           arguments: [id, teamID, teamID])
            let changed = db.changesCount > 0
            if changed { try Store.audit(db, audit) }
            return changed
        }
    }

    public func setSandboxState(sessionID: String, state: String) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE sessions SET sandbox_state = ?, updated_at = ? WHERE id = ?",
                           arguments: [state, Store.now(), sessionID])
        }
    }

    public func touchSession(id: String) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE sessions SET last_active_at = ? WHERE id = ?", arguments: [Store.now(), id])
        }
    }

    /// Sessions whose sandbox the daemon believes is in `state`.
    public func sessionIDs(sandboxState: String) async throws -> [String] {
        try await read { db in
            try String.fetchAll(db, sql: "SELECT id FROM sessions WHERE sandbox_state = ?", arguments: [sandboxState])
        }
    }

    // MARK: events

    static func event(_ r: Row) throws -> Event {
        let kind = EventKind(rawValue: r["kind"]) ?? .error
        let data = try AgentdJSON.decoder.decode(JSONValue.self, from: Data((r["data"] as String).utf8))
        return Event(seq: r["seq"], sessionID: r["session_id"], runID: r["run_id"], kind: kind,
                     createdAt: Timestamp.date(millis: r["created_at"]), data: data)
    }

    /// Append in order with the next gap-free seqs of the session, in the
    /// same transaction as `also` (a run state change, usage).
    ///
    /// Events are written to `events_recent` (a rowid table in append
    /// order), not to `events` (clustered by session and seq):  a batch of
    /// appends to 64 sessions then dirties a few pages instead of one leaf
    /// page per session, and every dirty page is a 4 KiB WAL frame written
    /// and fsync'd at commit.  `moveRecentEvents` moves them into `events`
    /// in bulk once there are `recentEventsLimit` of them.  Readers see both
    /// tables in one statement, so one snapshot.  All of a session's events
    /// in `events_recent` have higher seqs than those in `events`.
    static func append(_ db: Database, sessionID: String, _ events: [NewEvent]) throws -> [Event] {
        // Cached statements: this is the daemon's hottest write.
        let select = try db.cachedStatement(sql: "SELECT last_seq FROM sessions WHERE id = ?")
        guard var seq = try Int64.fetchOne(select, arguments: [sessionID]) else { throw StoreError.notFound("session") }
        let t = now()
        let insert = try db.cachedStatement(
            sql: "INSERT INTO events_recent(session_id, seq, run_id, kind, created_at, data) VALUES (?,?,?,?,?,?)")
        var out: [Event] = []
        out.reserveCapacity(events.count)
        for e in events {
            seq += 1
            try insert.execute(arguments: [sessionID, seq, e.runID, e.kind.rawValue, t, e.data.compactString])
            out.append(Event(seq: seq, sessionID: sessionID, runID: e.runID, kind: e.kind,
                             createdAt: Timestamp.date(millis: t), data: e.data))
        }
        try db.cachedStatement(sql: "UPDATE sessions SET last_seq = ?, updated_at = ?, last_active_at = ? WHERE id = ?")
            .execute(arguments: [seq, t, t, sessionID])
        return out
    }

    /// How many events `events_recent` holds before they move to `events`:
    /// large enough that a move writes each session's leaf pages once for
    /// many appends, small enough that scanning it (its readers do) costs
    /// tens of microseconds.
    static let recentEventsLimit: Int64 = 1024

    /// Run at the end of every group-commit batch, inside its transaction:
    /// moves `events_recent` into `events` when it has grown to the limit.
    /// Two b-tree seeks when there is nothing to do.
    static func moveRecentEventsIfFull(_ db: Database) throws {
        let span = try db.cachedStatement(sql: "SELECT max(n) - min(n) + 1 FROM events_recent")
        guard let n = try Int64.fetchOne(span), n >= recentEventsLimit else { return }
        // In a savepoint: the move is two statements and must not half-happen.
        try db.inSavepoint {
            try moveRecentEvents(db)
            return .commit
        }
    }

    static func moveRecentEvents(_ db: Database) throws {
        try db.execute(sql: """
            INSERT INTO events(session_id, seq, run_id, kind, created_at, data)
                SELECT session_id, seq, run_id, kind, created_at, data FROM events_recent ORDER BY session_id, seq;
            DELETE FROM events_recent;
            """)
    }

    public func appendEvents(sessionID: String, _ events: [NewEvent]) async throws -> [Event] {
        try await write { db in try Store.append(db, sessionID: sessionID, events) }
    }

    /// Move every recent event into `events` now (tests; the daemon lets
    /// group commit do it).
    public func moveRecentEvents() async throws {
        try await write { db in try Store.moveRecentEvents(db) }
    }

    /// Rows waiting in `events_recent` (tests).
    public func recentEventCount() async throws -> Int {
        try await read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM events_recent") ?? 0 }
    }

    /// One statement over both tables: one snapshot, so an event moving
    /// between them at the same moment is seen exactly once.
    /// Events after `after`, at most `limit` of them and, past the first,
    /// no more than `maxBytes` of event data (rows are stepped one by one,
    /// so a page of a long transcript never sits in memory whole).
    public func events(sessionID: String, after: Int64, limit: Int, maxBytes: Int = .max) async throws -> [Event] {
        try await read { db in
            let rows = try Row.fetchCursor(db, sql: """
                SELECT * FROM (SELECT seq, session_id, run_id, kind, created_at, data FROM events
                               WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)
                UNION ALL
                SELECT * FROM (SELECT seq, session_id, run_id, kind, created_at, data FROM events_recent
                               WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3)
                ORDER BY seq LIMIT ?3
                """, arguments: [sessionID, after, limit])
            var out: [Event] = []
            var bytes = 0
            while let row = try rows.next() {
                bytes += (row["data"] as String?)?.utf8.count ?? 0
                if !out.isEmpty && bytes > maxBytes { break }
                out.append(try Store.event(row))
            }
            return out
        }
    }

    public func events(runID: String) async throws -> [Event] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT seq, session_id, run_id, kind, created_at, data FROM events WHERE run_id = ?1
                UNION ALL
                SELECT seq, session_id, run_id, kind, created_at, data FROM events_recent WHERE run_id = ?1
                ORDER BY seq
                """, arguments: [runID]).map(Store.event)
        }
    }

    // MARK: runs

    static func run(_ r: Row) -> Run {
        Run(id: r["id"], sessionID: r["session_id"], state: RunState(rawValue: r["state"]) ?? .failed, error: r["error"],
            messageSeq: r["message_seq"], steps: r["steps"],
            usage: Usage(promptTokens: r["prompt_tokens"], completionTokens: r["completion_tokens"], costUSD: r["cost_usd"]),
            createdAt: Timestamp.date(millis: r["created_at"]),
            startedAt: (r["started_at"] as Int64?).map(Timestamp.date(millis:)),
            finishedAt: (r["finished_at"] as Int64?).map(Timestamp.date(millis:)))
    }

    /// The user message and its queued run, in one durable transaction.
    public func postMessage(sessionID: String, teamID: String, runID: String, content: JSONValue, audit: AuditEntry?)
        async throws -> (Event, Run)
    {
        try await write { db in
            if let limit = try Store.quota(db, team: teamID, "queued_runs") {
                let n = try Int.fetchOne(db.cachedStatement(sql: """
                    SELECT COUNT(*) FROM runs WHERE state = 'queued' AND team_id = ?
                    """), arguments: [teamID]) ?? 0
                if n >= limit {
                    throw StoreError.quotaExceeded(quota: "queued_runs", message: "the team has \(n) runs waiting, its "
                                                   + "quota is \(limit): retry when some have run")
                }
            }
            let events = try Store.append(db, sessionID: sessionID,
                                          [NewEvent(kind: .userMessage, runID: runID, data: content)])
            let e = events[0]
            let t = Store.now()
            try db.execute(sql: """
                INSERT INTO runs(id, session_id, team_id, state, message_seq, created_at) VALUES (?,?,?,'queued',?,?)
                """, arguments: [runID, sessionID, teamID, e.seq, t])
            try db.execute(sql: """
                UPDATE sessions SET status = CASE WHEN status = 'running' THEN 'running' ELSE 'queued' END,
                    active_run_id = COALESCE(active_run_id, ?) WHERE id = ?
                """, arguments: [runID, sessionID])
            try Store.audit(db, audit)
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [runID]) else {
                throw StoreError.internal("run vanished")
            }
            return (e, Store.run(row))
        }
    }

    public func run(id: String, sessionID: String) async throws -> Run? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ? AND session_id = ?", arguments: [id, sessionID])
                .map(Store.run)
        }
    }

    public func runs(sessionID: String) async throws -> [Run] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM runs WHERE session_id = ? ORDER BY created_at", arguments: [sessionID])
                .map(Store.run)
        }
    }

    /// The newest runs of a team (all teams: nil), optionally in one state.
    public func recentRuns(teamID: String?, state: String?, limit: Int) async throws -> [Run] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM runs WHERE (? IS NULL OR team_id = ?) AND (? IS NULL OR state = ?)
                ORDER BY created_at DESC LIMIT ?
                """, arguments: [teamID, teamID, state, state, limit]).map(Store.run)
        }
    }

    public func runCounts() async throws -> (queued: Int, running: Int) {
        try await read { db in
            let q = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs WHERE state = 'queued'") ?? 0
            let r = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs WHERE state = 'running'") ?? 0
            return (q, r)
        }
    }

    /// Claim the oldest claimable run: a queued run of a session with no
    /// running run, or a running run whose lease has expired (its worker
    /// died).  The lease is `owner` until `leaseUntil`.
    public func claimRun(owner: String, leaseSeconds: Double) async throws -> RunClaim? {
        let served = servedTeams.withLock { $0 }
        let claim = try await write { db -> RunClaim? in
            let now = Store.now()
            let until = now + Int64(leaseSeconds * 1000)
            // A run whose worker went away (its lease lapsed) comes first.
            var row = try Row.fetchOne(db.cachedStatement(sql: """
                SELECT * FROM runs WHERE state = 'running' AND lease_until < ? ORDER BY created_at LIMIT 1
                """), arguments: [now])
            if row == nil {
                row = try Self.fairNext(db, served: served)
            }
            guard let row else { return nil }
            let resumed = (row["state"] as String) == "running"
            let id: String = row["id"]
            let sessionID: String = row["session_id"]
            try db.cachedStatement(sql: """
                UPDATE runs SET state = 'running', lease_owner = ?, lease_until = ?, started_at = COALESCE(started_at, ?)
                WHERE id = ?
                """).execute(arguments: [owner, until, now, id])
            try db.cachedStatement(sql: "UPDATE sessions SET status = 'running', active_run_id = ? WHERE id = ?")
                .execute(arguments: [id, sessionID])
            guard let updated = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM runs WHERE id = ?"),
                                                 arguments: [id]) else {
                throw StoreError.internal("run vanished")
            }
            return RunClaim(run: Store.run(updated), teamID: row["team_id"], leaseUntil: Timestamp.date(millis: until),
                            resumed: resumed)
        }
        if let claim {
            servedTeams.withLock { s in
                s.counter += 1
                s.last[claim.teamID] = s.counter
            }
        }
        return claim
    }

    /// The next queued run to serve, fairly between teams: of the teams with
    /// runs waiting, the one with the fewest runs running (and under its
    /// `concurrent_runs` quota), then the one served longest ago, then the
    /// one waiting longest; its oldest run whose session has none running.
    /// One team's backlog thus delays another team's next run by at most one
    /// run's slot, however long the backlog.
    static func fairNext(_ db: Database, served: ServedTeams) throws -> Row? {
        struct Candidate {
            let team: String
            let oldest: Int64
            var running = 0
            var cap: Int?
        }
        var candidates: [String: Candidate] = [:]
        // Per team an index seek (state, team_id, created_at): a GROUP BY
        // over the queued runs would read the whole backlog on every claim.
        for row in try Row.fetchAll(db.cachedStatement(sql: """
            SELECT t.id AS team_id, (SELECT MIN(r.created_at) FROM runs r
                                     WHERE r.state = 'queued' AND r.team_id = t.id) AS oldest
            FROM teams t
            """)) {
            guard let oldest = row["oldest"] as Int64? else { continue }
            let team: String = row["team_id"]
            candidates[team] = Candidate(team: team, oldest: oldest)
        }
        guard !candidates.isEmpty else { return nil }
        for row in try Row.fetchAll(db.cachedStatement(sql: """
            SELECT team_id, COUNT(*) AS n FROM runs WHERE state = 'running' GROUP BY team_id
            """)) {
            let team: String = row["team_id"]
            candidates[team]?.running = row["n"]
        }
        for row in try Row.fetchAll(db.cachedStatement(sql: """
            SELECT id, json_extract(quotas, '$.concurrent_runs') AS cap FROM teams
            WHERE quotas IS NOT NULL AND json_extract(quotas, '$.concurrent_runs') IS NOT NULL
            """)) {
            let team: String = row["id"]
            candidates[team]?.cap = row["cap"]
        }
        let order = candidates.values
            .filter { c in c.cap.map { c.running < $0 } ?? true }
            .sorted { a, b in
                if a.running != b.running { return a.running < b.running }
                let sa = served.last[a.team] ?? 0, sb = served.last[b.team] ?? 0
                if sa != sb { return sa < sb }
                return a.oldest < b.oldest
            }
        let next = try db.cachedStatement(sql: """
            SELECT * FROM runs r WHERE r.state = 'queued' AND r.team_id = ? AND NOT EXISTS (
                SELECT 1 FROM runs x WHERE x.session_id = r.session_id AND x.state = 'running')
            ORDER BY r.created_at LIMIT 1
            """)
        for c in order {
            if let row = try Row.fetchOne(next, arguments: [c.team]) { return row }
        }
        return nil
    }

    /// Extend a lease; false when the lease was lost (another owner, or the run ended).
    public func renewLease(runID: String, owner: String, leaseSeconds: Double) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "UPDATE runs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
                           arguments: [Store.now() + Int64(leaseSeconds * 1000), runID, owner])
            return db.changesCount > 0
        }
    }

    /// Expire every lease (daemon start: no worker of ours holds one).
    public func expireLeases() async throws -> Int {
        try await write { db in
            try db.execute(sql: "UPDATE runs SET lease_until = 0 WHERE state = 'running'")
            return db.changesCount
        }
    }

    /// Record a step's events and usage in one transaction.
    public func recordStep(runID: String, sessionID: String, events: [NewEvent], usage: Usage?, stepDone: Bool)
        async throws -> [Event]
    {
        try await write { db in
            let out = try Store.append(db, sessionID: sessionID, events)
            if let u = usage {
                try db.execute(sql: """
                    UPDATE runs SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?,
                        cost_usd = cost_usd + ? WHERE id = ?
                    """, arguments: [u.promptTokens, u.completionTokens, u.costUSD, runID])
                try db.execute(sql: """
                    UPDATE sessions SET prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?,
                        cost_usd = cost_usd + ? WHERE id = ?
                    """, arguments: [u.promptTokens, u.completionTokens, u.costUSD, sessionID])
            }
            if stepDone { try db.execute(sql: "UPDATE runs SET steps = steps + 1 WHERE id = ?", arguments: [runID]) }
            return out
        }
    }

    /// End a run (and append its final events) in one transaction; the
    /// session moves on to its next queued run, if any.
    public func finishRun(runID: String, sessionID: String, state: RunState, error: String?, events: [NewEvent])
        async throws -> [Event]
    {
        try await write { db in
            let out = try Store.append(db, sessionID: sessionID, events)
            try db.execute(sql: """
                UPDATE runs SET state = ?, error = ?, finished_at = ?, lease_owner = NULL, lease_until = NULL
                WHERE id = ? AND state NOT IN ('succeeded','failed','cancelled')
                """, arguments: [state.rawValue, error, Store.now(), runID])
            let next = try String.fetchOne(db, sql: """
                SELECT id FROM runs WHERE session_id = ? AND state IN ('queued','running') ORDER BY created_at LIMIT 1
                """, arguments: [sessionID])
            try db.execute(sql: "UPDATE sessions SET status = ?, active_run_id = ? WHERE id = ?",
                           arguments: [next == nil ? "idle" : "queued", next, sessionID])
            return out
        }
    }

    /// Ask a run to stop: a queued run is cancelled at once, a running one is
    /// flagged for its worker.  Returns the run, or nil when none is active.
    public func requestCancel(sessionID: String, audit: AuditEntry?) async throws -> Run? {
        try await write { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT * FROM runs WHERE session_id = ? AND state IN ('queued','running') ORDER BY created_at LIMIT 1
                """, arguments: [sessionID]) else { return nil }
            let id: String = row["id"]
            try db.execute(sql: "UPDATE runs SET cancel_requested = 1 WHERE id = ?", arguments: [id])
            try Store.audit(db, audit)
            return Store.run(row)
        }
    }

    public func isCancelRequested(runID: String) async throws -> Bool {
        try await read { db in
            (try Int.fetchOne(db, sql: "SELECT cancel_requested FROM runs WHERE id = ?", arguments: [runID]) ?? 0) != 0
        }
    }
}
