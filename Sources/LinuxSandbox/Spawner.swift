import CAgentdSandbox
import NIOCore
import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

/// Everything the clone child needs, as Swift values; `Spawner.beginSpawn` turns
/// it into C memory that stays put until the child has exec'd.
struct SpawnSpec {
    var cloneFlags: UInt64
    var placement = CgroupPlacement()
    var netnsFD: Int32 = -1
    var uidMap: String?
    var gidMap: String?
    var ops: [PlanOp] = []
    var newRoot: String
    /// Move `newRoot` onto / and chroot instead of pivot_root (a claimed
    /// warm shell's: see `child_pivot` in spawn.c).
    var moveRoot = false
    var workdir: String?
    var hostname: String?
    var loopbackUp = true
    /// (resource, soft, hard)
    var rlimits: [(Int32, UInt64, UInt64)] = []
    var seccomp: SeccompProgram?
    var lastCap: Int32
    var nondumpable = true
    var stdio: [Int32] = [-1, -1, -1]
    var passFDs: [Int32] = []
    var execFD: Int32 = -1
    var execPath: String?
    var argv: [String]
    var envp: [String] = []
}

enum CloneFlag {
    static let newNS: UInt64 = 0x0002_0000
    static let newCgroup: UInt64 = 0x0200_0000
    static let newUTS: UInt64 = 0x0400_0000
    static let newIPC: UInt64 = 0x0800_0000
    static let newUser: UInt64 = 0x1000_0000
    static let newPID: UInt64 = 0x2000_0000
    static let newNet: UInt64 = 0x4000_0000
}

enum Spawner {
    /// Clone a cold child and return as soon as it runs (the clone itself,
    /// ~0.1 ms), without waiting for its setup: `PendingSpawn.finish` waits
    /// for its exec on an event loop, so no thread blocks for the
    /// millisecond that takes.  In user namespace mode its id maps are
    /// written here.
    static func beginSpawn(_ s: SpawnSpec) throws(SandboxError) -> PendingSpawn {
        let arena = CArena()
        let cfg = arena.array([config(s, arena)])
        let pending = PendingSpawn(spec: s, arena: arena)
        var result = agentd_spawn_result()
        let rc = withExtendedLifetime(s.seccomp) { agentd_spawn_begin(cfg, pending.handle, &result) }
        guard rc == 0 else { throw failure(result, s) }
        return pending
    }

    /// Clone a warm shell (see agentd_warm_start): blocks until it is ready.
    static func warm(_ s: SpawnSpec) throws(SandboxError) -> agentd_warm {
        var result = agentd_spawn_result()
        var w = agentd_warm()
        let rc = withConfig(s) { agentd_warm_start($0, &w, &result) }
        guard rc == 0 else { throw failure(result, s, warm: true) }
        return w
    }

    /// Claim a warm shell with the session's half of a start (`s`: plan,
    /// root, hostname, limits, privileges): wakes the shell and returns at
    /// once, without blocking; `PendingClaim.finish` waits for the outcome.
    /// `passFD` (when >= 0) goes to the shell with the claim: plan steps
    /// name it `AGENTD_FD_CLAIMED` (a prepared root, see SpareRoot).  When
    /// the shell cannot be woken it is spent and the error thrown.
    static func beginClaim(_ shell: WarmShell, _ s: SpawnSpec, passFD: Int32 = -1) throws(SandboxError)
        -> PendingClaim
    {
        let arena = CArena()
        let cfg = arena.array([config(s, arena)])
        var result = agentd_spawn_result()
        let rc = shell.withHandle { w in agentd_warm_claim_begin(&w, cfg, passFD, &result) }
        guard rc == 0 else { throw failure(result, s) }
        return PendingClaim(shell: shell, spec: s, arena: arena)
    }

    /// `s` as the C config, valid during `body`.
    private static func withConfig<R>(_ s: SpawnSpec, _ body: (UnsafePointer<agentd_spawn_config>) -> R) -> R {
        let arena = CArena()
        var cfg = config(s, arena)
        return withExtendedLifetime((arena, s.seccomp)) { body(&cfg) }
    }

