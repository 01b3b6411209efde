import AgentdModel
import AgentdStore
import Logging
import Metrics
import SandboxKit
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Sessions and everything hanging off them: the transcript, runs, and the
/// session's sandbox (created on first use, stopped when idle, started again
/// transparently).
public final class SessionService: Sendable {
    let store: Store
    let backend: any SandboxBackend
    let secrets: SecretService
    let hub: EventHub
    let config: CoreConfig
    let logger: Logger
    /// Who uses which session's sandbox: the one owner of "in use".
    public let leases = SandboxLeases()
    /// What each team's running sandboxes hold, against its quotas.
    let admission = TeamAdmission()
    /// Free space kept for the database (507 below it).
    public let disk: DiskReserve
    /// When each session was last told (an event) that its sandbox could
    /// not start for lack of space, so that retries do not flood it.
    let lowDiskNoticed = Mutex<[String: ContinuousClock.Instant]>([:])
    /// Sessions whose recorded sandbox state disagreed with the backend at
    /// the last reconciliation (fixed when it still disagrees at the next).
    let disagreeing = Mutex<Set<String>>([])
    public let runControl: RunControl

    public init(store: Store, backend: any SandboxBackend, secrets: SecretService, hub: EventHub, config: CoreConfig,
                runControl: RunControl = RunControl(), logger: Logger) {
        self.runControl = runControl
        self.store = store
        self.backend = backend
        self.secrets = secrets
        self.hub = hub
        self.config = config
        self.logger = logger
        self.disk = DiskReserve(path: config.stateDirectory, reserve: config.diskReserveBytes)
    }

    // MARK: sessions

    public func get(_ caller: Identity, id: String) async throws -> Session {
        try Validate.id(id, .session, field: "id")
        guard let s = try await store.session(id: id, teamID: caller.scope) else { throw AgentdError.notFound("session") }
        return s
    }

    public func create(_ caller: Identity, agentID: String?, title: String?) async throws -> Session {
        try caller.require(.member, "create sessions")
        guard let agentID else { throw AgentdError.invalid("agent_id is required", field: "agent_id") }
        try Validate.id(agentID, .agent, field: "agent_id")
        guard let agent = try await store.agent(id: agentID, teamID: caller.scope) else {
            throw AgentdError.notFound("agent", field: "agent_id")
        }
        let title = title ?? ""
        try Rules.title.check(title, field: "title")
        let s = try await store.createSession(id: Identifier.make(.session), teamID: agent.teamID, agentID: agent.id,
                                              title: title, audit: caller.audit("create", "session", nil, team: agent.teamID))
        Counter(label: "agentd_sessions_created_total").increment()
        return s
    }

    public func list(_ caller: Identity, agentID: String?, status: String?, query: String?, limit: Int?, cursor: String?)
        async throws -> Page<Session>
    {
        if let agentID { try Validate.id(agentID, .agent, field: "agent_id") }
        if let status { try Rules.sessionStatus.check(status, field: "status") }
        let limit = limit ?? 50
        try Rules.sessionsLimit.check(limit, field: "limit")
        if let query { try Rules.titleQuery.check(query, field: "q") }
        if let cursor { try Rules.cursor.check(cursor, field: "cursor") }
        do {
            return try await store.sessions(SessionQuery(teamID: caller.scope, agentID: agentID, status: status,
                                                         titleContains: query, limit: limit, cursor: cursor))
        } catch StoreError.conflict {
            throw AgentdError.invalid("cursor is not valid", field: "cursor")
        }
    }

    public func delete(_ caller: Identity, id: String) async throws {
        try caller.require(.member, "delete sessions")
        let s = try await get(caller, id: id)
        // The sandbox and its files go first: a crash in between leaves a
        // session without a sandbox (made again on use), never the reverse.
        if let sid = try? SandboxID(s.id) {
            do {
                try await backend.destroy(sid)
            } catch let e as SandboxError {
                throw AgentdError.from(e)
            }
        }
        await leases.forget(s.id)
        await admission.release(session: s.id)
        guard try await store.deleteSession(id: s.id, teamID: caller.scope, audit: caller.audit("delete", "session", s.id))
        else { throw AgentdError.notFound("session") }
        hub.close(sessionID: s.id)
    }

