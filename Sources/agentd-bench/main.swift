// agentd-bench: the daemon's benchmarks, each against its baseline in one run.
//
//   agentd-bench runs --image-dir DIR     agent-step overhead vs the bare model call; 100 sessions at once
//   agentd-bench queue                    the worker's drain rate on a backlog; one team's wait behind another's
//   agentd-bench appends                  durable event appends/s under concurrent sessions
//   agentd-bench populate --state-dir D   a store with 10k sessions and 1M events (start-to-ready)
//   agentd-bench hello --port P           a bare Hummingbird hello-world (the wrk baseline)
//
// scripts/bench runs them all and writes the tables of BENCHMARKS.md.
import AgentdCore
import AgentdModel
import AgentdStore
import AgentdWorker
import ArgumentParser
import BenchSupport
import Foundation
import Hummingbird
import LinuxSandbox
import Logging
import NIOCore
import SandboxKit
import Synchronization

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentd-bench", abstract: "agentd's benchmarks.",
        subcommands: [RunsBench.self, QueueBench.self, AppendsBench.self, Populate.self, Hello.self])
}

// MARK: an instant upstream model

/// Answers chat completions at once: a tool call (`exec true`) until the
/// request holds `steps - 1` assistant turns (the model name is `steps-N`),
/// then a final answer.  Records when each request arrived.
final class InstantModel: Sendable {
    let arrivals = Mutex<[ContinuousClock.Instant]>([])

    func answer(_ body: JSONValue) -> [UInt8] {
        let model = body["model"]?.stringValue ?? "steps-1"
        let steps = Int(model.dropFirst("steps-".count).prefix { $0.isNumber }) ?? 1
        let turns = (body["messages"]?.arrayValue ?? []).filter { $0["role"]?.stringValue == "assistant" }.count
        let message: JSONValue
        if turns + 1 < steps {
            message = .object(["role": .string("assistant"), "content": .null, "tool_calls": .array([.object([
                "id": .string("call_\(turns)"), "type": .string("function"),
                "function": .object(["name": .string("exec"), "arguments": .string(#"{"command":"true"}"#)]),
            ])])])
        } else {
            message = .object(["role": .string("assistant"), "content": .string("done")])
        }
        let reply: JSONValue = .object([
            "id": .string("x"), "object": .string("chat.completion"), "model": .string(model),
            "choices": .array([.object(["index": .number(0), "message": message,
                                        "finish_reason": .string(turns + 1 < steps ? "tool_calls" : "stop")])]),
            "usage": .object(["prompt_tokens": .number(10), "completion_tokens": .number(2)]),
        ])
        return (try? AgentdJSON.encode(reply)) ?? []
    }

    func start() async throws -> (Int, Task<Void, any Error>) {
        let router = Router()
        router.post("/v1/chat/completions") { request, context -> Response in
            self.arrivals.withLock { $0.append(.now) }
            let buffer = try await request.body.collect(upTo: 64 << 20)
            let body = (try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(buffer.readableBytesView))) ?? .null
            // "steps-N-ms-D": every answer takes D ms (a model that thinks).
            if let model = body["model"]?.stringValue, let r = model.range(of: "-ms-"),
               let delay = Int(model[r.upperBound...]) {
                try await Task.sleep(for: .milliseconds(delay))
            }
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: self.answer(body))))
        }
        let port = Mutex<Int?>(nil)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { ch in port.withLock { $0 = ch.localAddress?.port } },
                              logger: Logger(label: "upstream", factory: { _ in SwiftLogNoOpLogHandler() }))
        let task = Task { try await app.runService() }
        while port.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
        return (port.withLock { $0 } ?? 0, task)
    }

    /// Durations between consecutive arrivals from `from` on, in ms.
    func gaps(from: Int) -> [Double] {
        let a = arrivals.withLock { Array($0[from...]) }
        return zip(a.dropFirst(), a).map { ms($0 - $1) }
    }

    var count: Int { arrivals.withLock { $0.count } }
}

// MARK: a daemon in this process

/// The real store, backend and services on a scratch state directory with
/// the `minimal` image, and an admin identity: what the worker benchmarks
/// drive (no HTTP in between).
struct BenchDaemon {
    let logger: Logger
    let backend: LinuxSandboxBackend
    let store: Store
    let services: Services
    let admin: Identity

