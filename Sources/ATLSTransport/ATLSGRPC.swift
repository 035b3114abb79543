import ATLS
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOPosix

/// gRPC over aTLS. The server transport has no plaintext mode: its listener puts the aTLS handler in
/// front of every accepted connection before gRPC's HTTP/2 pipeline, so a connection either completes
/// an attested handshake or carries no RPC at all.
public typealias ATLSServerTransport = HTTP2ServerTransport.Custom<ATLSListenerFactory>

extension ATLSServer {
    /// A gRPC server transport listening on `host`:`port` (port 0 picks a free one; read it from
    /// `listeningAddress`). Handlers of a mutual server find the client's identity with
    /// `peers.identity(forPeer: context.remotePeer)`.
    public func grpcTransport(
        host: String,
        port: Int,
        config: ATLSServerTransport.Config = .defaults,
        eventLoopGroup: MultiThreadedEventLoopGroup = .singletonMultiThreadedEventLoopGroup
    ) -> ATLSServerTransport {
        ATLSServerTransport(
            listenerFactory: ATLSListenerFactory(host: host, port: port, server: self, eventLoopGroup: eventLoopGroup),
            config: config
        )
    }
}

/// Binds the listening socket and makes every accepted connection an aTLS one.
public struct ATLSListenerFactory: HTTP2ServerTransport.ListenerFactory {
    /// The address to bind.
    public let host: String
    /// The port to bind; 0 picks a free one.
    public let port: Int
    /// The aTLS server every connection goes through.
    public let server: ATLSServer
    public let eventLoopGroup: any EventLoopGroup

    public func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        let server = self.server
        return try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in listenerConfigurator.configure(channel: channel) }
            .bind(host: host, port: port) { channel in
                server.prepare(channel).flatMap { _ in
                    connectionConfigurator.configure(channel: channel, tls: .configured(requireALPN: false))
                }
            }
    }
}

extension ATLSClient {
    /// A gRPC client transport to `target` whose every connection, reconnects included, is a fresh
    /// aTLS handshake with a new nonce.
    public func grpcTransport(
        target: any ResolvableTarget,
        config: HTTP2ClientTransport.Posix.Config = .defaults,
        eventLoopGroup: MultiThreadedEventLoopGroup = .singletonMultiThreadedEventLoopGroup
    ) throws -> HTTP2ClientTransport.Posix {
        var config = config
        let previous = config.channelDebuggingCallbacks.onCreateTCPConnection
        config.channelDebuggingCallbacks.onCreateTCPConnection = { [self] channel in
            let added = channel.eventLoop.makeCompletedFuture { () throws -> Void in try self.addHandler(to: channel) }
            guard let previous else { return added }
            return added.flatMap { previous(channel) }
        }
        return try HTTP2ClientTransport.Posix(
            target: target,
            transportSecurity: .customSecure,
            config: config,
            eventLoopGroup: eventLoopGroup
        )
    }
}
