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
/// with one `.exit`, after the command's output.  The stream is pulled: a
/// consumer slower than the command stops the reading (see ExecEventBuffer),
/// and one that goes away (cancelled, or the stream dropped) kills it.
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
        // The caller's loop when it runs on one (agentd runs Swift
        // concurrency on NIO's loops): the stream's consumer is woken
        // there, with no hop to another thread.
        let loop = group.any()
        let buffer = ExecEventBuffer()
        let pump = ExecPump(loop: loop, buffer: buffer, channel: channel, id: id, commandName: commandName, cwd: cwd)
        // (Weak: the pump lives while its channels do; the buffer outlives it.)
        let weakPump = WeakPump(pump)
        buffer.resumeReading = { loop.execute { weakPump.pump?.resumeReading() } }
        pump.begin(pipes: pipes, timeout: timeout)
        // Killed when the consumer goes away before the end: cancelled while
        // it waits, or the stream dropped.
        let kill: @Sendable () -> Void = { try? channel.signal(id: id, signal: SIGKILL) }
        let consumer = ExecConsumer(buffer: buffer, kill: kill)
        self.events = AsyncThrowingStream(unfolding: { try await consumer.next() })

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

/// A weak reference to a pump that a Sendable closure can hold.
private final class WeakPump: Sendable {
    weak let pump: ExecPump?
    init(_ pump: ExecPump) { self.pump = pump }
}

/// The reading side of one command, confined to one event loop: output
/// goes into the stream as it comes; when the status pipe has closed and
/// stdout and stderr have ended (or `drainGrace` has passed), the stream
/// gets the exit and finishes.
private final class ExecPump: Sendable {
    private struct State: Sendable {
        var openOutputs = 2
        var outputs: [any Channel] = []
        var record: [UInt8] = []
        var statusClosed = false
        var finished = false
        var channels: [any Channel] = []
        var timer: Scheduled<Void>? = nil
        var grace: Scheduled<Void>? = nil
    }

    let loop: any EventLoop
    private let state: NIOLoopBoundBox<State>
    private let buffer: ExecEventBuffer
    private let channel: InitChannel
    private let id: UInt64
    private let commandName: String
    private let cwd: String
    private let started = Posix.monotonicNanos()
    private let timedOut = Flag()

    init(loop: any EventLoop, buffer: ExecEventBuffer, channel: InitChannel, id: UInt64, commandName: String,
         cwd: String) {
        self.loop = loop
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), as: State.self, eventLoop: loop)
        self.buffer = buffer
        self.channel = channel
        self.id = id
        self.commandName = commandName
        self.cwd = cwd
    }

    /// Register the three pipes and arm the timeout (from any thread).
    func begin(pipes: LinuxExecProcess.Pipes, timeout: Duration?) {
        loop.execute {
            if let t = timeout {
                self.state.value.timer = self.loop.scheduleTask(in: .clamped(t)) {
                    self.timedOut.set()
                    try? self.channel.signal(id: self.id, signal: SIGKILL)
                }
            }
            self.read(pipes.stdout, output: true, onChunk: { self.output(.stdout($0)) }, onEnd: { self.outputEnded() })
            self.read(pipes.stderr, output: true, onChunk: { self.output(.stderr($0)) }, onEnd: { self.outputEnded() })
            self.read(pipes.status, output: false, onChunk: { self.state.value.record += $0 },
                      onEnd: { self.statusClosed() })
        }
    }

    /// Hand output to the consumer; past the high-water mark, stop reading
    /// the command's output until the consumer has caught up.
    private func output(_ event: ExecEvent) {
        guard buffer.push(event) else { return }
        for ch in state.value.outputs { ch.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in } }
    }

    /// The consumer caught up (called on the loop; the buffer says whether
    /// reading is paused).
    func resumeReading() {
        guard !buffer.isPaused else { return }
        for ch in state.value.outputs where ch.isActive {
            ch.setOption(ChannelOptions.autoRead, value: true).whenSuccess { ch.read() }
        }
    }

    private func read(_ fd: Int32, output: Bool, onChunk: @escaping ([UInt8]) -> Void, onEnd: @escaping () -> Void) {
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
                    if self.state.value.finished {
                        ch.close(promise: nil)
                    } else {
                        self.state.value.channels.append(ch)
                        if output {
                            self.state.value.outputs.append(ch)
                            if self.buffer.isPaused {
                                ch.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
                            }
                        }
                    }
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
        state.value.outputs = []
        let ms = Double(Posix.monotonicNanos() - started) / 1e6
        let record = state.value.record
        guard record.count >= MemoryLayout<agentd_exec_status>.size,
              case let st = record.withUnsafeBytes({ $0.loadUnaligned(as: agentd_exec_status.self) }),
              st.magic == AGENTD_INIT_MAGIC
        else {
            // init went away (the sandbox was stopped): the command died with it.
            buffer.finish(with: .exit(ExitStatus(code: nil, signal: SIGKILL, timedOut: timedOut.isSet, durationMs: ms)))
            return
        }
        if st.outcome == Int32(AGENTD_EXEC_FAILED.rawValue) {
            let reason = String(cString: strerror(st.err))
            let kind: SandboxError.Kind = (st.err == ENOENT || st.err == ENOTDIR) ? .notFound : .invalidArgument
            let message = st.stage == 1 ? "working directory \(cwd): \(reason)"
                : "command \(commandName) could not be started: \(reason)"
            buffer.finish(throwing: SandboxError(
                kind, message, field: st.stage == 1 ? "cwd" : "command", stage: "exec", errno: st.err))
        } else {
            buffer.finish(with: .exit(ExitStatus(
                code: st.signal == 0 ? st.code : nil, signal: st.signal == 0 ? nil : st.signal,
                timedOut: timedOut.isSet, durationMs: ms)))
        }
    }
}

