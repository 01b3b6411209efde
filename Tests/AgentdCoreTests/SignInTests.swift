import AgentdModel
import AgentdStore
import Foundation
import Logging
import Testing
@testable import AgentdCore

/// A store with its admin key, for one test: `body` gets the store, the
/// auth service and the admin key; the files go afterwards.
func withAuth(_ body: (Store, AuthService, String) async throws -> Void) async throws {
    let path = "/tmp/agentd-core-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sqlite"
    defer { for s in ["", "-wal", "-shm", ".admin.key"] { unlink(path + s) } }
    var logger = Logger(label: "test")
    logger.logLevel = .error
    let store = try Store(path: path, logger: logger)
    let auth = AuthService(store: store, logger: logger)
    _ = try await auth.bootstrap(adminKeyPath: path + ".admin.key")
    let admin = try String(contentsOfFile: path + ".admin.key", encoding: .utf8)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    try await body(store, auth, admin)
}

@Suite struct SignInTests {
    @Test func keyHashesAreHexSHA256() {
        #expect(AuthService.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(AuthService.hash("").count == 64)
    }

    @Test func csrfComparisonIsExact() {
        #expect("abc".constantTimeEquals("abc"))
        #expect(!"abc".constantTimeEquals("abd"))
        #expect(!"abc".constantTimeEquals("abcd"))
        #expect(!"".constantTimeEquals("a"))
    }

    /// Sign in, look up, sign out, and revocation: against a real store.
    @Test func signInsFollowTheirKey() async throws {
        try await withAuth { store, auth, admin in
            let signIns = SignInService(store: store, auth: auth)

            await #expect(throws: AgentdError.self) { _ = try await signIns.signIn(key: "agentd_wrong") }
            await #expect(throws: AgentdError.self) { _ = try await signIns.signIn(key: "not-even-a-key") }

            let (token, first) = try await signIns.signIn(key: admin)
            #expect(first.identity.role == .admin && first.csrf.count == 43 && token.count == 43)
            #expect(try await signIns.lookup(token: token) == first)
            // (Its last character changed: one time in 64 it was an "x".)
            let other = String(token.dropLast()) + (token.hasSuffix("x") ? "y" : "x")
            #expect(try await signIns.lookup(token: other) == nil)
            #expect(try await signIns.lookup(token: "short") == nil)
            // Another service over the same database (a restarted agentd) knows it.
            #expect(try await SignInService(store: store, auth: auth).lookup(token: token) == first)

            try await signIns.signOut(token: token)
            #expect(try await signIns.lookup(token: token) == nil)

            // Revoking the key ends its sign-ins at once, cached or not.
            let (second, _) = try await signIns.signIn(key: admin)
            let member = try await auth.createKey(first.identity, name: "m", teamID: nil, role: .member)
            let (memberToken, memberSignIn) = try await signIns.signIn(key: member.key ?? "")
            #expect(try await signIns.lookup(token: memberToken) == memberSignIn)
            try await auth.revoke(first.identity, keyID: memberSignIn.identity.keyID)
            #expect(try await signIns.lookup(token: memberToken) == nil)
            #expect(try await SignInService(store: store, auth: auth).lookup(token: memberToken) == nil)
            #expect(try await signIns.lookup(token: second) != nil, "other keys' sign-ins are unaffected")
        }
    }

    /// A key's last_used_at is set when it authenticates (to the minute).
    @Test func keysRecordTheirLastUse() async throws {
        try await withAuth { _, auth, admin in
            guard let me = try await auth.authenticate(admin) else { throw AgentdError.internal("admin key refused") }
            let member = try await auth.createKey(me, name: "m", teamID: nil, role: .member)
            #expect(try await auth.keys(me).first { $0.id == member.id }?.lastUsedAt == nil)
            let before = Date().addingTimeInterval(-1)
            _ = try await auth.authenticate(member.key ?? "")
            let used = try await auth.keys(me).first { $0.id == member.id }?.lastUsedAt
            #expect(used.map { $0 >= before } == true, "last_used_at: \(String(describing: used))")
            #expect(try await auth.keys(me).first { $0.id == me.keyID }?.lastUsedAt != nil)
        }
    }
}
