import AgentdModel
import GRDB
import Synchronization
import Logging
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound(String)
    case conflict(String)
    /// The database was written by a newer agentd: refuse rather than corrupt it.
    case newerSchema([String])
    /// A team's quota (its JSON name) would be exceeded.
    case quotaExceeded(quota: String, message: String)
    /// The database's file system is full: nothing was written.
    case diskFull
    case `internal`(String)

    public var description: String {
        switch self {
        case .notFound(let s): return "\(s) not found"
        case .conflict(let s): return s
        case .quotaExceeded(_, let message): return message
        case .diskFull: return "the state directory's file system is full"
        case .newerSchema(let ids):
            return "the database was written by a newer agentd (unknown migrations: \(ids.joined(separator: ", "))); "
                + "install that version again or restore a backup"
        case .internal(let s): return s
        }
    }
}

/// An API key as stored: the hash of the secret, never the secret.
public struct KeyRecord: Sendable, Equatable {
    public var info: APIKeyInfo
    public var hash: String

    public init(info: APIKeyInfo, hash: String) {
        self.info = info
        self.hash = hash
    }
}

public struct SecretRecord: Sendable, Equatable {
    public var info: SecretInfo
    public var ciphertext: [UInt8]

    public init(info: SecretInfo, ciphertext: [UInt8]) {
        self.info = info
        self.ciphertext = ciphertext
    }
}

public struct NewEvent: Sendable, Equatable {
    public var kind: EventKind
    public var runID: String?
    public var data: JSONValue

    public init(kind: EventKind, runID: String? = nil, data: JSONValue) {
        self.kind = kind
        self.runID = runID
        self.data = data
    }
}

public struct AuditEntry: Sendable, Equatable, Codable {
    public var keyID: String?
    public var teamID: String?
    public var action: String
    public var resource: String
    public var resourceID: String?
    /// Never a secret value.
    public var detail: String?

    public init(keyID: String?, teamID: String?, action: String, resource: String, resourceID: String?,
                detail: String? = nil) {
        self.keyID = keyID
        self.teamID = teamID
        self.action = action
        self.resource = resource
        self.resourceID = resourceID
        self.detail = detail
    }
}

public struct SessionQuery: Sendable {
    public var teamID: String?
    public var agentID: String?
    public var status: String?
    public var titleContains: String?
    public var limit: Int
    /// Opaque: "created_at_ms:id" of the last row of the previous page.
    public var cursor: String?

    public init(teamID: String?, agentID: String? = nil, status: String? = nil, titleContains: String? = nil,
                limit: Int = 50, cursor: String? = nil) {
        self.teamID = teamID
        self.agentID = agentID
        self.status = status
        self.titleContains = titleContains
        self.limit = limit
        self.cursor = cursor
    }
}

struct ServedTeams: Sendable {
    var counter: UInt64 = 0
    var last: [String: UInt64] = [:]
}

/// agentd's database: one SQLite file in WAL mode with synchronous=FULL and
/// foreign keys on, migrated before anything is served.  Readers use the
/// pool's reader connections and never block the writer; every write goes
/// through `GroupCommit`.
public final class Store: Sendable {
    let pool: DatabasePool
    /// When each team was last served a run (a claim counter), for the
    /// queue's round robin between teams.  In memory: after a restart every
    /// team starts even.
    let servedTeams = Mutex(ServedTeams())
    let commits: GroupCommit
    let fastReads: FastReads
    public let path: String

