import CAgentdSandbox
import SandboxKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A warm shell (see agentd_sandbox.h) waiting in the backend's pool, with
/// what agentd keeps of it: its cgroup, its control socket's path and
/// agentd's end of the init channel.  Spent by a claim or a release.
final class WarmShell: @unchecked Sendable {
    // @unchecked: `handle` is only touched by whoever took the shell out of
    // the pool (one owner at a time), under `lock`.
    private var handle: agentd_warm
    /// Whether a timed-out claim spends the shell once it is gone (see
    /// `PendingClaim.finish`): `release` leaves it alone then, rather than
    /// block on reaping a process stuck in the kernel.
    private let lock = Mutex<Bool>(false)
    let cgroup: String
    let socketPath: String
    let channelFD: Int32
    /// Field 22 of /proc/PID/stat, for the runtime record.
    let startTime: UInt64?

    init(handle: agentd_warm, cgroup: String, socketPath: String, channelFD: Int32) {
        self.handle = handle
        self.startTime = LinuxSandboxBackend.startTime(of: handle.pid)
        self.cgroup = cgroup
        self.socketPath = socketPath
        self.channelFD = channelFD
    }

    /// The shell's process (until it is spent).
    var pid: pid_t { withHandle { $0.pid } }

    func withHandle<R>(_ body: (inout agentd_warm) -> R) -> R {
        lock.withLock { _ in body(&handle) }
    }

    /// Leave the shell to whoever waits for it to die (a timed-out claim,
    /// which spends it with `agentd_warm_release` then).
    func spendWhenGone() {
        lock.withLock { $0 = true }
    }

    /// Let it exit and reap it (blocks briefly); the caller removes its
    /// cgroup and socket and closes `channelFD`.
    func release() {
        lock.withLock { later in
            if handle.shared != nil && !later { agentd_warm_release(&handle) }
        }
    }

    deinit { release() }
}

/// Makes warm shells on the backend's background thread, and disposes of
/// the ones that are not claimed.
struct WarmShellFactory: Sendable {
    let cgroups: any CgroupDriver
    let runDirectory: String
    let staging: String
    let initFD: Int32
    let lastCap: Int32
    /// The profile a shell waits under (SeccompProfile.warmRules).
    let seccomp: SeccompProgram

    /// A ready shell in the cgroup `cgroup` (blocking, ~1 ms of mostly
    /// idle-priority work); nothing is left behind when it fails.
    func make(cgroup: String) throws(SandboxError) -> WarmShell {
        let placement = try cgroups.prepareWarm(cgroup)
        defer { placement.close() }
        let socketPath = runDirectory + "/.warm-" + cgroup.dropFirst(warmCgroupPrefix.count) + ".sock"
        var opened: [Int32] = []
        do {
            let listenFD = try LinuxSandboxBackend.listenSocket(socketPath)
            opened.append(listenFD)
            let pair = try LinuxSandboxBackend.initChannelPair()
            opened += [pair.agentd, pair.initEnd]
            var flags = CloneFlag.newNS | CloneFlag.newPID | CloneFlag.newUTS | CloneFlag.newIPC | CloneFlag.newNet
            if !placement.unshareNamespaceAfterAttach { flags |= CloneFlag.newCgroup }
            // The staging tmpfs becomes its root (see MountPlan.staging).
            var s = SpawnSpec(cloneFlags: flags, newRoot: staging, lastCap: lastCap, argv: ["agentd-init"])
            s.placement = placement
            s.loopbackUp = true
            s.ops = MountPlan.staging(staging)
            s.passFDs = [listenFD, pair.initEnd]
            s.execFD = initFD
            s.seccomp = seccomp
            let handle = try Spawner.warm(s)
            Posix.close(listenFD)
            Posix.close(pair.initEnd)
            return WarmShell(handle: handle, cgroup: cgroup, socketPath: socketPath, channelFD: pair.agentd)
        } catch {
            opened.forEach(Posix.close)
            _ = unlink(socketPath)
            try? cgroups.remove(cgroup)
            throw error
        }
    }

    /// Let an unclaimed shell exit, with its cgroup, socket and channel.
    static func discard(_ shell: WarmShell, cgroups: any CgroupDriver) {
        shell.release()
        try? cgroups.remove(shell.cgroup)
        _ = unlink(shell.socketPath)
        Posix.close(shell.channelFD)
    }
}

