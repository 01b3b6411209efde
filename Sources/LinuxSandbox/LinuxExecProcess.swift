import CAgentdSandbox
import NIOCore
import NIOPosix
import SandboxKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A command started by a sandbox's init.  Its stdout, stderr and status
/// pipes are read by SwiftNIO; the events stream ends with one `.exit`.
final class LinuxExecProcess: ExecProcess {
    let events: AsyncThrowingStream<ExecEvent, any Error>
    private let channel: InitChannel
    private let id: UInt64
    private let stdin: Mutex<(any Channel)?>
    private let timedOut = Flag()

    /// How long to wait for output after the command has exited, for
    /// background processes that still hold its stdout.
    static let drainGrace: Duration = .milliseconds(200)

    struct Pipes {
        var stdout: Int32
        var stderr: Int32
        var status: Int32
        var stdin: Int32  // -1: none
    }

    init(channel: InitChannel, id: UInt64, pipes: Pipes, stdinBytes: [UInt8]?, interactive: Bool, timeout: Duration?,
         commandName: String, cwd: String, group: any EventLoopGroup) async {
        self.channel = channel
        self.id = id
        let (stream, continuation) = AsyncThrowingStream<ExecEvent, any Error>.makeStream()
        self.events = stream
        var stdinChannel: (any Channel)? = nil
        if pipes.stdin >= 0 {
            do {
                stdinChannel = try await NIOPipeBootstrap(group: group).takingOwnershipOfDescriptor(output: pipes.stdin)
                    .get()
            } catch {
                Posix.close(pipes.stdin)
            }
        }
        self.stdin = Mutex(stdinChannel)
        if let bytes = stdinBytes, let ch = stdinChannel {
            let buffer = ByteBuffer(bytes: bytes)
            ch.writeAndFlush(buffer).whenComplete { _ in
                if !interactive { ch.close(promise: nil) }
            }
        } else if !interactive, let ch = stdinChannel {
            ch.close(promise: nil)
        }

        // A consumer that goes away takes the command with it.
        continuation.onTermination = { reason in
            if case .cancelled = reason { try? channel.signal(id: id, signal: SIGKILL) }
        }
        let start = Posix.monotonicNanos()
        let timedOut = self.timedOut
        Task {
            let timer: Task<Void, Never>? = timeout.map { t in
                Task {
                    guard (try? await Task.sleep(for: t)) != nil else { return }
                    timedOut.set()
                    try? channel.signal(id: id, signal: SIGKILL)
                }
            }
            let status = await LinuxExecProcess.pump(pipes: pipes, group: group, continuation: continuation)
            timer?.cancel()
            let ms = Double(Posix.monotonicNanos() - start) / 1e6
            switch status {
            case .some(let st) where st.outcome == Int32(AGENTD_EXEC_FAILED.rawValue):
                let reason = String(cString: strerror(st.err))
                let kind: SandboxError.Kind = (st.err == ENOENT || st.err == ENOTDIR) ? .notFound : .invalidArgument
                let message = st.stage == 1 ? "working directory \(cwd): \(reason)"
                    : "command \(commandName) could not be started: \(reason)"
                continuation.finish(throwing: SandboxError(
                    kind, message, field: st.stage == 1 ? "cwd" : "command", stage: "exec", errno: st.err))
            case .some(let st):
                continuation.yield(.exit(ExitStatus(
                    code: st.signal == 0 ? st.code : nil, signal: st.signal == 0 ? nil : st.signal,
                    timedOut: timedOut.isSet, durationMs: ms)))
                continuation.finish()
            case .none:
                // init went away (the sandbox was stopped): the command died with it.
                continuation.yield(.exit(ExitStatus(code: nil, signal: SIGKILL,
                                                    timedOut: timedOut.isSet, durationMs: ms)))
                continuation.finish()
            }
        }
    }

    private enum Piece { case outputDone, graceOver }

    /// Read stdout and stderr into the stream and the status record; returns
    /// the status, or nil when the status pipe closed without one.
    private static func pump(pipes: Pipes, group: any EventLoopGroup,
                             continuation: AsyncThrowingStream<ExecEvent, any Error>.Continuation) async
        -> agentd_exec_status?
    {
        await withTaskGroup(of: Piece.self) { tasks in
            tasks.addTask {
                await readPipe(pipes.stdout, group: group) { continuation.yield(.stdout($0)) }
                return .outputDone
            }
            tasks.addTask {
                await readPipe(pipes.stderr, group: group) { continuation.yield(.stderr($0)) }
                return .outputDone
            }
            let collected = Mutex<[UInt8]>([])
            await readPipe(pipes.status, group: group) { chunk in collected.withLock { $0 += chunk } }
            let record = collected.withLock { $0 }
            tasks.addTask {
                try? await Task.sleep(for: drainGrace)
                return .graceOver
            }
            var done = 0
            while let piece = await tasks.next() {
                if piece == .graceOver { break }
                done += 1
                if done == 2 { break }
            }
            tasks.cancelAll()
            guard record.count >= MemoryLayout<agentd_exec_status>.size else { return nil }
            let st = record.withUnsafeBytes { $0.loadUnaligned(as: agentd_exec_status.self) }
            return st.magic == AGENTD_INIT_MAGIC ? st : nil
        }
    }

    /// Read a pipe until end-of-file (or cancellation), calling `onChunk`.
    static func readPipe(_ fd: Int32, group: any EventLoopGroup, onChunk: @escaping @Sendable ([UInt8]) -> Void) async {
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await NIOPipeBootstrap(group: group)
                .takingOwnershipOfDescriptor(input: fd) { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: ch)
                    }
                }
        } catch {
            Posix.close(fd)
            return
        }
        try? await channel.executeThenClose { inbound, _ in
            for try await buffer in inbound {
                onChunk(Array(buffer.readableBytesView))
            }
        }
    }

    func write(stdin bytes: [UInt8]) async throws {
        guard let ch = stdin.withLock({ $0 }) else {
            throw SandboxError(.conflict, "standard input is not open", field: "stdin")
        }
        try await ch.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    func closeStdin() async {
        let ch = stdin.withLock { current -> (any Channel)? in
            let c = current
            current = nil
            return c
        }
        try? await ch?.close().get()
    }

    func signal(_ signal: Int32) async {
        try? channel.signal(id: id, signal: signal)
    }
}

/// A one-way boolean shared between tasks.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
