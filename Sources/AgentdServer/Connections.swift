import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization
import AgentdModel

/// How long and how slowly a peer may hold a connection.  A client that is
/// idle, slow, lying about its body or not reading what it asked for gets
/// its connection closed; nobody else waits for it.
public struct ConnectionLimits: Sendable {
    /// A connection with no request in progress is closed after this
    /// (keep-alive idle), and so is one whose request stops arriving.
    public var idleTimeout: Duration = .seconds(60)
    /// The whole request head (line and headers) must arrive within this of
    /// its first byte, however it trickles in (slow loris).
    public var headerTimeout: Duration = .seconds(10)
    /// While a request body is read, at least `minBodyRate` bytes a second,
    /// measured over windows of `bodyRateWindow`.
    public var minBodyRate: Int = 1024
    public var bodyRateWindow: Duration = .seconds(10)
    /// A response the client has stopped reading (the socket's buffer full)
    /// for this long: the connection is closed (a stalled event stream).
    public var writeStallTimeout: Duration = .seconds(60)
    /// Open connections per listener; past it, new ones wait in the kernel's
    /// accept queue.
    public var maxConnections: Int = 10_000
    /// Largest request head.
    public var maxHeaderBytes: Int = 64 << 10
    /// Request bodies read whole (JSON) in memory at once, all requests
    /// together; past it, requests wait for room (then 503).  Streamed
    /// uploads do not count: they never sit in memory.
    public var bodyMemory: Int = 64 << 20
    public var bodyWait: Duration = .seconds(30)

    public init() {}
}

extension ConnectionLimits {
    /// The listener's settings: at most `maxConnections` open at once.
    public func configuration(_ address: BindAddress) -> ApplicationConfiguration {
        ApplicationConfiguration(address: address, serverName: "agentd",
                                 availableConnectionsDelegate: MaximumAvailableConnections(maxConnections))
    }
}

/// Hummingbird's HTTP/1 channel with agentd's guards in front of it: one
/// handler on the raw bytes (header deadline, write stalls) and one on the
/// decoded parts (where a request starts and ends, body rate).
public struct GuardedHTTP1Channel: ServerChildChannel {
    public typealias Value = HTTP1Channel.Value
    let responder: HTTPChannelHandler.Responder
    let limits: ConnectionLimits

    public static func builder(_ limits: ConnectionLimits) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in GuardedHTTP1Channel(responder: responder, limits: limits) }
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let clock = PeerClock(limits: limits)
        let configuration = HTTP1Channel.Configuration(
            additionalChannelHandlers: [RequestPhaseHandler(clock: clock)],
            idleTimeout: TimeAmount(limits.idleTimeout),
            httpDecoderConfiguration: .init(maxHeaderFieldSize: limits.maxHeaderBytes,
                                            maxHeaderListSize: limits.maxHeaderBytes, maxHeaderFieldCount: 256))
        let inner = HTTP1Channel(responder: responder, configuration: configuration)
        do {
            try channel.pipeline.syncOperations.addHandler(RawPeerHandler(clock: clock), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return inner.setup(channel: channel, logger: logger)
    }

    public func handle(value: Value, logger: Logger) async {
        await HTTP1Channel(responder: responder).handle(value: value, logger: logger)
    }
}

extension TimeAmount {
    init(_ d: Duration) {
        let (s, atto) = d.components
        self = .nanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}

/// What the two handlers of one connection share.  Both run on the
/// connection's event loop, so no lock: it is reached only from there.
final class PeerClock: @unchecked Sendable {
    let limits: ConnectionLimits
    /// True between responses: the next bytes start a request head.
    var awaitingHead = true
    var headDeadline: Scheduled<Void>?
    var bodyBytes = 0
    var bodyCheck: RepeatedTask?
    /// Since when agentd has been asking for more of the request and not
    /// getting it (nil: it is not asking: a handler holding the request back,
    /// e.g. waiting for room in the body budget, is not the client's fault).
    var wantedSince: NIODeadline?
    var stallDeadline: Scheduled<Void>?

    init(limits: ConnectionLimits) { self.limits = limits }

    func cancelAll() {
        headDeadline?.cancel()
        headDeadline = nil
        bodyCheck?.cancel()
        bodyCheck = nil
        stallDeadline?.cancel()
        stallDeadline = nil
    }
}

/// First in the pipeline, on raw bytes: arms the header deadline when a new
/// request's first bytes arrive, and the write-stall deadline while the
/// channel cannot take more output.
final class RawPeerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let clock: PeerClock

    init(clock: PeerClock) { self.clock = clock }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if clock.awaitingHead && clock.headDeadline == nil {
            let channel = context.channel
            let clock = self.clock
            clock.headDeadline = context.eventLoop.scheduleTask(in: TimeAmount(clock.limits.headerTimeout)) {
                if clock.awaitingHead { channel.close(promise: nil) }
            }
        }
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            clock.stallDeadline?.cancel()
            clock.stallDeadline = nil
        } else if clock.stallDeadline == nil {
            let channel = context.channel
            clock.stallDeadline = context.eventLoop.scheduleTask(in: TimeAmount(clock.limits.writeStallTimeout)) {
                channel.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        clock.cancelAll()
        context.fireChannelInactive()
    }
}

