import ATLS
import ATLSTransport
import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import X509

/// Real TLS over loopback sockets for the aTLS tests: a server that echoes, a client that sends one
/// ping after its handshake and waits for the echo (so a server-side refusal after the client's
/// TLS 1.3 Finished still shows up as a failure).
enum Loopback {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()

    /// A running echo server and the aTLS state of every connection it accepted.
    final class Server: Sendable {
        let channel: any Channel
        let connections = Mutex<[ATLSConnection]>([])
        /// The accepted connections' channels, in order.
        let channels = Mutex<[any Channel]>([])
        /// Handshakes completed as seen by the handler behind the aTLS handlers.
        let completed = Mutex(0)
        init(channel: any Channel) { self.channel = channel }
        var port: Int { channel.localAddress!.port! }
        func close() async { try? await channel.close() }
        var lastConnection: ATLSConnection? { connections.withLock { $0.last } }
        var lastChannel: (any Channel)? { channels.withLock { $0.last } }
    }

    /// Starts an echo server behind `atls`.
    static func serve(_ atls: ATLSServer) async throws -> Server {
        let box = Mutex<Server?>(nil)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connection = try atls.addHandler(to: channel)
                    box.withLock {
                        _ = $0?.connections.withLock { $0.append(connection) }
                        _ = $0?.channels.withLock { $0.append(channel) }
                    }
                    let server = box.withLock { $0 }
                    try channel.pipeline.syncOperations.addHandler(Echo { server?.completed.withLock { $0 += 1 } })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let server = Server(channel: channel)
        box.withLock { $0 = server }
        return server
    }

    /// Starts an echo server with a fixed TLS configuration (for the plain-certificate case).
    static func serve(plain configuration: TLSConfiguration) async throws -> Server {
        let context = try NIOSSLContext(configuration: configuration)
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.addHandler(Echo())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return Server(channel: channel)
    }

    /// What a client connection came to.
    struct Outcome {
        /// The client side's aTLS state.
        let connection: ATLSConnection?
        /// The TLS version and ALPN protocol negotiated, when the handshake completed.
        let version: TLSVersion?
        let alpn: String?
        /// The echo arrived: both sides accepted.
        let echoed: Bool
        /// The error the client saw, if any.
        let error: (any Error)?
    }

    /// Connects with `atls` (or a raw handler from `makeHandler`), sends a ping and waits for the echo.
    static func connect(port: Int, _ atls: ATLSClient) async throws -> Outcome {
        let box = Mutex<ATLSConnection?>(nil)
        return try await connect(port: port) { channel in
            let connection = try atls.addHandler(to: channel)
            box.withLock { $0 = connection }
        } connection: {
            box.withLock { $0 }
        }
    }

    /// Connects with a handler installed by `install`.
    static func connect(
        port: Int,
        install: @escaping @Sendable (any Channel) throws -> Void,
        connection: @escaping @Sendable () -> ATLSConnection? = { nil }
    ) async throws -> Outcome {
        let promise = group.next().makePromise(of: (TLSVersion?, String?).self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try install(channel)
                    try channel.pipeline.syncOperations.addHandler(Ping(promise: promise))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        defer { channel.close(promise: nil) }
        do {
            let (version, alpn) = try await promise.futureResult.get()
            return Outcome(connection: connection(), version: version, alpn: alpn, echoed: true, error: nil)
        } catch {
            return Outcome(connection: connection(), version: nil, alpn: nil, echoed: false, error: error)
        }
    }

    private final class Echo: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let onHandshake: @Sendable () -> Void
        init(onHandshake: @escaping @Sendable () -> Void = {}) { self.onHandshake = onHandshake }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { onHandshake() }
            context.fireUserInboundEventTriggered(event)
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(data, promise: nil)
        }
    }

    /// Sends "ping" after the handshake and completes with the version and ALPN once it comes back.
    private final class Ping: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        struct Closed: Error {}
        let promise: EventLoopPromise<(TLSVersion?, String?)>
        var negotiated: (TLSVersion?, String?) = (nil, nil)
        init(promise: EventLoopPromise<(TLSVersion?, String?)>) { self.promise = promise }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted(let alpn) = event {
                let version = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).tlsVersion
                negotiated = (version ?? nil, alpn)
                context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: "ping")), promise: nil)
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            promise.succeed(negotiated)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(Closed())
        }
    }
}

