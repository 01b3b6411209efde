import AgentdModel
import Foundation
import Testing
@testable import AgentdStore
#if canImport(Glibc)
import Glibc
#endif

func tempDatabase(_ name: String = #function) -> String {
    let dir = "/tmp/agentd-store-\(getpid())"
    mkdir(dir, 0o700)
    let path = dir + "/\(name.filter { $0.isLetter })-\(UInt32.random(in: 0...UInt32.max)).sqlite"
    return path
}

func removeDatabase(_ path: String) {
    for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
}

/// A team, an agent and a session to hang events on.
func seeded(_ store: Store) async throws -> (team: Team, agent: Agent, session: Session) {
    let team = try await store.createTeam(id: Identifier.make(.team), name: "t\(UInt32.random(in: 0...UInt32.max))",
                                          audit: nil)
    let now = Date()
    let agent = Agent(id: Identifier.make(.agent), teamID: team.id, name: "a", model: "m", systemPrompt: "",
                      tools: [], sandbox: AgentSandbox(), env: [:], secrets: [], harness: nil, limits: AgentLimits(),
                      createdAt: now, updatedAt: now)
    try await store.createAgent(agent, audit: nil)
    let session = try await store.createSession(id: Identifier.make(.session), teamID: team.id, agentID: agent.id,
                                                title: "s", audit: nil)
    return (team, agent, session)
}

@Suite struct StoreTests {
    @Test func migratesFromEveryEarlierVersion() async throws {
        for (i, id) in Store.migrations.enumerated() {
            let path = tempDatabase("v\(i)")
            defer { removeDatabase(path) }
            try Store.createAtVersion(path: path, upTo: id)
            let store = try Store(path: path)
            #expect(try store.appliedMigrations() == Store.migrations)
            #expect(try store.integrityCheck() == "ok")
            _ = try await seeded(store)
        }
    }

    @Test func refusesADatabaseFromANewerAgentd() throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        _ = try Store(path: path)
        let pool = try DatabasePoolOpener.open(path)
        try pool.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations(identifier) VALUES ('v999 from the future')")
        }
        #expect(throws: StoreError.self) { _ = try Store(path: path) }
    }

    @Test func eventSequencesAreGapFreeUnderConcurrency() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (_, _, s1) = try await seeded(store)
        let (_, _, s2) = try await seeded(store)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                let sid = i % 2 == 0 ? s1.id : s2.id
                group.addTask {
                    _ = try await store.appendEvents(sessionID: sid, [
                        NewEvent(kind: .toolResult, data: .object(["i": .number(Double(i))])),
                    ])
                }
            }
            try await group.waitForAll()
        }
        for s in [s1, s2] {
            let events = try await store.events(sessionID: s.id, after: 0, limit: 1000)
            #expect(events.map(\.seq) == Array(1...100))
            #expect(try await store.session(id: s.id, teamID: nil)?.lastSeq == 100)
        }
    }

    @Test func aFailingWriteDoesNotTakeItsBatchDown() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (team, _, s) = try await seeded(store)
        async let badResult: Result<Team, any Error> = {
            do { return .success(try await store.createTeam(id: Identifier.make(.team), name: team.name, audit: nil)) }
            catch { return .failure(error) }
        }()
        async let good = store.appendEvents(sessionID: s.id, [NewEvent(kind: .error, data: .string("x"))])
        let bad = await badResult
        #expect(throws: StoreError.self) { _ = try bad.get() }
        #expect(try await good.first?.seq == 1)
    }

    @Test func runQueueRunsOneRunPerSessionAtATime() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (team, _, s) = try await seeded(store)
        let (_, r1) = try await store.postMessage(sessionID: s.id, teamID: team.id, runID: Identifier.make(.run),
                                                  content: .string("one"), audit: nil)
        let (_, r2) = try await store.postMessage(sessionID: s.id, teamID: team.id, runID: Identifier.make(.run),
                                                  content: .string("two"), audit: nil)
        #expect(r1.state == .queued && r2.state == .queued)
        #expect(try await store.session(id: s.id, teamID: nil)?.status == "queued")
        let c1 = try #require(try await store.claimRun(owner: "w1", leaseSeconds: 30))
        #expect(c1.run.id == r1.id && !c1.resumed)
        // The second run of the same session waits for the first.
        #expect(try await store.claimRun(owner: "w2", leaseSeconds: 30) == nil)
        #expect(try await store.renewLease(runID: r1.id, owner: "w1", leaseSeconds: 30))
        #expect(try await !store.renewLease(runID: r1.id, owner: "w2", leaseSeconds: 30))
        _ = try await store.finishRun(runID: r1.id, sessionID: s.id, state: .succeeded, error: nil, events: [])
        let c2 = try #require(try await store.claimRun(owner: "w2", leaseSeconds: 30))
        #expect(c2.run.id == r2.id)
        // A crashed worker's run is claimable again once its lease expires.
        #expect(try await store.expireLeases() == 1)
        let c3 = try #require(try await store.claimRun(owner: "w3", leaseSeconds: 30))
        #expect(c3.run.id == r2.id && c3.resumed)
        let cancelled = try await store.requestCancel(sessionID: s.id, audit: nil)
        #expect(cancelled?.id == r2.id)
        #expect(try await store.isCancelRequested(runID: r2.id))
        _ = try await store.finishRun(runID: r2.id, sessionID: s.id, state: .cancelled, error: nil, events: [])
        #expect(try await store.session(id: s.id, teamID: nil)?.status == "idle")
    }

    @Test func sessionsPageByKeysetAndFilter() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (team, agent, _) = try await seeded(store)
        for i in 0..<25 {
            _ = try await store.createSession(id: Identifier.make(.session), teamID: team.id, agentID: agent.id,
                                              title: i % 5 == 0 ? "find me \(i)" : "other \(i)", audit: nil)
        }
        var seen: [String] = []
        var cursor: String? = nil
        repeat {
            let page = try await store.sessions(SessionQuery(teamID: team.id, limit: 7, cursor: cursor))
            seen += page.data.map(\.id)
            cursor = page.nextCursor
        } while cursor != nil
        #expect(seen.count == 26)
        #expect(Set(seen).count == 26)
        let found = try await store.sessions(SessionQuery(teamID: team.id, titleContains: "find me", limit: 50))
        #expect(found.data.count == 5)
        let other = try await store.sessions(SessionQuery(teamID: "team_nobody", limit: 50))
        #expect(other.data.isEmpty)
    }
}