    // MARK: messages and runs

    public func postMessage(_ caller: Identity, id: String, content: String) async throws -> MessageAccepted {
        try caller.require(.member, "send messages")
        let s = try await get(caller, id: id)
        try Rules.content.check(content, field: "content")
        let (event, run) = try await store.postMessage(
            sessionID: s.id, teamID: s.teamID, runID: Identifier.make(.run),
            content: .object(["text": .string(content)]), audit: caller.audit("message", "session", s.id, team: s.teamID))
        hub.publish([event])
        runControl.notify()
        Counter(label: "agentd_messages_total").increment()
        return MessageAccepted(runID: run.id, seq: event.seq)
    }

    public func messages(_ caller: Identity, id: String, after: Int64?, limit: Int?) async throws -> [Event] {
        let s = try await get(caller, id: id)
        let after = after ?? 0
        try Rules.seq.check(Int(after), field: "after")
        let limit = limit ?? 1000
        try Rules.messagesLimit.check(limit, field: "limit")
        return try await store.events(sessionID: s.id, after: after, limit: limit)
    }

    public func run(_ caller: Identity, sessionID: String, runID: String) async throws -> Run {
        let s = try await get(caller, id: sessionID)
        try Validate.id(runID, .run, field: "run_id")
        guard var run = try await store.run(id: runID, sessionID: s.id) else { throw AgentdError.notFound("run") }
        run.events = try await store.events(runID: run.id)
        return run
    }

    public func recentRuns(_ caller: Identity, state: String?, limit: Int?) async throws -> Page<Run> {
        if let state, RunState(rawValue: state) == nil {
            throw AgentdError.invalid("state must be queued, running, succeeded, failed or cancelled", field: "state")
        }
        let limit = limit ?? 20
        try Rules.runsLimit.check(limit, field: "limit")
        return Page(data: try await store.recentRuns(teamID: caller.scope, state: state, limit: limit), nextCursor: nil)
    }

    /// Cancel the active run: a queued run ends at once; a running one is
    /// flagged and its worker stops it.
    public func cancel(_ caller: Identity, id: String) async throws -> Run {
        try caller.require(.member, "cancel runs")
        let s = try await get(caller, id: id)
        guard let run = try await store.requestCancel(sessionID: s.id, audit: caller.audit("cancel", "session", s.id)) else {
            throw AgentdError.conflict("the session has no active run")
        }
        if run.state == .queued {
            let events = try await store.finishRun(
                runID: run.id, sessionID: s.id, state: .cancelled, error: nil,
                events: [NewEvent(kind: .runStatus, runID: run.id,
                                  data: .object(["run_id": .string(run.id), "state": .string("cancelled")]))])
            hub.publish(events)
        } else {
            runControl.cancel(run: run.id)
        }
        return try await store.run(id: run.id, sessionID: s.id) ?? run
    }

    /// Append events to a session's transcript and tell subscribers.
    public func append(sessionID: String, _ events: [NewEvent]) async throws -> [Event] {
        let out = try await store.appendEvents(sessionID: sessionID, events)
        hub.publish(out)
        return out
    }

    // MARK: sandbox

    static func sandboxID(_ s: Session) throws -> SandboxID {
        do { return try SandboxID(s.id) } catch { throw AgentdError.internal("session id is not a sandbox id") }
    }

    func hostname(_ s: Session) -> String {
        Hostname.sanitize(s.title.isEmpty ? s.id : s.title)
    }