    static func open(stateDir: String, imageDir: String, netnsPool: Int = 8, warm: Int = 2) async throws -> BenchDaemon {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        try? FileManager.default.removeItem(atPath: stateDir)
        try FileManager.default.createDirectory(atPath: stateDir + "/images", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: stateDir + "/images/minimal", withDestinationPath: imageDir)
        let backend = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: stateDir, cgroupParent: "agentd-bench-\(getpid())",
                                       networkNamespacePool: netnsPool, warmPool: warm, spareRoots: warm),
            logger: logger)
        let store = try Store(path: stateDir + "/agentd.db", logger: logger)
        let services = Services(
            config: CoreConfig(stateDirectory: stateDir, defaultImage: "minimal", hostMemoryBytes: 1 << 34, hostCPUs: 2),
            store: store, backend: backend, secretBox: try SecretBox.open(keyFile: stateDir + "/secret.key"),
            version: "bench", logger: logger)
        _ = try await services.auth.bootstrap(adminKeyPath: stateDir + "/admin.key")
        let key = try String(contentsOfFile: stateDir + "/admin.key", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard let admin = try await services.auth.authenticate(key) else { throw ValidationError("no admin") }
        return BenchDaemon(logger: logger, backend: backend, store: store, services: services, admin: admin)
    }

    /// Destroy the sandboxes, close the backend, remove the state directory.
    func close(stateDir: String) async {
        for s in (try? await backend.list()) ?? [] { try? await backend.destroy(s.id) }
        await backend.close()
        try? FileManager.default.removeItem(atPath: stateDir)
    }
}

// MARK: runs