@Suite struct FastReadTests {
    /// The session lookup that bypasses GRDB reads exactly what GRDB reads,
    /// scoped the same way, and sees every commit at once.
    @Test func sessionLookupMatchesThePool() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (team, agent, s) = try await seeded(store)
        let other = try await store.createTeam(id: Identifier.make(.team), name: "other", audit: nil)
        let titled = try await store.createSession(id: Identifier.make(.session), teamID: team.id, agentID: agent.id,
                                                   title: "naïve 🚀 \"title\"", audit: nil)
        for id in [s.id, titled.id] {
            for scope in [nil, team.id, other.id] {
                #expect(try await store.session(id: id, teamID: scope)
                        == store.sessionThroughPool(id: id, teamID: scope))
            }
        }
        #expect(try await store.session(id: titled.id, teamID: team.id)?.title == "naïve 🚀 \"title\"")
        #expect(try await store.session(id: s.id, teamID: other.id) == nil)
        #expect(try await store.session(id: "ses_missing", teamID: nil) == nil)

        // A queued run, usage and a state change are visible on the next read.
        let (_, run) = try await store.postMessage(sessionID: s.id, teamID: team.id, runID: Identifier.make(.run),
                                                   content: .string("hi"), audit: nil)
        _ = try #require(try await store.claimRun(owner: "w", leaseSeconds: 30))
        _ = try await store.recordStep(runID: run.id, sessionID: s.id, events: [],
                                       usage: Usage(promptTokens: 7, completionTokens: 3, costUSD: 0.25), stepDone: true)
        try await store.setSandboxState(sessionID: s.id, state: "running")
        let fast = try #require(try await store.session(id: s.id, teamID: team.id))
        #expect(fast == (try await store.sessionThroughPool(id: s.id, teamID: team.id)))
        #expect(fast.activeRunID == run.id && fast.status == "running" && fast.sandboxState == "running")
        #expect(fast.usage == Usage(promptTokens: 7, completionTokens: 3, costUSD: 0.25))
        #expect(fast.lastSeq >= 1)
    }

    @Test func concurrentLookupsShareConnections() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (team, _, s) = try await seeded(store)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<64 {
                group.addTask { try await store.session(id: s.id, teamID: team.id)?.id == s.id }
            }
            for try await ok in group { #expect(ok) }
        }
    }
}
