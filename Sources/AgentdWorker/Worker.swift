import AgentdCore
import AgentdModel
import AgentdStore
import Logging
import Metrics
import SandboxKit
import Synchronization
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct WorkerConfig: Sendable {
    public enum StreamMode: String, Sendable, CaseIterable {
        /// Stream from the model when someone watches the session's events.
        case auto
        case always
        case never
    }

    /// Runs at once, over all sessions (one per session at most).
    public var concurrency: Int
    public var leaseSeconds: Double
    /// How often the queue is checked when nothing woke the worker.
    public var pollInterval: Duration
    public var stream: StreamMode
    public var maxSteps: Int
    public var maxRunSeconds: Int
    public var maxToolOutputBytes: Int
    public var toolTimeoutSeconds: Int
    /// The transcript is compacted beyond this many characters (~4 per token).
    public var contextChars: Int
    /// Where harness sandboxes find the gateway: 127.0.0.1:harnessPort.
    public var harnessPort: UInt16
    public var owner: String

    public init(concurrency: Int = 4, leaseSeconds: Double = 30, pollInterval: Duration = .seconds(2),
                stream: StreamMode = .auto, maxSteps: Int = 50, maxRunSeconds: Int = 3600,
                maxToolOutputBytes: Int = 16 << 10, toolTimeoutSeconds: Int = 300, contextChars: Int = 400_000,
                harnessPort: UInt16 = 4000,
                owner: String = "agentd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))") {
        self.concurrency = concurrency
        self.leaseSeconds = leaseSeconds
        self.pollInterval = pollInterval
        self.stream = stream
        self.maxSteps = maxSteps
        self.maxRunSeconds = maxRunSeconds
        self.maxToolOutputBytes = maxToolOutputBytes
        self.toolTimeoutSeconds = toolTimeoutSeconds
        self.contextChars = contextChars
        self.harnessPort = harnessPort
        self.owner = owner
    }
}

/// How a run ended (or stopped without ending).
enum RunOutcome: Sendable, Equatable {
    case succeeded
    case failed(String)
    case cancelled
    /// agentd is shutting down, or the lease was lost: the run stays
    /// `running` and whoever holds it next resumes it.
    case interrupted
    /// The session was deleted under the run.
    case gone
}

/// Claims queued runs and drives them: the agent loop through the model
/// gateway, or the agent's own harness command.  Every step is persisted
/// before the next begins; a run interrupted anywhere is resumed by the
/// next claim from its transcript.
public final class Worker: Sendable {
    let store: Store
    let sessions: SessionService
    let backend: any SandboxBackend
    let hub: EventHub
    let control: RunControl
    let gateway: GatewayClient?
    let gatewayStatus: GatewayStatus
    let config: WorkerConfig
    let logger: Logger
    private let active = Atomic<Int>(0)

    public init(store: Store, sessions: SessionService, backend: any SandboxBackend, hub: EventHub, control: RunControl,
                gateway: GatewayClient?, gatewayStatus: GatewayStatus, config: WorkerConfig, logger: Logger) {
        self.store = store
        self.sessions = sessions
        self.backend = backend
        self.hub = hub
        self.control = control
        self.gateway = gateway
        self.gatewayStatus = gatewayStatus
        self.config = config
        self.logger = logger
        gatewayStatus.configure(url: gateway?.config.url)
    }

    public var activeRuns: Int { active.load(ordering: .relaxed) }

    /// Until cancelled (graceful shutdown): runs in progress then stop where
    /// they are and stay claimable.
    public func run() async {
        logger.info("worker started", metadata: ["concurrency": "\(config.concurrency)", "owner": "\(config.owner)"])
        await withDiscardingTaskGroup { group in
            group.addTask { await self.probeGateway() }
            while !Task.isCancelled {
                while active.load(ordering: .relaxed) < config.concurrency {
                    let claim: RunClaim?
                    do {
                        claim = try await store.claimRun(owner: config.owner, leaseSeconds: config.leaseSeconds)
                    } catch {
                        logger.error("cannot claim runs", metadata: ["error": "\(error)"])
                        break
                    }
                    guard let claim else { break }
                    active.add(1, ordering: .relaxed)
                    group.addTask {
                        await self.execute(claim)
                        self.active.subtract(1, ordering: .relaxed)
                        self.control.notify()
                    }
                }
                await control.wait(timeout: config.pollInterval)
            }
            group.cancelAll()
        }
        await gateway?.shutdown()
        logger.info("worker stopped")
    }

