import CAgentdSandbox
import SandboxKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// agentd's side of the control connection to one sandbox's init
/// (agentd_init_protocol.h).  Requests are single SOCK_SEQPACKET messages;
/// answers come back on per-command status pipes, so nothing here waits.
final class InitChannel: Sendable {
    private let fd: Mutex<Int32>
    private let nextID = Atomic<UInt64>(1)

    init(fd: Int32) {
        self.fd = Mutex(fd)
    }

    /// Connect to an init's listening socket (re-adoption after a restart).
    static func connect(path: String) throws(SandboxError) -> InitChannel {
        let s = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw Posix.error("socket") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            Posix.close(s)
            throw SandboxError(.invalidArgument, "socket path \(path) is too long", field: "run_dir")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc < 0 {
            let e = Posix.error("connect \(path)")
            Posix.close(s)
            throw e
        }
        return InitChannel(fd: s)
    }

    deinit {
        fd.withLock { Posix.close($0) }
    }

    func makeID() -> UInt64 {
        nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    /// Start a command.  `fds` are [stdin?, stdout, stderr, status].
    func exec(id: UInt64, argv: [String], env: [String], cwd: String, fds: [Int32], hasStdin: Bool) throws(SandboxError) {
        var payload: [UInt8] = []
        for s in [cwd] + argv + env {
            payload += Array(s.utf8)
            payload.append(0)
        }
        guard payload.count + MemoryLayout<agentd_init_header>.size <= Int(AGENTD_INIT_MAX_MESSAGE) else {
            throw SandboxError(.invalidArgument, "command and environment exceed \(AGENTD_INIT_MAX_MESSAGE) bytes",
                               field: "command")
        }
        var h = agentd_init_header()
        h.magic = AGENTD_INIT_MAGIC
        h.type = UInt32(AGENTD_REQ_EXEC.rawValue)
        h.id = id
        h.flags = hasStdin ? 0 : AGENTD_EXEC_NO_STDIN
        h.argc = UInt32(argv.count)
        h.envc = UInt32(env.count)
        h.payload_len = UInt32(payload.count)
        try send(header: h, payload: payload, fds: fds)
    }

    func signal(id: UInt64, signal: Int32) throws(SandboxError) {
        var h = agentd_init_header()
        h.magic = AGENTD_INIT_MAGIC
        h.type = UInt32(AGENTD_REQ_SIGNAL.rawValue)
        h.id = id
        h.flags = UInt32(signal)
        try send(header: h, payload: [], fds: [])
    }

    private func send(header: agentd_init_header, payload: [UInt8], fds: [Int32]) throws(SandboxError) {
        var message = withUnsafeBytes(of: header) { Array($0) }
        message += payload
        let result: Int = fd.withLock { sock in
            message.withUnsafeBytes { raw in
                fds.withUnsafeBufferPointer { f in
                    agentd_send_fds(sock, raw.baseAddress, raw.count, f.baseAddress, Int32(f.count))
                }
            }
        }
        if result < 0 {
            let e = errno
            if e == EPIPE || e == ECONNRESET || e == ENOTCONN || e == EBADF {
                throw SandboxError(.conflict, "the sandbox is not running", stage: "init control", errno: e)
            }
            throw Posix.error("send to sandbox init", e)
        }
    }
}
