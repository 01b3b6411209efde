import CAgentdSandbox
import Logging
import Metrics
import NIOCore
import NIOPosix
import SandboxKit
import Synchronization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

public struct LinuxSandboxConfig: Sendable {
    /// Holds `sandboxes/<id>` (spec, overlay layers) and `images/<name>`.
    public var stateDirectory: String
    /// Holds each running sandbox's control socket and runtime record; a
    /// tmpfs (/run/agentd) so that a reboot forgets them.  Keep it short:
    /// socket paths are limited to 107 bytes.
    public var runDirectory: String
    /// auto, v2, v1 or none.
    public var cgroupDriver: String
    /// The cgroup directory, relative to each hierarchy's root, that holds
    /// one cgroup per sandbox.
    public var cgroupParent: String
    /// Path of agentd-init; found beside the executable when nil.
    public var initBinary: String?
    public var defaultLimits: ResourceLimits
    /// User namespace mode maps sandbox uid 0..<size to base..<base+size.
    public var userNamespaceBase: UInt32
    public var userNamespaceSize: UInt32
    /// Network namespaces created ahead of need (their creation costs more
    /// than the rest of a sandbox start).
    public var networkNamespacePool: Int
    /// Re-adopt sandboxes left running by a previous agentd (else stop them).
    public var adoptRunning: Bool
    /// Warm shells kept ready (namespaces, cgroup, /proc, /dev, /sys made
    /// ahead of need, see agentd_sandbox.h): a start claims one instead of
    /// cloning, unless it asks for a user namespace.  0 turns them off.
    public var warmPool: Int
    /// Spare roots kept ready for the image of the last create (see
    /// SpareRoot): a sandbox directory with its overlay mounted ahead, which
    /// a create renames and a start (warm or cold) attaches instead of
    /// mounting.  0 turns them off.
    public var spareRoots: Int
    /// How long after a start the pools are refilled (see `doStart`).
    public var refillDelay: Duration
    /// How long a sandbox may take to set up (mounts, privileges, init)
    /// before its start fails and it is killed: normally about a
    /// millisecond; a mount on a file system that does not answer would
    /// otherwise hang the start for good.
    public var startTimeout: Duration
    /// Let sandboxed programs make system calls through the 32-bit ABIs
    /// (i386 `int 0x80`, x32), filtered by the same profile.  Off by
    /// default: they fail with ENOSYS, as on a kernel booted with
    /// `ia32_emulation=0`.  The compat entry points are a kernel surface
    /// that 64-bit agents' tools never need, and the filter without them
    /// is a third of the size (it loads in a third of the time).
    public var allow32Bit: Bool

    public init(stateDirectory: String, runDirectory: String? = nil, cgroupDriver: String = "auto",
                cgroupParent: String = "auto", initBinary: String? = nil,
                defaultLimits: ResourceLimits = .defaults, userNamespaceBase: UInt32 = 100_000,
                userNamespaceSize: UInt32 = 65_536, networkNamespacePool: Int = 4, adoptRunning: Bool = true,
                warmPool: Int = 2, spareRoots: Int = 2, refillDelay: Duration = .milliseconds(20),
                startTimeout: Duration = .seconds(30), allow32Bit: Bool = false) {
        self.stateDirectory = stateDirectory
        self.runDirectory = runDirectory ?? stateDirectory + "/run"
        self.cgroupDriver = cgroupDriver
        self.cgroupParent = cgroupParent
        self.initBinary = initBinary
        self.defaultLimits = defaultLimits
        self.userNamespaceBase = userNamespaceBase
        self.userNamespaceSize = userNamespaceSize
        self.networkNamespacePool = networkNamespacePool
        self.adoptRunning = adoptRunning
        self.warmPool = warmPool
        self.spareRoots = spareRoots
        self.refillDelay = refillDelay
        self.startTimeout = startTimeout
        self.allow32Bit = allow32Bit
    }
}

/// What is persisted for each sandbox in `sandboxes/<id>/sandbox.json`.
struct SandboxRecord: Codable, Sendable {
    var id: SandboxID
    var spec: SandboxSpec
    var createdAt: Date
}

/// What is written to the run directory while a sandbox runs, to find it
/// again after agentd restarts: one line of numbers, cheap to write on the
/// start path ("-" for a limit left to the default).
struct RuntimeRecord: Equatable {
    var pid: Int32
    /// Field 22 of /proc/PID/stat: tells a reused pid apart.
    var startTime: UInt64
    var startedAt: Date
    var limits: ResourceLimits
    /// The sandbox's cgroup (its id, or a warm shell's cgroup on v2; empty
    /// without cgroups); nil in records written before warm shells.
    var cgroup: String?
    /// The image version (real path) the sandbox's overlay was mounted on;
    /// nil in records written before images were versioned.
    var image: String?

    var line: String {
        func f<T>(_ v: T?) -> String { v.map { "\($0)" } ?? "-" }
        let l = limits
        let c = cgroup.map { $0.isEmpty ? "-" : $0 } ?? "-"
        return [
            "2", "\(pid)", "\(startTime)", "\(Int64(startedAt.timeIntervalSince1970 * 1000))", f(l.memoryBytes),
            f(l.swapBytes), f(l.pids), f(l.cpuMillis), f(l.ioWeight), f(l.openFiles), f(l.tmpBytes), c,
        ].joined(separator: " ") + (image.map { " " + $0 } ?? "") + "\n"
    }

    init(pid: Int32, startTime: UInt64, startedAt: Date, limits: ResourceLimits, cgroup: String?, image: String?) {
        self.pid = pid
        self.startTime = startTime
        self.startedAt = startedAt
        self.limits = limits
        self.cgroup = cgroup
        self.image = image
    }

    init?(line: String) {
        let f = line.trimmed.split(separator: " ").map(String.init)
        // Version 1: eleven fields, then (since images are versioned) the
        // image path, which is the rest of the line.  Version 2 has the
        // cgroup's name ("-": none) before the image.
        guard f.count >= 11, f[0] == "1" || f[0] == "2", let pid = Int32(f[1]), let st = UInt64(f[2]),
              let ms = Int64(f[3]) else {
            return nil
        }
        var rest = 11
        cgroup = nil
        if f[0] == "2" {
            guard f.count >= 12 else { return nil }
            cgroup = f[11] == "-" ? "" : f[11]
            rest = 12
        }
        image = f.count > rest ? f[rest...].joined(separator: " ") : nil
        self.pid = pid
        startTime = st
        startedAt = Date(timeIntervalSince1970: Double(ms) / 1000)
        limits = ResourceLimits(memoryBytes: UInt64(f[4]), swapBytes: UInt64(f[5]), pids: Int(f[6]),
                                cpuMillis: Int(f[7]), ioWeight: Int(f[8]), openFiles: Int(f[9]), tmpBytes: UInt64(f[10]))
    }
}

/// A running sandbox's process and connection.
final class SandboxRuntime: Sendable {
    let pid: pid_t
    let pidfd: Int32
    let channel: InitChannel
    let startedAt: Date
    let limits: ResourceLimits
    /// The image version it runs on (nil: adopted from before versioning).
    let image: String?
    /// Its cgroup's name: the sandbox id, or on cgroup v2 the cgroup of the
    /// warm shell it started from.
    let cgroup: String
    private let exitWaiters = Mutex<(exited: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(pid: pid_t, pidfd: Int32, channel: InitChannel, startedAt: Date, limits: ResourceLimits, cgroup: String,
         image: String?) {
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel
        self.startedAt = startedAt
        self.limits = limits
        self.cgroup = cgroup
        self.image = image
    }

    deinit { Posix.close(pidfd) }

    var isAlive: Bool { agentd_pidfd_signal(pidfd, 0) == 0 }

    func markExited() {
        let waiters = exitWaiters.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.exited = true
            let w = state.waiters
            state.waiters = []
            return w
        }
        waiters.forEach { $0.resume() }
    }