/// The events of one command between the reader (on its event loop) and
/// the consumer, with backpressure: when more than `highWater` bytes of
/// output wait, the reader stops reading the command's pipes (which fill,
/// and the command blocks writing) until the consumer has taken them below
/// `lowWater`.  One consumer.
final class ExecEventBuffer: Sendable {
    static let highWater = 4 << 20
    static let lowWater = 1 << 20

    private struct State {
        var queue: [ExecEvent] = []
        var head = 0
        var bytes = 0
        var end: Result<Void, SandboxError>? = nil
        var paused = false
        var waiter: CheckedContinuation<Void, Never>? = nil
    }

    private let state = Mutex(State())
    /// Asks the reader to read again.  Set once, before the reading starts
    /// (the reader and this buffer refer to each other), hence unsafe.
    nonisolated(unsafe) var resumeReading: @Sendable () -> Void = {}

    /// Queue output; true when the reader should pause.
    func push(_ event: ExecEvent) -> Bool {
        let size: Int
        switch event {
        case .stdout(let b), .stderr(let b): size = b.count
        case .exit: size = 0
        }
        let (pause, waiter) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
            s.queue.append(event)
            s.bytes += size
            let pause = !s.paused && s.bytes > Self.highWater
            if pause { s.paused = true }
            let w = s.waiter
            s.waiter = nil
            return (pause, w)
        }
        waiter?.resume()
        return pause
    }

    /// The last event (the exit), then the end.
    func finish(with event: ExecEvent) {
        _ = push(event)
        end(.success(()))
    }

    func finish(throwing error: SandboxError) {
        end(.failure(error))
    }

    private func end(_ result: Result<Void, SandboxError>) {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.end == nil { s.end = result }
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// Wake a waiting consumer (it was cancelled).
    private func wake() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    var isPaused: Bool { state.withLock { $0.paused } }

    var ended: Bool { state.withLock { $0.end != nil && $0.head == $0.queue.count } }

    private enum Next { case event(ExecEvent, resume: Bool), end(Result<Void, SandboxError>), wait }

    /// The next event, nil at the end; waits for one.  A cancelled consumer
    /// gets nil at once, as from any async stream, and `onCancel` runs.
    func next(onCancel: @escaping @Sendable () -> Void) async throws -> ExecEvent? {
        while true {
            if Task.isCancelled {
                onCancel()
                return nil
            }
            let next = state.withLock { s -> Next in
                if s.head < s.queue.count {
                    let e = s.queue[s.head]
                    s.head += 1
                    if s.head > 64 && s.head * 2 > s.queue.count {
                        s.queue.removeFirst(s.head)
                        s.head = 0
                    }
                    if case .stdout(let b) = e { s.bytes -= b.count }
                    if case .stderr(let b) = e { s.bytes -= b.count }
                    let resume = s.paused && s.bytes < Self.lowWater
                    if resume { s.paused = false }
                    return .event(e, resume: resume)
                }
                if let end = s.end { return .end(end) }
                return .wait
            }
            switch next {
            case .event(let e, let resume):
                if resume { resumeReading() }
                return e
            case .end(.success): return nil
            case .end(.failure(let error)): throw error
            case .wait:
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                        let ready = state.withLock { s -> Bool in
                            // (A cancel before this finds no waiter to wake.)
                            if s.head < s.queue.count || s.end != nil || Task.isCancelled { return true }
                            s.waiter = c
                            return false
                        }
                        if ready { c.resume() }
                    }
                } onCancel: {
                    onCancel()
                    wake()
                }
            }
        }
    }
}