struct RunsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs", abstract: "Agent-step overhead against the bare model call; many sessions at once.")

    @Option(help: "A root filesystem with /bin/sh and /bin/true (rootfs/build minimal).") var imageDir: String
    @Option(help: "Steps measured.") var steps = 1000
    @Option(help: "Steps per run.") var stepsPerRun = 20
    @Option(help: "Sessions running agent turns at once.") var sessions = 100
    @Option(help: "Scratch state directory.") var stateDir = "/tmp/agentd-bench-runs"

    func run() async throws {
        let d = try await BenchDaemon.open(stateDir: stateDir, imageDir: imageDir)
        let (logger, backend, store, services, admin) = (d.logger, d.backend, d.store, d.services, d.admin)
        let model = InstantModel()
        let (port, upstream) = try await model.start()
        let gateway = GatewayClient(config: GatewayConfig(url: "http://127.0.0.1:\(port)/v1", key: nil), logger: logger)

        // Baseline: the same upstream, the same client, called directly with
        // a request of a mid-run size.
        let sample = ChatRequest(model: "steps-1", messages: [.system("You are a benchmark."), .user("go")]
            + (0..<(stepsPerRun / 2)).flatMap { i in [
                ChatMessage(role: .assistant, content: nil,
                            toolCalls: [ToolCall(id: "call_\(i)", name: "exec", arguments: #"{"command":"true"}"#)]),
                ChatMessage(role: .tool, content: "\n[exit code 0]", toolCallID: "call_\(i)"),
            ] }, tools: [], stream: false)
        for _ in 0..<50 { _ = try await gateway.complete(sample) }  // warm-up
        let baseStart = model.count
        for _ in 0...steps { _ = try await gateway.complete(sample) }
        let baseline = model.gaps(from: baseStart)

        // The platform: runs of `stepsPerRun` steps, each a model call, one
        // exec in the sandbox, and the persistence of both.
        let worker = Worker(store: store, sessions: services.sessions, backend: backend, hub: services.hub,
                            control: services.runControl, gateway: gateway, gatewayStatus: services.gatewayStatus,
                            config: WorkerConfig(concurrency: max(sessions, 1), pollInterval: .milliseconds(200),
                                                 stream: .never, maxSteps: 10_000),
                            logger: logger)
        let workerTask = Task { await worker.run() }
        func agent(_ name: String, steps: Int) async throws -> Agent {
            try await services.agents.create(admin, AgentInput(
                name: name, model: "steps-\(steps)", systemPrompt: "You are a benchmark.", tools: ["exec"],
                sandbox: AgentSandbox(image: "minimal", memoryMB: 128)))
        }
        func waitIdle(_ ids: [String]) async throws -> Int {
            var failed = 0
            for id in ids {
                while true {
                    let s = try await services.sessions.get(admin, id: id)
                    if s.status == "idle" { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                for r in try await store.runs(sessionID: id) where r.state != .succeeded { failed += 1 }
            }
            return failed
        }

        let stepper = try await agent("stepper", steps: stepsPerRun)
        var stepGaps: [Double] = []
        var runsFailed = 0
        let warm = try await services.sessions.create(admin, agentID: stepper.id, title: "warm")
        _ = try await services.sessions.postMessage(admin, id: warm.id, content: "go")
        runsFailed += try await waitIdle([warm.id])
        while stepGaps.count < steps {
            let s = try await services.sessions.create(admin, agentID: stepper.id, title: "steps")
            // Start the sandbox first: a cold start is not a step.
            _ = try await services.sessions.ensureRunning(s)
            let from = model.count
            _ = try await services.sessions.postMessage(admin, id: s.id, content: "go")
            runsFailed += try await waitIdle([s.id])
            stepGaps += model.gaps(from: from)
        }
        stepGaps = Array(stepGaps.prefix(steps))

        // Many sessions at once: each a 3-step turn (two exec calls and an answer).
        let busy = try await agent("busy", steps: 3)
        var ids: [String] = []
        for i in 0..<sessions {
            ids.append(try await services.sessions.create(admin, agentID: busy.id, title: "s\(i)").id)
        }
        let t0 = ContinuousClock.now
        for id in ids { _ = try await services.sessions.postMessage(admin, id: id, content: "go") }
        let concurrentFailed = try await waitIdle(ids)
        let wall = ContinuousClock.now - t0
        var events = 0
        for id in ids { events += try await store.events(sessionID: id, after: 0, limit: 100).count }

        workerTask.cancel()
        await workerTask.value
        await d.close(stateDir: stateDir)
        upstream.cancel()

        let b50 = percentile(baseline, 50), b99 = percentile(baseline, 99)
        let s50 = percentile(stepGaps, 50), s99 = percentile(stepGaps, 99)
        print("| measure | p50 ms | p99 ms |")
        print("|---|---|---|")
        print("| model call alone (same client, same upstream), \(baseline.count) calls | \(f2(b50)) | \(f2(b99)) |")
        print("| agent step (model call + exec in the sandbox + persistence), \(stepGaps.count) steps | \(f2(s50)) | \(f2(s99)) |")
        print("| **overhead per step** (step − model call) | **\(f2(s50 - b50))** | **\(f2(s99 - b99))** |")
        print("")
        print("\(sessions) sessions running 3-step agent turns at once: \(sessions - concurrentFailed) of \(sessions) "
              + "runs succeeded, \(runsFailed) failed in the step runs, \(events) events, wall time "
              + "\(f2(ms(wall) / 1000)) s.")
        if concurrentFailed + runsFailed > 0 { throw ExitCode(1) }
    }
}

// MARK: queue

/// The worker on a backlog: how fast 10,000 one-step runs drain against an
/// instant model (runs/s), and how long one team's single run waits behind
/// another team's backlog of 500 (against the same run on an idle worker).
struct QueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "The worker's drain rate on a backlog, and fairness between teams.")

    @Option(help: "A root filesystem (rootfs/build minimal); agents name one, runs here never start it.")
    var imageDir: String
    @Option(help: "Runs in the drain-rate backlog.") var runs = 10_000
    @Option(help: "Runs in the other team's backlog.") var backlog = 500
    @Option(help: "Milliseconds each model answer takes in the fairness phase.") var modelMs = 20
    @Option(help: "The worker's concurrency (agentd.toml's default is 4).") var concurrency = 4
    @Option(help: "Scratch state directory.") var stateDir = "/tmp/agentd-bench-queue"

    func run() async throws {
        // One-step runs use no sandbox: a backend that is never asked, without pools.
        let d = try await BenchDaemon.open(stateDir: stateDir, imageDir: imageDir, netnsPool: 0, warm: 0)
        let (logger, backend, store, services, admin) = (d.logger, d.backend, d.store, d.services, d.admin)
        let model = InstantModel()
        let (port, upstream) = try await model.start()
        let teamA = try await services.auth.createTeam(admin, name: "team-a")
        let teamB = try await services.auth.createTeam(admin, name: "team-b")
        func agent(_ team: String, _ model: String) async throws -> Agent {
            try await services.agents.create(admin, AgentInput(
                name: "\(team.suffix(6))-\(model)", model: model, systemPrompt: "", tools: [],
                sandbox: AgentSandbox(image: "minimal"), teamID: team))
        }
        func queue(_ agent: Agent, _ n: Int) async throws -> [String] {
            var ids: [String] = []
            for i in 0..<n {
                let s = try await services.sessions.create(admin, agentID: agent.id, title: "q\(i)")
                _ = try await services.sessions.postMessage(admin, id: s.id, content: "go")
                ids.append(s.id)
            }
            return ids
        }
        func drained() async throws -> Bool {
            let c = try await store.runCounts()
            return c.queued + c.running == 0
        }
        func runWorker() -> (Worker, Task<Void, Never>) {
            // Each worker shuts its gateway client down when it stops.
            let gateway = GatewayClient(config: GatewayConfig(url: "http://127.0.0.1:\(port)/v1", key: nil),
                                        logger: logger)
            let worker = Worker(store: store, sessions: services.sessions, backend: backend, hub: services.hub,
                                control: services.runControl, gateway: gateway, gatewayStatus: services.gatewayStatus,
                                config: WorkerConfig(concurrency: concurrency, pollInterval: .milliseconds(200),
                                                     stream: .never),
                                logger: logger)
            return (worker, Task { await worker.run() })
        }
        func waitRun(_ sessionID: String) async throws {
            while try await services.sessions.get(admin, id: sessionID).status != "idle" {
                try await Task.sleep(for: .milliseconds(1))
            }
        }

        // Drain rate: the backlog is queued first, then the worker starts.
        let quick = try await agent(teamA.id, "steps-1")
        _ = try await queue(quick, runs)
        var usage0 = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage0)
        let t0 = ContinuousClock.now
        let (_, drain) = runWorker()
        while try await !drained() { try await Task.sleep(for: .milliseconds(5)) }
        let wall = ms(ContinuousClock.now - t0) / 1000
        var usage1 = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage1)
        drain.cancel()
        await drain.value
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        let cpu = seconds(usage1.ru_utime) + seconds(usage1.ru_stime) - seconds(usage0.ru_utime) - seconds(usage0.ru_stime)
        let failed = try await store.recentRuns(teamID: nil, state: "failed", limit: 10).count

        // Fairness: team B's single run, alone, then behind team A's backlog.
        let slowA = try await agent(teamA.id, "steps-1-ms-\(modelMs)")
        let slowB = try await agent(teamB.id, "steps-1-ms-\(modelMs)")
        let (_, fair) = runWorker()
        var alone: [Double] = []
        for _ in 0..<5 {
            let a = ContinuousClock.now
            let id = try await queue(slowB, 1)[0]
            try await waitRun(id)
            alone.append(ms(ContinuousClock.now - a))
        }
        fair.cancel()
        await fair.value
        _ = try await queue(slowA, backlog)
        let (_, loaded) = runWorker()
        try await Task.sleep(for: .milliseconds(5 * modelMs))  // the backlog is being served
        let b0 = ContinuousClock.now
        let bID = try await queue(slowB, 1)[0]
        try await waitRun(bID)
        let behind = ms(ContinuousClock.now - b0)
        let left = try await store.runCounts().queued
        loaded.cancel()
        await loaded.value

        await d.close(stateDir: stateDir)
        upstream.cancel()

        print("| backlog of \(runs) one-step runs (instant model), worker concurrency \(concurrency) | "
              + "\(Int(Double(runs) / wall)) runs/s | drained in \(f2(wall)) s, \(f2(cpu)) s of CPU "
              + "(\(Int(cpu / wall * 100)) % of one core), \(failed) failed |")
        print("| team B's one run (model \(modelMs) ms) behind team A's \(backlog) queued runs | \(f2(behind)) ms | "
              + "alone on an idle worker: median \(f2(percentile(alone, 50))) ms; ratio \(f2(behind / percentile(alone, 50)))×; "
              + "team A's runs still queued when B's ended: \(left) |")
    }
}

