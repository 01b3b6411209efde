import AgentdModel
import Foundation
import Testing
@testable import AgentdStore
#if canImport(Glibc)
import Glibc
#endif

/// A database path in a directory of its own (removeDatabase removes both).
func tempDatabase(_ name: String = #function) -> String {
    let dir = "/tmp/agentd-store-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    mkdir(dir, 0o700)
    return dir + "/\(name.filter { $0.isLetter }).sqlite"
}

func removeDatabase(_ path: String) {
    for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
    if let slash = path.lastIndex(of: "/") { rmdir(String(path[..<slash])) }
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

    /// GRDB's pool sets synchronous=NORMAL on its writer when it enables
    /// WAL; the store must end up with FULL there, or acknowledged commits
    /// are not fsync'd.
    @Test func theWriterSyncsEveryCommit() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        #expect(try await store.writerSynchronousMode() == 2)
        _ = try await seeded(store)
        #expect(try await store.writerSynchronousMode() == 2)
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

    /// Jobs queued behind a slow transaction run as one batch: a job that
    /// wrote and then failed leaves nothing behind, the others all commit.
    @Test func aBatchWithAFailingJobIsReplayedJobByJob() async throws {
        struct Refused: Error {}
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (_, _, s) = try await seeded(store)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                _ = try await store.write { _ in usleep(100_000) }  // holds the writer while the rest queue up
                return true
            }
            try await Task.sleep(for: .milliseconds(20))
            for i in 0..<20 {
                group.addTask {
                    if i == 10 {
                        do {
                            try await store.write { db in
                                try db.execute(sql: "INSERT INTO teams(id, name, created_at) VALUES ('team_x', 'half-done', 0)")
                                throw Refused()
                            }
                            return false
                        } catch is Refused {
                            return true
                        }
                    }
                    _ = try await store.appendEvents(sessionID: s.id, [NewEvent(kind: .toolResult, data: .number(Double(i)))])
                    return true
                }
            }
            for try await ok in group { #expect(ok) }
        }
        #expect(try await store.team(named: "half-done") == nil)
        #expect(try await store.events(sessionID: s.id, after: 0, limit: 100).map(\.seq) == Array(1...19))
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

    /// One team's backlog does not hold another team's runs back: the
    /// queue alternates between teams (fewest running first, then the one
    /// served longest ago) instead of serving the oldest run overall.
    @Test func theQueueServesTeamsFairly() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (a, agentA, _) = try await seeded(store)
        let (b, agentB, _) = try await seeded(store)
        func queue(_ team: Team, _ agent: Agent, _ n: Int) async throws -> [String] {
            var runs: [String] = []
            for i in 0..<n {
                let s = try await store.createSession(id: Identifier.make(.session), teamID: team.id, agentID: agent.id,
                                                      title: "q\(i)", audit: nil)
                let (_, r) = try await store.postMessage(sessionID: s.id, teamID: team.id, runID: Identifier.make(.run),
                                                         content: .string("go"), audit: nil)
                runs.append(r.id)
            }
            return runs
        }
        let backlog = try await queue(a, agentA, 200)
        let late = try await queue(b, agentB, 3)
        var teams: [String] = []
        for _ in 0..<6 {
            let c = try #require(try await store.claimRun(owner: "w", leaseSeconds: 30))
            teams.append(c.teamID == a.id ? "A" : "B")
        }
        #expect(teams == ["A", "B", "A", "B", "A", "B"])
        // Within a team, oldest first.
        let claimedA = try await store.recentRuns(teamID: a.id, state: "running", limit: 10).map(\.id)
        #expect(Set(claimedA) == Set(backlog.prefix(3)))
        #expect(try await store.recentRuns(teamID: b.id, state: "running", limit: 10).count == late.count)
        // B has nothing left: A gets every slot.
        let next = try #require(try await store.claimRun(owner: "w", leaseSeconds: 30))
        #expect(next.teamID == a.id)
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

/// Events are appended to `events_recent` and moved into `events` in bulk;
/// readers must see one gap-free log whatever table an event is in.
@Suite struct EventLogTests {
    func append(_ store: Store, _ sid: String, _ n: Int, runID: String? = nil) async throws {
        for i in 0..<n {
            _ = try await store.appendEvents(sessionID: sid, [
                NewEvent(kind: .toolResult, runID: runID, data: .object(["i": .number(Double(i))])),
            ])
        }
    }

    @Test func readsSpanBothTables() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (_, _, s) = try await seeded(store)
        let (_, _, other) = try await seeded(store)
        try await append(store, s.id, 10)
        try await append(store, other.id, 3)
        try await store.moveRecentEvents()
        #expect(try await store.recentEventCount() == 0)
        try await append(store, s.id, 5)
        #expect(try await store.recentEventCount() == 5)
        #expect(try await store.events(sessionID: s.id, after: 0, limit: 100).map(\.seq) == Array(1...15))
        // A page that starts in `events` and ends in `events_recent`.
        #expect(try await store.events(sessionID: s.id, after: 8, limit: 4).map(\.seq) == [9, 10, 11, 12])
        #expect(try await store.events(sessionID: s.id, after: 12, limit: 100).map(\.seq) == [13, 14, 15])
        #expect(try await store.events(sessionID: s.id, after: 15, limit: 100).isEmpty)
        #expect(try await store.events(sessionID: other.id, after: 0, limit: 100).map(\.seq) == [1, 2, 3])
        let first = try await store.events(sessionID: s.id, after: 0, limit: 1)
        #expect(first.first?.data == .object(["i": .number(0)]))
    }

    @Test func runEventsSpanBothTables() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (team, _, s) = try await seeded(store)
        let (_, run) = try await store.postMessage(sessionID: s.id, teamID: team.id, runID: Identifier.make(.run),
                                                   content: .string("hi"), audit: nil)
        try await append(store, s.id, 2, runID: run.id)
        try await store.moveRecentEvents()
        try await append(store, s.id, 2, runID: run.id)
        try await append(store, s.id, 1)
        #expect(try await store.events(runID: run.id).map(\.seq) == [1, 2, 3, 4, 5])
    }

    @Test func eventsMoveWhenTheRecentTableIsFull() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (_, _, s) = try await seeded(store)
        let n = Int(Store.recentEventsLimit) + 10
        try await append(store, s.id, n)
        #expect(try await store.recentEventCount() < Int(Store.recentEventsLimit))
        #expect(try await store.events(sessionID: s.id, after: 0, limit: 5000).map(\.seq) == Array(1...Int64(n)))
        #expect(try store.integrityCheck() == "ok")
    }

    @Test func deletingASessionDeletesItsRecentEvents() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        let (_, _, s) = try await seeded(store)
        let (_, _, keep) = try await seeded(store)
        try await append(store, s.id, 3)
        try await store.moveRecentEvents()
        try await append(store, s.id, 3)
        try await append(store, keep.id, 2)
        #expect(try await store.deleteSession(id: s.id, teamID: nil, audit: nil))
        #expect(try await store.recentEventCount() == 2)
        #expect(try await store.events(sessionID: s.id, after: 0, limit: 100).isEmpty)
        #expect(try await store.events(sessionID: keep.id, after: 0, limit: 100).count == 2)
    }

    /// Readers racing the moves: every read is a gap-free run of seqs from
    /// where it asked, never a duplicate or a hole.
    @Test func concurrentReadersSeeEveryEventOnce() async throws {
        let path = tempDatabase()
        defer { removeDatabase(path) }
        let store = try Store(path: path)
        var sessions: [String] = []
        for _ in 0..<8 { sessions.append(try await seeded(store).session.id) }
        let perSession = 400  // 3,200 appends: three moves
        try await withThrowingTaskGroup(of: Void.self) { group in
            for sid in sessions {
                group.addTask { try await self.append(store, sid, perSession) }
            }
            for sid in sessions.prefix(2) {
                group.addTask {
                    var last: Int64 = 0
                    while last < Int64(perSession) {
                        let page = try await store.events(sessionID: sid, after: 0, limit: 10_000).map(\.seq)
                        #expect(page == Array(stride(from: 1, through: Int64(page.count), by: 1)))
                        #expect(Int64(page.count) >= last)
                        last = Int64(page.count)
                        await Task.yield()
                    }
                }
            }
            try await group.waitForAll()
        }
        for sid in sessions {
            #expect(try await store.events(sessionID: sid, after: 0, limit: 10_000).count == perSession)
        }
        #expect(try store.integrityCheck() == "ok")
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
