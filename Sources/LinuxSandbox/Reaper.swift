import CAgentdSandbox
import SandboxKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The one process supervisor of the daemon: a thread that waits (poll) on
/// the pidfds of every sandbox init, reaps those that are our children, and
/// reports each exit once.  Inits adopted after a restart are not our
/// children; their pidfds still become readable when they exit.
final class Reaper: Sendable {
    /// How a child ended, when it was ours to reap (nil for adopted ones).
    enum Exit: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
    }

    private let wake: (read: Int32, write: Int32)
    private let handlers = Mutex<[Int32: @Sendable (Exit?) -> Void]>([:])
    private let stopping = Atomic<Bool>(false)

    init() throws(SandboxError) {
        wake = try Posix.pipe()
        _ = fcntl(wake.read, F_SETFL, O_NONBLOCK)
        _ = fcntl(wake.write, F_SETFL, O_NONBLOCK)
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let reaper = Unmanaged<Reaper>.fromOpaque(arg!).takeRetainedValue()
            reaper.loop()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            throw Posix.error("pthread_create", rc)
        }
        pthread_detach(tid)
    }

    /// Call `onExit` once when the process behind `pidfd` has exited.
    func watch(pidfd: Int32, onExit: @escaping @Sendable (Exit?) -> Void) {
        handlers.withLock { $0[pidfd] = onExit }
        poke()
    }

    func unwatch(pidfd: Int32) {
        _ = handlers.withLock { $0.removeValue(forKey: pidfd) }
        poke()
    }

    /// Stop the thread (tests create many backends).
    func shutdown() {
        stopping.store(true, ordering: .relaxed)
        poke()
    }

    private func poke() {
        var b: UInt8 = 1
        _ = Glibc.write(wake.write, &b, 1)
    }

    /// The exit in a `waitid` result (CLD_EXITED 1, CLD_KILLED 2, CLD_DUMPED 3).
    static func exit(_ info: siginfo_t) -> Exit? {
        let status = info._sifields._sigchld.si_status
        switch info.si_code {
        case 1: return .exited(status)
        case 2, 3: return .signaled(status)
        default: return nil
        }
    }

    private func loop() {
        var drain = [UInt8](repeating: 0, count: 256)
        while !stopping.load(ordering: .relaxed) {
            let watched = handlers.withLock { Array($0.keys) }
            var fds = [pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            fds += watched.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 {
                if errno == EINTR { continue }
                break
            }
            if fds[0].revents != 0 {
                while drain.withUnsafeMutableBytes({ Glibc.read(wake.read, $0.baseAddress, $0.count) }) > 0 {}
            }
            for p in fds.dropFirst() where p.revents != 0 {
                // Reap it if it is our child; ECHILD for adopted ones is fine.
                var info = siginfo_t()
                let reaped = waitid(idtype_t(rawValue: 3) /* P_PIDFD */, id_t(p.fd), &info, WEXITED | WNOHANG) == 0
                let handler = handlers.withLock { $0.removeValue(forKey: p.fd) }
                handler?(reaped ? Self.exit(info) : nil)
            }
        }
        Glibc.close(wake.read)
        Glibc.close(wake.write)
    }
}
