import AgentdModel
import AgentdStore
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A signed-in dashboard browser: who it acts as, and the CSRF token its
/// state-changing requests must send back in `X-CSRF-Token`.
public struct SignIn: Sendable, Equatable {
    public var identity: Identity
    public var csrf: String
}

/// Dashboard sign-ins.  Signing in with an API key issues a random cookie
/// value (only its hash is stored, in SQLite, so sign-ins survive restarts
/// and upgrades); every request made with the cookie authenticates the key it
/// came from again, so a revoked key ends its sign-ins at once.  Sign-ins end
/// after `idle` without use and `lifetime` after they began.
public final class SignInService: Sendable {
    public static let idle: TimeInterval = 12 * 3600
    public static let lifetime: TimeInterval = 7 * 86400
    /// `last_seen_at` is written at most this often (not on every request).
    static let touchInterval: TimeInterval = 60

    private let store: Store
    private let auth: AuthService
    private let cache = Mutex<[String: SignInRecord]>([:])

    init(store: Store, auth: AuthService) {
        self.store = store
        self.auth = auth
    }

    /// Sign in with an API key: the cookie value (shown to the browser only)
    /// and the sign-in.  A key that is wrong or revoked is `unauthorized`.
    public func signIn(key: String) async throws -> (token: String, signIn: SignIn) {
        guard let identity = try await auth.authenticate(key) else {
            throw AgentdError(status: 401, code: "unauthorized", message: "that API key is not valid (or was revoked)",
                              field: "key")
        }
        var rng = SystemRandomNumberGenerator()
        let token = Identifier.random(43, using: &rng)
        let csrf = Identifier.random(43, using: &rng)
        let now = Date()
        try await store.createSignIn(tokenHash: AuthService.hash(token), keyID: identity.keyID, csrf: csrf,
                                     expiredBefore: now - Self.idle)
        return (token, SignIn(identity: identity, csrf: csrf))
    }

    /// The sign-in a cookie value stands for; nil when unknown, expired, or
    /// its key was revoked.
    public func lookup(token: String) async throws -> SignIn? {
        guard token.utf8.count == 43 else { return nil }
        let hash = AuthService.hash(token)
        var record = cache.withLock { $0[hash] }
        if record == nil {
            record = try await store.signIn(tokenHash: hash)
        }
        guard var record else { return nil }
        let now = Date()
        if now.timeIntervalSince(record.lastSeenAt) > Self.idle
            || now.timeIntervalSince(record.createdAt) > Self.lifetime
        {
            try await signOut(token: token)
            return nil
        }
        guard let identity = try await auth.authenticate(hash: record.keyHash) else {
            cache.withLock { _ = $0.removeValue(forKey: hash) }
            return nil
        }
        if now.timeIntervalSince(record.lastSeenAt) > Self.touchInterval {
            record.lastSeenAt = now
            try await store.touchSignIn(tokenHash: hash, at: now)
        }
        let seen = record
        cache.withLock { cache in
            // Sign-ins that end by expiry leave entries behind; a bound keeps
            // them from piling up (a miss costs one indexed read).
            if cache.count >= 10_000 { cache.removeAll() }
            cache[hash] = seen
        }
        return SignIn(identity: identity, csrf: record.csrf)
    }

    public func signOut(token: String) async throws {
        let hash = AuthService.hash(token)
        cache.withLock { _ = $0.removeValue(forKey: hash) }
        try await store.deleteSignIn(tokenHash: hash)
    }
}

extension String {
    /// Comparison whose time does not depend on where the strings differ
    /// (CSRF tokens).
    public func constantTimeEquals(_ other: String) -> Bool {
        let a = Array(utf8), b = Array(other.utf8)
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
