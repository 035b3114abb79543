import ATLSTransport
import NIOCore
import NIOPosix

/// A plaintext TCP port on loopback whose every connection is carried over a fresh aTLS client
/// connection to `127.0.0.1:targetPort`: the attesting side is Swift's (Python's ssl cannot read the
/// server's nonce from the CertificateRequest, nor attest to it), the protocol inside belongs to an
/// independent client such as Python's grpcio.
final class ATLSRelay: Sendable {
    let port: Int
    private let listener: any Channel

    init(
        client: ATLSClient,
        targetPort: Int,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws {
        listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                ClientBootstrap(group: inbound.eventLoop)
                    .channelInitializer { outbound in
                        inbound.eventLoop.makeCompletedFuture { try client.addHandler(to: outbound) }.map { _ in () }
                    }
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMap { outbound in
                        let (toOutbound, toInbound) = GlueHandler.pair()
                        // The accepted channel is registered (and read) only once this initializer's future
                        // completes, so nothing the client sends arrives before the glue is in place.
                        return inbound.pipeline.addHandler(toOutbound).and(outbound.pipeline.addHandler(toInbound))
                            .map { _ in () }
                    }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        port = listener.localAddress?.port ?? 0
    }

    func stop() async throws { try await listener.close() }
}

/// One side of a byte relay between two channels (swift-nio's glue pattern): what one reads, the other writes.
final class GlueHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?

    /// Two handlers, each the other's partner.
    static func pair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.write(data) }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.flush() }

    func channelInactive(context: ChannelHandlerContext) { partner?.close() }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    // Both channels share one event loop (the relay connects on the accepted channel's loop).
    private func write(_ data: NIOAny) { context?.write(data, promise: nil) }

    private func flush() { context?.flush() }

    private func close() { context?.close(promise: nil) }
}
