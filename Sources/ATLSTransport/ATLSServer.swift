import ATLS
import Attestation
import FoundationEssentials
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// A server nonce and the challenge it stands for, from a source outside TLS (keyd's `challenge.issue`).
public struct ATLSChallenge: Sendable {
    /// The challenge's identifier at its source.
    public let id: [UInt8]
    /// The nonce the client attests to.
    public let nonce: ATLSNonce

    public init(id: [UInt8], nonce: ATLSNonce) {
        self.id = id
        self.nonce = nonce
    }
}

/// Issues one challenge per connection of a server with deferred client checks. May block (a keyd round
/// trip); the server calls it on its thread pool.
public protocol ATLSChallengeSource: Sendable {
    /// A fresh challenge.
    func challenge() throws -> ATLSChallenge
}

/// Mutual aTLS whose client evidence is checked after the handshake, by the request's handler: the
/// server nonce comes from `challenges`, and the client's certificate is only read as an
/// ``AttestedClaim`` (parse, self-signature, validity, a document of one of `variants`).
public struct ATLSDeferredClientCheck: Sendable {
    /// Where each connection's server nonce comes from.
    public var challenges: any ATLSChallengeSource
    /// The document variants a client certificate may carry.
    public var variants: [AttestationVariant]

    public init(challenges: any ATLSChallengeSource, variants: [AttestationVariant]) {
        self.challenges = challenges
        self.variants = variants
    }
}

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
        /// Mutual aTLS with the client's evidence left to the request handler; takes precedence over
        /// `clientVerifier`.
        public var deferredClientCheck: ATLSDeferredClientCheck?
        /// A connection whose handshake (evidence included) has not completed by then is closed.
        public var handshakeTimeout: TimeAmount
        /// Connections accepted beyond this many unfinished handshakes are closed at once.
        public var maxHandshakesInProgress: Int
        /// Connections from one source address beyond this many unfinished handshakes are closed at once,
        /// so one source cannot take the whole budget.
        public var maxHandshakesPerSource: Int

        public init(
            issuer: AttestedCertificateIssuer,
            clientVerifier: ATLSVerifier? = nil,
            deferredClientCheck: ATLSDeferredClientCheck? = nil,
            tls: ATLSTLSSettings = ATLSTLSSettings(),
            handshakeTimeout: TimeAmount = .seconds(10),
            maxHandshakesInProgress: Int = 1024,
            maxHandshakesPerSource: Int = 64
        ) {
            self.issuer = issuer
            self.clientVerifier = clientVerifier
            self.deferredClientCheck = deferredClientCheck
            self.tls = tls
            self.handshakeTimeout = handshakeTimeout
            self.maxHandshakesInProgress = maxHandshakesInProgress
            self.maxHandshakesPerSource = maxHandshakesPerSource
        }

        /// Whether clients present certificates (verified or deferred).
        var isMutual: Bool { clientVerifier != nil || deferredClientCheck != nil }
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
    /// Handshakes accepted and not yet finished.
    private let handshakes = HandshakeCounter()

    /// The number of handshakes accepted and not yet finished (or closed).
    public var handshakesInProgress: Int { handshakes.value.load(ordering: .relaxed) }

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
    /// initializer, on the channel's event loop. A server with deferred client checks first gets the
    /// connection's challenge on the thread pool, so use ``prepare(_:)`` there.
    @discardableResult
    public func addHandler(to channel: any Channel) throws -> ATLSConnection {
        precondition(configuration.deferredClientCheck == nil, "a deferred-check server needs prepare(_:)")
        return try install(on: channel, challenge: nil, slot: nil)
    }

    /// Adds the aTLS server handler to `channel` once the connection has its challenge (deferred client
    /// checks) and a handshake slot; the future fails, and the connection is closed, when there is no
    /// slot or no challenge. Call it from the channel initializer.
    public func prepare(_ channel: any Channel) -> EventLoopFuture<ATLSConnection> {
        // A failed child-channel initializer does not close the connection (NIOAsyncChannel leaves that to
        // the initializer): without this, a refused connection stayed open, with no handshake deadline.
        let prepared = prepareConnection(channel)
        prepared.whenFailure { _ in channel.close(promise: nil) }
        return prepared
    }

    /// ``prepare(_:)`` without the close on failure.
    private func prepareConnection(_ channel: any Channel) -> EventLoopFuture<ATLSConnection> {
        let loop = channel.eventLoop
        let source = ATLSPeerRegistry.sourceAddress(of: channel.remoteAddress)
        let slot = HandshakeSlot(handshakes, source: source)
        guard slot.take(limit: configuration.maxHandshakesInProgress, perSource: configuration.maxHandshakesPerSource)
        else {
            return loop.makeFailedFuture(ATLSServerRefusal.tooManyHandshakes)
        }
        channel.closeFuture.whenComplete { _ in slot.release() }
        guard let deferred = configuration.deferredClientCheck else {
            return loop.makeCompletedFuture { try install(on: channel, challenge: nil, slot: slot) }
        }
        let challenges = deferred.challenges
        return threadPool.runIfActive(eventLoop: loop) { try challenges.challenge() }.flatMapThrowing { challenge in
            try self.install(on: channel, challenge: challenge, slot: slot)
        }
    }

    /// Adds the handlers for one connection.
    private func install(
        on channel: any Channel,
        challenge: ATLSChallenge?,
        slot: HandshakeSlot?
    ) throws
        -> ATLSConnection
    {
        let (handler, connection) = try makeHandler(eventLoop: channel.eventLoop, challenge: challenge)
        try channel.pipeline.syncOperations.addHandler(handler, position: .first)
        try channel.pipeline.syncOperations.addHandler(
            HandshakeDeadline(timeout: configuration.handshakeTimeout, connection: connection, slot: slot),
            position: .after(handler)
        )
        if configuration.isMutual {
            let address = ATLSPeerRegistry.key(for: channel.remoteAddress)
            let peers = self.peers
            peers.insert(address, connection: connection)
            channel.closeFuture.whenComplete { _ in peers.remove(address, connection: connection) }
        }
        return connection
    }

    /// A NIOSSL server handler for one connection, and that connection's state; a deferred-check server
    /// takes the connection's `challenge`.
    public func makeHandler(
        eventLoop: any EventLoop,
        challenge: ATLSChallenge? = nil
    ) throws -> (NIOSSLServerHandler, ATLSConnection) {
        let mutual = configuration.clientVerifier
        let deferred = configuration.deferredClientCheck
        if deferred != nil, challenge == nil { throw ATLSError.invalidNonce("no challenge for the connection") }
        let serverNonce = deferred != nil ? challenge?.nonce : mutual == nil ? nil : ATLSNonce.random()
        let connection = ATLSConnection(sentNonce: serverNonce, challengeID: challenge?.id)
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
        if let deferred {
            let handler = NIOSSLServerHandler(context: context) { certificates, promise in
                ATLSVerification.readClaim(
                    variants: deferred.variants,
                    certificates: certificates,
                    connection: connection,
                    pool: pool,
                    now: now,
                    promise: promise
                )
            }
            return (handler, connection)
        }
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
    private let slot: HandshakeSlot?
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount, connection: ATLSConnection, slot: HandshakeSlot? = nil) {
        self.timeout = timeout
        self.connection = connection
        self.slot = slot
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
            slot?.release()
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// Why a server closed a connection before any handshake.
enum ATLSServerRefusal: Error {
    /// `maxHandshakesInProgress` handshakes were already running.
    case tooManyHandshakes
}

/// One connection's share of a server's handshake budget, given back once (handshake done or closed).
final class HandshakeSlot: Sendable {
    private let counter: HandshakeCounter
    private let source: String
    private let held = Atomic<Bool>(false)

    init(_ counter: HandshakeCounter, source: String) {
        self.counter = counter
        self.source = source
    }

    /// Takes a slot when fewer than `limit` are taken in all and fewer than `perSource` by this source.
    func take(limit: Int, perSource: Int) -> Bool {
        let taken = counter.bySource.withLock { bySource -> Bool in
            guard counter.value.load(ordering: .relaxed) < limit, bySource[source, default: 0] < perSource else {
                return false
            }
            bySource[source, default: 0] += 1
            counter.value.wrappingAdd(1, ordering: .relaxed)
            return true
        }
        if taken { held.store(true, ordering: .relaxed) }
        return taken
    }

    /// Gives the slot back; later calls do nothing.
    func release() {
        guard held.exchange(false, ordering: .relaxed) else { return }
        counter.bySource.withLock { bySource in
            let left = bySource[source, default: 1] - 1
            bySource[source] = left > 0 ? left : nil
            counter.value.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}

/// A server's count of unfinished handshakes, in all and by source address (only sources with one).
final class HandshakeCounter: Sendable {
    let value = Atomic<Int>(0)
    let bySource = Mutex<[String: Int]>([:])
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

    /// Reads a client's ``AttestedClaim`` on `pool` for a server with deferred client checks: the
    /// handshake goes on when the certificate parses, is validly self-signed and carries a document.
    static func readClaim(
        variants: [AttestationVariant],
        certificates: [NIOSSLCertificate],
        connection: ATLSConnection,
        pool: NIOThreadPool,
        now: @escaping @Sendable () -> Date,
        promise: EventLoopPromise<NIOSSLVerificationResult>
    ) {
        guard let leaf = certificates.first, let der = try? leaf.toDERBytes() else {
            connection.recordFailure(.noPeerCertificate)
            promise.succeed(.failed)
            return
        }
        pool.runIfActive(eventLoop: promise.futureResult.eventLoop) { () -> NIOSSLVerificationResult in
            do throws(ATLSError) {
                connection.recordClaim(try AttestedClaim(certificateDER: der, variants: variants, at: now()))
                return .certificateVerified
            } catch {
                connection.recordFailure(error)
                return .failed
            }
        }.cascade(to: promise)
    }
}
