import AgentdCore
import AgentdModel
import AgentdServer
import AgentdStore
import AgentdWorker
import ArgumentParser
import CRuntimeHook
import Foundation
import Hummingbird
import LinuxSandbox
import Logging
import Metrics
import NIOCore
import Prometheus
import SandboxKit
import ServiceLifecycle
import Synchronization

/// `agentd serve`: the daemon.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the agentd daemon: the HTTP API on a Unix socket and a TCP address.",
        discussion: """
            Configuration: built-in defaults < the config file (--config, else /etc/agentd/agentd.toml when it \
            exists) < AGENTD_* environment variables < these flags.
            """)

    @Option(help: "Configuration file (TOML).") var config: String?
    @Option(name: .customLong("state-dir"), help: "State directory (database, images, sandboxes, keys).") var stateDir: String?
    @Option(name: .customLong("run-dir"), help: "Runtime directory (sockets).") var runDir: String?
    @Option(help: "TCP address HOST:PORT (\"none\" to disable).") var listen: String?
    @Option(help: "Unix socket path (default RUN_DIR/agentd.sock).") var socket: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.") var logLevel: String?

    func resolvedConfig() throws -> DaemonConfig {
        var cfg = DaemonConfig()
        if let config {
            cfg = try DaemonConfig.load(file: config)
        } else if FileManager.default.fileExists(atPath: "/etc/agentd/agentd.toml") {
            cfg = try DaemonConfig.load(file: "/etc/agentd/agentd.toml")
        }
        try cfg.applyEnvironment(processEnvironment())
        if let stateDir { cfg.stateDir = StateOptions().absolute(stateDir) }
        if let runDir { cfg.runDir = StateOptions().absolute(runDir) }
        if let listen { cfg.listen = listen }
        if let socket { cfg.socket = StateOptions().absolute(socket) }
        if let logLevel { cfg.logLevel = logLevel }
        try cfg.validate()
        return cfg
    }

    func run() async throws {
        let cfg: DaemonConfig
        do {
            cfg = try resolvedConfig()
        } catch let e as ConfigError {
            fail("configuration: \(e.description)", code: 2)
        }
        let level = Logger.Level(rawValue: cfg.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "agentd")
        if !ConcurrencyExecutor.onEventLoops {
            logger.warning("Swift concurrency could not be moved onto the event loops; requests will be slower")
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        do {
            try await Daemon(config: cfg, logger: logger, registry: registry).run()
        } catch let e as SandboxError {
            fail(e.message)
        } catch let e as StoreError {
            fail("database: \(e.description)")
        } catch let e as AgentdError {
            fail(e.message)
        }
    }
}

/// The daemon's parts, started in order and stopped gracefully.
struct Daemon {
    let config: DaemonConfig
    let logger: Logger
    let registry: PrometheusCollectorRegistry