    /// The session's sandbox, created and started as needed, its spec kept
    /// in step with the agent's settings.
    public func ensureRunning(_ s: Session) async throws -> SandboxID {
        let sid = try Self.sandboxID(s)
        guard let agent = try await store.agent(id: s.agentID, teamID: nil) else {
            throw AgentdError.conflict("the session's agent no longer exists")
        }
        let spec = AgentService.sandboxSpec(agent, hostname: hostname(s))
        do {
            let status: SandboxStatus
            if let existing = try await existingSandbox(sid) {
                status = existing
                if existing.state == .stopped {
                    try await refuseWhenLowOnDisk(s)
                    if existing.spec != spec { try await backend.update(sid, spec: spec) }
                }
            } else {
                try await refuseWhenLowOnDisk(s)
                status = try await backend.create(sid, spec: spec)
            }
            switch status.state {
            case .running: return sid
            case .paused: throw AgentdError.conflict("the sandbox is paused; resume it first")
            case .stopped:
                let quotas = try await store.teams(id: s.teamID).first?.quotas ?? TeamQuotas()
                try await admission.admit(session: s.id, team: s.teamID, limits: status.limits, quotas: quotas)
                do {
                    try await backend.start(sid)
                } catch {
                    await admission.release(session: s.id)
                    throw error
                }
                Counter(label: "agentd_sandbox_starts_total").increment()
                do {
                    try await sandboxChanged(s.id, "running", reason: "started")
                } catch {
                    // Not recorded (the disk is full): it must not run
                    // unrecorded either.
                    try? await backend.stop(sid)
                    await admission.release(session: s.id)
                    throw error
                }
                return sid
            }
        } catch let e as SandboxError {
            if e.kind == .system { logger.error("sandbox failed", metadata: ["session": "\(s.id)", "error": "\(e)"]) }
            throw AgentdError.from(e)
        }
    }

    /// The session's sandbox, or nil when it has none yet.  Only "not
    /// found" means none: any other failure of the backend is an error, not
    /// a reason to make a new sandbox or to report "none".
    func existingSandbox(_ sid: SandboxID) async throws -> SandboxStatus? {
        do {
            return try await backend.status(sid)
        } catch let e as SandboxError where e.kind == .notFound {
            return nil
        }
    }

    /// A 507 when the state directory's file system is below the reserve,
    /// and (at most once a minute) an event in the session saying so.
    func refuseWhenLowOnDisk(_ s: Session) async throws {
        do {
            try disk.check("starting the sandbox")
        } catch {
            let now = ContinuousClock.now
            let tell = lowDiskNoticed.withLock { m -> Bool in
                if let last = m[s.id], now - last < .seconds(60) { return false }
                m[s.id] = now
                return true
            }
            if tell {
                _ = try? await append(sessionID: s.id, [NewEvent(kind: .error, data: .object([
                    "code": .string(error.code), "message": .string(error.message)]))])
            }
            throw error
        }
    }

    func sandboxChanged(_ sessionID: String, _ state: String, reason: String, message: String? = nil) async throws {
        if state == "stopped" || state == "none" { await admission.release(session: sessionID) }
        try await store.setSandboxState(sessionID: sessionID, state: state)
        var data: [String: JSONValue] = ["state": .string(state), "reason": .string(reason)]
        if let message { data["message"] = .string(message) }
        _ = try await append(sessionID: sessionID, [NewEvent(kind: .sandboxStatus, data: .object(data))])
    }

    /// The environment of a command in this session's sandbox, by
    /// precedence (highest first): agentd's own AGENTD_ variables > the
    /// agent's secrets > the team's secrets > CONTAINER_ENV_ passthrough >
    /// the agent's env.
    public func environment(_ s: Session, agent: Agent) async throws -> [String: String] {
        var env = agent.env
        for (k, v) in config.containerEnv { env[k] = v }
        let (team, own) = try await secrets.values(for: agent)
        for (k, v) in team where k != Self.gatewayKeySecret { env[k] = v }
        for (k, v) in own where k != Self.gatewayKeySecret { env[k] = v }
        env["AGENTD_SESSION_ID"] = s.id
        env["AGENTD_AGENT_ID"] = agent.id
        env["AGENTD_TEAM_ID"] = s.teamID
        return env
    }