    public init(path: String, logger: Logger = Logger(label: "agentd.store")) throws {
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(10)
        config.maximumReaderCount = 8
        config.prepareDatabase { db in
            // Checkpoint less often than every 1000 pages: each checkpoint
            // is an fsync of the main file, and event appends dirty many pages.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 8000")
            // Savepoint sub-journals (a failed batch's replay, the move of
            // recent events) and sorts stay in memory instead of temporary
            // files in /var/tmp; they are small and short-lived.
            try db.execute(sql: "PRAGMA temp_store = MEMORY")
        }
        self.path = path
        pool = try DatabasePool(path: path, configuration: config)
        // Not in prepareDatabase: DatabasePool switches its writer to WAL
        // after that hook and sets synchronous=NORMAL while doing so, which
        // would leave commits unsynced (safe from kill -9, not from power
        // loss).  The pool keeps one writer connection, so this sticks.
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let migrator = Schema.migrator
        try pool.read { db in
            let applied = try migrator.appliedIdentifiers(db)
            let unknown = applied.subtracting(Schema.known)
            if !unknown.isEmpty { throw StoreError.newerSchema(unknown.sorted()) }
        }
        try migrator.migrate(pool)
        commits = GroupCommit(pool: pool, afterBatch: Store.moveRecentEventsIfFull)
        fastReads = FastReads(path: path)
    }

    /// Migrate up to (and including) `identifier` only: for upgrade tests.
    public static func createAtVersion(path: String, upTo identifier: String) throws {
        let pool = try DatabasePool(path: path)
        try Schema.migrator.migrate(pool, upTo: identifier)
    }

    public static var migrations: [String] { Schema.known }

    public func appliedMigrations() throws -> [String] {
        try pool.read { try Schema.migrator.appliedMigrations($0) }
    }

