import AgentdModel
import AgentdStore
import Crypto
import Logging
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Who is calling: the key, its team and its role.
public struct Identity: Sendable, Equatable {
    public var keyID: String
    public var teamID: String
    public var role: Role

    public init(keyID: String, teamID: String, role: Role) {
        self.keyID = keyID
        self.teamID = teamID
        self.role = role
    }

    public var isAdmin: Bool { role == .admin }

    /// The team filter for lookups: nil (every team) for admins.
    public var scope: String? { isAdmin ? nil : teamID }

    /// Refuse unless the key has at least `role`.
    public func require(_ role: Role, _ what: String) throws {
        guard self.role >= role else {
            throw AgentdError.forbidden("a key with role \(role.rawValue) or higher is needed to \(what)")
        }
    }

    func audit(_ action: String, _ resource: String, _ id: String?, team: String? = nil, detail: String? = nil)
        -> AuditEntry
    {
        AuditEntry(keyID: keyID, teamID: team ?? teamID, action: action, resource: resource, resourceID: id,
                   detail: detail)
    }
}

/// API keys: `agentd_<id part>_<secret>`.  Only the SHA-256 of the whole key
/// is stored; lookups are by that hash.  Known keys are cached in memory and
/// the cache entry is dropped on revoke, so revocation is immediate.
public final class AuthService: Sendable {
    let store: Store
    let logger: Logger
    private let cache = Mutex<[String: Identity]>([:])
    /// When each key's `last_used_at` was last written by this process.
    private let touched = Mutex<[String: ContinuousClock.Instant]>([:])
    /// `last_used_at` is kept to this precision: a durable write on every
    /// request would cost more than most requests.
    static let lastUsedPrecision: Duration = .seconds(60)
    public static let adminTeamName = "admin"