    func waitForExit() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = exitWaiters.withLock { state -> Bool in
                if state.exited { return true }
                state.waiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }
}

/// The Linux sandbox backend: namespaces, an overlay root, cgroups, seccomp
/// and no capabilities, with agentd-init as PID 1 (see ARCHITECTURE.md).
public actor LinuxSandboxBackend: SandboxBackend {
    public nonisolated let config: LinuxSandboxConfig
    let logger: Logger
    nonisolated let cgroups: any CgroupDriver
    let seccomp: SeccompProgram
    /// The profile split for warm shells (see SeccompProfile.claimCalls):
    /// what they wait under, and what a claim adds.
    nonisolated let warmSeccomp: SeccompProgram
    let claimSeal: SeccompProgram
    nonisolated let initBinary: InitBinary
    let images: ImageStore
    let reaper: Reaper
    nonisolated let lastCap: Int32
    let group: any EventLoopGroup
    /// One thread of its own for the pools' refills (spare cgroups, network
    /// namespaces), which run at SCHED_IDLE and may wait long for a CPU on a
    /// busy host: they must not hold a thread of NIO's shared pool, which
    /// spawns sandboxes and does their file I/O.
    let background: NIOThreadPool
    let hostMemory: UInt64
    let hostCPUs: Int
    /// A record lock on STATE/.sandbox.lock: one backend per state directory.
    private let stateLock: StateDirectoryLock
    /// Sandboxes that stopped without being asked to (`unexpectedStops`).
    public nonisolated let unexpectedStops: AsyncStream<UnexpectedStop>
    private nonisolated let stopReports: AsyncStream<UnexpectedStop>.Continuation
    /// This agentd's name on the host (InstanceTag): in the names of warm
    /// shells' cgroups and sockets, so that only this agentd removes them.
    nonisolated let instance: String
    private var netnsPool: [Int32] = []
    private var refilling = false
    /// The running refill, awaited by `close()` so it cannot make spare
    /// cgroups or namespaces after the backend let go of them.
    private var refillTask: Task<Void, Never>?
    private var closing = false
    private var userns: Int32 = -1
    /// Warm shells ready to be claimed, and the cgroups of those plus of
    /// the one being made (not sandboxes' yet: leak checks leave them out).
    private var warmShells: [WarmShell] = []
    private var warmCgroups: Set<String> = []
    /// The last warm shell could not be made: none is tried again until the
    /// next start (no retry loop on a host where they cannot work).
    private var warmFailing = false
    private var warmFailureLogged = false
    private var warmStarts = 0
    private var coldStarts = 0
    /// Sandbox directories with their root mounted ahead (see SpareRoot):
    /// `spareRoots` are kept for the image of the last create, and as many
    /// more of other images (the oldest go first); none are tried again
    /// until the next create after one failed.
    private var spareRoots: [SpareRoot] = []
    private var spareImage: String?
    private var spareFailing = false
    private var spareFailureLogged = false
    /// Root mounts (spare or prepared) closed without being attached: what
    /// tests check the release paths by, since fds are process-wide.
    private(set) var unattachedRootsClosed = 0
    /// Where warm shells stage /proc, /dev and /sys (a tmpfs each mounts
    /// over it in its own mount namespace; on the host it stays empty).
    nonisolated var warmStagingDirectory: String { config.runDirectory + "/warm" }

    struct Entry {
        var record: SandboxRecord
        var runtime: SandboxRuntime?
        var paused = false
        /// A start or stop in progress: others wait for it.
        var transition: Task<Void, any Error>?
        /// The record's write after a create, done off the create's path
        /// (anything that writes or removes the directory waits for it).
        var recordWrite: Task<Void, Never>?
        /// The root of a sandbox created from a spare, mounted already: its
        /// first start attaches it (and closes it, as do destroy and close).
        var preparedRoot: SpareRoot?
    }
    private var entries: [SandboxID: Entry] = [:]

    private nonisolated var sandboxesDirectory: String { config.stateDirectory + "/sandboxes" }

    /// Open the backend: detect cgroups, compile seccomp, load agentd-init,
    /// then find the sandboxes a previous agentd left and adopt or stop them.
    public static func open(config: LinuxSandboxConfig, logger: Logger = Logger(label: "agentd.sandbox"))
        async throws -> LinuxSandboxBackend
    {
        guard geteuid() == 0 else {
            throw SandboxError(.unsupported, "the Linux sandbox backend needs root (it creates namespaces and cgroups)")
        }
        // The state directory is claimed before anything on the host is
        // looked at: a second agentd on it must fail without touching a thing.
        try Posix.makeDirectories(config.stateDirectory, mode: 0o711)
        let lock = try StateDirectoryLock(directory: config.stateDirectory)
        let instance = InstanceTag.of(stateDirectory: config.stateDirectory)
        let backend: LinuxSandboxBackend
        do {
            let choice = CgroupDriverChoice(rawValue: config.cgroupDriver) ?? .auto
            let cgroups = try CgroupDetection.driver(choice: choice, parent: config.cgroupParent, instance: instance)
            backend = try LinuxSandboxBackend(config: config, logger: logger, cgroups: cgroups, lock: lock,
                                              instance: instance)
        } catch {
            lock.release()
            throw error
        }
        try await backend.recover()
        await backend.refillPools()
        return backend
    }

    /// Set when the process may not hold many files (see `raiseOpenFileLimit`).
    private let fileLimitNote: String?
    /// RLIMIT_NOFILE's hard limit of the daemon, which sandboxes inherit.
    private let openFileHardLimit: Int
    /// Whether the daemon holds CAP_SYS_RESOURCE (root in a container or
    /// under a restricted bounding set may not): without it a sandbox
    /// cannot be given more open files than `openFileHardLimit`.
    private let canRaiseResourceLimits: Bool

    /// Whether capability `cap` is in this process's effective set
    /// (/proc/self/status, CapEff).
    static func hasEffectiveCapability(_ cap: Int32) -> Bool {
        guard let status = try? Posix.readFile("/proc/self/status") else { return false }
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            let hex = line.dropFirst("CapEff:".count).filter { !$0.isWhitespace }
            guard let mask = UInt64(hex, radix: 16), cap >= 0, cap < 64 else { return false }
            return mask & (UInt64(1) << UInt64(cap)) != 0
        }
        return false
    }

    /// Raise the soft limit on open files to the hard one, as servers that
    /// hold many descriptors do: each running sandbox keeps a few (its
    /// init's pidfd and channel, its socket), a warm shell a few more, and a
    /// shell's soft limit is often 1024.  Sandboxes set their own limit.
    /// Returns the limit now in force.
    static func raiseOpenFileLimit() -> UInt64 {
        var lim = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim) == 0 else { return 0 }
        if lim.rlim_cur < lim.rlim_max {
            var raised = lim
            raised.rlim_cur = lim.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(lim.rlim_cur)
    }

    private init(config: LinuxSandboxConfig, logger: Logger, cgroups: any CgroupDriver, lock: StateDirectoryLock,
                 instance: String) throws {
        self.config = config
        self.instance = instance
        self.stateLock = lock
        (unexpectedStops, stopReports) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(4096))
        self.logger = logger
        self.cgroups = cgroups
        self.seccomp = try SeccompProgram(rules: SeccompProfile.rules, allow32Bit: config.allow32Bit)
        self.warmSeccomp = try SeccompProgram(rules: SeccompProfile.warmRules, allow32Bit: config.allow32Bit)
        self.claimSeal = try SeccompProgram(rules: SeccompProfile.sealRules, allow32Bit: config.allow32Bit)
        let openFiles = Self.raiseOpenFileLimit()
        var hard = rlimit()
        self.openFileHardLimit = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &hard) == 0
            ? Int(clamping: hard.rlim_max) : Int(clamping: openFiles)
        self.canRaiseResourceLimits = Self.hasEffectiveCapability(24)  // CAP_SYS_RESOURCE
        self.fileLimitNote = openFiles >= 8192 ? nil
            : "open files are limited to \(openFiles) (hard limit): each running sandbox holds a few, "
                + "so a few hundred sandboxes need more (LimitNOFILE= under systemd)"
        self.initBinary = try InitBinary(explicitPath: config.initBinary)
        self.images = ImageStore(directory: config.stateDirectory + "/images")
        self.reaper = try Reaper()
        self.lastCap = agentd_last_cap()
        self.group = MultiThreadedEventLoopGroup.singleton
        self.background = NIOThreadPool(numberOfThreads: 1)
        self.hostMemory = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
        self.hostCPUs = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        for (dir, mode) in [(config.stateDirectory, 0o711), (config.stateDirectory + "/sandboxes", 0o711),
                            (config.stateDirectory + "/images", 0o755), (config.runDirectory, 0o700),
                            (config.runDirectory + "/warm", 0o700)] {
            try Posix.makeDirectories(dir, mode: mode_t(mode))
            _ = chmod(dir, mode_t(mode))
        }
        let probe = config.runDirectory + "/" + String(repeating: "x", count: 64) + ".sock"
        guard probe.utf8.count < 108 else {
            throw SandboxError(.invalidArgument,
                               "run directory \(config.runDirectory) is too long for unix sockets; use a shorter one",
                               field: "run_dir")
        }
        background.start()  // last: nothing above may throw after it
        // Everything the background thread does is refilling pools: at
        // SCHED_IDLE it only takes a CPU that nothing else wants (warm shells
        // it clones inherit the policy until they are claimed).
        background.submit { _ in
            var param = sched_param(sched_priority: 0)
            _ = sched_setscheduler(0, 5 /* SCHED_IDLE */, &param)
        }
    }

    /// Stop the reaper and release namespaces (tests make many backends).
    /// Running sandboxes keep running; `stopAll()` stops them first.
    public func shutdown() {
        closing = true
        stopReports.finish()
        discardWarmShells()
        discardSpareRoots()
        for id in entries.keys { discardPreparedRoot(id) }
        reaper.shutdown()
        background.shutdownGracefully { _ in }
        netnsPool.forEach(Posix.close)
        netnsPool = []
        Posix.close(userns)
        userns = -1
        stateLock.release()
    }

    /// `shutdown()`, and remove the cgroup parent if nothing (of any agentd)
    /// is left in it: what `agentd sandbox run` ends with.
    public func shutdown(removingEmptyCgroupParent: Bool) {
        if removingEmptyCgroupParent && !entries.values.contains(where: { $0.runtime != nil }) {
            cgroups.removeParentIfEmpty()
        }
        shutdown()
    }

    /// Stop every sandbox, remove the cgroup parent and release everything:
    /// what `agentd sandbox run`, the tests and the benchmark end with.
    public func close() async {
        closing = true
        await refillTask?.value
        for entry in entries.values { await entry.recordWrite?.value }
        discardWarmShells()
        discardSpareRoots()
        await stopAll()
        cgroups.removeParentIfEmpty()
        shutdown()
    }

    /// Names of sandbox cgroups that exist now (for leak checks).
    public func cgroupNames() -> [String] { cgroups.existing().filter { !warmCgroups.contains($0) } }

    /// How many starts claimed a warm shell and how many cloned cold.
    public func startCounts() -> (warm: Int, cold: Int) { (warmStarts, coldStarts) }

    /// The cgroup of a running sandbox (its id, or on cgroup v2 the warm
    /// shell's cgroup it started in).
    func runtimeCgroup(_ id: SandboxID) -> String? { entries[id]?.runtime?.cgroup }

    /// The warm shells waiting in the pool.
    var pooledWarmShells: [WarmShell] { warmShells }

    /// The spare roots waiting in the pool, and the one a created sandbox
    /// holds until its first start.
    var pooledSpareRoots: [SpareRoot] { spareRoots }
    func preparedRoot(_ id: SandboxID) -> SpareRoot? { entries[id]?.preparedRoot }

    /// Empty the warm pool until the next start (tests of a cold start on a
    /// prepared root).
    func dropWarmShells() {
        discardWarmShells()
        warmFailing = true
    }

    /// Wait until the pools (warm shells, network namespaces, spare cgroups)
    /// are full again: benchmarks time starts on a settled host.
    public func settlePools() async {
        while refilling, let task = refillTask { await task.value }
    }

    public func stopAll() async {
        for id in entries.keys.sorted() where entries[id]?.runtime != nil {
            try? await stop(id)
        }
    }

    // MARK: info

    public func info() async -> BackendInfo {
        BackendInfo(name: "linux", cgroupDriver: cgroups.name,
                    seccomp: SeccompProfile.summary(allow32Bit: config.allow32Bit) + " (\(seccomp.instructionCount) BPF instructions)",
                    userNamespaces: true, images: images.names(), notes: cgroups.notes + (fileLimitNote.map { [$0] } ?? []))
    }

    public var cgroupDriverName: String { cgroups.name }

    // MARK: lifecycle

    private func layout(_ id: SandboxID) -> SandboxLayout {
        SandboxLayout(directory: sandboxesDirectory + "/" + id.rawValue)
    }

    private func socketPath(_ id: SandboxID) -> String { config.runDirectory + "/" + id.rawValue + ".sock" }
    private func runtimeRecordPath(_ id: SandboxID) -> String { config.runDirectory + "/" + id.rawValue + ".run" }

    private func validate(_ spec: SandboxSpec) throws(SandboxError) -> (limits: ResourceLimits, image: String) {
        try spec.validate()
        try spec.limits.validate(hostMemory: hostMemory, hostCPUs: hostCPUs)
        if case .allowlist = spec.network {
            throw SandboxError(.unsupported, "network allowlists are not supported by the Linux backend yet",
                               field: "network")
        }
        let image = try images.path(for: spec.image)
        var limits = spec.limits.resolved(over: config.defaultLimits)
        if let files = limits.openFiles, let ceiling = openFileCeiling(userNamespace: spec.userNamespace),
           files > ceiling
        {
            // The sandbox's init could not set it (EPERM at start): an
            // explicit request is refused now; the default is lowered.
            if spec.limits.openFiles != nil {
                throw SandboxError(.invalidArgument,
                                   "open files \(files) exceeds this host's limit of \(ceiling): agentd may not raise "
                                       + "it (no CAP_SYS_RESOURCE\(spec.userNamespace ? " in a user namespace" : ""))",
                                   field: "open_files")
            }
            limits.openFiles = ceiling
        }
        return (limits, image)
    }

    /// The most open files a sandbox may be given: the daemon's own hard
    /// limit, which a sandbox can only exceed with CAP_SYS_RESOURCE in the
    /// host's user namespace (never in user namespace mode); nil when
    /// there is no ceiling.
    private func openFileCeiling(userNamespace: Bool) -> Int? {
        guard userNamespace || !canRaiseResourceLimits else { return nil }
        return openFileHardLimit
    }

    @discardableResult
    public func create(_ id: SandboxID, spec: SandboxSpec) async throws -> SandboxStatus {
        let imagePath = try validate(spec).image
        if let existing = entries[id] {
            guard existing.record.spec == spec else {
                throw SandboxError(.conflict, "sandbox \(id) exists with another spec")
            }
            return try await status(id)
        }
        let l = layout(id)
        // A spare's directory renamed to the sandbox's replaces three
        // mkdirs, and its start the overlay mount.  (The rename fails when
        // the sandbox's directory exists and is not empty: the files of a
        // sandbox whose record was lost, which it keeps.)
        var prepared: SpareRoot? = nil
        if !spec.userNamespace, config.spareRoots > 0 {
            spareImage = imagePath
            spareFailing = false
            if let i = spareRoots.lastIndex(where: { $0.image == imagePath }) {
                let spare = spareRoots.remove(at: i)
                if rename(spare.directory, l.directory) == 0 {
                    prepared = spare
                } else {
                    spare.discard()
                }
            }
        }
        if prepared == nil {
            try Posix.makeDirectory(l.directory, mode: 0o700)
            for d in [l.upper, l.work] { try Posix.makeDirectory(d, mode: 0o755) }
        }
        if spec.userNamespace {
            try Posix.makeDirectory(l.lower, mode: 0o755)
            let owner = config.userNamespaceBase
            for d in [l.directory, l.upper, l.work, l.lower] { _ = chown(d, owner, owner) }
        }
        let record = SandboxRecord(id: id, spec: spec, createdAt: Date())
        var entry = Entry(record: record)
        entry.preparedRoot = prepared
        // Written on the thread pool while the caller goes on (usually to
        // start it), and not fsync'd: the daemon's database is the durable
        // copy of the spec, and a lost record only means that the daemon's
        // next use of the sandbox creates it again (its files are kept).
        let logger = self.logger
        entry.recordWrite = Task {
            do {
                try await NIOThreadPool.singleton.runIfActive {
                    try Posix.writeFileAtomically(l.record, Array(try JSONEncoder().encode(record)), durable: false)
                }
            } catch {
                logger.error("could not write a sandbox record; it is created again when next used",
                             metadata: ["sandbox": "\(id)", "error": "\(error)"])
            }
        }
        entries[id] = entry
        if needsSpare() { refillPools(after: config.refillDelay) }
        return statusOf(entry)
    }

    public func update(_ id: SandboxID, spec: SandboxSpec) async throws {
        await entries[id]?.recordWrite?.value
        guard var entry = entries[id] else { throw notFound(id) }
        let imagePath = try validate(spec).image
        guard entry.runtime == nil else { throw SandboxError(.conflict, "sandbox \(id) is running; stop it first") }
        guard entry.record.spec.userNamespace == spec.userNamespace else {
            throw SandboxError(.conflict, "the user namespace mode of a sandbox cannot change (its files are owned accordingly)",
                               field: "user_namespace")
        }
        entry.record.spec = spec
        try Posix.writeFileAtomically(layout(id).record, Array(try JSONEncoder().encode(entry.record)))
        entries[id] = entry
        if entry.preparedRoot?.image != imagePath { discardPreparedRoot(id) }
    }

    private func notFound(_ id: SandboxID) -> SandboxError {
        SandboxError(.notFound, "no sandbox \(id)", field: "id")
    }

    /// Wait for a start/stop in progress on `id`.
    private func settle(_ id: SandboxID) async {
        while let t = entries[id]?.transition {
            _ = try? await t.value
        }
    }

    public func start(_ id: SandboxID) async throws {
        await settle(id)
        guard let entry = entries[id] else { throw notFound(id) }
        if entry.runtime != nil { return }
        let task = Task { try await self.doStart(id) }
        entries[id]?.transition = task
        defer { entries[id]?.transition = nil }
        try await task.value
    }

    private func doStart(_ id: SandboxID) async throws {
        guard let entry = entries[id] else { throw notFound(id) }
        let spec = entry.record.spec
        let (limits, imagePath) = try validate(spec)
        let l = layout(id)
        // (The image was replaced since the create: its root is stale.)
        if entry.preparedRoot?.image != imagePath { discardPreparedRoot(id) }
        // Used by this start's first attempt only (a warm shell that fails
        // after attaching it takes it along), closed when it is done.
        var prepared = entries[id]?.preparedRoot
        entries[id]?.preparedRoot = nil
        defer { if let p = prepared { Posix.close(p.fd) } }

        var started: (pid: pid_t, pidfd: Int32, channel: Int32, cgroup: String)? = nil
        warmFailing = false
        // A warm shell can only attach its root (its namespace has no host
        // paths): without a spare's, the overlay is mounted detached here.
        if !spec.userNamespace, !warmShells.isEmpty, prepared == nil {
            let (directory, image) = (l.directory, imagePath)
            prepared = try await NIOThreadPool.singleton.runIfActive {
                try SpareRoot.mount(SandboxLayout(directory: directory), image: image)
            }
        }
        if !spec.userNamespace, let root = prepared, let shell = warmShells.popLast() {
            warmCgroups.remove(shell.cgroup)
            started = await claim(shell, id: id, spec: spec, limits: limits, imagePath: imagePath, prepared: root)
            if started == nil {
                Posix.close(root.fd)
                prepared = nil
            }
        }
        let s: (pid: pid_t, pidfd: Int32, channel: Int32, cgroup: String)
        if let started {
            s = started
            warmStarts += 1
        } else {
            s = try await coldStart(id, spec: spec, limits: limits, imagePath: imagePath, layout: l,
                                    prepared: prepared)
            coldStarts += 1
        }
        // A running sandbox has its record (re-adoption needs it); it was
        // written while the sandbox started.
        await entries[id]?.recordWrite?.value
        // Operators size warm_pool by this: cold starts beside a non-zero
        // pool mean bursts drain it (or user namespace mode, which is cold).
        Counter(label: "agentd_sandbox_backend_starts_total", dimensions: [("path", started != nil ? "warm" : "cold")])
            .increment()

        let runtime = SandboxRuntime(pid: s.pid, pidfd: s.pidfd, channel: InitChannel(fd: s.channel),
                                     startedAt: Date(), limits: limits, cgroup: s.cgroup, image: imagePath)
        // (The runtime record was written while the sandbox set up.)
        entries[id]?.runtime = runtime
        entries[id]?.paused = false
        watch(id, runtime)
        logger.debug("sandbox started", metadata: ["sandbox": "\(id)", "pid": "\(s.pid)",
                                                   "warm": "\(started != nil)"])
        // The sandbox's first command usually follows at once: refills wait
        // a moment so that their clone does not compete with it.
        refillPools(after: config.refillDelay)
    }

    /// The init's control channel: agentd's end (a big send buffer, so a
    /// request never blocks on a busy init, and a send timeout) and init's.
    static func initChannelPair() throws(SandboxError) -> (agentd: Int32, initEnd: Int32) {
        var pair: [Int32] = [-1, -1]
        try Posix.check(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair),
                        "socketpair")
        var sndbuf: Int32 = 1 << 20
        _ = setsockopt(pair[0], SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, socklen_t(4))
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(pair[0], SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return (pair[0], pair[1])
    }

    /// The session's half of a start, for a claimed shell or a cold one:
    /// hostname, working directory, limits, privileges, seccomp, init.
    private func sessionSpawnSpec(_ flags: UInt64, root: String, spec: SandboxSpec, limits: ResourceLimits)
        -> SpawnSpec
    {
        var s = SpawnSpec(cloneFlags: flags, newRoot: root, lastCap: lastCap, argv: ["agentd-init"])
        s.workdir = spec.workdir
        s.hostname = spec.hostname
        s.rlimits = [
            (Int32(RLIMIT_NOFILE.rawValue), UInt64(limits.openFiles ?? 1024), UInt64(limits.openFiles ?? 1024)),
            (Int32(RLIMIT_CORE.rawValue), 0, 0),
        ]
        s.seccomp = seccomp
        s.stdio = [-1, -1, -1]
        s.execFD = initBinary.fd
        return s
    }

    /// Start `id` from a warm shell; nil when the shell could not be used
    /// (it is gone then, with its cgroup, socket and runtime record), and
    /// the start goes cold.  The runtime record is written here, while the
    /// shell sets up.
    private func claim(_ shell: WarmShell, id: SandboxID, spec: SandboxSpec, limits: ResourceLimits,
                       imagePath: String, prepared: SpareRoot) async
        -> (pid: pid_t, pidfd: Int32, channel: Int32, cgroup: String)?
    {
        let socket = socketPath(id)
        let recordPath = runtimeRecordPath(id)
        let cgroups = self.cgroups
        let discard = { [logger] (why: String) in
            logger.warning("a warm sandbox shell could not be used; starting cold",
                           metadata: ["sandbox": "\(id)", "reason": "\(why)"])
            shell.release()
            try? cgroups.remove(shell.cgroup)
            // (v1: renamed to the id before the shell failed.)
            try? cgroups.remove(id.rawValue)
            _ = unlink(shell.socketPath)
            _ = unlink(socket)
            _ = unlink(recordPath)
            Posix.close(shell.channelFD)
        }
        do {
            try Posix.check(rename(shell.socketPath, socket), "rename \(shell.socketPath)")
            var s = sessionSpawnSpec(0, root: MountPlan.claimedRoot, spec: spec, limits: limits)
            s.moveRoot = true
            s.seccomp = claimSeal
            s.ops = MountPlan.claim(imagePath: imagePath, spec: spec, limits: limits,
                                    prepared: prepared.prepared(fd: AGENTD_FD_CLAIMED))
            // Woken here, on the actor; the shell sets up while this start
            // does the work below, then waits on its event loop.
            let pending = try Spawner.beginClaim(shell, s, passFD: prepared.fd)
            let pid = shell.pid
            // (A process's start time does not change when it execs: the
            // shell's, read when it was made, is init's.)
            let startTime = shell.startTime
            // The cgroup gets the session's limits (and on v1 its name) while
            // the shell mounts its root: init runs no command of the session
            // before start() returns, so they are in place before any does.
            // Then the runtime record (on the run directory, a tmpfs: a
            // reboot forgets it, as it should; a plain write: a torn record
            // only means the sandbox is not re-adopted).
            let spawned = try await pending.finish(on: group.any(), timeout: config.startTimeout) {
                () throws(SandboxError) -> String in
                let cgroup = try cgroups.claimWarm(shell.cgroup, as: id.rawValue, limits: limits)
                let rec = RuntimeRecord(pid: pid, startTime: startTime ?? Self.startTime(of: pid) ?? 0,
                                        startedAt: Date(), limits: limits, cgroup: cgroup, image: imagePath)
                Self.writeRuntimeRecord(rec, to: recordPath)
                return cgroup
            }
            return (spawned.pid, spawned.pidfd, shell.channelFD, spawned.value)
        } catch {
            discard("\(error)")
            return nil
        }
    }

    /// Write a runtime record (see RuntimeRecord); a failure only means the
    /// sandbox is not re-adopted after a restart.
    private static func writeRuntimeRecord(_ rec: RuntimeRecord, to path: String) {
        guard let fd = try? Posix.open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600) else { return }
        try? Posix.write(fd, rec.line, what: path)
        Posix.close(fd)
    }

    private func coldStart(_ id: SandboxID, spec: SandboxSpec, limits: ResourceLimits, imagePath: String,
                           layout l: SandboxLayout, prepared: SpareRoot?) async throws
        -> (pid: pid_t, pidfd: Int32, channel: Int32, cgroup: String)
    {
        var lowerTree: Int32? = nil
        if spec.userNamespace { lowerTree = try idmappedImage(imagePath) }
        // The child has attached it (or failed) once the spawn is over.
        defer { lowerTree.map(Posix.close) }

        try cgroups.create(id.rawValue, limits: limits)
        var cleanup: [() -> Void] = [{ [cgroups] in try? cgroups.remove(id.rawValue) }]
        func undo() { cleanup.reversed().forEach { $0() } }

        let placement: CgroupPlacement
        let listenFD: Int32
        let pair: (agentd: Int32, initEnd: Int32)
        do {
            placement = try cgroups.placement(id.rawValue)
            listenFD = try Self.listenSocket(socketPath(id))
            cleanup.append { [path = socketPath(id)] in _ = unlink(path) }
            pair = try Self.initChannelPair()
        } catch {
            undo()
            throw error
        }

        var flags = CloneFlag.newNS | CloneFlag.newPID | CloneFlag.newUTS | CloneFlag.newIPC
        if !placement.unshareNamespaceAfterAttach { flags |= CloneFlag.newCgroup }
        var netns: Int32 = -1
        if spec.userNamespace {
            // A network namespace must belong to the sandbox's user namespace
            // for /sys to be mountable, so it is made fresh with it.
            flags |= CloneFlag.newUser | CloneFlag.newNet
        } else if let pooled = takePooledNetns() {
            netns = pooled
        } else {
            flags |= CloneFlag.newNet
        }

        var s = sessionSpawnSpec(flags, root: l.root, spec: spec, limits: limits)
        s.placement = placement
        s.netnsFD = netns
        // A pooled namespace's loopback is already up (agentd_netns_create);
        // bringing it up again would take the RTNL lock for nothing.
        s.loopbackUp = netns < 0
        if spec.userNamespace {
            let map = "0 \(config.userNamespaceBase) \(config.userNamespaceSize)\n"
            s.uidMap = map
            s.gidMap = map
        }
        s.ops = MountPlan.build(layout: l, imagePath: imagePath, lowerTreeFD: lowerTree, spec: spec, limits: limits,
                                prepared: prepared.map { $0.prepared(fd: $0.fd) })
        s.passFDs = [listenFD, pair.initEnd]

        let spawned: (pid: pid_t, pidfd: Int32)
        do {
            // The clone from here, the wait for the child's exec on this
            // task's event loop: no thread hop and no thread blocked.
            let pending = try Spawner.beginSpawn(s)
            // The runtime record while the child sets up (its start time is
            // set at the clone): init runs nothing before start() returns.
            let recordPath = runtimeRecordPath(id)
            cleanup.append { _ = unlink(recordPath) }
            Self.writeRuntimeRecord(
                RuntimeRecord(pid: pending.pid, startTime: Self.startTime(of: pending.pid) ?? 0, startedAt: Date(),
                              limits: limits, cgroup: id.rawValue, image: imagePath),
                to: recordPath)
            spawned = try await pending.finish(on: group.any(), timeout: config.startTimeout)
        } catch {
            placement.close()
            [listenFD, pair.agentd, pair.initEnd, netns].forEach(Posix.close)
            undo()
            throw error
        }
        placement.close()
        [listenFD, pair.initEnd, netns].forEach(Posix.close)
        return (spawned.pid, spawned.pidfd, pair.agentd, id.rawValue)
    }

    private func watch(_ id: SandboxID, _ runtime: SandboxRuntime) {
        reaper.watch(pidfd: runtime.pidfd) { [weak self] exit in
            runtime.markExited()
            guard let self else { return }
            Task { await self.initExited(id, runtime, exit) }
        }
    }

    /// The init of `id` is gone (stopped by us, or died): clean up after it,
    /// and if nobody asked for it, say why it stopped.
    private func initExited(_ id: SandboxID, _ runtime: SandboxRuntime, _ exit: Reaper.Exit?) {
        guard let current = entries[id]?.runtime, current === runtime else { return }
        if entries[id]?.transition == nil {
            // Read before the cgroup goes.
            let oomKills = cgroups.usage(runtime.cgroup).oomKills
            let (cause, message) = Self.explain(exit, oomKills: oomKills, memoryLimit: runtime.limits.memoryBytes)
            logger.warning("a sandbox stopped unexpectedly", metadata: [
                "sandbox": "\(id)", "cause": "\(cause.rawValue)", "why": "\(message)"])
            stopReports.yield(UnexpectedStop(id: id, cause: cause, message: message))
        }
        finishStop(id)
    }

    /// Why an init ended by itself: its exit as reaped (nil when it was not
    /// our child), and the OOM kills its cgroup counted.
    static func explain(_ exit: Reaper.Exit?, oomKills: Int?, memoryLimit: UInt64?) -> (UnexpectedStop.Cause, String) {
        let limit = memoryLimit.map { " (limit \($0 >> 20) MiB)" } ?? ""
        switch exit {
        case .signaled(SIGKILL)? where (oomKills ?? 0) > 0, nil where (oomKills ?? 0) > 0:
            return (.outOfMemory, "the sandbox ran out of memory\(limit) and the kernel's OOM killer ended it")
        case .signaled(let signal)?:
            let name = signal == SIGKILL ? " (SIGKILL)" : signal == SIGTERM ? " (SIGTERM)" : ""
            return (.killed, "the sandbox was killed by signal \(signal)\(name) from outside agentd")
        case .exited(let code)?:
            return (.exited, "the sandbox's init exited by itself with code \(code)")
        case nil:
            return (.lost, "the sandbox's processes ended; agentd cannot tell how (it adopted the sandbox after a "
                        + "restart, so their exit status went to no one)")
        }
    }

    private func finishStop(_ id: SandboxID) {
        let cgroup = entries[id]?.runtime?.cgroup ?? id.rawValue
        do {
            try cgroups.remove(cgroup)
        } catch {
            logger.error("could not remove the sandbox's cgroup", metadata: ["sandbox": "\(id)", "error": "\(error)"])
        }
        _ = unlink(socketPath(id))
        _ = unlink(runtimeRecordPath(id))
        entries[id]?.runtime = nil
        entries[id]?.paused = false
        collectImageGarbage()
    }

    /// Remove image versions that were replaced and that no running sandbox
    /// uses any more.
    func collectImageGarbage(leftovers: Bool = false) {
        let running = entries.values.compactMap(\.runtime)
        let inUse = Set(running.compactMap(\.image))
        let stale = images.staleVersions(inUse: inUse, keepLegacy: running.contains { $0.image == nil },
                                         leftovers: leftovers)
        guard !stale.isEmpty else { return }
        var doomed: [String] = []
        for path in stale {
            // Renamed at once (so no later collection picks it again), then
            // deleted off the actor (an image is thousands of files).
            if path.hasSuffix(".removing") {
                doomed.append(path)
            } else if rename(path, path + ".removing") == 0 {
                doomed.append(path + ".removing")
            }
        }
        // Nothing can start on a stale version meanwhile: starts resolve an
        // image's name to its current version, and versions are never reused.
        let logger = self.logger
        Task {
            for path in doomed {
                do {
                    try await NIOThreadPool.singleton.runIfActive { try Posix.removeTree(path) }
                    logger.info("removed an image version no sandbox uses", metadata: ["path": "\(path)"])
                } catch {
                    logger.warning("could not remove an unused image version",
                                   metadata: ["path": "\(path)", "error": "\(error)"])
                }
            }
        }
    }

    public func stop(_ id: SandboxID) async throws {
        await settle(id)
        guard let entry = entries[id] else { throw notFound(id) }
        guard let runtime = entry.runtime else { return }
        let task = Task<Void, any Error> { await self.doStop(id, runtime) }
        entries[id]?.transition = task
        defer { entries[id]?.transition = nil }
        try await task.value
    }

    private func doStop(_ id: SandboxID, _ runtime: SandboxRuntime) async {
        // SIGKILL to PID 1 of the namespace kills every process in it; the
        // cgroup kill catches anything that could have escaped it.
        _ = agentd_pidfd_signal(runtime.pidfd, SIGKILL)
        cgroups.kill(runtime.cgroup)
        if entries[id]?.paused == true { try? cgroups.thaw(runtime.cgroup) }
        await runtime.waitForExit()
        if let current = entries[id]?.runtime, current === runtime { finishStop(id) }
    }

    public func pause(_ id: SandboxID) async throws {
        await settle(id)
        guard let entry = entries[id] else { throw notFound(id) }
        guard let runtime = entry.runtime else { throw SandboxError(.conflict, "sandbox \(id) is not running") }
        if entry.paused { return }
        try cgroups.freeze(runtime.cgroup)
        entries[id]?.paused = true
    }

    public func resume(_ id: SandboxID) async throws {
        await settle(id)
        guard let entry = entries[id] else { throw notFound(id) }
        guard let runtime = entry.runtime else { throw SandboxError(.conflict, "sandbox \(id) is not running") }
        guard entry.paused else { return }
        try cgroups.thaw(runtime.cgroup)
        entries[id]?.paused = false
    }

    public func destroy(_ id: SandboxID) async throws {
        await entries[id]?.recordWrite?.value
        if entries[id] != nil {
            try await stop(id)
            discardPreparedRoot(id)
            // Forgotten first: nothing can start it while its files go.
            entries[id] = nil
        }
        // (Files of a sandbox we never loaded, a half-created one, go too.)
        // Off the actor's thread: a big upper layer takes a while to delete.
        let directory = layout(id).directory
        try await NIOThreadPool.singleton.runIfActive { try Posix.removeTree(directory) }
    }

    public func status(_ id: SandboxID) async throws -> SandboxStatus {
        guard let e = entries[id] else { throw notFound(id) }
        return statusOf(e)
    }

    private func statusOf(_ e: Entry) -> SandboxStatus {
        let state: SandboxState = e.runtime == nil ? .stopped : (e.paused ? .paused : .running)
        let limits = e.runtime?.limits ?? e.record.spec.limits.resolved(over: config.defaultLimits)
        return SandboxStatus(id: e.record.id, state: state, spec: e.record.spec, limits: limits,
                             usage: e.runtime.map { cgroups.usage($0.cgroup) },
                             startedAt: e.runtime?.startedAt, createdAt: e.record.createdAt)
    }

    public func list() async throws -> [SandboxStatus] {
        entries.keys.sorted().compactMap { entries[$0].map(statusOf) }
    }

    // MARK: exec

    private func running(_ id: SandboxID) throws(SandboxError) -> (SandboxRuntime, SandboxSpec) {
        guard let e = entries[id] else { throw notFound(id) }
        guard let r = e.runtime else { throw SandboxError(.conflict, "sandbox \(id) is not running") }
        guard !e.paused else { throw SandboxError(.conflict, "sandbox \(id) is paused") }
        return (r, e.record.spec)
    }

    public func listenInside(_ id: SandboxID, port: UInt16) async throws -> Int32 {
        let (runtime, _) = try running(id)
        let pidfd = runtime.pidfd
        let fd = agentd_netns_listen(pidfd, UInt32(0x7f00_0001).bigEndian, port)
        guard fd >= 0 else {
            let e = errno
            if e == EADDRINUSE {
                throw SandboxError(.conflict, "port \(port) is already in use inside sandbox \(id)")
            }
            throw SandboxError(.system, "cannot listen inside sandbox \(id): \(String(cString: strerror(e)))")
        }
        return fd
    }

    public func exec(_ id: SandboxID, _ request: ExecRequest) async throws -> any ExecProcess {
        let (runtime, spec) = try running(id)
        try request.command.validate()
        let cwd = try SandboxPath.resolve(request.cwd ?? spec.workdir, workdir: spec.workdir)
        var env = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                   "LANG": "C.UTF-8", "HOSTNAME": spec.hostname]
        for (k, v) in spec.env { env[k] = v }
        for (k, v) in request.env {
            guard EnvName.isValid(k), !v.utf8.contains(0) else {
                throw SandboxError(.invalidArgument, "environment variable \"\(k)\" is not valid", field: "env")
            }
            env[k] = v
        }
        if let t = request.timeout, t <= .zero {
            throw SandboxError(.invalidArgument, "timeout must be positive", field: "timeout_s")
        }

        let out = try Posix.pipe()
        let err: (read: Int32, write: Int32)
        let status: (read: Int32, write: Int32)
        var input: (read: Int32, write: Int32) = (-1, -1)
        do {
            err = try Posix.pipe()
        } catch {
            [out.read, out.write].forEach(Posix.close)
            throw error
        }
        do {
            status = try Posix.pipe()
            if request.stdin != nil || request.interactiveStdin { input = try Posix.pipe() }
        } catch {
            [out.read, out.write, err.read, err.write].forEach(Posix.close)
            throw error
        }
        let hasStdin = input.read >= 0
        let id64 = runtime.channel.makeID()
        let fds = (hasStdin ? [input.read] : []) + [out.write, err.write, status.write]
        do {
            try runtime.channel.exec(id: id64, argv: request.command.argv,
                                     env: env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
                                     cwd: cwd, fds: fds, hasStdin: hasStdin)
        } catch {
            ([out.read, err.read, status.read, input.write] + fds).forEach(Posix.close)
            throw error
        }
        fds.forEach(Posix.close)
        return await LinuxExecProcess(
            channel: runtime.channel, id: id64,
            pipes: .init(stdout: out.read, stderr: err.read, status: status.read, stdin: input.write),
            stdinBytes: request.stdin, interactive: request.interactiveStdin, timeout: request.timeout,
            commandName: request.command.argv[0], cwd: cwd, group: group)
    }

    // MARK: files

    private func files(_ id: SandboxID) throws(SandboxError) -> (SandboxFiles, SandboxRuntime) {
        guard let e = entries[id] else { throw notFound(id) }
        guard let r = e.runtime else { throw SandboxError(.conflict, "sandbox \(id) is not running") }
        let fd = agentd_open_path("/proc/\(r.pid)/root", 1)
        guard fd >= 0 else { throw Posix.error("open the sandbox's root") }
        // The pidfd proves that pid was still our init when we opened it.
        guard r.isAlive else {
            Glibc.close(fd)
            throw SandboxError(.conflict, "sandbox \(id) is not running")
        }
        let owner: (uid_t, gid_t)? = e.record.spec.userNamespace
            ? (config.userNamespaceBase, config.userNamespaceBase) : nil
        return (SandboxFiles(rootFD: fd, workdir: e.record.spec.workdir, owner: owner), r)
    }

    private func withFiles<T: Sendable>(_ id: SandboxID, _ body: @escaping @Sendable (SandboxFiles) throws -> T)
        async throws -> T
    {
        let (f, runtime) = try files(id)
        defer {
            Glibc.close(f.rootFD)
            withExtendedLifetime(runtime) {}
        }
        return try await NIOThreadPool.singleton.runIfActive { try body(f) }
    }

    public func listFiles(_ id: SandboxID, path: String) async throws -> [FileInfo] {
        try await withFiles(id) { try $0.list(path) }
    }

    public func stat(_ id: SandboxID, path: String) async throws -> FileInfo {
        try await withFiles(id) { try $0.stat(path) }
    }

    public func makeDirectory(_ id: SandboxID, path: String, parents: Bool) async throws {
        try await withFiles(id) { try $0.makeDirectory(path, parents: parents) }
    }

    public func removeFile(_ id: SandboxID, path: String, recursive: Bool) async throws {
        try await withFiles(id) { try $0.remove(path, recursive: recursive) }
    }

    public func readFile(_ id: SandboxID, path: String) async throws -> ByteChunks {
        let (fd, _) = try await withFiles(id) { try $0.openForReading(path) }
        let pool = NIOThreadPool.singleton
        return ByteChunks { continuation in
            let task = Task {
                defer { Glibc.close(fd) }
                do {
                    while !Task.isCancelled {
                        let chunk: [UInt8] = try await pool.runIfActive {
                            var buf = [UInt8](repeating: 0, count: 65536)
                            while true {
                                let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                                if n < 0 && errno == EINTR { continue }
                                if n < 0 { throw Posix.error("read \(path)") }
                                return Array(buf[0..<n])
                            }
                        }
                        if chunk.isEmpty { break }
                        continuation.yield(chunk)
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    @discardableResult
    public func writeFile(_ id: SandboxID, path: String, mode: UInt32, contents: ByteChunks) async throws -> FileInfo {
        let pending = try await withFiles(id) { f in Box(try f.createTemporary(path, mode: mode)) }.value
        let pool = NIOThreadPool.singleton
        do {
            var batch: [UInt8] = []
            batch.reserveCapacity(1 << 20)
            for try await chunk in contents {
                batch += chunk
                if batch.count >= 1 << 20 {
                    let b = batch
                    try await pool.runIfActive { try pending.write(b) }
                    batch.removeAll(keepingCapacity: true)
                }
            }
            let b = batch
            return try await pool.runIfActive {
                try pending.write(b)
                return try pending.commit()
            }
        } catch {
            pending.abort()
            throw error
        }
    }

    // MARK: network namespaces

    private func takePooledNetns() -> Int32? {
        netnsPool.popLast()
    }

    /// Keep `warmPool` warm shells, `networkNamespacePool` namespaces and as
    /// many spare cgroups ready, made off the start path.
    func refillPools(after delay: Duration = .zero) {
        guard !refilling, !closing else { return }
        refilling = true
        let cgroups = self.cgroups
        let spares = config.networkNamespacePool
        let made = WarmShellFactory(cgroups: cgroups, runDirectory: config.runDirectory,
                                    staging: warmStagingDirectory, initFD: initBinary.fd, lastCap: lastCap,
                                    seccomp: warmSeccomp)
        refillTask = Task.detached(priority: .utility) { [weak self] in
            if delay > .zero { try? await Task.sleep(for: delay) }
            guard let self else { return }
            while let name = await self.nextWarmCgroup() {
                let shell: WarmShell?
                do {
                    shell = try await self.background.runIfActive { try made.make(cgroup: name) }
                } catch {
                    await self.warmFailed(name, error)
                    break
                }
                guard await self.addWarm(shell, name) else { break }
            }
            while let image = await self.nextSpareImage() {
                let parent = self.sandboxesDirectory
                let spare: SpareRoot
                do {
                    spare = try await self.background.runIfActive { try SpareRoot.make(parent: parent, image: image) }
                } catch {
                    await self.spareFailed(error)
                    break
                }
                guard await self.addSpare(spare) else { break }
            }
            try? await self.background.runIfActive { cgroups.prepareSpares(count: spares) }
            while await self.needsNetns() {
                let fd = (try? await self.background.runIfActive { agentd_netns_create() }) ?? -1
                guard fd >= 0 else { break }
                await self.addNetns(fd)
            }
            await self.doneRefilling()
        }
    }

    private func needsNetns() -> Bool { !closing && netnsPool.count < config.networkNamespacePool }
    private func addNetns(_ fd: Int32) { netnsPool.append(fd) }
    private func doneRefilling() {
        refilling = false
        // A start may have taken from a pool after its loop had ended.
        if needsWarm() || needsNetns() || needsSpare() { refillPools() }
    }

    private func needsSpare() -> Bool {
        guard !closing, !spareFailing, let image = spareImage else { return false }
        return spareRoots.count { $0.image == image } < config.spareRoots
    }

    private func nextSpareImage() -> String? { needsSpare() ? spareImage : nil }

    private func addSpare(_ spare: SpareRoot) -> Bool {
        guard !closing else {
            spare.discard()
            unattachedRootsClosed += 1
            return false
        }
        spareRoots.append(spare)
        while spareRoots.count > 2 * config.spareRoots,
              let i = spareRoots.firstIndex(where: { $0.image != spareImage }) {
            spareRoots.remove(at: i).discard()
            unattachedRootsClosed += 1
        }
        return true
    }

    private func spareFailed(_ error: any Error) {
        spareFailing = true
        logger.log(level: spareFailureLogged ? .debug : .warning,
                   "could not prepare a sandbox root ahead of a create; creates make their own",
                   metadata: ["error": "\(error)"])
        spareFailureLogged = true
    }

    /// Unmount and remove the spare roots (a few directories each).
    private func discardSpareRoots() {
        let spares = spareRoots
        spareRoots = []
        spares.forEach { $0.discard() }
        unattachedRootsClosed += spares.count
    }

    /// Unmount the prepared root of a sandbox that was not started on it
    /// (its directory is the sandbox's own and stays).
    private func discardPreparedRoot(_ id: SandboxID) {
        guard let p = entries[id]?.preparedRoot else { return }
        Posix.close(p.fd)
        entries[id]?.preparedRoot = nil
        unattachedRootsClosed += 1
    }

    /// The cgroup name of the next warm shell to make, or nil when the pool
    /// is full.
    private func nextWarmCgroup() -> String? {
        guard needsWarm() else { return nil }
        let name = warmCgroupPrefix + instance + "-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        warmCgroups.insert(name)
        return name
    }

    private func addWarm(_ shell: WarmShell?, _ name: String) -> Bool {
        guard let shell, !closing else {
            warmCgroups.remove(name)
            if let shell { WarmShellFactory.discard(shell, cgroups: cgroups) }
            return false
        }
        warmShells.append(shell)
        return true
    }

    private func needsWarm() -> Bool { !closing && !warmFailing && warmCgroups.count < config.warmPool }

    private func warmFailed(_ name: String, _ error: any Error) {
        warmCgroups.remove(name)
        warmFailing = true
        // Starts go cold meanwhile; the next start tries again.  Said once
        // as a warning (a host where they cannot work would say it at every
        // start), then at debug level.
        logger.log(level: warmFailureLogged ? .debug : .warning,
                   "could not prepare a warm sandbox shell; starts go cold", metadata: ["error": "\(error)"])
        warmFailureLogged = true
    }

    private func discardWarmShells() {
        let shells = warmShells
        warmShells = []
        for shell in shells {
            warmCgroups.remove(shell.cgroup)
            WarmShellFactory.discard(shell, cgroups: cgroups)
        }
    }

    // MARK: user namespaces

    /// A detached, read-only, idmapped view of an image: files owned by host
    /// root appear owned by the sandbox's root.  A new one for every start:
    /// attaching a detached tree uses it up (a second sandbox could not
    /// attach the same one: EINVAL).  The caller closes it.
    private func idmappedImage(_ path: String) throws(SandboxError) -> Int32 {
        if userns < 0 {
            let map = "0 \(config.userNamespaceBase) \(config.userNamespaceSize)\n"
            userns = agentd_userns_create(map, map)
            guard userns >= 0 else { throw Posix.error("create the id-mapping user namespace", kind: .unsupported) }
        }
        let fd = agentd_detached_tree(path, userns)
        guard fd >= 0 else {
            throw Posix.error("idmapped mount of \(path): user namespace mode needs a kernel that can idmap the image's "
                              + "file system (ext4, xfs, btrfs: 5.12+ and overlay layers 5.19+; tmpfs: 6.3+)", kind: .unsupported)
        }
        return fd
    }

    // MARK: sockets

    static func listenSocket(_ path: String) throws(SandboxError) -> Int32 {
        let s = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw Posix.error("socket") }
        _ = unlink(path)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc < 0 || Glibc.listen(s, 4) < 0 {
            let e = Posix.error("bind \(path)")
            Posix.close(s)
            throw e
        }
        _ = chmod(path, 0o600)
        return s
    }

    // MARK: recovery

    static func startTime(of pid: pid_t) -> UInt64? {
        guard let text = try? Posix.readFile("/proc/\(pid)/stat") else { return nil }
        // The command name (field 2) may hold spaces: count after its ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); start time is field 22.
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Load every sandbox record; adopt those whose init still runs (or stop
    /// them), and remove cgroups and sockets nobody owns.
    private func recover() async throws {
        let decoder = JSONDecoder()
        for name in Posix.listDirectory(sandboxesDirectory) {
            guard let id = try? SandboxID(name) else { continue }
            let l = layout(id)
            guard let text = try? Posix.readFile(l.record),
                  let record = try? decoder.decode(SandboxRecord.self, from: Data(text.utf8)) else {
                logger.warning("ignoring a sandbox directory without a readable record", metadata: ["dir": "\(l.directory)"])
                continue
            }
            var entry = Entry(record: record)
            if let runtime = adopt(id) {
                entry.runtime = runtime
                entry.paused = cgroups.isFrozen(runtime.cgroup)
                entries[id] = entry
                watch(id, runtime)
                if !config.adoptRunning {
                    try await stop(id)
                } else {
                    logger.info("re-adopted a running sandbox", metadata: ["sandbox": "\(id)", "pid": "\(runtime.pid)"])
                }
            } else {
                entries[id] = entry
            }
        }
        collectImageGarbage(leftovers: true)
        // Spare roots: their mounts were gone with the agentd that made them.
        for name in Posix.listDirectory(sandboxesDirectory) where name.hasPrefix(SpareRoot.prefix) {
            try? Posix.removeTree(sandboxesDirectory + "/" + name)
        }
        // Leftovers: cgroups and sockets of our sandboxes that are not
        // running, and of our warm shells (they exited with the agentd that
        // made them).  Only ours: other agentd processes may share the cgroup
        // parent and the run directory, and what they made is theirs.
        let inUse = Set(entries.values.compactMap { $0.runtime?.cgroup })
        for name in cgroups.existing() where !inUse.contains(name) {
            guard isOurs(name) else {
                logger.debug("leaving another agentd's cgroup alone", metadata: ["cgroup": "\(name)"])
                continue
            }
            logger.info("removing a leftover sandbox cgroup", metadata: ["cgroup": "\(name)"])
            try? cgroups.remove(name)
        }
        for file in Posix.listDirectory(config.runDirectory) where file.hasPrefix(".warm-" + instance + "-") {
            _ = unlink(config.runDirectory + "/" + file)
        }
        for file in Posix.listDirectory(config.runDirectory) {
            let base = file.hasSuffix(".sock") || file.hasSuffix(".run") ? String(file.split(separator: ".")[0]) : nil
            guard let base, let id = try? SandboxID(base), entries[id] != nil, entries[id]?.runtime == nil else { continue }
            _ = unlink(config.runDirectory + "/" + file)
        }
    }

    /// Whether a cgroup under the parent is this agentd's: a sandbox of its
    /// state directory, or a warm shell's carrying its instance tag.
    private func isOurs(_ cgroup: String) -> Bool {
        if let id = try? SandboxID(cgroup) { return entries[id] != nil }
        return cgroup.hasPrefix(warmCgroupPrefix + instance + "-")
    }

    private func adopt(_ id: SandboxID) -> SandboxRuntime? {
        guard let text = try? Posix.readFile(runtimeRecordPath(id)), let rec = RuntimeRecord(line: text) else { return nil }
        guard rec.pid > 1, Self.startTime(of: rec.pid) == rec.startTime else { return nil }
        let pidfd = agentd_pidfd_open(rec.pid)
        guard pidfd >= 0 else { return nil }
        // Confirm identity again now that the pidfd pins the process.
        guard Self.startTime(of: rec.pid) == rec.startTime else {
            Posix.close(pidfd)
            return nil
        }
        guard let channel = try? InitChannel.connect(path: socketPath(id)) else {
            logger.warning("a sandbox init runs but does not answer; stopping it", metadata: ["sandbox": "\(id)"])
            _ = agentd_pidfd_signal(pidfd, SIGKILL)
            Posix.close(pidfd)
            return nil
        }
        let cgroup = rec.cgroup.flatMap { $0.isEmpty ? nil : $0 } ?? id.rawValue
        return SandboxRuntime(pid: rec.pid, pidfd: pidfd, channel: channel, startedAt: rec.startedAt, limits: rec.limits,
                              cgroup: cgroup, image: rec.image)
    }
}

/// Carries a non-Sendable value across a thread-pool hop that we own.
struct Box<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
