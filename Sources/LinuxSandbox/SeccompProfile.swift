import CAgentdSandbox
import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

/// agentd's default seccomp profile: everything is allowed except what
/// Docker's default profile denies to a container without CAP_SYS_ADMIN, and
/// a little more.  Denied calls fail with an errno (EPERM, or ENOSYS where
/// programs probe and fall back) so programs fail politely instead of dying.
enum SeccompProfile {
    struct Rule: Sendable {
        var name: String
        var errno: Int32
        /// (argument index, mask, value): deny only when (arg & mask) == value.
        var masked: (arg: UInt32, mask: UInt64, value: UInt64)? = nil
    }

    static let deniedEPERM = [
        // keys, BPF, tracing and the kernel's own state
        "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
        "get_kernel_syms", "query_module", "reboot", "swapon", "swapoff", "syslog", "acct",
        "quotactl", "quotactl_fd", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
        "settimeofday", "stime", "clock_settime", "clock_adjtime", "iopl", "ioperm", "vm86", "vm86old",
        "sethostname", "setdomainname", "vhangup",
        // file systems and namespaces
        "mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree",
        "fsopen", "fsconfig", "fsmount", "fspick", "unshare", "setns", "open_by_handle_at", "fanotify_init",
        // other processes
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "process_madvise",
    ]

    /// Probed by libraries that fall back when the call "does not exist":
    /// clone3 (glibc falls back to clone, whose flags the filter can see) and
    /// io_uring.
    static let deniedENOSYS = ["clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"]

    /// Namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
    /// NEWUSER, NEWPID, NEWNET, NEWTIME.
    static let namespaceFlags: [UInt64] = [
        0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000, 0x0000_0080,
    ]

    static var rules: [Rule] {
        var r = deniedEPERM.map { Rule(name: $0, errno: EPERM) }
        r += deniedENOSYS.map { Rule(name: $0, errno: ENOSYS) }
        r += namespaceFlags.map { Rule(name: "clone", errno: EPERM, masked: (0, $0, $0)) }
        // Terminal input injection (TIOCSTI) and console control (TIOCLINUX).
        r.append(Rule(name: "ioctl", errno: EPERM, masked: (1, 0xFFFF_FFFF, 0x5412)))
        r.append(Rule(name: "ioctl", errno: EPERM, masked: (1, 0xFFFF_FFFF, 0x541C)))
        return r
    }

    /// The denied calls that a claimed warm shell still makes to enter its
    /// session's root (attach it, move the staged mounts and the root,
    /// chroot, set the hostname).  A warm shell waits under the profile
    /// without them (`warmRules`), compiled and attached ahead of need; a
    /// claim adds `sealRules`, a filter of these few, after its last mount.
    /// Stacked filters all apply (the strictest result wins), so the two
    /// together deny exactly what `rules` does, and attaching the small seal
    /// costs a fraction of the whole profile (the kernel emulates a filter
    /// for every call number on attach, to cache what it allows).
    static let claimCalls: Set<String> = ["mount", "move_mount", "chroot", "sethostname"]

    static var warmRules: [Rule] { rules.filter { !claimCalls.contains($0.name) } }
    static var sealRules: [Rule] { rules.filter { claimCalls.contains($0.name) } }

    /// A human summary for the daemon's report.
    static func summary(allow32Bit: Bool) -> String {
        "default profile: \(deniedEPERM.count + deniedENOSYS.count) calls denied, clone namespace flags denied, "
            + (allow32Bit ? "32-bit ABIs filtered alike" : "32-bit ABIs denied (ENOSYS)")
    }
}

/// A compiled BPF program and the `struct sock_fprog` that points at it,
/// built once per daemon and shared (read-only) by every spawn.
final class SeccompProgram: @unchecked Sendable {
    // Immutable after init; the child reads it with the daemon's memory.
    let program: UnsafeMutableRawPointer
    private let filter: UnsafeMutablePointer<UInt8>
    let byteCount: Int

    /// - allow32Bit: filter the compat ABIs (i386, x32) with the same rules
    ///   instead of failing every call through them with ENOSYS.
    init(rules: [SeccompProfile.Rule], allow32Bit: Bool) throws(SandboxError) {
        let arena = CArena()
        var cRules: [agentd_seccomp_rule] = []
        for r in rules {
            var c = agentd_seccomp_rule()
            c.syscall = UnsafePointer(arena.string(r.name))
            c.err = r.errno
            if let m = r.masked {
                c.cmp = Int32(AGENTD_CMP_MASKED_EQ.rawValue)
                c.arg = m.arg
                c.mask = m.mask
                c.value = m.value
            }
            cRules.append(c)
        }
        var out: UnsafeMutablePointer<UInt8>? = nil
        var len = 0
        var err: Int32 = 0
        let rc = cRules.withUnsafeBufferPointer {
            agentd_seccomp_compile($0.baseAddress, Int32($0.count), allow32Bit ? 1 : 0, &out, &len, &err)
        }
        guard rc == 0, let out else { throw Posix.error("seccomp compile", err) }
        filter = out
        byteCount = len
        // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        program = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        program.initializeMemory(as: UInt8.self, repeating: 0, count: 16)
        program.storeBytes(of: UInt16(len / 8), as: UInt16.self)
        program.storeBytes(of: UnsafeMutableRawPointer(out), toByteOffset: 8, as: UnsafeMutableRawPointer.self)
    }

    deinit {
        free(filter)
        program.deallocate()
    }

    var instructionCount: Int { byteCount / 8 }
}