    /// The writer connection's `PRAGMA synchronous` (2 = FULL): for tests.
    public func writerSynchronousMode() async throws -> Int {
        try await write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    public func integrityCheck() throws -> String {
        try pool.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") ?? "?" }
    }

    func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await commits.write(work)
        } catch let e as DatabaseError where e.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE
            || e.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY
        {
            throw StoreError.conflict(e.message ?? "already exists")
        } catch let e as DatabaseError where e.resultCode == .SQLITE_FULL {
            throw StoreError.diskFull
        }
    }

    /// Reads run on the calling thread: a WAL reader never waits for the
    /// writer, and the reads agentd makes are short, indexed lookups, so two
    /// thread hops per read (to a reader queue and back) would cost more than
    /// the read itself.  Long scans page (keyset pagination) to stay short.
    func read<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try readHere(work)
    }

    /// Without a transaction around it: each of agentd's reads is one
    /// statement (atomic by itself) or tolerates seeing a commit between
    /// its statements (counts for /v1/status), and BEGIN/COMMIT would double
    /// the cost of the common single-row lookup.
    private func readHere<T>(_ work: (Database) throws -> T) throws -> T {
        try pool.unsafeRead(work)
    }

    static func now() -> Int64 { Timestamp.millis(Date()) }

    static func audit(_ db: Database, _ a: AuditEntry?) throws {
        guard let a else { return }
        try db.execute(sql: """
            INSERT INTO audit(at, key_id, team_id, action, resource, resource_id, detail) VALUES (?,?,?,?,?,?,?)
            """, arguments: [now(), a.keyID, a.teamID, a.action, a.resource, a.resourceID, a.detail])
    }

    // MARK: teams

    public func createTeam(id: String, name: String, audit: AuditEntry?) async throws -> Team {
        try await write { db in
            let t = Store.now()
            try db.execute(sql: "INSERT INTO teams(id, name, created_at) VALUES (?,?,?)", arguments: [id, name, t])
            try Store.audit(db, audit)
            return Team(id: id, name: name, createdAt: Timestamp.date(millis: t))
        }
    }

    static func team(_ row: Row) -> Team {
        let quotas = (row["quotas"] as String?).flatMap {
            try? AgentdJSON.decoder.decode(TeamQuotas.self, from: Data($0.utf8))
        } ?? TeamQuotas()
        return Team(id: row["id"], name: row["name"], createdAt: Timestamp.date(millis: row["created_at"]), quotas: quotas)
    }

    public func teams(id: String? = nil) async throws -> [Team] {
        try await read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM teams WHERE (? IS NULL OR id = ?) ORDER BY created_at",
                                        arguments: [id, id])
            return rows.map(Store.team)
        }
    }

    public func team(named name: String) async throws -> Team? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM teams WHERE name = ?", arguments: [name]).map(Store.team)
        }
    }

    /// Replace a team's quotas (every field: an absent one is no limit).
    public func setTeamQuotas(id: String, _ quotas: TeamQuotas, audit: AuditEntry?) async throws -> Team {
        let text = quotas.isEmpty ? nil : String(decoding: try AgentdJSON.encode(quotas), as: UTF8.self)
        return try await write { db in
            try db.execute(sql: "UPDATE teams SET quotas = ? WHERE id = ?", arguments: [text, id])
            guard db.changesCount > 0, let row = try Row.fetchOne(db, sql: "SELECT * FROM teams WHERE id = ?",
                                                                 arguments: [id]) else {
                throw StoreError.notFound("team")
            }
            try Store.audit(db, audit)
            return Store.team(row)
        }
    }

    /// What a team uses that the database counts: sessions, sandboxes
    /// running or paused, runs running and queued.
    public func teamCounts(id: String) async throws -> (sessions: Int, sandboxes: Int, running: Int, queued: Int) {
        try await read { db in
            let sessions = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sessions WHERE team_id = ?", arguments: [id])
            let sandboxes = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM sessions WHERE team_id = ? AND sandbox_state IN ('running', 'paused')
                """, arguments: [id])
            let running = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs WHERE state = 'running' AND team_id = ?",
                                           arguments: [id])
            let queued = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs WHERE state = 'queued' AND team_id = ?",
                                          arguments: [id])
            return (sessions ?? 0, sandboxes ?? 0, running ?? 0, queued ?? 0)
        }
    }

    /// A team's quota `key` (its JSON name), if it has one.
    static func quota(_ db: Database, team: String, _ key: String) throws -> Int? {
        try Int.fetchOne(db.cachedStatement(sql: "SELECT json_extract(quotas, '$.' || ?) FROM teams WHERE id = ?"),
                         arguments: [key, team])
    }

    // MARK: keys

    static func keyInfo(_ r: Row) -> APIKeyInfo {
        APIKeyInfo(id: r["id"], name: r["name"], teamID: r["team_id"], role: Role(rawValue: r["role"]) ?? .viewer,
                   prefix: r["prefix"], createdAt: Timestamp.date(millis: r["created_at"]),
                   revokedAt: (r["revoked_at"] as Int64?).map(Timestamp.date(millis:)),
                   lastUsedAt: (r["last_used_at"] as Int64?).map(Timestamp.date(millis:)))
    }

    public func createKey(_ rec: KeyRecord, audit: AuditEntry?) async throws {
        try await write { db in
            try db.execute(sql: """
                INSERT INTO api_keys(id, team_id, name, role, hash, prefix, created_at) VALUES (?,?,?,?,?,?,?)
                """, arguments: [rec.info.id, rec.info.teamID, rec.info.name, rec.info.role.rawValue, rec.hash,
                                 rec.info.prefix, Timestamp.millis(rec.info.createdAt)])
            try Store.audit(db, audit)
        }
    }

    public func key(hash: String) async throws -> APIKeyInfo? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM api_keys WHERE hash = ?", arguments: [hash]).map(Store.keyInfo)
        }
    }

    public func keys(teamID: String?) async throws -> [APIKeyInfo] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM api_keys WHERE (? IS NULL OR team_id = ?) ORDER BY created_at, id
                """, arguments: [teamID, teamID]).map(Store.keyInfo)
        }
    }

    public func keyIsLive(id: String) async throws -> Bool {
        try await read { db in
            try Bool.fetchOne(db, sql: "SELECT revoked_at IS NULL FROM api_keys WHERE id = ?", arguments: [id]) ?? false
        }
    }

    public func keyCount() async throws -> Int {
        try await read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM api_keys") ?? 0 }
    }

    /// Active admin keys (not revoked).
    public func activeAdminKeyCount() async throws -> Int {
        try await read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL") ?? 0
        }
    }

    public enum RevokeOutcome: Sendable, Equatable {
        case revoked, notFound
        /// The key is the last active admin key: revoking it would leave
        /// nobody able to administer agentd.  Nothing was changed.
        case lastAdmin
    }

    /// Revoke, unless that leaves no active admin key (checked in the same
    /// transaction, so two concurrent revocations cannot both pass).
    public func revokeKey(id: String, teamID: String?, audit: AuditEntry?) async throws -> RevokeOutcome {
        try await write { db in
            let row = try Row.fetchOne(db, sql: """
                SELECT role, revoked_at IS NULL AS active FROM api_keys WHERE id = ? AND (? IS NULL OR team_id = ?)
                """, arguments: [id, teamID, teamID])
            guard let row else { return .notFound }
            if (row["role"] as String?) == Role.admin.rawValue, (row["active"] as Bool?) == true {
                let others = try Int.fetchOne(db, sql: """
                    SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL AND id != ?
                    """, arguments: [id]) ?? 0
                if others == 0 { return .lastAdmin }
            }
            try db.execute(sql: """
                UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND (? IS NULL OR team_id = ?)
                """, arguments: [Store.now(), id, teamID, teamID])
            let changed = db.changesCount > 0
            if changed {
                try Store.audit(db, audit)
                try db.execute(sql: "DELETE FROM ui_sessions WHERE key_id = ?", arguments: [id])
            }
            return .revoked
        }
    }

    public func touchKey(id: String) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE api_keys SET last_used_at = ? WHERE id = ?", arguments: [Store.now(), id])
        }
    }

    // MARK: agents

    static func agent(_ r: Row) throws -> Agent {
        var a = try AgentdJSON.decoder.decode(Agent.self, from: Data((r["spec"] as String).utf8))
        a.id = r["id"]
        a.teamID = r["team_id"]
        a.name = r["name"]
        a.createdAt = Timestamp.date(millis: r["created_at"])
        a.updatedAt = Timestamp.date(millis: r["updated_at"])
        return a
    }

    public func createAgent(_ a: Agent, audit: AuditEntry?) async throws {
        let spec = String(decoding: try AgentdJSON.encoder.encode(a), as: UTF8.self)
        try await write { db in
            try db.execute(sql: """
                INSERT INTO agents(id, team_id, name, spec, created_at, updated_at) VALUES (?,?,?,?,?,?)
                """, arguments: [a.id, a.teamID, a.name, spec, Timestamp.millis(a.createdAt), Timestamp.millis(a.updatedAt)])
            try Store.audit(db, audit)
        }
    }

    public func updateAgent(_ a: Agent, audit: AuditEntry?) async throws {
        let spec = String(decoding: try AgentdJSON.encoder.encode(a), as: UTF8.self)
        try await write { db in
            try db.execute(sql: "UPDATE agents SET name = ?, spec = ?, updated_at = ? WHERE id = ? AND team_id = ?",
                           arguments: [a.name, spec, Timestamp.millis(a.updatedAt), a.id, a.teamID])
            guard db.changesCount > 0 else { throw StoreError.notFound("agent") }
            try Store.audit(db, audit)
        }
    }

    public func agent(id: String, teamID: String?) async throws -> Agent? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM agents WHERE id = ? AND (? IS NULL OR team_id = ?)",
                             arguments: [id, teamID, teamID]).map(Store.agent)
        }
    }

    public func agents(teamID: String?) async throws -> [Agent] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM agents WHERE (? IS NULL OR team_id = ?) ORDER BY created_at, id",
                             arguments: [teamID, teamID]).map(Store.agent)
        }
    }

    /// Delete an agent; refused while it has sessions.
    public func deleteAgent(id: String, teamID: String?, audit: AuditEntry?) async throws -> Bool {
        try await write { db in
            // Another team's agent is "not found", never "in use".
            let visible = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM agents WHERE id = ? AND (? IS NULL OR team_id = ?)",
                                           arguments: [id, teamID, teamID]) ?? 0
            if visible == 0 { return false }
            let sessions = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sessions WHERE agent_id = ?", arguments: [id]) ?? 0
            if sessions > 0 {
                throw StoreError.conflict("the agent has \(sessions) session(s); delete them first")
            }
            try db.execute(sql: "DELETE FROM secrets WHERE agent_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM agents WHERE id = ? AND (? IS NULL OR team_id = ?)",
                           arguments: [id, teamID, teamID])
            let changed = db.changesCount > 0
            if changed { try Store.audit(db, audit) }
            return changed
        }
    }

    // MARK: secrets

    static func secret(_ r: Row) -> SecretRecord {
        let agent: String = r["agent_id"]
        return SecretRecord(
            info: SecretInfo(id: r["id"], name: r["name"], teamID: r["team_id"], agentID: agent.isEmpty ? nil : agent,
                             createdAt: Timestamp.date(millis: r["created_at"]),
                             updatedAt: Timestamp.date(millis: r["updated_at"])),
            ciphertext: Array(r["ciphertext"] as Data))
    }

    public func putSecret(id: String, teamID: String, agentID: String?, name: String, ciphertext: [UInt8],
                          audit: AuditEntry?) async throws -> SecretInfo {
        try await write { db in
            let t = Store.now()
            try db.execute(sql: """
                INSERT INTO secrets(id, team_id, agent_id, name, ciphertext, created_at, updated_at)
                VALUES (?,?,?,?,?,?,?)
                ON CONFLICT(team_id, agent_id, name) DO UPDATE SET ciphertext = excluded.ciphertext,
                    updated_at = excluded.updated_at
                """, arguments: [id, teamID, agentID ?? "", name, Data(ciphertext), t, t])
            try Store.audit(db, audit)
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM secrets WHERE team_id = ? AND agent_id = ? AND name = ?",
                                             arguments: [teamID, agentID ?? "", name]) else {
                throw StoreError.internal("secret vanished")
            }
            return Store.secret(row).info
        }
    }

    public func secrets(teamID: String?, agentID: String? = nil) async throws -> [SecretRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM secrets WHERE (? IS NULL OR team_id = ?) AND (? IS NULL OR agent_id = ?)
                ORDER BY name, agent_id
                """, arguments: [teamID, teamID, agentID, agentID]).map(Store.secret)
        }
    }

    /// The secrets a sandbox of this agent receives: the team's and the agent's own.
    public func secretsForAgent(teamID: String, agentID: String) async throws -> [SecretRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM secrets WHERE team_id = ? AND (agent_id = '' OR agent_id = ?) ORDER BY name
                """, arguments: [teamID, agentID]).map(Store.secret)
        }
    }

    public func deleteSecret(teamID: String, agentID: String?, name: String, audit: AuditEntry?) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "DELETE FROM secrets WHERE team_id = ? AND agent_id = ? AND name = ?",
                           arguments: [teamID, agentID ?? "", name])
            let changed = db.changesCount > 0
            if changed { try Store.audit(db, audit) }
            return changed
        }
    }

    // MARK: audit

    public func auditEntries(teamID: String?, limit: Int = 100) async throws -> [AuditEntry] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM audit WHERE (? IS NULL OR team_id = ?) ORDER BY id DESC LIMIT ?",
                             arguments: [teamID, teamID, limit]).map {
                AuditEntry(keyID: $0["key_id"], teamID: $0["team_id"], action: $0["action"], resource: $0["resource"],
                           resourceID: $0["resource_id"], detail: $0["detail"])
            }
        }
    }
}

/// Raw access to a database file, for tests that tamper with it.
public enum DatabasePoolOpener {
    public static func open(_ path: String) throws -> DatabasePool { try DatabasePool(path: path) }
}