    /// A secret of this name is the key for the model gateway in this
    /// team's (or agent's) runs, instead of the configured gateway.key.  It
    /// is never put in a sandbox's environment as itself.
    public static let gatewayKeySecret = "GATEWAY_KEY"

    /// The gateway key from the agent's or its team's GATEWAY_KEY secret.
    public func gatewayKey(for agent: Agent) async throws -> String? {
        let (team, own) = try await secrets.values(for: agent)
        return own[Self.gatewayKeySecret] ?? team[Self.gatewayKeySecret]
    }

    /// Run `body` with the sandbox running and leased.
    public func withSandbox<T: Sendable>(_ s: Session, _ body: (SandboxID) async throws -> T) async throws -> T {
        let lease = await leases.acquire(s.id)
        do {
            let sid = try await ensureRunning(s)
            let r = try await body(sid)
            await lease.release()
            return r
        } catch let e as SandboxError {
            await lease.release()
            // The answer hides a system failure's details; the log keeps them.
            if e.kind == .system { logger.error("sandbox operation failed", metadata: ["session": "\(s.id)", "error": "\(e)"]) }
            throw AgentdError.from(e)
        } catch {
            await lease.release()
            throw error
        }
    }

    public func exec(_ caller: Identity, id: String, _ input: ExecInput) async throws -> (any ExecProcess, Session) {
        try caller.require(.member, "run commands")
        let s = try await get(caller, id: id)
        guard let agent = try await store.agent(id: s.agentID, teamID: nil) else {
            throw AgentdError.conflict("the session's agent no longer exists")
        }
        let request = try execRequest(input, env: try await environment(s, agent: agent))
        let lease = await leases.acquire(s.id)
        do {
            let sid = try await ensureRunning(s)
            let process = try await backend.exec(sid, request)
            Counter(label: "agentd_exec_total").increment()
            return (TrackedProcess(inner: process, onEnd: { await lease.release() }), s)
        } catch let e as SandboxError {
            await lease.release()
            throw AgentdError.from(e)
        } catch {
            await lease.release()
            throw error
        }
    }

    func execRequest(_ input: ExecInput, env base: [String: String]) throws -> ExecRequest {
        let command: Command
        switch input.command {
        case .argv(let a): command = .argv(a)
        case .shell(let s): command = .shell(s)
        }
        do { try command.validate() } catch { throw AgentdError.from(error) }
        var env = base
        for (k, v) in input.env ?? [:] {
            try Rules.userEnvName.check(k, field: "env")
            try Rules.envValue.check(v, field: "env")
            env[k] = v
        }
        var timeout = config.execDefaultTimeout
        if let t = input.timeoutS {
            try Rules.execTimeout.check(t, field: "timeout_s")
            guard let d = Checked.duration(seconds: t, max: config.execMaxTimeout) else {
                throw AgentdError.invalid(
                    "timeout_s must be more than 0 and at most \(Int(Checked.seconds(config.execMaxTimeout))) seconds",
                    field: "timeout_s")
            }
            timeout = d
        }
        if let cwd = input.cwd { try Rules.cwd.check(cwd, field: "cwd") }
        if let stdin = input.stdin { try Rules.stdin.check(stdin, field: "stdin") }
        return ExecRequest(command: command, cwd: input.cwd, env: env, stdin: input.stdin.map { Array($0.utf8) },
                           timeout: timeout)
    }

    // MARK: files

    public func listFiles(_ caller: Identity, id: String, path: String) async throws -> [FileEntry] {
        let s = try await get(caller, id: id)
        try Rules.sandboxPath.check(path, field: "path")
        return try await withSandbox(s) { sid in
            try await backend.listFiles(sid, path: path).map(Self.entry)
        }
    }

    public func statFile(_ caller: Identity, id: String, path: String) async throws -> FileEntry {
        let s = try await get(caller, id: id)
        try Rules.sandboxPath.check(path, field: "path")
        return try await withSandbox(s) { sid in Self.entry(try await backend.stat(sid, path: path)) }
    }

