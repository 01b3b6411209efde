import AgentdModel
import GRDB
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A dashboard sign-in as stored: the cookie's hash, the key it stands for
/// (with that key's hash, to authenticate it like a bearer key) and the CSRF
/// token that its state-changing requests must carry.
public struct SignInRecord: Sendable, Equatable {
    public var tokenHash: String
    public var keyID: String
    public var keyHash: String
    public var csrf: String
    public var createdAt: Date
    public var lastSeenAt: Date

    public init(tokenHash: String, keyID: String, keyHash: String, csrf: String, createdAt: Date, lastSeenAt: Date) {
        self.tokenHash = tokenHash
        self.keyID = keyID
        self.keyHash = keyHash
        self.csrf = csrf
        self.createdAt = createdAt
        self.lastSeenAt = lastSeenAt
    }
}

extension Store {
    // MARK: dashboard sign-ins

    /// Record a sign-in; sign-ins idle since `expiredBefore` go at the same time.
    public func createSignIn(tokenHash: String, keyID: String, csrf: String, expiredBefore: Date) async throws {
        try await write { db in
            let now = Store.now()
            try db.execute(sql: "DELETE FROM ui_sessions WHERE last_seen_at < ?",
                           arguments: [Timestamp.millis(expiredBefore)])
            try db.execute(sql: """
                INSERT INTO ui_sessions(token_hash, key_id, csrf, created_at, last_seen_at) VALUES (?,?,?,?,?)
                """, arguments: [tokenHash, keyID, csrf, now, now])
        }
    }

    /// The sign-in with this cookie hash, if its key is still live.
    public func signIn(tokenHash: String) async throws -> SignInRecord? {
        try await read { db in
            try Row.fetchOne(db, sql: """
                SELECT s.token_hash, s.key_id, k.hash, s.csrf, s.created_at, s.last_seen_at
                FROM ui_sessions s JOIN api_keys k ON k.id = s.key_id
                WHERE s.token_hash = ? AND k.revoked_at IS NULL
                """, arguments: [tokenHash]).map {
                SignInRecord(tokenHash: $0[0], keyID: $0[1], keyHash: $0[2], csrf: $0[3],
                             createdAt: Timestamp.date(millis: $0[4]), lastSeenAt: Timestamp.date(millis: $0[5]))
            }
        }
    }

    public func touchSignIn(tokenHash: String, at time: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE ui_sessions SET last_seen_at = ? WHERE token_hash = ?",
                           arguments: [Timestamp.millis(time), tokenHash])
        }
    }

    public func deleteSignIn(tokenHash: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM ui_sessions WHERE token_hash = ?", arguments: [tokenHash])
        }
    }
}
