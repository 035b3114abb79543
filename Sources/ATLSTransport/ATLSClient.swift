import ATLS
import Attestation
import FoundationEssentials
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The verifying client side of aTLS. Every connection (reconnects included) gets a fresh nonce in
/// its SNI; the server's certificate is checked by a custom verification callback, per connection, on
/// the connection's event loop (pure CPU work, a fraction of what the handshake itself costs there).
/// Contexts have empty trust roots. One-way clients share one context: BoringSSL keeps
/// no client sessions unless asked and NIOSSL never asks, so nothing can resume. In mutual aTLS the
/// client's own attested certificate is made when the server asks for it, bound to the nonce in the
/// server's certificate, which takes a context per connection.
public final class ATLSClient: Sendable {
    /// What the client does.
    public struct Configuration: Sendable {
        /// Verifies the server's certificate.
        public var verifier: ATLSVerifier
        /// Makes this client's attested certificates for mutual aTLS; nil offers none.
        public var issuer: AttestedCertificateIssuer?
        /// TLS versions and ALPN.
        public var tls: ATLSTLSSettings

        public init(
            verifier: ATLSVerifier,
            issuer: AttestedCertificateIssuer? = nil,
            tls: ATLSTLSSettings = ATLSTLSSettings()
        ) {
            self.verifier = verifier
            self.issuer = issuer
            self.tls = tls
        }
    }

    /// The configuration.
    public let configuration: Configuration
    /// Where the client's own evidence is made (mutual aTLS).
    public let threadPool: NIOThreadPool
    /// Called with every connection's state once its handler exists (for callers that want the peer).
    let onConnection: (@Sendable (ATLSConnection) -> Void)?
    let now: @Sendable () -> Date
    /// The client certificate key in NIOSSL's form, parsed once while the issuer keeps its key.
    private let keyCache = NIOSSLKeyCache()
    /// The context every one-way connection shares, made on first use.
    private let sharedContext = Mutex<NIOSSLContext?>(nil)

    public init(
        configuration: Configuration,
        threadPool: NIOThreadPool,
        now: @escaping @Sendable () -> Date = { Date() },
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
        let context = try self.context(for: connection)
        let now = self.now
        let verifier = configuration.verifier
        let handler = try NIOSSLClientHandler(context: context, serverHostname: nonce.base64) { certificates, promise in
            ATLSVerification.run(
                verifier: verifier,
                certificates: certificates,
                nonce: nonce,
                connection: connection,
                pool: nil,
                now: now,
                promise: promise
            )
        }
        onConnection?(connection)
        return (handler, connection)
    }

    /// The shared one-way context, or for mutual aTLS a context whose certificate callback serves `connection`.
    private func context(for connection: ATLSConnection) throws -> NIOSSLContext {
        var tls = configuration.tls.baseConfiguration()
        tls.certificateVerification = .noHostnameVerification  // `.none` would skip the callback
        guard let issuer = configuration.issuer else {
            return try sharedContext.withLock { shared in
                if let shared { return shared }
                let context = try NIOSSLContext(configuration: tls)
                shared = context
                return context
            }
        }
        let pool = threadPool
        let now = self.now
        let keys = keyCache
        // BoringSSL asks for the client certificate after the server's certificate verified, so the
        // server's nonce is known by then.
        tls.sslContextCallback = { _, promise in
            guard let serverNonce = connection.serverNonce else {
                connection.recordFailure(.serverNonceMissing)
                promise.fail(ATLSError.serverNonceMissing)
                return
            }
            pool.runIfActive(eventLoop: promise.futureResult.eventLoop) {
                do {
                    return try NIOSSLContextConfigurationOverride(
                        issuer.issue(nonce: serverNonce, now: now()),
                        keys: keys
                    )
                } catch let error as ATLSError {
                    connection.recordFailure(error)
                    throw error
                }
            }.cascade(to: promise)
        }
        return try NIOSSLContext(configuration: tls)
    }
}