    /// `s` as the C config, its strings and arrays in `arena` (the
    /// seccomp program is the caller's to keep alive).
    private static func config(_ s: SpawnSpec, _ arena: CArena) -> agentd_spawn_config {
        let ops = arena.array(s.ops.map { $0.cValue(arena) })
        let attach = arena.array(s.placement.attachFDs)
        let pass = arena.array(s.passFDs)
        let limits = arena.array(s.rlimits.map { agentd_rlimit(resource: $0.0, soft: $0.1, hard: $0.2) })
        var cfg = agentd_spawn_config()
        cfg.clone_flags = s.cloneFlags
        cfg.cgroup_fd = s.placement.cgroupFD
        cfg.attach_fds = UnsafePointer(attach)
        cfg.n_attach_fds = Int32(s.placement.attachFDs.count)
        cfg.unshare_cgroupns = s.placement.unshareNamespaceAfterAttach ? 1 : 0
        cfg.netns_fd = s.netnsFD
        cfg.uid_map = UnsafePointer(arena.optionalString(s.uidMap))
        cfg.gid_map = UnsafePointer(arena.optionalString(s.gidMap))
        cfg.ops = UnsafePointer(ops)
        cfg.n_ops = Int32(s.ops.count)
        cfg.new_root = UnsafePointer(arena.string(s.newRoot))
        cfg.move_root = s.moveRoot ? 1 : 0
        cfg.workdir = UnsafePointer(arena.optionalString(s.workdir))
        cfg.hostname = UnsafePointer(arena.optionalString(s.hostname))
        cfg.loopback_up = s.loopbackUp ? 1 : 0
        cfg.rlimits = UnsafePointer(limits)
        cfg.n_rlimits = Int32(s.rlimits.count)
        cfg.seccomp_prog = s.seccomp.map { UnsafeRawPointer($0.program) }
        cfg.last_cap = s.lastCap
        cfg.nondumpable = s.nondumpable ? 1 : 0
        cfg.stdio = (s.stdio[0], s.stdio[1], s.stdio[2])
        cfg.pass_fds = UnsafePointer(pass)
        cfg.n_pass_fds = Int32(s.passFDs.count)
        cfg.exec_fd = s.execFD
        cfg.exec_path = UnsafePointer(arena.optionalString(s.execPath))
        cfg.argv = UnsafePointer(arena.stringArray(s.argv))
        cfg.envp = UnsafePointer(arena.stringArray(s.envp))
        return cfg
    }

    /// A start whose child (`pid`, `pidfd`) did not exec within `after`:
    /// the child is killed, `whenGone` runs once it is (`rest`, the rest of
    /// its report pipe, ends with it: until then it runs on our memory),
    /// and the error says where it was blocked.
    fileprivate static func timedOut(pid: pid_t, pidfd: Int32, after: Duration, rest: EventLoopFuture<[UInt8]>,
                                     whenGone: @escaping @Sendable () -> Void) -> SandboxError {
        let blocked = blockedIn(pid)
        _ = agentd_pidfd_signal(pidfd, SIGKILL)
        rest.whenComplete { _ in whenGone() }
        return SandboxError(.system, "the sandbox did not finish setting up within \(after)"
                                + (blocked.map { " (its process \(pid) was blocked in the kernel's \($0))" } ?? "")
                                + "; it was killed", stage: "setup timeout", errno: ETIMEDOUT)
    }

    /// Where process `pid` waits in the kernel (/proc/PID/wchan), if it does.
    static func blockedIn(_ pid: pid_t) -> String? {
        guard let s = try? Posix.readFile("/proc/\(pid)/wchan"), !s.isEmpty, s != "0" else { return nil }
        return s
    }

