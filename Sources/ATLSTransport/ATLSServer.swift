import ATLS
import Attestation
import FoundationEssentials
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// The attesting server side of aTLS. For every connection it makes a TLS context of its own (so no
/// session or ticket of another connection can resume, and a mutual server's nonce travels in that
/// context's CA list), reads the client's nonce from the SNI, and has the evidence and certificate made
/// on a thread pool, never on the event loop.
public final class ATLSServer: Sendable {
    /// What the server does.
    public struct Configuration: Sendable {
        /// Makes this server's attested certificates.
        public var issuer: AttestedCertificateIssuer
        /// Verifies client certificates; set for mutual aTLS, nil for one-way.
        public var clientVerifier: ATLSVerifier?
        /// TLS versions and ALPN.
        public var tls: ATLSTLSSettings
        /// A connection whose handshake (evidence included) has not completed by then is closed.
        public var handshakeTimeout: TimeAmount

        public init(
            issuer: AttestedCertificateIssuer,
            clientVerifier: ATLSVerifier? = nil,
            tls: ATLSTLSSettings = ATLSTLSSettings(),
            handshakeTimeout: TimeAmount = .seconds(10)
        ) {
            self.issuer = issuer
            self.clientVerifier = clientVerifier
            self.tls = tls
            self.handshakeTimeout = handshakeTimeout
        }
    }

    /// The configuration.
    public let configuration: Configuration
    /// Where evidence, certificates and client verification run.
    public let threadPool: NIOThreadPool
    /// Where verified client identities are kept for request handlers (mutual aTLS).
    public let peers: ATLSPeerRegistry
    /// The clock for validity checks.
    let now: @Sendable () -> Date
    /// The certificate key in NIOSSL's form, parsed once while the issuer keeps its key.
    private let keyCache = NIOSSLKeyCache()

    public init(
        configuration: Configuration,
        threadPool: NIOThreadPool,
        peers: ATLSPeerRegistry = ATLSPeerRegistry(),
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.configuration = configuration
        self.threadPool = threadPool
        self.peers = peers
        self.now = now
    }

    /// Adds the aTLS server handler in front of `channel`'s pipeline; call it from the channel
    /// initializer, on the channel's event loop.
    @discardableResult
    public func addHandler(to channel: any Channel) throws -> ATLSConnection {
        let (handler, connection) = try makeHandler(eventLoop: channel.eventLoop)
        try channel.pipeline.syncOperations.addHandler(handler, position: .first)
        try channel.pipeline.syncOperations.addHandler(
            HandshakeDeadline(timeout: configuration.handshakeTimeout, connection: connection),
            position: .after(handler)
        )
        if configuration.clientVerifier != nil {
            let address = ATLSPeerRegistry.key(for: channel.remoteAddress)
            let peers = self.peers
            peers.insert(address, connection: connection)
            channel.closeFuture.whenComplete { _ in peers.remove(address, connection: connection) }
        }
        return connection
    }

    /// A NIOSSL server handler for one connection, and that connection's state.
    public func makeHandler(eventLoop: any EventLoop) throws -> (NIOSSLServerHandler, ATLSConnection) {
        let mutual = configuration.clientVerifier
        let serverNonce = mutual == nil ? nil : ATLSNonce.random()
        let connection = ATLSConnection(sentNonce: serverNonce)
        var tls = configuration.tls.baseConfiguration()
        if let serverNonce {
            tls.certificateVerification = .noHostnameVerification
            // The nonce's one CA name in the CertificateRequest, where Go clients read it.
            let name = try AttestedCertificate.nonceNameCertificate(serverNonce, now: now())
            tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: name, format: .der)])
            tls.sendCANameList = true
        }
        let issuer = configuration.issuer
        let pool = threadPool
        let now = self.now
        let keys = keyCache
        tls.sslContextCallback = { values, promise in
            let nonce: ATLSNonce
            do {
                guard let name = values.serverHostname else { throw ATLSError.invalidNonce("the client sent no SNI") }
                nonce = try ATLSNonce(base64: name)
            } catch {
                connection.recordFailure(error as? ATLSError ?? .invalidNonce("\(error)"))
                promise.fail(error)
                return
            }
            pool.runIfActive(eventLoop: promise.futureResult.eventLoop) {
                do {
                    return try NIOSSLContextConfigurationOverride(
                        issuer.issue(nonce: nonce, serverNonce: serverNonce, now: now()),
                        keys: keys
                    )
                } catch let error as ATLSError {
                    connection.recordFailure(error)
                    throw error
                } catch {
                    connection.recordFailure(.issuingFailed("\(error)"))
                    throw error
                }
            }.cascade(to: promise)
        }
        let context = try NIOSSLContext(configuration: tls)
        guard let verifier = mutual, let serverNonce else {
            return (NIOSSLServerHandler(context: context), connection)
        }
        let handler = NIOSSLServerHandler(context: context) { certificates, promise in
            ATLSVerification.run(
                verifier: verifier,
                certificates: certificates,
                nonce: serverNonce,
                connection: connection,
                pool: pool,
                now: now,
                promise: promise
            )
        }
        return (handler, connection)
    }
}

/// Closes the connection when the TLS handshake has not completed in time, so a peer that sends
/// nothing, or an issuer that hangs, cannot hold a connection forever.
final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let timeout: TimeAmount
    private let connection: ATLSConnection
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount, connection: ATLSConnection) {
        self.timeout = timeout
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let connection = self.connection
        let timeout = self.timeout
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            connection.recordFailure(.handshakeTimeout(seconds: Double(timeout.nanoseconds) / 1e9))
            loopBound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { deadline?.cancel() }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)  // before removal, which unlinks this context
        if case TLSUserEvent.handshakeCompleted = event {
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// Verifies a peer's certificate for NIOSSL's custom verification callback and completes its promise:
/// on the thread pool when `pool` is given (a server, whose clients choose when to connect and what
/// to send, keeps its loop free of their documents), else right on the event loop (a client verifies
/// only the servers it chose to connect to, one certificate per connection: about 0.1 ms of CPU, two
/// ECDSA verifications and a certificate parse, beside the ~0.4 ms the TLS handshake spends there anyway).
enum ATLSVerification {
    static func run(
        verifier: ATLSVerifier,
        certificates: [NIOSSLCertificate],
        nonce: ATLSNonce,
        connection: ATLSConnection,
        pool: NIOThreadPool?,
        now: @escaping @Sendable () -> Date,
        promise: EventLoopPromise<NIOSSLVerificationResult>
    ) {
        guard let leaf = certificates.first, let der = try? leaf.toDERBytes() else {
            connection.recordFailure(.noPeerCertificate)
            promise.succeed(.failed)
            return
        }
        let verify: @Sendable () -> NIOSSLVerificationResult = {
            do throws(ATLSError) {
                let identity = try verifier.verify(certificateDER: der, nonce: nonce, at: now())
                connection.recordPeer(identity)
                return .certificateVerified
            } catch {
                connection.recordFailure(error)
                return .failed
            }
        }
        guard let pool else { return promise.succeed(verify()) }
        pool.runIfActive(eventLoop: promise.futureResult.eventLoop, verify).cascade(to: promise)
    }
}