/// After HTTP decoding: a request head ends the header deadline and, if a
/// body follows, starts the body-rate check; the response's end makes the
/// connection await the next head.
final class RequestPhaseHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart
    let clock: PeerClock

    init(clock: PeerClock) { self.clock = clock }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            clock.awaitingHead = false
            clock.headDeadline?.cancel()
            clock.headDeadline = nil
            startBodyCheck(context)
        case .body(let b):
            clock.bodyBytes += b.readableBytes
            clock.wantedSince = nil
        case .end:
            clock.bodyCheck?.cancel()
            clock.bodyCheck = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            clock.awaitingHead = true
        }
        context.write(data, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        if clock.wantedSince == nil { clock.wantedSince = .now() }
        context.read()
    }

    private func startBodyCheck(_ context: ChannelHandlerContext) {
        clock.bodyCheck?.cancel()
        clock.bodyBytes = 0
        let window = TimeAmount(clock.limits.bodyRateWindow)
        let minimum = clock.limits.minBodyRate * Int(clock.limits.bodyRateWindow.components.seconds)
        let channel = context.channel
        let clock = self.clock
        clock.bodyCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: window, delay: window) { task in
            // Ended by `.end`; a body without one (no length, no chunks) is
            // never started: the decoder sends `.end` at once.  Only a client
            // that was asked for more for the whole window is too slow.
            if clock.bodyBytes < minimum, let since = clock.wantedSince, since <= .now() - window {
                task.cancel()
                channel.close(promise: nil)
            }
            clock.bodyBytes = 0
        }
    }
}

/// Refuses a body larger than its route takes from the announced length,
/// before reading a byte of it (413), and holds requests with large bodies
/// until the memory they will take is free (`ConnectionLimits.bodyMemory`),
/// so that many concurrent large requests queue instead of growing the
/// daemon without bound.
struct BodyLimitMiddleware: RouterMiddleware {
    typealias Context = AgentdContext
    let budget: ByteBudget
    let wait: Duration
    /// Bodies up to this size are not worth accounting.
    static let small = 64 << 10

    let table: BodyLimits

    init(limits: ConnectionLimits, endpoints: [Endpoint]) {
        budget = ByteBudget(capacity: limits.bodyMemory)
        wait = limits.bodyWait
        table = BodyLimits(endpoints)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let max = table.limit(request.method, request.uri.path) else { return try await next(request, context) }
        let announced = request.headers[.contentLength].flatMap { Int($0) }
        if let announced, announced > max {
            throw AgentdError.tooLarge("the request body (\(announced) bytes) is larger than \(max) bytes, the most "
                                       + "\(request.method) \(request.uri.path) takes")
        }
        // Unknown length (chunked): it may grow to the route's maximum.
        let need = announced ?? (request.headers[.transferEncoding] != nil ? max : 0)
        guard need > Self.small else { return try await next(request, context) }
        guard await budget.acquire(need, within: wait) else {
            throw AgentdError(status: 503, code: "busy", message: "too many large requests at once; retry shortly",
                              retryAfter: 1)
        }
        do {
            let response = try await next(request, context)
            budget.release(need)
            return response
        } catch {
            budget.release(need)
            throw error
        }
    }
}

/// Each route's body limit (`Endpoint.maxBody`), found from a request's
/// method and path before routing.  A path no route matches gets the JSON
/// limit (it is answered 404 or 405 anyway).
struct BodyLimits: Sendable {
    private struct Route: Sendable {
        let method: HTTPRequest.Method
        /// Path components; nil where the template has a parameter.
        let parts: [String?]
        let limit: Int?
    }

    private let routes: [Route]

    init(_ endpoints: [Endpoint]) {
        routes = endpoints.map { e in
            Route(method: e.method,
                  parts: e.path.split(separator: "/").map { $0.hasPrefix("{") ? nil : String($0) },
                  limit: e.maxBody)
        }
    }

    func limit(_ method: HTTPRequest.Method, _ path: String) -> Int? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        for r in routes where r.method == method && r.parts.count == parts.count {
            if zip(r.parts, parts).allSatisfy({ template, part in template.map { $0 == part } ?? true }) {
                return r.limit
            }
        }
        return HTTP.maxJSONBody
    }
}

/// A count of bytes shared by concurrent requests: `acquire` waits (in
/// arrival order) until `n` fit, or gives up after a while.  A request
/// larger than the whole capacity is let through alone.
final class ByteBudget: Sendable {
    private struct Waiter {
        let id: UInt64
        let need: Int
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var used = 0
        var nextID: UInt64 = 0
        var waiters: [Waiter] = []
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = capacity }

    func acquire(_ n: Int, within timeout: Duration) async -> Bool {
        let need = min(n, capacity)
        let id: UInt64? = state.withLock { s in
            if s.waiters.isEmpty && s.used + need <= capacity {
                s.used += need
                return nil
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return true }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                try? await Task.sleep(for: timeout)
                giveUp(id)
            }
            let granted = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                let resumeNow: Bool? = state.withLock { s in
                    if s.waiters.isEmpty && s.used + need <= capacity {
                        s.used += need
                        return true
                    }
                    s.waiters.append(Waiter(id: id, need: need, continuation: c))
                    return nil
                }
                if let resumeNow { c.resume(returning: resumeNow) }
            }
            group.cancelAll()
            return granted
        }
    }

    func release(_ n: Int) {
        let ready: [Waiter] = state.withLock { s in
            s.used -= min(n, capacity)
            var out: [Waiter] = []
            while let first = s.waiters.first, s.used + first.need <= capacity {
                s.used += first.need
                out.append(s.waiters.removeFirst())
            }
            return out
        }
        for w in ready { w.continuation.resume(returning: true) }
    }

    private func giveUp(_ id: UInt64) {
        let gone: Waiter? = state.withLock { s in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        gone?.continuation.resume(returning: false)
    }
}