    func run() async throws {
        // Large blocks (request bodies, exec output) come from their own
        // mappings and go back to the kernel when freed (measured: the peak
        // of 40 concurrent 16 MiB exec bodies is ~110 MiB lower).
        _ = agentd_fix_mmap_threshold(256 << 10)
        let cfg = config
        let state = cfg.stateDir
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        chmod(state, 0o711)
        try FileManager.default.createDirectory(atPath: cfg.resolvedRunDir, withIntermediateDirectories: true)

        let defaults = ResourceLimits(memoryBytes: UInt64(cfg.sandbox.memoryMB) << 20, swapBytes: 0,
                                      pids: cfg.sandbox.pids, cpuMillis: Int(cfg.sandbox.cpus * 1000),
                                      openFiles: cfg.sandbox.openFiles, tmpBytes: UInt64(cfg.sandbox.tmpMB) << 20)
        let backend = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: state, runDirectory: cfg.resolvedRunDir,
                                       cgroupDriver: cfg.sandbox.cgroupDriver, cgroupParent: cfg.sandbox.cgroupParent,
                                       defaultLimits: defaults, networkNamespacePool: cfg.sandbox.netnsPool,
                                       adoptRunning: cfg.sandbox.adoptRunning, warmPool: cfg.sandbox.warmPool,
                                       spareRoots: cfg.sandbox.spareRoots,
                                       startTimeout: .seconds(cfg.sandbox.startTimeoutS),
                                       allow32Bit: cfg.sandbox.allow32Bit),
            logger: logger)
        let info = await backend.info()
        logger.notice("sandbox backend ready", metadata: [
            "cgroup": "\(info.cgroupDriver)", "seccomp": "\(info.seccomp)", "images": "\(info.images.joined(separator: ","))",
        ])
        for note in info.notes { logger.warning("\(note)") }

        let store = try Store(path: state + "/agentd.db", logger: logger)
        let box = try SecretBox.open(keyFile: state + "/secret.key")
        let core = CoreConfig(
            stateDirectory: state, idleStopAfter: .seconds(cfg.idleStopSeconds == 0 ? 315_360_000 : cfg.idleStopSeconds),
            execDefaultTimeout: .seconds(cfg.exec.defaultTimeoutS), execMaxOutputBytes: cfg.exec.maxOutputBytes,
            defaultImage: cfg.sandbox.defaultImage,
            containerEnv: CoreConfig.containerEnv(from: processEnvironment()),
            hostMemoryBytes: UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE))),
            hostCPUs: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), diskReserveBytes: UInt64(cfg.diskReserveMB) << 20)
        let services = Services(config: core, store: store, backend: backend, secretBox: box,
                                version: AgentdVersion.string, logger: logger)
        let adminKey = state + "/admin.key"
        let access = try await services.auth.bootstrap(adminKeyPath: adminKey)
        let accessLine: String
        switch access {
        case .keyFile(let path): accessLine = "admin key in \(path)"
        case .otherKeys: accessLine = "the admin key in \(adminKey) is revoked; other admin keys are active"
        case .none:
            accessLine = "no active admin key: mint one with `agentd admin-key --state-dir \(state)` (as root)"
        }
        try await services.sessions.recover()

        let readyFlag = ReadyFlag()
        let api = API(services: services, metrics: { registry.emitToString() }, ready: { readyFlag.isReady },
                      openAPI: { OpenAPIDocument.render(API.endpoints, version: AgentdVersion.string) })
        let limits = cfg.connectionLimits
        let router = api.router(logger: logger, limits: limits)

        var servers: [any Service] = []
        let listeners = ListenerCount()
        let tcp = try cfg.listenAddress()
        let expected = tcp == nil ? 1 : 2
        let socketPath = cfg.resolvedSocket
        removeStaleSocket(socketPath)
        let announce: @Sendable (String) -> Void = { address in
            logger.notice("listening", metadata: ["address": "\(address)"])
            writeAll(1, Array("agentd listening on \(address.hasPrefix("http") ? address : "unix:" + address)\n".utf8))
            if listeners.up() == expected {
                readyFlag.set()
                writeAll(1, Array("agentd \(AgentdVersion.string) ready; \(accessLine)\n".utf8))
                Notify.send("READY=1\nSTATUS=serving")
            }
        }
        if let (host, port) = tcp {
            servers.append(Application(
                router: router, server: GuardedHTTP1Channel.builder(limits),
                configuration: limits.configuration(.hostname(host, port: port)),
                onServerRunning: { channel in
                    let port = channel.localAddress?.port ?? port
                    announce("http://\(host.contains(":") ? "[\(host)]" : host):\(port)")
                },
                logger: logger))
        }
        let group = cfg.socketGroup
        servers.append(Application(
            router: router, server: GuardedHTTP1Channel.builder(limits),
            configuration: limits.configuration(.unixDomainSocket(path: socketPath)),
            onServerRunning: { _ in
                chmod(socketPath, 0o660)
                if let g = getgrnam(group) { chown(socketPath, 0, g.pointee.gr_gid) }
                announce(socketPath)
            },
            logger: logger))
        let housekeeping = Housekeeping(sessions: services.sessions, logger: logger)
        let gateway = cfg.gateway.url.isEmpty ? nil : GatewayClient(
            config: GatewayConfig(url: cfg.gateway.url, key: cfg.gateway.key.isEmpty ? nil : cfg.gateway.key,
                                  requestTimeout: .seconds(cfg.gateway.timeoutS), maxAttempts: cfg.gateway.maxAttempts),
            logger: logger)
        if gateway == nil { logger.warning("no model gateway configured (gateway.url); agent runs will fail until one is") }
        let w = cfg.worker
        let worker = Worker(
            store: store, sessions: services.sessions, backend: backend, hub: services.hub, control: services.runControl,
            gateway: gateway, gatewayStatus: services.gatewayStatus,
            config: WorkerConfig(concurrency: w.concurrency, leaseSeconds: Double(w.leaseSeconds),
                                 stream: WorkerConfig.StreamMode(rawValue: cfg.gateway.stream) ?? .auto,
                                 maxSteps: w.maxSteps, maxRunSeconds: w.maxRunSeconds,
                                 maxToolOutputBytes: w.maxToolOutputBytes, toolTimeoutSeconds: w.toolTimeoutS,
                                 contextChars: w.contextChars, harnessPort: UInt16(w.harnessPort)),
            logger: logger)
        let serviceGroup = ServiceGroup(
            configuration: .init(services: (servers + [housekeeping, WorkerService(worker: worker)]).map { .init(service: $0) },
                                 gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await serviceGroup.run()
        Notify.send("STOPPING=1")
        // Sandboxes stay up; the next agentd re-adopts them.
        await backend.shutdown()
        unlink(socketPath)
        logger.notice("stopped")
    }

    func removeStaleSocket(_ path: String) {
        guard FileManager.default.fileExists(atPath: path) else { return }
        unlink(path)
    }
}

