import CAgentdSandbox
import NIOCore
import NIOPosix
import SandboxKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A command started by a sandbox's init.  Its stdout, stderr and status
/// pipes are read on one SwiftNIO event loop by plain channel handlers (no
/// task per pipe, nothing awaited to set them up); the events stream ends
/// with one `.exit`, after the command's output.
final class LinuxExecProcess: ExecProcess {
    let events: AsyncThrowingStream<ExecEvent, any Error>
    private let channel: InitChannel
    private let id: UInt64
    private let stdin: Mutex<(any Channel)?>

    /// How long to wait for output after the command has exited, for
    /// background processes that still hold its stdout.
    static let drainGrace: TimeAmount = .milliseconds(200)

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
        // The caller's loop when it runs on one (agentd runs Swift
        // concurrency on NIO's loops): the stream's consumer is woken
        // there, with no hop to another thread.
        let loop = group.any()
        let pump = ExecPump(loop: loop, continuation: continuation, channel: channel, id: id,
                            commandName: commandName, cwd: cwd)
        pump.begin(pipes: pipes, timeout: timeout)

        var stdinChannel: (any Channel)? = nil
        if pipes.stdin >= 0 {
            do {
                stdinChannel = try await NIOPipeBootstrap(group: loop).takingOwnershipOfDescriptor(output: pipes.stdin)
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

/// The reading side of one command, confined to one event loop: output
/// goes into the stream as it comes; when the status pipe has closed and
/// stdout and stderr have ended (or `drainGrace` has passed), the stream
/// gets the exit and finishes.
private final class ExecPump: Sendable {
    private struct State: Sendable {
        var openOutputs = 2
        var record: [UInt8] = []
        var statusClosed = false
        var finished = false
        var channels: [any Channel] = []
        var timer: Scheduled<Void>? = nil
        var grace: Scheduled<Void>? = nil
    }

    let loop: any EventLoop
    private let state: NIOLoopBoundBox<State>
    private let continuation: AsyncThrowingStream<ExecEvent, any Error>.Continuation
    private let channel: InitChannel
    private let id: UInt64
    private let commandName: String
    private let cwd: String
    private let started = Posix.monotonicNanos()
    private let timedOut = Flag()

    init(loop: any EventLoop, continuation: AsyncThrowingStream<ExecEvent, any Error>.Continuation,
         channel: InitChannel, id: UInt64, commandName: String, cwd: String) {
        self.loop = loop
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), as: State.self, eventLoop: loop)
        self.continuation = continuation
        self.channel = channel
        self.id = id
        self.commandName = commandName
        self.cwd = cwd
    }

    /// Register the three pipes and arm the timeout (from any thread).
    func begin(pipes: LinuxExecProcess.Pipes, timeout: Duration?) {
        loop.execute {
            if let t = timeout {
                let (seconds, attoseconds) = t.components
                let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
                let amount: TimeAmount = nanos.overflow ? .hours(24 * 365) : .nanoseconds(nanos.partialValue + attoseconds / 1_000_000_000)
                self.state.value.timer = self.loop.scheduleTask(in: amount) {
                    self.timedOut.set()
                    try? self.channel.signal(id: self.id, signal: SIGKILL)
                }
            }
            self.read(pipes.stdout, onChunk: { self.continuation.yield(.stdout($0)) }, onEnd: { self.outputEnded() })
            self.read(pipes.stderr, onChunk: { self.continuation.yield(.stderr($0)) }, onEnd: { self.outputEnded() })
            self.read(pipes.status, onChunk: { self.state.value.record += $0 }, onEnd: { self.statusClosed() })
        }
    }

    private func read(_ fd: Int32, onChunk: @escaping ([UInt8]) -> Void, onEnd: @escaping () -> Void) {
        let handlers = NIOLoopBound((onChunk, onEnd), eventLoop: loop)
        NIOPipeBootstrap(group: loop)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    let (c, e) = handlers.value
                    try ch.pipeline.syncOperations.addHandler(PipeReader(onChunk: c, onEnd: e))
                }
            }
            .takingOwnershipOfDescriptor(input: fd)
            .whenComplete { result in
                switch result {
                case .success(let ch):
                    if self.state.value.finished { ch.close(promise: nil) } else { self.state.value.channels.append(ch) }
                case .failure:
                    Posix.close(fd)
                    handlers.value.1()
                }
            }
    }

    private func outputEnded() {
        state.value.openOutputs -= 1
        if state.value.openOutputs == 0 && state.value.statusClosed { finish() }
    }

    private func statusClosed() {
        state.value.statusClosed = true
        if state.value.openOutputs == 0 {
            finish()
        } else {
            // Output still open after the command has ended: a background
            // process holds it.  Wait a little for it, then end anyway.
            state.value.grace = loop.scheduleTask(in: LinuxExecProcess.drainGrace) { self.finish() }
        }
    }

    private func finish() {
        guard !state.value.finished else { return }
        state.value.finished = true
        state.value.timer?.cancel()
        state.value.grace?.cancel()
        for ch in state.value.channels where ch.isActive { ch.close(promise: nil) }
        state.value.channels = []
        let ms = Double(Posix.monotonicNanos() - started) / 1e6
        let record = state.value.record
        guard record.count >= MemoryLayout<agentd_exec_status>.size,
              case let st = record.withUnsafeBytes({ $0.loadUnaligned(as: agentd_exec_status.self) }),
              st.magic == AGENTD_INIT_MAGIC
        else {
            // init went away (the sandbox was stopped): the command died with it.
            continuation.yield(.exit(ExitStatus(code: nil, signal: SIGKILL, timedOut: timedOut.isSet, durationMs: ms)))
            continuation.finish()
            return
        }
        if st.outcome == Int32(AGENTD_EXEC_FAILED.rawValue) {
            let reason = String(cString: strerror(st.err))
            let kind: SandboxError.Kind = (st.err == ENOENT || st.err == ENOTDIR) ? .notFound : .invalidArgument
            let message = st.stage == 1 ? "working directory \(cwd): \(reason)"
                : "command \(commandName) could not be started: \(reason)"
            continuation.finish(throwing: SandboxError(
                kind, message, field: st.stage == 1 ? "cwd" : "command", stage: "exec", errno: st.err))
        } else {
            continuation.yield(.exit(ExitStatus(
                code: st.signal == 0 ? st.code : nil, signal: st.signal == 0 ? nil : st.signal,
                timedOut: timedOut.isSet, durationMs: ms)))
            continuation.finish()
        }
    }
}

