import AgentdModel
import AgentdStore
import Logging
import SandboxKit
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
    public let agents: AgentService
    public let secrets: SecretService
    public let sessions: SessionService
    public let version: String
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
        agents = AgentService(store: store, config: config, images: { await backend.info().images })
        secrets = SecretService(store: store, box: secretBox)
        sessions = SessionService(store: store, backend: backend, secrets: secrets, hub: hub, config: config,
                                  logger: logger)
    }

    public func status(_ caller: Identity) async throws -> StatusInfo {
        let info = await backend.info()
        let running = try await backend.list().filter { $0.state == .running }.count
        let runs = try await store.runCounts()
        return StatusInfo(version: version, cgroupDriver: info.cgroupDriver, seccomp: info.seccomp, images: info.images,
                          notes: info.notes, sandboxesRunning: running, runsActive: runs.running, runsQueued: runs.queued,
                          gateway: nil)
    }
}