    static func entry(_ f: FileInfo) -> FileEntry {
        FileEntry(name: f.name, type: f.kind.rawValue, size: f.size, mode: "0" + String(f.mode, radix: 8),
                  modifiedAt: f.modifiedAt)
    }

    /// The content as a stream; the sandbox is leased until it ends.
    public func readFile(_ caller: Identity, id: String, path: String) async throws -> (FileEntry, ByteChunks) {
        let s = try await get(caller, id: id)
        try Rules.sandboxPath.check(path, field: "path")
        let lease = await leases.acquire(s.id)
        do {
            let sid = try await ensureRunning(s)
            let info = try await backend.stat(sid, path: path)
            guard info.kind == .file else {
                throw AgentdError.conflict("\(info.path) is not a regular file", field: "path")
            }
            let chunks = try await backend.readFile(sid, path: path)
            let tracked = ByteChunks { continuation in
                let task = Task {
                    do {
                        for try await c in chunks { continuation.yield(c) }
                        continuation.finish()
                    } catch {
                        continuation.finish(throwing: error)
                    }
                    await lease.release()
                }
                continuation.onTermination = { _ in task.cancel() }
            }
            return (Self.entry(info), tracked)
        } catch let e as SandboxError {
            await lease.release()
            throw AgentdError.from(e)
        } catch {
            await lease.release()
            throw error
        }
    }

    public func writeFile(_ caller: Identity, id: String, path: String, contents: ByteChunks) async throws -> FileEntry {
        try caller.require(.member, "upload files")
        let s = try await get(caller, id: id)
        try Rules.sandboxPath.check(path, field: "path")
        try disk.check("the upload")
        return try await withSandbox(s) { sid in
            Self.entry(try await backend.writeFile(sid, path: path, mode: 0o644, contents: contents))
        }
    }

    public func removeFile(_ caller: Identity, id: String, path: String) async throws {
        try caller.require(.member, "delete files")
        let s = try await get(caller, id: id)
        try Rules.sandboxPath.check(path, field: "path")
        try await withSandbox(s) { sid in try await backend.removeFile(sid, path: path, recursive: true) }
    }

    // MARK: sandbox state and actions

    /// What a team's running sandboxes hold now.
    public func sandboxUsage(team: String) async -> (count: Int, memoryMB: Int, cpus: Double) {
        await admission.usage(team)
    }

    public func sandboxInfo(_ caller: Identity, id: String) async throws -> SandboxInfo {
        let s = try await get(caller, id: id)
        let sid = try Self.sandboxID(s)
        guard let st = try await existingSandbox(sid) else {
            let agent = try await store.agent(id: s.agentID, teamID: nil)
            return SandboxInfo(state: "none", image: agent?.sandbox.image ?? "", limits: nil, usage: nil, startedAt: nil,
                               idleStopAt: nil)
        }
        let l = st.limits
        let limits = SandboxLimitsInfo(memoryBytes: l.memoryBytes, pids: l.pids,
                                       cpus: l.cpuMillis.map { Double($0) / 1000 }, tmpBytes: l.tmpBytes)
        let usage = st.usage.map {
            SandboxUsageInfo(memoryBytes: $0.memoryBytes, memoryPeakBytes: $0.memoryPeakBytes,
                             cpuSeconds: $0.cpuMicros.map { Double($0) / 1e6 }, pids: $0.pids, oomKills: $0.oomKills)
        }
        var idleAt: Date? = nil
        if st.state == .running, let last = await leases.lastUse(s.id) {
            let remaining = config.idleStopAfter - (ContinuousClock.now - last)
            let c = remaining.components
            idleAt = Date().addingTimeInterval(max(0, Double(c.seconds) + Double(c.attoseconds) / 1e18))
        }
        return SandboxInfo(state: st.state.rawValue, image: st.spec.image, limits: limits, usage: usage,
                           startedAt: st.startedAt, idleStopAt: idleAt)
    }