// MARK: appends

struct AppendsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "appends", abstract: "Durable event appends per second under concurrent sessions.")

    @Option var sessions = 64
    @Option var seconds = 5.0
    @Option var stateDir = "/tmp/agentd-bench-appends"

    func run() async throws {
        try? FileManager.default.removeItem(atPath: stateDir)
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let store = try Store(path: stateDir + "/agentd.db")
        let team = try await store.createTeam(id: Identifier.make(.team), name: "bench", audit: nil)
        let agent = Agent(id: Identifier.make(.agent), teamID: team.id, name: "a", model: "m", systemPrompt: "",
                          tools: [], sandbox: AgentSandbox(), env: [:], secrets: [], harness: nil,
                          limits: AgentLimits(), createdAt: Date(), updatedAt: Date())
        try await store.createAgent(agent, audit: nil)
        var ids: [String] = []
        for i in 0..<sessions {
            let id = Identifier.make(.session)
            _ = try await store.createSession(id: id, teamID: team.id, agentID: agent.id, title: "s\(i)", audit: nil)
            ids.append(id)
        }
        let payload: JSONValue = .object(["text": .string(String(repeating: "x", count: 200))])
        let total = Counter()
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        let t0 = ContinuousClock.now
        // Each task keeps its own latencies (ms from call to acknowledgement).
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for id in ids {
                group.addTask {
                    var mine: [Double] = []
                    while ContinuousClock.now < deadline {
                        let a = ContinuousClock.now
                        _ = try await store.appendEvents(sessionID: id, [NewEvent(kind: .toolResult, data: payload)])
                        mine.append(ms(ContinuousClock.now - a))
                        total.add()
                    }
                    return mine
                }
            }
            var all: [Double] = []
            for try await part in group { all += part }
            return all
        }
        let elapsed = ms(ContinuousClock.now - t0) / 1000
        let n = total.value
        print("| durable event appends (synchronous=FULL, each acknowledged after commit), \(sessions) concurrent "
              + "sessions, one event per append | \(Int(Double(n) / elapsed))/s | \(n) events in \(f2(elapsed)) s; "
              + "latency p50 \(f2(percentile(latencies, 50))) ms, p99 \(f2(percentile(latencies, 99))) ms |")
        try? FileManager.default.removeItem(atPath: stateDir)
    }
}

