import ATLS
import Attestation
import FoundationEssentials
import NIOCore
import NIOPosix
import NIOSSL

/// The verifying client side of aTLS. Every connection (reconnects included) gets a fresh nonce in
/// its SNI and a TLS context of its own with empty trust roots; the server's certificate is checked
/// by a custom verification callback on a thread pool. In mutual aTLS the client's own attested
/// certificate is made when the server asks for it, bound to the nonce in the server's certificate.
public final class ATLSClient: Sendable {
    /// What the client does.
    public struct Configuration: Sendable {
        /// Verifies the server's certificate.
        public var verifier: ATLSVerifier
        /// Makes this client's attested certificates for mutual aTLS; nil offers none.
        public var issuer: AttestedCertificateIssuer?
        /// TLS versions and ALPN.
        public var tls: ATLSTLSSettings

        public init(verifier: ATLSVerifier, issuer: AttestedCertificateIssuer? = nil, tls: ATLSTLSSettings = ATLSTLSSettings()) {
            self.verifier = verifier
            self.issuer = issuer
            self.tls = tls
        }
    }

    /// The configuration.
    public let configuration: Configuration
    /// Where verification and the client's own evidence run.
    public let threadPool: NIOThreadPool
    /// Called with every connection's state once its handler exists (for callers that want the peer).
    let onConnection: (@Sendable (ATLSConnection) -> Void)?
    let now: @Sendable () -> Date

    public init(
        configuration: Configuration, threadPool: NIOThreadPool, now: @escaping @Sendable () -> Date = { Date() },
        onConnection: (@Sendable (ATLSConnection) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.threadPool = threadPool
        self.now = now
        self.onConnection = onConnection
    }

    /// Adds the aTLS client handler in front of `channel`'s pipeline; call it from the channel
    /// initializer, on the channel's event loop.
    @discardableResult
    public func addHandler(to channel: any Channel) throws -> ATLSConnection {
        let (handler, connection) = try makeHandler()
        try channel.pipeline.syncOperations.addHandler(handler, position: .first)
        return connection
    }

    /// A NIOSSL client handler with a fresh nonce, and that connection's state.
    public func makeHandler() throws -> (NIOSSLClientHandler, ATLSConnection) {
        let nonce = ATLSNonce.random()
        let connection = ATLSConnection(sentNonce: nonce)
        var tls = configuration.tls.baseConfiguration()
        tls.certificateVerification = .noHostnameVerification  // `.none` would skip the callback
        let pool = threadPool
        let now = self.now
        if let issuer = configuration.issuer {
            // BoringSSL asks for the client certificate after the server's certificate verified, so
            // the server's nonce is known by then.
            tls.sslContextCallback = { _, promise in
                guard let serverNonce = connection.serverNonce else {
                    connection.recordFailure(.serverNonceMissing)
                    promise.fail(ATLSError.serverNonceMissing)
                    return
                }
                pool.runIfActive(eventLoop: promise.futureResult.eventLoop) {
                    do {
                        return try NIOSSLContextConfigurationOverride(issuer.issue(nonce: serverNonce, now: now()))
                    } catch let error as ATLSError {
                        connection.recordFailure(error)
                        throw error
                    }
                }.cascade(to: promise)
            }
        }
        let context = try NIOSSLContext(configuration: tls)
        let verifier = configuration.verifier
        let handler = try NIOSSLClientHandler(context: context, serverHostname: nonce.base64) { certificates, promise in
            ATLSVerification.run(
                verifier: verifier, certificates: certificates, nonce: nonce, connection: connection, pool: pool, now: now, promise: promise
            )
        }
        onConnection?(connection)
        return (handler, connection)
    }
}
