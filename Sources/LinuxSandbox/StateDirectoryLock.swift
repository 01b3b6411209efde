import Glibc
import SandboxKit
import Synchronization

/// The exclusive claim one backend holds on its state directory.
///
/// Two agentd processes must never drive the same sandboxes, and neither may
/// two backends in one process (tests make many). A record lock (`F_SETLK`)
/// covers other processes: unlike `flock`, it belongs to the process, so a
/// child that is between clone and exec, and still shares our open files,
/// does not keep the directory claimed after we let it go. Record locks do not
/// exclude the owning process, so an in-process set covers that case.
final class StateDirectoryLock: Sendable {
    private static let held = Mutex<Set<String>>([])

    private let path: String
    private let fd: Mutex<Int32>

    init(directory: String) throws(SandboxError) {
        let path = directory + "/.sandbox.lock"
        let claimed = Self.held.withLock { $0.insert(path).inserted }
        guard claimed else { throw Self.busy(directory) }
        let fd: Int32
        do {
            fd = try Posix.open(path, O_RDWR | O_CREAT, 0o600)
        } catch {
            Self.held.withLock { _ = $0.remove(path) }
            throw error
        }
        var lock = flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        guard fcntl(fd, F_SETLK, &lock) == 0 else {
            Posix.close(fd)
            Self.held.withLock { _ = $0.remove(path) }
            throw Self.busy(directory)
        }
        self.path = path
        self.fd = Mutex(fd)
    }

    /// Let the directory go; closing the file drops the record lock.
    func release() {
        let fd = self.fd.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        guard fd >= 0 else { return }
        Posix.close(fd)
        Self.held.withLock { _ = $0.remove(path) }
    }

    deinit { release() }

    private static func busy(_ directory: String) -> SandboxError {
        SandboxError(.conflict, "another agentd is using the state directory \(directory)", field: "state_dir")
    }
}
