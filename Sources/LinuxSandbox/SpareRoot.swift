import CAgentdSandbox
import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

/// A sandbox directory made ahead of a create, with its overlay root
/// already mounted, detached (fsmount: in no mount table, gone with its
/// last fd): a create renames the directory to the sandbox's, and its start
/// attaches the mount instead of mounting the overlay, which is the costly
/// part of a start (overlayfs checks its work directory with a handful of
/// journaled operations on every mount).  Kept in a small pool for the
/// image of the last create; the overlay follows its layers when their
/// directory is renamed (it holds them, not their path).
struct SpareRoot: Sendable {
    static let prefix = ".spare-"

    let directory: String
    /// The image version's directory the overlay's lower layer is.
    let image: String
    let fd: Int32
    /// Mount points that the image lacks, made in the upper layer.
    let made: Set<String>

    /// Make one under `parent` (the sandboxes directory): the directory,
    /// its upper and work directories, the overlay, the mount points.
    static func make(parent: String, image: String) throws(SandboxError) -> SpareRoot {
        let directory = parent + "/" + prefix + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let layout = SandboxLayout(directory: directory)
        do throws(SandboxError) {
            try Posix.check(mkdir(directory, 0o700), "mkdir \(directory)")
            for d in [layout.upper, layout.work] { try Posix.check(mkdir(d, 0o755), "mkdir \(d)") }
            let fd = agentd_overlay_detached(image, layout.upper, layout.work)
            guard fd >= 0 else { throw Posix.error("mount an overlay of \(image)") }
            var made: Set<String> = []
            for d in MountPlan.mountPoints where !Posix.isDirectory(image + d) {
                guard mkdirat(fd, String(d.dropFirst()), 0o755) == 0 else {
                    let e = Posix.error("mkdir \(d) in a prepared root")
                    Posix.close(fd)
                    throw e
                }
                made.insert(d)
            }
            return SpareRoot(directory: directory, image: image, fd: fd, made: made)
        } catch {
            try? Posix.removeTree(directory)
            throw error
        }
    }

    /// The overlay of a sandbox's own directory (its first start had no
    /// spare, or it ran before), mounted detached for a start that can only
    /// attach its root: a warm shell's claim.  Not a spare: closed after
    /// the start, never discarded.
    static func mount(_ layout: SandboxLayout, image: String) throws(SandboxError) -> SpareRoot {
        let fd = agentd_overlay_detached(image, layout.upper, layout.work)
        guard fd >= 0 else { throw Posix.error("mount the sandbox's root (an overlay of \(image))") }
        return SpareRoot(directory: layout.directory, image: image, fd: fd, made: [])
    }

    /// What the start's plan needs of it, its mount named by `fd`.
    func prepared(fd: Int32) -> PreparedRoot { PreparedRoot(fd: fd, made: made) }

    /// Unmount (closing the last fd of a detached mount does) and remove.
    func discard() {
        Posix.close(fd)
        try? Posix.removeTree(directory)
    }
}