    fileprivate static func failure(_ result: agentd_spawn_result, _ s: SpawnSpec, warm: Bool = false) -> SandboxError {
        let stage = String(cString: agentd_stage_name(result.stage))
        var detail = stage
        if result.stage == Int32(AGENTD_STAGE_PLAN.rawValue), Int(result.err_index) < s.ops.count {
            detail += " (\(s.ops[Int(result.err_index)].summary))"
        } else if result.stage == Int32(AGENTD_STAGE_CGROUP_ATTACH.rawValue) {
            detail += " (hierarchy \(result.err_index))"
        }
        let text = String(cString: strerror(result.err))
        return SandboxError(.system, "\(warm ? "preparing a warm sandbox shell" : "starting the sandbox") failed at "
                                + "\(detail): \(text)", stage: detail, errno: result.err)
    }
}

/// The agentd-init binary, loaded once into a sealed memfd: every sandbox
/// execs it from there, so it needs no path inside the sandbox and cannot be
/// modified by one (the lesson of runc's CVE-2019-5736).
final class InitBinary: Sendable {
    let fd: Int32
    let path: String

    init(explicitPath: String?) throws(SandboxError) {
        var candidates: [String] = []
        if let explicitPath { candidates.append(explicitPath) }
        if let env = getenv("AGENTD_INIT") { candidates.append(String(cString: env)) }
        if let exe = try? InitBinary.ownExecutable() { candidates.append(Posix.parentDirectory(exe) + "/agentd-init") }
        candidates += ["/usr/lib/agentd/agentd-init", "/usr/libexec/agentd/agentd-init"]
        guard let found = candidates.first(where: { Posix.exists($0) }) else {
            throw SandboxError(.unsupported, "agentd-init not found (looked in \(candidates.joined(separator: ", ")))")
        }
        let src = try Posix.open(found, O_RDONLY)
        defer { Posix.close(src) }
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(src, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Posix.error("read \(found)")
            }
            if n == 0 { break }
            bytes += buf[0..<n]
        }
        guard bytes.starts(with: [0x7F, 0x45, 0x4C, 0x46]) else {
            throw SandboxError(.unsupported, "\(found) is not an ELF executable")
        }
        let fd = bytes.withUnsafeBytes { agentd_sealed_memfd("agentd-init", $0.baseAddress, $0.count) }
        guard fd >= 0 else { throw Posix.error("memfd for agentd-init") }
        self.fd = fd
        self.path = found
    }

    deinit { Posix.close(fd) }

    static func ownExecutable() throws(SandboxError) -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { throw Posix.error("readlink /proc/self/exe") }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A claim sent to a warm shell (`Spawner.beginClaim`) whose outcome is not
/// known yet.  Keeps the claim's C config alive until the shell has exec'd
/// or failed; `finish` is called once.
final class PendingClaim: @unchecked Sendable {
    // @unchecked: one owner at a time (the start that made it), and the
    // arena is not touched after the claim was sent.
    private let shell: WarmShell
    private let spec: SpawnSpec
    private let arena: CArena

    fileprivate init(shell: WarmShell, spec: SpawnSpec, arena: CArena) {
        self.shell = shell
        self.spec = spec
        self.arena = arena
    }