    public func sandboxAction(_ caller: Identity, id: String, action: String) async throws -> SandboxInfo {
        try caller.require(.member, "control sandboxes")
        let s = try await get(caller, id: id)
        let sid = try Self.sandboxID(s)
        do {
            switch action {
            case "start":
                _ = try await ensureRunning(s)
                await leases.touch(s.id)
            case "stop":
                if try await existingSandbox(sid) != nil {
                    try await backend.stop(sid)
                    try await sandboxChanged(s.id, "stopped", reason: "stopped")
                }
            case "pause":
                try await backend.pause(sid)
                try await sandboxChanged(s.id, "paused", reason: "paused")
            case "resume":
                try await backend.resume(sid)
                try await sandboxChanged(s.id, "running", reason: "resumed")
            case "restart":
                if try await existingSandbox(sid) != nil {
                    try await backend.stop(sid)
                    try await sandboxChanged(s.id, "stopped", reason: "restarting")
                }
                _ = try await ensureRunning(s)
            default:
                throw AgentdError.notFound("sandbox action \(action) (start, stop, pause, resume, restart)")
            }
        } catch let e as SandboxError {
            throw AgentdError.from(e)
        }
        return try await sandboxInfo(caller, id: id)
    }

    // MARK: background work and recovery

    /// Stop sandboxes nobody holds and nobody used for `idleStopAfter`
    /// (their files stay).
    public func stopIdleSandboxes() async {
        guard let running = try? await store.sessionIDs(sandboxState: "running") else { return }
        for id in running {
            guard let sid = try? SandboxID(id) else { continue }
            _ = await leases.stopIfIdle(id, idleFor: config.idleStopAfter) { [self] in
                do {
                    try await backend.stop(sid)
                    try await sandboxChanged(id, "stopped", reason: "idle")
                    logger.info("stopped an idle sandbox", metadata: ["session": "\(id)"])
                } catch {
                    logger.warning("could not stop an idle sandbox", metadata: ["session": "\(id)", "error": "\(error)"])
                }
            }
        }
    }

    /// Say in a session's transcript, and in its sandbox state, when its
    /// sandbox stopped without anyone asking (killed from outside, out of
    /// memory, exited): until cancelled or the backend closes.
    public func recordUnexpectedStops() async {
        for await stop in backend.unexpectedStops {
            let id = stop.id.rawValue
            Counter(label: "agentd_sandbox_unexpected_stops_total", dimensions: [("cause", stop.cause.rawValue)])
                .increment()
            do {
                try await sandboxChanged(id, "stopped", reason: stop.cause.rawValue, message: stop.message)
            } catch {
                // A session deleted meanwhile has no transcript to write to.
                logger.info("could not record an unexpected sandbox stop",
                            metadata: ["session": "\(id)", "error": "\(error)"])
            }
        }
    }

    /// Make the recorded sandbox states agree with the backend's where a
    /// write was lost (a full disk refused it) or a change went unrecorded:
    /// a session that disagrees at two checks in a row is set to what the
    /// backend says (one check could catch a start or stop in progress).
    public func reconcileSandboxStates() async {
        guard let sandboxes = try? await backend.list() else { return }
        var actual: [String: SandboxStatus] = [:]
        for sb in sandboxes { actual[sb.id.rawValue] = sb }
        var recorded: [String: String] = [:]
        for state in ["running", "paused", "stopped"] {
            guard let ids = try? await store.sessionIDs(sandboxState: state) else { return }
            for id in ids { recorded[id] = state }
        }
        var now = Set<String>()
        for (id, sb) in actual where sb.state != .stopped && recorded[id] != sb.state.rawValue {
            now.insert(id)
        }
        for (id, state) in recorded where state != "stopped" && actual[id].map({ $0.state.rawValue != state }) ?? true {
            now.insert(id)
        }
        let confirmed = disagreeing.withLock { previous -> Set<String> in
            let both = previous.intersection(now)
            previous = now.subtracting(both)
            return both
        }
        for id in confirmed {
            let state = actual[id]?.state.rawValue ?? "none"
            guard let s = try? await store.session(id: id, teamID: nil) else { continue }
            if let sb = actual[id], sb.state != .stopped {
                await admission.record(session: id, team: s.teamID, limits: sb.limits)
            }
            do {
                try await sandboxChanged(id, state == "none" ? "stopped" : state, reason: "reconciled")
                logger.notice("recorded a sandbox state that had gone unrecorded",
                              metadata: ["session": "\(id)", "state": "\(state)"])
            } catch {
                logger.info("could not record a sandbox state yet", metadata: ["session": "\(id)", "error": "\(error)"])
            }
        }
    }

