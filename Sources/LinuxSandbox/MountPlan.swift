import CAgentdSandbox
import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

/// One step of a sandbox's root filesystem setup, executed in order by the
/// clone child (see spawn.c).  Built here, in Swift, where it can be tested.
enum PlanOp: Equatable {
    case mount(source: String?, target: String, fstype: String?, flags: UInt, data: String?, optional: Bool = false)
    case mkdir(String, mode: UInt32 = 0o755)
    case mknod(String, mode: UInt32, dev: UInt64)
    case symlink(target: String, at: String)
    case moveMount(fd: Int32, target: String)

    var target: String {
        switch self {
        case .mount(_, let t, _, _, _, _), .mkdir(let t, _), .mknod(let t, _, _), .symlink(_, let t), .moveMount(_, let t):
            return t
        }
    }
}

/// Files of one sandbox on the host, under the state directory.
struct SandboxLayout {
    let directory: String
    var record: String { directory + "/sandbox.json" }
    /// Overlay upper layer: every file the sandbox writes, kept across restarts.
    var upper: String { directory + "/upper" }
    var work: String { directory + "/work" }
    /// Mount point of the merged root (inside the sandbox's mount namespace
    /// only): the sandbox's directory itself, so that a create makes one
    /// directory less (the overlay holds its layers from the moment it is
    /// mounted; that it hides them in the sandbox's namespace is harmless).
    var root: String { directory }
    /// Mount point of the idmapped lower layer (user namespace mode).
    var lower: String { directory + "/lower" }
}

/// A sandbox's root mounted before its start (see SpareRoot): the overlay
/// as a detached mount, and the mount points already made in its upper layer.
struct PreparedRoot: Equatable {
    /// The mount in the plan: its fd (a cold start's child inherits it), or
    /// `AGENTD_FD_CLAIMED` (it goes to a warm shell with the claim).
    var fd: Int32
    var made: Set<String>
}

enum MountPlan {
    static let msRdonly: UInt = 1, msNosuid: UInt = 2, msNodev: UInt = 4, msNoexec: UInt = 8
    static let msRemount: UInt = 32, msBind: UInt = 4096, msRec: UInt = 16384