/// The consumer's side of an ExecEventBuffer: the command is killed when
/// the consumer goes away before the end (its task cancelled while it
/// waits, or the stream dropped unfinished).
private final class ExecConsumer: Sendable {
    let buffer: ExecEventBuffer
    let kill: @Sendable () -> Void

    init(buffer: ExecEventBuffer, kill: @escaping @Sendable () -> Void) {
        self.buffer = buffer
        self.kill = kill
    }

    func next() async throws -> ExecEvent? {
        try await buffer.next(onCancel: kill)
    }

    deinit {
        if !buffer.ended { kill() }
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
    /// What `readToEnd` got: the bytes up to the end, or, when the time
    /// ran out first, the future of them.
    enum Outcome {
        case complete([UInt8])
        case timedOut(rest: EventLoopFuture<[UInt8]>)
    }

    /// The bytes of pipe `fd` (at most `limit`) until its end, read on
    /// `loop` without blocking a thread, waiting at most `timeout`.  Takes
    /// ownership of `fd`.
    static func readToEnd(_ fd: Int32, on loop: any EventLoop, limit: Int, timeout: Duration) async -> Outcome {
        let all = reading(fd, on: loop, limit: limit)
        let first = loop.makePromise(of: Outcome.self)
        let decided = NIOLoopBoundBox.makeBoxSendingValue(false, as: Bool.self, eventLoop: loop)
        let timer = loop.scheduleTask(in: .clamped(timeout)) {
            guard !decided.value else { return }
            decided.value = true
            first.succeed(.timedOut(rest: all))
        }
        all.whenComplete { result in
            guard !decided.value else { return }
            decided.value = true
            timer.cancel()
            first.succeed(.complete((try? result.get()) ?? []))
        }
        return (try? await first.futureResult.get()) ?? .complete([])
    }

    private static func reading(_ fd: Int32, on loop: any EventLoop, limit: Int) -> EventLoopFuture<[UInt8]> {
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
        return promise.futureResult
    }

    /// `bytes` as the (pointer, count) of what was read from a report pipe,
    /// the pointer non-NULL even when nothing was (the C side reads NULL as
    /// "not read": abandon).
    static func withReport<R>(_ bytes: [UInt8], _ body: (UnsafeRawPointer, Int) -> R) -> R {
        bytes.withUnsafeBytes { r in
            withUnsafePointer(to: 0) { zero in body(r.baseAddress ?? UnsafeRawPointer(zero), r.count) }
        }
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

extension TimeAmount {
    /// `d` as a TimeAmount; a year when it does not fit.
    static func clamped(_ d: Duration) -> TimeAmount {
        let (seconds, attoseconds) = d.components
        let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return nanos.overflow ? .hours(24 * 365) : .nanoseconds(nanos.partialValue + attoseconds / 1_000_000_000)
    }
}

/// A one-way boolean shared between tasks.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}
