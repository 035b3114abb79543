import ATLS
import Attestation
import NIOCore
import NIOSSL
import Synchronization

/// One aTLS connection's state: the nonce this side sent, what the peer proved, and why it was
/// refused. Written from the thread pool and read from anywhere, so it is locked.
public final class ATLSConnection: Sendable {
    private struct State {
        var peer: ATLSPeerIdentity?
        var claim: AttestedClaim?
        var failure: ATLSError?
        var serverNonce: ATLSNonce?
    }

    /// The nonce this side sent the peer to attest to (the client's SNI nonce, or the server's nonce
    /// in mutual aTLS); nil on a one-way server.
    public let sentNonce: ATLSNonce?
    /// The challenge the server nonce came from (a server with deferred client checks); nil otherwise.
    public let challengeID: [UInt8]?
    private let state = Mutex(State())

    init(sentNonce: ATLSNonce?, challengeID: [UInt8]? = nil) {
        self.sentNonce = sentNonce
        self.challengeID = challengeID
    }

    /// What the peer proved, once its certificate verified.
    public var peer: ATLSPeerIdentity? { state.withLock { $0.peer } }
    /// What the client's certificate claims (a server with deferred client checks), once it parsed.
    public var claim: AttestedClaim? { state.withLock { $0.claim } }
    /// Why the handshake was refused on this side, if it was.
    public var failure: ATLSError? { state.withLock { $0.failure } }
    /// The nonce the server asked this client to attest to (mutual aTLS, Swift server).
    var serverNonce: ATLSNonce? { state.withLock { $0.serverNonce } }

    func recordPeer(_ peer: ATLSPeerIdentity) {
        state.withLock {
            $0.peer = peer
            $0.serverNonce = peer.serverNonce
        }
    }

    func recordClaim(_ claim: AttestedClaim) { state.withLock { $0.claim = claim } }

    func recordFailure(_ failure: ATLSError) { state.withLock { if $0.failure == nil { $0.failure = failure } } }
}

/// Converts an attested credential to what NIOSSL loads.
extension NIOSSLContextConfigurationOverride {
    init(_ credential: AttestedCredential, keys: NIOSSLKeyCache) throws {
        self.init()
        certificateChain = [.certificate(try NIOSSLCertificate(bytes: credential.certificateDER, format: .der))]
        privateKey = .privateKey(try keys.key(for: credential))
    }
}

/// The last certificate key in NIOSSL's form, so that a cached-key issuer's key is parsed (and
/// re-checked by BoringSSL) once, not on every handshake. Keyed by the public key's hash; a fresh
/// key per certificate simply replaces the entry.
final class NIOSSLKeyCache: Sendable {
    private let last = Mutex<(keyHash: [UInt8], key: NIOSSLPrivateKey)?>(nil)

    init() {}

    /// `credential`'s key in NIOSSL's form.
    func key(for credential: AttestedCredential) throws -> NIOSSLPrivateKey {
        if let hit = last.withLock({ $0?.keyHash == credential.keyHash ? $0?.key : nil }) { return hit }
        let key = try NIOSSLPrivateKey(bytes: Array(credential.privateKey.derRepresentation), format: .der)
        last.withLock { $0 = (credential.keyHash, key) }
        return key
    }
}

/// Settings both sides share.
public struct ATLSTLSSettings: Sendable {
    /// Lowest TLS version; Constellation's minimum is 1.2.
    public var minimumTLSVersion: TLSVersion = .tlsv12
    /// Highest TLS version; nil is the library's highest (1.3).
    public var maximumTLSVersion: TLSVersion? = nil
    /// ALPN protocols, as Constellation offers them.
    public var applicationProtocols: [String] = ["h2", "http/1.1"]

    public init() {}

    /// A configuration with no certificates, empty trust roots (loading the system bundle costs
    /// milliseconds per context and trusts nothing aTLS needs) and these versions and protocols.
    func baseConfiguration() -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = minimumTLSVersion
        configuration.maximumTLSVersion = maximumTLSVersion
        configuration.applicationProtocols = applicationProtocols
        configuration.trustRoots = .certificates([])
        configuration.certificateVerification = .none
        configuration.renegotiationSupport = .none
        return configuration
    }
}