    /// Run `meanwhile` while the shell sets up, then wait on `loop` (no
    /// thread blocks) for its exec, about half a millisecond.  When
    /// `meanwhile` throws, the shell is killed and the error thrown; the
    /// shell is spent either way.
    /// A shell that has not exec'd within `timeout` is killed, and the
    /// claim fails with a timeout (the claim's config and the shell are let
    /// go of once the shell is gone).
    func finish<T>(on loop: any EventLoop, timeout: Duration, meanwhile: () throws(SandboxError) -> T)
        async throws(SandboxError) -> (pid: pid_t, pidfd: Int32, value: T)
    {
        let value: Result<T, SandboxError>
        do throws(SandboxError) {
            value = .success(try meanwhile())
        } catch {
            value = .failure(error)
        }
        var result = agentd_spawn_result()
        let abandon: Int32 = if case .failure = value { 1 } else { 0 }
        var report: [UInt8]? = nil
        if abandon == 0 {
            let fd = shell.withHandle { w in
                let fd = w.report_fd
                w.report_fd = -1
                return fd
            }
            switch await PipeReading.readToEnd(fd, on: loop, limit: 4096, timeout: timeout) {
            case .complete(let bytes):
                report = bytes
            case .timedOut(let rest):
                shell.spendWhenGone()
                let (pid, pidfd) = shell.withHandle { w in (w.pid, w.pidfd) }
                throw Spawner.timedOut(pid: pid, pidfd: pidfd, after: timeout, rest: rest) { [self] in
                    withExtendedLifetime(arena) { shell.withHandle { w in agentd_warm_release(&w) } }
                }
            }
        }
        let rc = withExtendedLifetime(arena) {
            shell.withHandle { w in
                if let report {
                    return PipeReading.withReport(report) { agentd_warm_claim_finish(&w, 0, $0, $1, &result) }
                }
                return agentd_warm_claim_finish(&w, abandon, nil, 0, &result)
            }
        }
        switch value {
        case .failure(let e): throw e
        case .success(let v):
            guard rc == 0 else { throw Spawner.failure(result, spec) }
            return (result.pid, result.pidfd, v)
        }
    }
}

/// A cold child cloned by `Spawner.beginSpawn` that has not exec'd yet.
/// Keeps its C config (and the seccomp program it names) alive until then.
final class PendingSpawn: @unchecked Sendable {
    // @unchecked: one owner (the start that made it); the config is not
    // touched after the clone, and the handle only by begin and finish.
    private let spec: SpawnSpec
    private let arena: CArena
    fileprivate let handle: UnsafeMutablePointer<agentd_spawn_pending>

    fileprivate init(spec: SpawnSpec, arena: CArena) {
        self.spec = spec
        self.arena = arena
        handle = .allocate(capacity: 1)
        handle.initialize(to: agentd_spawn_pending(pid: -1, pidfd: -1, report_fd: -1, priv: nil))
    }

    deinit {
        // Never finished: the child is killed and reaped before the memory
        // it runs on goes.
        if handle.pointee.priv != nil {
            var result = agentd_spawn_result()
            _ = agentd_spawn_finish(handle, nil, 0, &result)
        }
        handle.deallocate()
    }

    var pid: pid_t { handle.pointee.pid }

    /// Wait on `loop` (no thread blocks) until the child has exec'd, which
    /// returns its pid and pidfd, or failed, which throws how (the child
    /// killed and reaped then).  A child that has not exec'd within
    /// `timeout` (stuck in its setup: a mount on a file system that does
    /// not answer) is killed, and the start fails with a timeout; it is
    /// reaped, and the memory it runs on freed, once it is gone.
    func finish(on loop: any EventLoop, timeout: Duration) async throws(SandboxError) -> (pid: pid_t, pidfd: Int32) {
        let fd = handle.pointee.report_fd
        handle.pointee.report_fd = -1
        let report: [UInt8]
        switch await PipeReading.readToEnd(fd, on: loop, limit: 4096, timeout: timeout) {
        case .complete(let bytes):
            report = bytes
        case .timedOut(let rest):
            throw Spawner.timedOut(pid: handle.pointee.pid, pidfd: handle.pointee.pidfd, after: timeout,
                                   rest: rest) { [self] in
                var r = agentd_spawn_result()
                _ = withExtendedLifetime((arena, spec.seccomp)) { agentd_spawn_finish(handle, nil, 0, &r) }
            }
        }
        var result = agentd_spawn_result()
        let rc = withExtendedLifetime((arena, spec.seccomp)) {
            PipeReading.withReport(report) { agentd_spawn_finish(handle, $0, $1, &result) }
        }
        guard rc == 0 else { throw Spawner.failure(result, spec) }
        return (result.pid, result.pidfd)
    }
}