// MARK: populate

struct Populate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "populate", abstract: "Fill a state directory's store with sessions and events.")

    @Option var stateDir: String
    @Option var sessions = 10_000
    @Option var events = 1_000_000

    func run() async throws {
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        let store = try Store(path: stateDir + "/agentd.db")
        let team = try await store.createTeam(id: Identifier.make(.team), name: "bench", audit: nil)
        let agent = Agent(id: Identifier.make(.agent), teamID: team.id, name: "a", model: "m", systemPrompt: "",
                          tools: [], sandbox: AgentSandbox(image: "minimal"), env: [:], secrets: [], harness: nil,
                          limits: AgentLimits(), createdAt: Date(), updatedAt: Date())
        try await store.createAgent(agent, audit: nil)
        let perSession = max(1, events / sessions)
        let payload: JSONValue = .object(["text": .string(String(repeating: "x", count: 100))])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<8 {
                group.addTask {
                    for i in stride(from: w, to: sessions, by: 8) {
                        let id = Identifier.make(.session)
                        _ = try await store.createSession(id: id, teamID: team.id, agentID: agent.id, title: "s\(i)",
                                                          audit: nil)
                        var left = perSession
                        while left > 0 {
                            let n = min(left, 500)
                            _ = try await store.appendEvents(sessionID: id, Array(
                                repeating: NewEvent(kind: .userMessage, data: payload), count: n))
                            left -= n
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        print("populated \(stateDir): \(sessions) sessions, \(perSession * sessions) events")
    }
}

// MARK: hello

struct Hello: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hello", abstract: "A bare Hummingbird hello-world: the HTTP baseline for wrk.")

    @Option var port = 18080

    func run() async throws {
        let router = Router()
        router.get("/") { _, _ in "hello" }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
                              logger: Logger(label: "hello", factory: { _ in SwiftLogNoOpLogHandler() }))
        try await app.runService()
    }
}

final class Counter: Sendable {
    private let n = Atomic<Int>(0)
    func add() { n.add(1, ordering: .relaxed) }
    var value: Int { n.load(ordering: .relaxed) }
}
