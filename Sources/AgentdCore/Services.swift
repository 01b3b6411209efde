import AgentdModel
import AgentdStore
import Logging
import SandboxKit
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Everything the API serves, wired together once at start.
public final class Services: Sendable {
    public let config: CoreConfig
    public let store: Store
    public let backend: any SandboxBackend
    public let hub: EventHub
    public let auth: AuthService
    public let signIns: SignInService
    public let agents: AgentService
    public let secrets: SecretService
    public let sessions: SessionService
    public let version: String
    public let runControl = RunControl()
    /// Reports the gateway's reachability for /v1/status (set by the worker).
    public let gatewayStatus = GatewayStatus()
    let logger: Logger

    public init(config: CoreConfig, store: Store, backend: any SandboxBackend, secretBox: SecretBox, version: String,
                logger: Logger) {
        self.config = config
        self.store = store
        self.backend = backend
        self.version = version
        self.logger = logger
        hub = EventHub()
        auth = AuthService(store: store, logger: logger)
        signIns = SignInService(store: store, auth: auth)
        agents = AgentService(store: store, config: config, images: { await backend.info().images })
        secrets = SecretService(store: store, box: secretBox)
        sessions = SessionService(store: store, backend: backend, secrets: secrets, hub: hub, config: config,
                                  runControl: runControl, logger: logger)
    }

    /// A team with its quotas and what it uses now (its members and admins).
    public func team(_ caller: Identity, id: String) async throws -> Team {
        try Rules.id(.team).check(id, field: "id")
        guard caller.isAdmin || caller.teamID == id, var team = try await store.teams(id: id).first else {
            throw AgentdError.notFound("team")
        }
        let counts = try await store.teamCounts(id: id)
        let held = await sessions.sandboxUsage(team: id)
        team.usage = TeamUsage(sessions: counts.sessions, runningSandboxes: held.count, concurrentRuns: counts.running,
                               queuedRuns: counts.queued, memoryMB: held.memoryMB, cpus: held.cpus)
        return team
    }

    /// Replace a team's quotas (admins only); absent fields: no limit.
    public func setQuotas(_ caller: Identity, team id: String, _ quotas: TeamQuotas) async throws -> Team {
        try caller.require(.admin, "set team quotas")
        try Rules.id(.team).check(id, field: "id")
        func check(_ v: Int?, _ rule: FieldRule, _ f: String) throws {
            if let v { try rule.check(v, field: "quotas." + f) }
        }
        try check(quotas.sessions, Rules.quotaSessions, "sessions")
        try check(quotas.runningSandboxes, Rules.quotaRunningSandboxes, "running_sandboxes")
        try check(quotas.concurrentRuns, Rules.quotaConcurrentRuns, "concurrent_runs")
        try check(quotas.queuedRuns, Rules.quotaQueuedRuns, "queued_runs")
        try check(quotas.memoryMB, Rules.quotaMemoryMB, "memory_mb")
        if let c = quotas.cpus { try Rules.quotaCPUs.check(c, field: "quotas.cpus") }
        _ = try await store.setTeamQuotas(id: id, quotas, audit: caller.audit("update", "team", id, detail: "quotas"))
        runControl.notify()  // a raised concurrent_runs quota lets queued runs go
        return try await team(caller, id: id)
    }

    public func status(_ caller: Identity) async throws -> StatusInfo {
        let info = await backend.info()
        let running = try await backend.list().filter { $0.state == .running }.count
        let runs = try await store.runCounts()
        return StatusInfo(version: version, cgroupDriver: info.cgroupDriver, seccomp: info.seccomp, images: info.images,
                          notes: info.notes, sandboxesRunning: running, runsActive: runs.running, runsQueued: runs.queued,
                          gateway: await gatewayStatus.describe())
    }
}

/// What /v1/status says of the model gateway: its address and whether the
/// last request to it got an answer.
public final class GatewayStatus: Sendable {
    private struct State {
        var url: String?
        var lastError: String?
        var lastOK: Date?
    }

    private let state = Mutex(State())

    public init() {}

    public func configure(url: String?) { state.withLock { $0.url = url } }
    public func succeeded() { state.withLock { $0.lastOK = Date(); $0.lastError = nil } }
    public func failed(_ message: String) { state.withLock { $0.lastError = message } }

    public func describe() async -> String? {
        let s = state.withLock { $0 }
        guard let url = s.url else { return nil }
        if let e = s.lastError { return "\(url) (unreachable: \(e))" }
        if s.lastOK != nil { return "\(url) (reachable)" }
        return "\(url) (not contacted yet)"
    }
}