/// Issuers that misbehave the way a forged or replayed attestation would.
struct WrongNonceIssuer: EvidenceIssuer {
    let inner: any EvidenceIssuer
    var variant: AttestationVariant { inner.variant }
    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        try inner.issue(userData: userData, nonce: ATLSNonce.random().bytes)
    }
}

/// Binds another key's hash than the certificate's.
struct OtherKeyIssuer: EvidenceIssuer {
    let inner: any EvidenceIssuer
    var variant: AttestationVariant { inner.variant }
    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        try inner.issue(userData: AttestedCertificate.userData(for: P256.Signing.PrivateKey().publicKey), nonce: nonce)
    }
}

/// Puts valid evidence under an OID no verifier is configured for.
struct OtherOIDIssuer: EvidenceIssuer {
    let inner: any EvidenceIssuer
    var variant: AttestationVariant { AttestationVariant(name: "unconfigured", oid: [1, 3, 9900, 99, 1]) }
    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        try inner.issue(userData: userData, nonce: nonce)
    }
}

/// Attests to the first nonce it ever saw, forever: a replayed client certificate.
final class StaleNonceIssuer: EvidenceIssuer {
    let inner: any EvidenceIssuer
    private let first = Mutex<[UInt8]?>(nil)
    init(inner: any EvidenceIssuer) { self.inner = inner }
    var variant: AttestationVariant { inner.variant }
    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        let used = first.withLock { stored in
            if stored == nil { stored = nonce }
            return stored!
        }
        return try inner.issue(userData: userData, nonce: used)
    }
}

/// Fails every time, as an unreachable TPM would.
struct FailingIssuer: EvidenceIssuer {
    struct TPMDown: Error, CustomStringConvertible { var description: String { "tpm unavailable (internal detail)" } }
    var variant: AttestationVariant { .asterismTPM }
    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] { throw TPMDown() }
}

/// A plain self-signed P-256 certificate and its key, as any TLS server has.
func plainServerConfiguration() throws -> TLSConfiguration {
    let key = P256.Signing.PrivateKey()
    let name = try DistinguishedName { CommonName("plain") }
    let certificate = try Certificate(
        version: .v3,
        serialNumber: Certificate.SerialNumber(),
        publicKey: Certificate.PublicKey(key.publicKey),
        notValidBefore: Date() - 3600,
        notValidAfter: Date() + 3600,
        issuer: name,
        subject: name,
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: Certificate.Extensions(),
        issuerPrivateKey: Certificate.PrivateKey(key)
    )
    var serializer = DER.Serializer()
    try serializer.serialize(certificate)
    return TLSConfiguration.makeServerConfiguration(
        certificateChain: [.certificate(try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der))],
        privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(key.derRepresentation), format: .der))
    )
}

/// One software AK shared by the tests, and the verifier that trusts exactly it.
enum TestEvidence {
    static let native = SoftwareTPMEvidenceIssuer(format: .native)
    static let constellation = SoftwareTPMEvidenceIssuer(format: .constellation)
    static var nativeValidator: NativeTPMDocumentValidator {
        NativeTPMDocumentValidator(policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [native.akDigest])))
    }
    static var constellationValidator: ConstellationVTPMValidator {
        ConstellationVTPMValidator(
            policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [constellation.akDigest]))
        )
    }
    static var verifier: ATLSVerifier { ATLSVerifier(validators: [nativeValidator, constellationValidator]) }
}