    public init(store: Store, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// Hex SHA-256 of a key (every request computes one: no per-byte strings).
    public static func hash(_ key: String) -> String {
        var key = key
        let digest = key.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
        return String(unsafeUninitializedCapacity: 64) { out in
            var i = 0
            for b in digest {
                out[i] = hexDigits[Int(b >> 4)]
                out[i + 1] = hexDigits[Int(b & 15)]
                i += 2
            }
            return 64
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    static func newKey() -> String {
        var rng = SystemRandomNumberGenerator()
        return "agentd_" + Identifier.random(40, using: &rng)
    }

    /// What a start found of the operators' way in.
    public enum AdminAccess: Sendable, Equatable {
        /// The key in this file (just made, or kept from before) works.
        case keyFile(String)
        /// Admin keys exist, but not the one in the file (it is revoked or gone).
        case otherKeys
        /// No active admin key: only `agentd admin-key` on the host gets one.
        case none
    }

    /// First start: the admin team and an admin key, written to
    /// `STATE/admin.key` (0600).  Later starts keep what exists and say
    /// whether an operator can still get in.
    public func bootstrap(adminKeyPath: String) async throws -> AdminAccess {
        if try await store.keyCount() == 0 {
            try await mintAdminKey(path: adminKeyPath, detail: "bootstrap admin key")
            logger.notice("created the admin key", metadata: ["path": "\(adminKeyPath)"])
            return .keyFile(adminKeyPath)
        }
        if let data = FileManager.default.contents(atPath: adminKeyPath), data.count < 4096 {
            let key = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            if let id = try await authenticate(key), id.isAdmin { return .keyFile(adminKeyPath) }
        }
        if try await store.activeAdminKeyCount() > 0 { return .otherKeys }
        let dir = Self.stateDirectory(of: adminKeyPath)
        logger.warning("no active admin key: every admin key was revoked; mint a new one on this host with `agentd admin-key --state-dir \(dir)` (as root)")
        return .none
    }

    static func stateDirectory(of keyPath: String) -> String {
        guard let slash = keyPath.lastIndex(of: "/") else { return "." }
        return slash == keyPath.startIndex ? "/" : String(keyPath[..<slash])
    }

    /// A new admin key of the admin team (made if missing), written to
    /// `path` (0600) before it is stored: a key in the database that nobody
    /// can read would lock the operator out.  An existing file is replaced.
    @discardableResult
    public func mintAdminKey(path: String, detail: String) async throws -> APIKeyInfo {
        var team = try await store.team(named: Self.adminTeamName)
        if team == nil {
            team = try await store.createTeam(id: Identifier.make(.team), name: Self.adminTeamName,
                                              audit: AuditEntry(keyID: nil, teamID: nil, action: "create",
                                                                resource: "team", resourceID: nil, detail: detail))
        }
        guard let team else { throw AgentdError.internal("no admin team") }
        let key = Self.newKey()
        let info = APIKeyInfo(id: Identifier.make(.key), name: "admin", teamID: team.id, role: .admin,
                              prefix: String(key.prefix(12)), createdAt: Date())
        try writeSecretFile(path, Array((key + "\n").utf8))
        try await store.createKey(KeyRecord(info: info, hash: Self.hash(key)),
                                  audit: AuditEntry(keyID: nil, teamID: team.id, action: "create", resource: "key",
                                                    resourceID: info.id, detail: detail))
        return info
    }

    public func authenticate(_ token: String) async throws -> Identity? {
        guard token.hasPrefix("agentd_"), token.utf8.count < 200 else { return nil }
        return try await authenticate(hash: Self.hash(token))
    }

    /// The identity of a key by its hash (dashboard sessions keep the hash,
    /// never the key); nil once the key is revoked.
    public func authenticate(hash h: String) async throws -> Identity? {
        let id: Identity
        if let hit = cache.withLock({ $0[h] }) {
            id = hit
        } else {
            guard let info = try await store.key(hash: h), info.revokedAt == nil else { return nil }
            id = Identity(keyID: info.id, teamID: info.teamID, role: info.role)
            cache.withLock { $0[h] = id }
        }
        await noteUse(id.keyID)
        return id
    }

    /// Record that a key was used, at most once per `lastUsedPrecision`; the
    /// request goes on if the write fails (it is bookkeeping, not access).
    private func noteUse(_ keyID: String) async {
        let now = ContinuousClock.now
        let due = touched.withLock { t -> Bool in
            if let last = t[keyID], now - last < Self.lastUsedPrecision { return false }
            t[keyID] = now
            return true
        }
        guard due else { return }
        do {
            try await store.touchKey(id: keyID)
        } catch {
            logger.warning("could not record a key's last use", metadata: ["key": "\(keyID)", "error": "\(error)"])
        }
    }

    // MARK: keys

    public func createKey(_ caller: Identity, name: String, teamID: String?, role: Role) async throws -> APIKeyInfo {
        try caller.require(.owner, "create keys")
        let team = teamID ?? caller.teamID
        guard Identifier.isValid(team, .team) else { throw AgentdError.invalid("team_id is not a team id", field: "team_id") }
        if !caller.isAdmin {
            guard team == caller.teamID else { throw AgentdError.notFound("team", field: "team_id") }
            guard role != .admin else { throw AgentdError.forbidden("only an admin can create admin keys") }
        }
        guard try await !store.teams(id: team).isEmpty else { throw AgentdError.notFound("team", field: "team_id") }
        try Validate.name(name, field: "name")
        let key = Self.newKey()
        var info = APIKeyInfo(id: Identifier.make(.key), name: name, teamID: team, role: role,
                              prefix: String(key.prefix(12)), createdAt: Date())
        try await store.createKey(KeyRecord(info: info, hash: Self.hash(key)),
                                  audit: caller.audit("create", "key", info.id, team: team, detail: "role \(role.rawValue)"))
        info.key = key
        return info
    }

    public func keys(_ caller: Identity) async throws -> [APIKeyInfo] {
        try caller.require(.owner, "list keys")
        return try await store.keys(teamID: caller.scope)
    }

    public func revoke(_ caller: Identity, keyID: String) async throws {
        try caller.require(.owner, "revoke keys")
        guard Identifier.isValid(keyID, .key) else { throw AgentdError.invalid("not a key id", field: "id") }
        switch try await store.revokeKey(id: keyID, teamID: caller.scope, audit: caller.audit("revoke", "key", keyID)) {
        case .revoked: break
        case .notFound: throw AgentdError.notFound("key")
        case .lastAdmin:
            throw AgentdError(status: 409, code: "last_admin_key",
                              message: "this is the last active admin key: revoking it would lock every operator out; "
                                  + "create another admin key first (or mint one on the host with `agentd admin-key`)",
                              field: "id")
        }
        cache.withLock { c in c = c.filter { $0.value.keyID != keyID } }
    }

    /// Whether the key behind an identity still works (long-lived streams
    /// check this now and then, so that revoking a key ends them too).
    public func stillValid(_ identity: Identity) async throws -> Bool {
        if cache.withLock({ $0.values.contains { $0.keyID == identity.keyID } }) { return true }
        return try await store.keyIsLive(id: identity.keyID)
    }

    // MARK: teams

    public func createTeam(_ caller: Identity, name: String) async throws -> Team {
        try caller.require(.admin, "create teams")
        try Validate.name(name, field: "name")
        do {
            return try await store.createTeam(id: Identifier.make(.team), name: name,
                                              audit: caller.audit("create", "team", nil, detail: name))
        } catch StoreError.conflict {
            throw AgentdError.conflict("a team named \(name) exists", field: "name")
        }
    }

    public func teams(_ caller: Identity) async throws -> [Team] {
        try await store.teams(id: caller.isAdmin ? nil : caller.teamID)
    }
}

/// Write a small secret file (0600) so that it is whole or absent, across a
/// crash or a power loss: a temporary file, written and fsync'd, then renamed
/// into place (or, with `replace` false, linked: that fails if the file
/// exists), then the directory fsync'd so that the new name is durable too.
func writeSecretFile(_ path: String, _ bytes: [UInt8], replace: Bool = true) throws {
    func failure(_ what: String) -> AgentdError {
        AgentdError.internal("cannot \(what) \(path): \(String(cString: strerror(errno)))")
    }
    let tmp = path + ".tmp"
    _ = unlink(tmp)
    let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw failure("create a temporary file for") }
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { break }
        written += n
    }
    let synced = fsync(fd) == 0
    close(fd)
    guard written == bytes.count, synced else {
        let e = failure("write")
        _ = unlink(tmp)
        throw e
    }
    if replace {
        guard rename(tmp, path) == 0 else {
            let e = failure("rename into place")
            _ = unlink(tmp)
            throw e
        }
    } else {
        let linked = link(tmp, path) == 0
        let e = failure("create")
        _ = unlink(tmp)
        guard linked else { throw e }
    }
    let slash = path.lastIndex(of: "/")
    let dir = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    let dfd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard dfd >= 0 else { throw failure("open the directory of") }
    defer { close(dfd) }
    guard fsync(dfd) == 0 else { throw failure("sync the directory of") }
}
