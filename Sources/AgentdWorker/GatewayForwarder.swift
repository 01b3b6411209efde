import Logging
import NIOCore
import NIOPosix

/// The one network path of a harness sandbox: a listener on the sandbox's
/// own loopback (made inside its network namespace by the backend), whose
/// connections agentd accepts and relays, byte for byte, to the configured
/// gateway's host and port.  The sandbox has no interface but `lo`, no route
/// and no DNS, so this is the only destination it can reach; the relay
/// exists only while a run of that session is active.
public final class GatewayForwarder: Sendable {
    let server: any Channel
    let logger: Logger

    private init(server: any Channel, logger: Logger) {
        self.server = server
        self.logger = logger
    }

    /// Accept on `listeningFD` (taken over: closed with the forwarder) and
    /// relay each connection to `host:port`.
    public static func start(listeningFD: Int32, host: String, port: Int, logger: Logger) async throws -> GatewayForwarder {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .connectTimeout(.seconds(10))
                    .connect(host: host, port: port)
                    .flatMapThrowing { outbound in
                        let a = Relay(), b = Relay()
                        a.partner = b
                        b.partner = a
                        try inbound.pipeline.syncOperations.addHandler(a)
                        try outbound.pipeline.syncOperations.addHandler(b)
                        inbound.setOption(.autoRead, value: true).whenComplete { _ in }
                    }
                    .flatMapError { error in
                        logger.warning("gateway relay: cannot connect", metadata: ["error": "\(error)"])
                        return inbound.close()
                    }
            }
            .withBoundSocket(listeningFD)
            .get()
        return GatewayForwarder(server: server, logger: logger)
    }

    public func close() async {
        try? await server.close()
    }
}

/// One side of a relayed connection: what it reads is written to its
/// partner.  Reading pauses while the partner cannot take more (so a slow
/// side never makes the other buffer without bound), and a close on either
/// side closes both.  Both sides live on one event loop.
final class Relay: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: Relay?
    private var context: ChannelHandlerContext?
    private var readPending = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.forward(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.flushForward() }

    func channelInactive(context: ChannelHandlerContext) {
        let p = partner
        partner = nil
        p?.partnerClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.writable ?? true {
            context.read()
        } else {
            readPending = true
        }
    }

    // Called by the partner, on the same event loop.
    private func forward(_ b: ByteBuffer) { context?.write(wrapOutboundOut(b), promise: nil) }
    private func flushForward() { context?.flush() }
    private var writable: Bool { context?.channel.isWritable ?? false }
    private func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }
    private func partnerClosed() {
        partner = nil
        context?.close(promise: nil)
    }
}