    /// A run, with its lease kept alive and its cancellation watched.
    func execute(_ claim: RunClaim) async {
        let run = claim.run
        let userCancel = Flag()
        control.register(run: run.id) { userCancel.set() }
        defer { control.unregister(run: run.id) }
        var l = logger
        l[metadataKey: "run"] = "\(run.id)"
        l[metadataKey: "session"] = "\(run.sessionID)"
        let log = l
        log.info(claim.resumed ? "resuming run" : "starting run")
        Counter(label: "agentd_runs_started_total").increment()
        // The run holds the session's sandbox from its claim to its end
        // (model steps, tools, a harness command): the idle stopper leaves
        // it alone however long a step takes.
        let lease = await sessions.leases.acquire(run.sessionID)

        let outcome: RunOutcome = await withTaskGroup(of: RunOutcome?.self) { group in
            group.addTask {
                do {
                    return try await self.drive(claim, logger: log)
                } catch is CancellationError {
                    return nil
                } catch let e as SandboxUnavailable {
                    return .failed(e.description)
                } catch let e as GatewayError {
                    self.gatewayStatus.failed(e.message)
                    return .failed("model gateway: \(e.message)")
                } catch let e as StoreError {
                    log.error("store error in run", metadata: ["error": "\(e)"])
                    return .interrupted
                } catch {
                    return .failed("\(error)")
                }
            }
            // Lease: renewed at a third of its length; lost means stop.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(Int64(self.config.leaseSeconds * 1000 / 3)))
                    if Task.isCancelled { return nil }
                    let kept = (try? await self.store.renewLease(runID: run.id, owner: self.config.owner,
                                                                 leaseSeconds: self.config.leaseSeconds)) ?? true
                    if !kept {
                        log.warning("run lease lost; stopping")
                        return .interrupted
                    }
                }
                return nil
            }
            // Cancellation: in memory at once, from the store every 0.5 s.
            group.addTask {
                // The driver checked the store as it began: the first look
                // here comes with the next poll of the store.
                var n = 1
                while !Task.isCancelled {
                    if userCancel.isSet { return .cancelled }
                    if n % 5 == 0, (try? await self.store.isCancelRequested(runID: run.id)) == true { return .cancelled }
                    n += 1
                    try? await Task.sleep(for: .milliseconds(100))
                }
                return nil
            }
            var result: RunOutcome?
            for await r in group {
                if let r {
                    result = r
                    break
                }
                // The driver ended by cancellation: shutdown, or a watcher fired first.
                break
            }
            group.cancelAll()
            if result == nil && userCancel.isSet { result = .cancelled }
            return result ?? .interrupted
        }
        await lease.release()
        await finish(run, outcome, logger: log)
    }

    func finish(_ run: Run, _ outcome: RunOutcome, logger log: Logger) async {
        let state: RunState
        var error: String?
        switch outcome {
        case .interrupted:
            log.info("run interrupted; it will resume")
            return
        case .gone:
            return
        case .succeeded: state = .succeeded
        case .cancelled: state = .cancelled
        case .failed(let reason):
            state = .failed
            error = reason
        }
        var events: [NewEvent] = []
        // Calls left without a result (cancelled or failed mid-tool) get one,
        // so the transcript stays a valid conversation for the next run (a
        // run that succeeded ended on an answer: it has none).
        if state != .succeeded, let mine = try? await store.events(runID: run.id) {
            for call in Transcript.unanswered(mine, runID: run.id) {
                let id = call.data["id"]?.stringValue ?? ""
                events.append(NewEvent(kind: .toolResult, runID: run.id, data: .object([
                    "id": .string(id), "name": call.data["name"] ?? .null,
                    "output": .string(state == .cancelled ? "the run was cancelled before this call finished"
                                                         : "the run failed before this call finished"),
                    "truncated": .bool(false), "error": .bool(true)])))
            }
        }
        if let error {
            events.append(NewEvent(kind: .error, runID: run.id,
                                   data: .object(["run_id": .string(run.id), "message": .string(error)])))
        }
        var status: [String: JSONValue] = ["run_id": .string(run.id), "state": .string(state.rawValue)]
        if let error { status["error"] = .string(error) }
        events.append(NewEvent(kind: .runStatus, runID: run.id, data: .object(status)))
        do {
            let out = try await store.finishRun(runID: run.id, sessionID: run.sessionID, state: state, error: error,
                                                events: events)
            hub.publish(out)
        } catch {
            log.error("cannot record the end of a run", metadata: ["error": "\(error)"])
        }
        Counter(label: "agentd_runs_finished_total", dimensions: [("state", state.rawValue)]).increment()
        log.info("run ended", metadata: ["state": "\(state.rawValue)", "error": "\(error ?? "")"])
    }

    /// Record events of a run and tell subscribers.
    func record(_ run: Run, _ events: [NewEvent], usage: Usage? = nil, step: Bool = false) async throws -> [Event] {
        let out = try await store.recordStep(runID: run.id, sessionID: run.sessionID, events: events, usage: usage,
                                             stepDone: step)
        hub.publish(out)
        return out
    }

    func allEvents(_ sessionID: String) async throws -> [Event] {
        var out: [Event] = []
        var after: Int64 = 0
        while true {
            let page = try await store.events(sessionID: sessionID, after: after, limit: 5000)
            out += page
            guard let last = page.last, page.count == 5000 else { return out }
            after = last.seq
        }
    }

    /// /v1/status reports whether the gateway answers; checked every 30 s.
    func probeGateway() async {
        guard let gateway else { return }
        while !Task.isCancelled {
            if let e = await gateway.probe() { gatewayStatus.failed(e) } else { gatewayStatus.succeeded() }
            try? await Task.sleep(for: .seconds(30))
        }
    }
}

final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