    /// After a start: make the database agree with the sandboxes that
    /// exist, remove sandboxes whose session is gone, and release the run
    /// leases of the previous process.
    public func recover() async throws {
        let sandboxes = try await backend.list()
        var known = Set<String>()
        for sb in sandboxes {
            guard let s = try await store.session(id: sb.id.rawValue, teamID: nil) else {
                logger.info("removing a sandbox without a session", metadata: ["sandbox": "\(sb.id)"])
                try? await backend.destroy(sb.id)
                continue
            }
            known.insert(s.id)
            if sb.state != .stopped { await admission.record(session: s.id, team: s.teamID, limits: sb.limits) }
            if s.sandboxState != sb.state.rawValue {
                try await sandboxChanged(s.id, sb.state.rawValue, reason: "recovered")
            }
        }
        for state in ["running", "paused", "stopped"] {
            for id in try await store.sessionIDs(sandboxState: state) where !known.contains(id) {
                try await store.setSandboxState(sessionID: id, state: "none")
            }
        }
        let released = try await store.expireLeases()
        if released > 0 { logger.info("released run leases of the previous process", metadata: ["runs": "\(released)"]) }
    }
}

/// An exec whose end (or abandonment) marks the sandbox as no longer busy.
final class TrackedProcess: ExecProcess {
    let inner: any ExecProcess
    let events: AsyncThrowingStream<ExecEvent, any Error>

    init(inner: any ExecProcess, onEnd: @escaping @Sendable () async -> Void) {
        self.inner = inner
        // Pulled through, event by event, so that the inner stream's
        // backpressure reaches the consumer (a relay task would buffer
        // without bound).
        let relay = Relay(source: inner.events, onEnd: onEnd)
        events = AsyncThrowingStream(unfolding: { try await relay.next() })
    }

    /// Pulls from the inner stream for one consumer; calls `onEnd` once, at
    /// the end or when dropped before it.
    private final class Relay: @unchecked Sendable {
        // @unchecked: one consumer calls next() at a time (an async stream
        // has one iterator); `ended` is only touched there and in deinit.
        private var iterator: AsyncThrowingStream<ExecEvent, any Error>.AsyncIterator
        private let onEnd: @Sendable () async -> Void
        private var ended = false

        init(source: AsyncThrowingStream<ExecEvent, any Error>, onEnd: @escaping @Sendable () async -> Void) {
            iterator = source.makeAsyncIterator()
            self.onEnd = onEnd
        }

        func next() async throws -> ExecEvent? {
            guard !ended else { return nil }
            // (Nothing follows the exit but the end.)
            do {
                if let e = try await iterator.next() {
                    // The exit is the last event: the end is marked before
                    // the consumer sees it.
                    if case .exit = e {
                        ended = true
                        await onEnd()
                    }
                    return e
                }
                ended = true
                await onEnd()
                return nil
            } catch {
                ended = true
                await onEnd()
                throw error
            }
        }

        deinit {
            if !ended { Task { [onEnd] in await onEnd() } }
        }
    }

    func write(stdin: [UInt8]) async throws { try await inner.write(stdin: stdin) }
    func closeStdin() async { await inner.closeStdin() }
    func signal(_ signal: Int32) async { await inner.signal(signal) }
}
