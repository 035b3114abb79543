import ATLS
import AsterismTestSupport
import Attestation
import NIOCore
import NIOEmbedded
import NIOTLS
import Testing

@testable import ATLSTransport

/// The handshake deadline on NIO's embedded event loop: time moves only when the test advances it.
@Suite("aTLS handshake deadline (embedded event loop)")
struct HandshakeDeadlineTests {
    /// Counts the handshake-completed events that reach the handler behind the deadline.
    final class CompletedEvents: ChannelInboundHandler {
        typealias InboundIn = NIOAny
        var count = 0
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { count += 1 }
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// An active embedded channel with `handlers`.
    func channel(_ handlers: [any ChannelHandler]) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers(handlers)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4711)).wait()
        return channel
    }

    @Test("a handshake that has not completed is cut off exactly at the deadline, and the connection says why")
    func closesAtDeadline() throws {
        let connection = ATLSConnection(sentNonce: nil)
        let channel = try channel([HandshakeDeadline(timeout: .seconds(10), connection: connection)])
        channel.embeddedEventLoop.advanceTime(by: .seconds(10) - .nanoseconds(1))
        #expect(channel.isActive)
        #expect(connection.failure == nil)
        channel.embeddedEventLoop.advanceTime(by: .nanoseconds(1))
        #expect(!channel.isActive)
        #expect(connection.failure == .handshakeTimeout(seconds: 10))
    }

    @Test(
        "a completed handshake cancels the deadline, reaches the handlers behind it, and removes the deadline handler"
    )
    func completedHandshake() throws {
        let connection = ATLSConnection(sentNonce: nil)
        let events = CompletedEvents()
        let channel = try channel([HandshakeDeadline(timeout: .seconds(10), connection: connection), events])
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: "h2"))
        #expect(events.count == 1)
        #expect(throws: ChannelPipelineError.self) {
            try channel.pipeline.syncOperations.handler(type: HandshakeDeadline.self)
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(channel.isActive)
        #expect(connection.failure == nil)
        #expect(try channel.finish().isClean)
    }

    @Test("the aTLS server puts the deadline behind its TLS handler: a peer that sends no ClientHello is cut off")
    func serverInstallsDeadline() throws {
        let server = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(
                    evidence: SoftwareTPMEvidenceIssuer(format: .native),
                    keyMode: .cached
                ),
                handshakeTimeout: .milliseconds(300)
            ),
            threadPool: Loopback.pool
        )
        let channel = EmbeddedChannel()
        let connection = try server.addHandler(to: channel)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 4711)).wait()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(299))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!channel.isActive)
        #expect(connection.failure == .handshakeTimeout(seconds: 0.3))
    }

    @Test("a connection over the per-source handshake cap is closed at once, not left open without a deadline")
    func refusedConnectionIsClosed() throws {
        let server = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(
                    evidence: SoftwareTPMEvidenceIssuer(format: .native),
                    keyMode: .cached
                ),
                maxHandshakesPerSource: 1
            ),
            threadPool: Loopback.pool
        )
        let address = try SocketAddress(ipAddress: "127.0.0.2", port: 4711)
        let first = EmbeddedChannel()
        try first.connect(to: address).wait()
        _ = try server.prepare(first).wait()
        let second = EmbeddedChannel()
        try second.connect(to: address).wait()
        #expect(throws: ATLSServerRefusal.self) { try server.prepare(second).wait() }
        #expect(!second.isActive, "the refused connection is closed")
        #expect(first.isActive)
        #expect(server.handshakesInProgress == 1)
    }
}