final class ReadyFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isReady: Bool { value.load(ordering: .relaxed) }
}

final class ListenerCount: Sendable {
    private let value = Atomic<Int>(0)
    func up() -> Int { value.add(1, ordering: .relaxed).newValue }
}

/// The run worker as a lifecycle service: on SIGTERM, runs stop where they
/// are (their leases lapse) and the next start resumes them.
struct WorkerService: Service {
    let worker: Worker

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await worker.run()
        }
    }
}

/// Periodic work: stop idle sandboxes, ping the systemd watchdog; and
/// record sandboxes that stopped by themselves in their sessions.
struct Housekeeping: Service {
    let sessions: SessionService
    let logger: Logger

    func run() async throws {
        let watchdog = Notify.watchdogInterval()
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await sessions.recordUnexpectedStops() }
                var lastIdleCheck = ContinuousClock.now
                while !Task.isCancelled {
                    try? await Task.sleep(for: watchdog.map { $0 / 2 } ?? .seconds(5))
                    if watchdog != nil { Notify.send("WATCHDOG=1") }
                    if ContinuousClock.now - lastIdleCheck >= .seconds(5) {
                        lastIdleCheck = .now
                        await sessions.stopIdleSandboxes()
                        await sessions.reconcileSandboxStates()
                        sessions.disk.observe()
                    }
                }
                group.cancelAll()
            }
        }
    }
}

/// sd_notify(3) without libsystemd: a datagram to $NOTIFY_SOCKET.
enum Notify {
    static func send(_ message: String) {
        guard let path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let payload = Array(message.utf8)
        _ = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                payload.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sa, len) }
            }
        }
    }

    /// $WATCHDOG_USEC, when systemd asked for pings (and meant us: $WATCHDOG_PID).
    static func watchdogInterval() -> Duration? {
        let env = ProcessInfo.processInfo.environment
        guard let usec = env["WATCHDOG_USEC"].flatMap(Int64.init), usec > 0 else { return nil }
        if let pid = env["WATCHDOG_PID"].flatMap(Int32.init), pid != getpid() { return nil }
        return .microseconds(usec)
    }
}

/// `agentd openapi`: print the OpenAPI document.
struct OpenAPICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "openapi", abstract: "Print the OpenAPI document.")

    func run() async throws {
        writeAll(1, OpenAPIDocument.render(API.endpoints, version: AgentdVersion.string))
    }
}