    /// Paths masked like runc/crun/Docker do: files read as empty, directories as empty.
    static let maskedFiles = ["/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                              "/proc/timer_stats", "/proc/sched_debug"]
    static let maskedDirectories = ["/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware",
                                    "/sys/devices/virtual/powercap"]
    static let readOnlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

    /// The sandbox's /proc and /sys come from the same kernel as the host's:
    /// entries the host lacks are left out of the plan once, here.
    static let hostMaskedFiles = maskedFiles.filter(Posix.exists)
    static let hostMaskedDirectories = maskedDirectories.filter(Posix.exists)
    static let hostReadOnlyPaths = readOnlyPaths.filter(Posix.exists)

    /// Device nodes of the minimal /dev: name, major, minor.
    static let devices: [(String, UInt32, UInt32)] = [
        ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
    ]

    static func makedev(_ major: UInt32, _ minor: UInt32) -> UInt64 {
        (UInt64(major & 0xfffff000) << 32) | (UInt64(major & 0xfff) << 8) | (UInt64(minor & 0xffffff00) << 12)
            | UInt64(minor & 0xff)
    }

    static let msMove: UInt = 8192

    /// The whole plan for one cold start: the session's root, then the
    /// kernel file systems mounted into it, then what depends on the session.
    /// - lowerTreeFD: a detached idmapped tree of the image (user namespace mode).
    /// - prepared: the root, mounted already (then lowerTreeFD is nil).
    static func build(layout: SandboxLayout, imagePath: String, lowerTreeFD: Int32?, spec: SandboxSpec,
                      limits: ResourceLimits, prepared: PreparedRoot? = nil) -> [PlanOp] {
        rootOps(layout: layout, imagePath: imagePath, lowerTreeFD: lowerTreeFD, spec: spec, prepared: prepared)
            + kernelFileSystems(under: layout.root, userNamespace: spec.userNamespace)
            + sessionOps(root: layout.root, spec: spec, limits: limits)
    }

    /// What a warm shell mounts before it is claimed: a small tmpfs at
    /// `directory` (a host directory, mounted over in the shell's own mount
    /// namespace only) holding its /proc, /dev and /sys and the mount point
    /// of the session's root.  The shell then makes the tmpfs its root
    /// (pivot_root), dropping the host's mount tree before any claim.
    static func staging(_ directory: String) -> [PlanOp] {
        [.mount(source: "tmpfs", target: directory, fstype: "tmpfs", flags: msNosuid | msNodev | msNoexec,
                data: "mode=700,size=16384,nr_inodes=16")]
            + ["/proc", "/dev", "/sys", claimedRoot].map { PlanOp.mkdir(directory + $0) }
            + kernelFileSystems(under: directory, userNamespace: false)
    }

    /// In a claimed warm shell (whose root is its staging tmpfs), where the
    /// session's root is attached before the shell pivots into it.
    static let claimedRoot = "/sandbox"

    /// A warm shell's claim: the session's root, which the shell can only
    /// attach (`prepared`: the host's paths are gone from its namespace), at
    /// `claimedRoot`, the staged /proc, /dev and /sys moved into it (with the
    /// masks mounted on them), the rest as cold.
    static func claim(imagePath: String, spec: SandboxSpec, limits: ResourceLimits, prepared: PreparedRoot)
        -> [PlanOp]
    {
        let root = claimedRoot
        return rootOps(layout: SandboxLayout(directory: root), imagePath: imagePath, lowerTreeFD: nil, spec: spec,
                       prepared: prepared)
            + ["/proc", "/dev", "/sys"].map {
                PlanOp.mount(source: $0, target: root + $0, fstype: nil, flags: msMove, data: nil)
            }
            + sessionOps(root: root, spec: spec, limits: limits)
    }

    /// Where the sandbox's file systems and working directory are mounted
    /// or entered: each must exist in its root.
    static let mountPoints = ["/proc", "/dev", "/sys", "/tmp", "/workspace"]

    /// The overlay root (mounted now, or attached when prepared) and the
    /// mount points the image lacks.
    private static func rootOps(layout: SandboxLayout, imagePath: String, lowerTreeFD: Int32?,
                                spec: SandboxSpec, prepared: PreparedRoot?) -> [PlanOp] {
        let root = layout.root
        var ops: [PlanOp] = []
        if let prepared {
            ops.append(.moveMount(fd: prepared.fd, target: root))
        } else {
            var lowerdir = imagePath
            if let fd = lowerTreeFD {
                ops.append(.moveMount(fd: fd, target: layout.lower))
                lowerdir = layout.lower
            }
            var overlay = "lowerdir=\(lowerdir),upperdir=\(layout.upper),workdir=\(layout.work)"
            if spec.userNamespace { overlay += ",userxattr" }
            ops.append(.mount(source: "overlay", target: root, fstype: "overlay", flags: 0, data: overlay))
        }
        // Mount points the image lacks are made in the upper layer.
        var dirs = mountPoints
        var walked = ""
        for part in spec.workdir.split(separator: "/") {
            walked += "/" + part
            if !dirs.contains(walked) { dirs.append(walked) }
        }
        for d in dirs where !(prepared?.made.contains(d) ?? false) && !Posix.isDirectory(imagePath + d) {
            ops.append(.mkdir(root + d))
        }
        return ops
    }

    /// /proc of the sandbox's pid namespace (masked), a minimal /dev and a
    /// read-only /sys, under `root`.
    private static func kernelFileSystems(under root: String, userNamespace userns: Bool) -> [PlanOp] {
        var ops: [PlanOp] = []
        // /proc of the sandbox's own pid namespace.
        ops.append(.mount(source: "proc", target: root + "/proc", fstype: "proc",
                          flags: msNosuid | msNodev | msNoexec, data: nil))

        // A minimal /dev.
        let dev = root + "/dev"
        ops.append(.mount(source: "tmpfs", target: dev, fstype: "tmpfs", flags: msNosuid | msNoexec,
                          data: "mode=755,size=65536,nr_inodes=64"))
        for (name, major, minor) in devices {
            if userns {
                // mknod is not allowed in a user namespace: bind the host's node.
                ops.append(.mknod(dev + "/" + name, mode: UInt32(S_IFREG) | 0o666, dev: 0))
                ops.append(.mount(source: "/dev/" + name, target: dev + "/" + name, fstype: nil, flags: msBind,
                                  data: nil))
            } else {
                ops.append(.mknod(dev + "/" + name, mode: UInt32(S_IFCHR) | 0o666, dev: makedev(major, minor)))
            }
        }
        ops.append(.mkdir(dev + "/pts"))
        ops.append(.mkdir(dev + "/shm", mode: 0o1777))
        ops.append(.mount(source: "devpts", target: dev + "/pts", fstype: "devpts", flags: msNosuid | msNoexec,
                          data: "newinstance,ptmxmode=0666,mode=0620"))
        ops.append(.symlink(target: "pts/ptmx", at: dev + "/ptmx"))
        ops.append(.mount(source: "shm", target: dev + "/shm", fstype: "tmpfs", flags: msNosuid | msNodev,
                          data: "mode=1777,size=67108864"))
        for (name, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                               ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
            ops.append(.symlink(target: target, at: dev + "/" + name))
        }

        // /sys read-only (it shows the sandbox's own network namespace).
        ops.append(.mount(source: "sysfs", target: root + "/sys", fstype: "sysfs",
                          flags: msRdonly | msNosuid | msNodev | msNoexec, data: nil))

        for f in hostMaskedFiles {
            ops.append(.mount(source: "/dev/null", target: root + f, fstype: nil, flags: msBind, data: nil,
                              optional: true))
        }
        for d in hostMaskedDirectories {
            ops.append(.mount(source: "tmpfs", target: root + d, fstype: "tmpfs",
                              flags: msRdonly | msNosuid | msNodev | msNoexec, data: "size=0,nr_inodes=1",
                              optional: true))
        }
        for p in hostReadOnlyPaths {
            ops.append(.mount(source: root + p, target: root + p, fstype: nil, flags: msBind | msRec, data: nil,
                              optional: true))
            ops.append(.mount(source: nil, target: root + p, fstype: nil,
                              flags: msBind | msRemount | msRdonly | msNosuid | msNodev | msNoexec, data: nil,
                              optional: true))
        }
        return ops
    }

    /// A private /tmp of the session's size, and the read-only root option.
    private static func sessionOps(root: String, spec: SandboxSpec, limits: ResourceLimits) -> [PlanOp] {
        var ops: [PlanOp] = []
        let tmpSize = limits.tmpBytes ?? (256 << 20)
        ops.append(.mount(source: "tmpfs", target: root + "/tmp", fstype: "tmpfs", flags: msNosuid | msNodev,
                          data: "mode=1777,size=\(tmpSize)"))
        if spec.readOnlyRoot {
            // /workspace becomes its own (writable) mount before the root goes read-only.
            ops.append(.mount(source: root + "/workspace", target: root + "/workspace", fstype: nil, flags: msBind,
                              data: nil))
            ops.append(.mount(source: nil, target: root, fstype: nil, flags: msBind | msRemount | msRdonly,
                              data: nil))
        }
        return ops
    }

    /// Characters that would break overlayfs's option parsing.
    static func isSafeLayerPath(_ path: String) -> Bool {
        path.hasPrefix("/") && !path.contains(",") && !path.contains(":") && !path.contains("\\")
            && !path.contains("\0")
    }
}

extension PlanOp {
    /// The C struct the child reads; strings live in `arena`.
    func cValue(_ arena: CArena) -> agentd_op {
        var op = agentd_op()
        op.fd = -1
        switch self {
        case let .mount(source, target, fstype, flags, data, optional):
            op.kind = Int32(AGENTD_OP_MOUNT.rawValue)
            op.source = UnsafePointer(arena.optionalString(source))
            op.target = UnsafePointer(arena.string(target))
            op.fstype = UnsafePointer(arena.optionalString(fstype))
            op.flags = flags
            op.data = UnsafePointer(arena.optionalString(data))
            op.optional = optional ? 1 : 0
        case let .mkdir(target, mode):
            op.kind = Int32(AGENTD_OP_MKDIR.rawValue)
            op.target = UnsafePointer(arena.string(target))
            op.mode = mode
        case let .mknod(target, mode, dev):
            op.kind = Int32(AGENTD_OP_MKNOD.rawValue)
            op.target = UnsafePointer(arena.string(target))
            op.mode = mode
            op.dev = dev
        case let .symlink(target, at):
            op.kind = Int32(AGENTD_OP_SYMLINK.rawValue)
            op.source = UnsafePointer(arena.string(target))
            op.target = UnsafePointer(arena.string(at))
        case let .moveMount(fd, target):
            op.kind = Int32(AGENTD_OP_MOVE_MOUNT.rawValue)
            op.fd = fd
            op.target = UnsafePointer(arena.string(target))
        }
        return op
    }

    var summary: String {
        switch self {
        case let .mount(source, target, fstype, flags, _, _):
            if flags & MountPlan.msMove != 0 { return "move \(source ?? "") to \(target)" }
            return "mount \(fstype ?? "bind") \(source ?? "") on \(target)"
        case let .mkdir(t, _): return "mkdir \(t)"
        case let .mknod(t, _, _): return "mknod \(t)"
        case let .symlink(target, at): return "symlink \(at) -> \(target)"
        case let .moveMount(_, t): return "attach a prepared tree at \(t)"
        }
    }
}