/// Hands a pipe's bytes to `onChunk` and its end (end-of-file, an error,
/// or the channel closed) to `onEnd`, once.
final class PipeReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onChunk: ([UInt8]) -> Void
    private var onEnd: (() -> Void)?

    init(onChunk: @escaping ([UInt8]) -> Void, onEnd: @escaping () -> Void) {
        self.onChunk = onChunk
        self.onEnd = onEnd
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        onChunk(Array(buffer.readableBytesView))
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func end() {
        let f = onEnd
        onEnd = nil
        f?()
    }
}

enum PipeReading {
    /// The bytes of pipe `fd` (at most `limit`) until its end, read on
    /// `loop` without blocking a thread.  Takes ownership of `fd`.
    static func readToEnd(_ fd: Int32, on loop: any EventLoop, limit: Int) async -> [UInt8] {
        let promise = loop.makePromise(of: [UInt8].self)
        NIOPipeBootstrap(group: loop)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    let box = ByteBox()
                    try ch.pipeline.syncOperations.addHandler(PipeReader(
                        onChunk: { box.bytes += $0.prefix(max(0, limit - box.bytes.count)) },
                        onEnd: { promise.succeed(box.bytes) }))
                }
            }
            .takingOwnershipOfDescriptor(input: fd)
            .whenFailure { _ in
                // Not registered (the fd is still ours): read it here.
                promise.succeed(blockingReadToEnd(fd, limit: limit))
                Posix.close(fd)
            }
        return (try? await promise.futureResult.get()) ?? []
    }

    private final class ByteBox {
        var bytes: [UInt8] = []
    }

    private static func blockingReadToEnd(_ fd: Int32, limit: Int) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, -1)
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if n <= 0 { return out }
            out += buf[0..<min(n, max(0, limit - out.count))]
        }
    }
}

/// A one-way boolean shared between tasks.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
