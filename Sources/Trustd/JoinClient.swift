import ATLS
import ATLSTransport
import AsterismProto
import Attestation
import FoundationEssentials
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import KeydClient
import KeydProtocol
import Logging
import NIOPosix
import Synchronization
import TrustdCore

/// Why a join did not complete.
public enum JoinClientError: Error, Sendable, CustomStringConvertible, Equatable {
    /// No endpoint to try.
    case noEndpoints
    /// Every attempt failed until the deadline or the attempt cap; `last` is the last attempt's reason.
    case gaveUp(attempts: Int, last: String)
    /// keyd refused the envelope or could not unlock the disk with it (not retried: the service answered).
    case envelopeRefused(String)
    /// Writing the output files failed.
    case output(String)

    public var description: String {
        switch self {
        case .noEndpoints: "no JoinService endpoint configured"
        case .gaveUp(let attempts, let last): "join gave up after \(attempts) attempts; last: \(last)"
        case .envelopeRefused(let detail): "keyd refused the key envelope: \(detail)"
        case .output(let detail): "writing the join files failed: \(detail)"
        }
    }
}

/// A step of a join the caller may record (``NodeSetUpRunner`` persists them); an observer's error ends
/// the join.
public enum JoinProgress: Sendable {
    /// A JoinService answered with a ticket.
    case ticketReceived
    /// keyd accepted the envelope: the disk opened and PCR 15 was marked with the answer's cluster ID.
    case envelopeAccepted(EnvelopeAcceptAnswer)
    /// The join's files were written.
    case filesWritten
}

/// Receives a join's steps as they complete.
public typealias JoinProgressObserver = @Sendable (JoinProgress) throws(JoinClientError) -> Void

/// What a completed join did.
public struct JoinOutcome: Sendable {
    /// The endpoint that answered.
    public let endpoint: HostPort
    /// Attempts made, the successful one included.
    public let attempts: Int
    /// keyd's answer to `envelope.accept`.
    public let accepted: EnvelopeAcceptAnswer
}

/// The joining side: attests to a JoinService with join evidence from this node's keyd, gets its key
/// envelope, hands it to keyd unopened (`envelope.accept`), and writes the kubelet certificate and
/// kubeadm join material (``JoinFiles``). It verifies the JoinService's own attestation (aTLS) before it
/// sends anything. Endpoints are tried in turn, each call bounded by a timeout, with exponential
/// backoff, jitter and the server's retry hint between rounds, all under an overall deadline; every
/// step is a log line.
public struct JoinClient: Sendable {
    /// How the client runs.
    public struct Configuration: Sendable {
        /// JoinService endpoints, tried in order.
        public var endpoints: [HostPort]
        /// This node's role and name (bound into its join evidence).
        public var role: NodeRole
        public var nodeName: String
        /// Verifies the JoinService's attested certificate.
        public var serviceVerifier: ATLSVerifier
        /// One attempt's limit (handshake and call).
        public var callTimeout: Duration
        /// The whole join's limit.
        public var deadline: Duration
        /// Pauses between attempts.
        public var backoff: JoinBackoff
        /// At most this many attempts (nil: only the deadline bounds them).
        public var maxAttempts: Int?
        /// Where the files go.
        public var outputDirectory: String
        /// A PKCS#10 kubelet CSR (DER) to send, or empty.
        public var kubeletCSR: [UInt8]

        public init(
            endpoints: [HostPort],
            role: NodeRole,
            nodeName: String,
            serviceVerifier: ATLSVerifier,
            callTimeout: Duration = .seconds(5),
            deadline: Duration = .seconds(600),
            backoff: JoinBackoff = JoinBackoff(initialMilliseconds: 250, maximumMilliseconds: 30_000),
            maxAttempts: Int? = nil,
            outputDirectory: String,
            kubeletCSR: [UInt8] = []
        ) {
            self.endpoints = endpoints
            self.role = role
            self.nodeName = nodeName
            self.serviceVerifier = serviceVerifier
            self.callTimeout = callTimeout
            self.deadline = deadline
            self.backoff = backoff
            self.maxAttempts = maxAttempts
            self.outputDirectory = outputDirectory
            self.kubeletCSR = kubeletCSR
        }
    }

    public let configuration: Configuration
    /// This node's keyd (trustd socket).
    public let keydSocketPath: String
    public let logger: Logger
    /// Where evidence and certificate verification run.
    private let threadPool: NIOThreadPool

    public init(configuration: Configuration, keydSocketPath: String, threadPool: NIOThreadPool, logger: Logger) {
        self.configuration = configuration
        self.keydSocketPath = keydSocketPath
        self.threadPool = threadPool
        self.logger = logger
    }

    /// Joins the cluster: `IssueJoinTicket`, `envelope.accept`, the files.
    public func join(observing observer: JoinProgressObserver? = nil) async throws(JoinClientError) -> JoinOutcome {
        try await run(.join, observer: observer)
    }

    /// Rejoins after a reboot: `IssueRejoinTicket` and `envelope.accept`; no files change.
    public func rejoin(observing observer: JoinProgressObserver? = nil) async throws(JoinClientError) -> JoinOutcome {
        try await run(.rejoin, observer: observer)
    }

    /// The attempt loop.
    private func run(
        _ kind: JoinTicketKind,
        observer: JoinProgressObserver?
    ) async throws(JoinClientError)
        -> JoinOutcome
    {
        let endpoints = configuration.endpoints
        guard !endpoints.isEmpty else { throw .noEndpoints }
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.deadline
        var attempt = 0
        var last = "no attempt made"
        logger.info("\(kind) starting", metadata: ["endpoints": "\(endpoints.map(\.description))"])
        while true {
            let endpoint = endpoints[attempt % endpoints.count]
            attempt += 1
            logger.info("\(kind) attempt", metadata: ["attempt": "\(attempt)", "endpoint": "\(endpoint)"])
            var hint: Int?
            do {
                let ticket = try await attemptTicket(kind, endpoint: endpoint, remaining: deadline - clock.now)
                logger.info(
                    "\(kind) ticket received; handing the envelope to keyd",
                    metadata: ["endpoint": "\(endpoint)"]
                )
                try observer?(.ticketReceived)
                let accepted = try accept(ticket, kind: kind)
                try observer?(.envelopeAccepted(accepted))
                if kind == .join {
                    try writeFiles(ticket)
                    try observer?(.filesWritten)
                }
                logger.info(
                    "\(kind) complete",
                    metadata: [
                        "endpoint": "\(endpoint)", "attempts": "\(attempt)", "diskOpened": "\(accepted.diskOpened)",
                        "holdsKEK": "\(accepted.holdsKEK)",
                    ]
                )
                return JoinOutcome(endpoint: endpoint, attempts: attempt, accepted: accepted)
            } catch let error as JoinClientError {
                throw error
            } catch let error as RPCError {
                last = "\(endpoint): \(error.code): \(error.message)"
                hint = error.metadata[stringValues: "retry-after-ms"].first(where: { _ in true }).flatMap { Int($0) }
                    .map { min(max($0, 0), 60_000) }
            } catch {
                last = "\(endpoint): \(error)"
            }
            logger.warning("\(kind) attempt failed", metadata: ["attempt": "\(attempt)", "reason": "\(last)"])
            if let cap = configuration.maxAttempts, attempt >= cap { break }
            let pause = Duration.milliseconds(
                configuration.backoff.pauseMilliseconds(
                    afterAttempt: (attempt - 1) / endpoints.count + 1,
                    hintMilliseconds: hint,
                    random: Double.random(in: 0..<1)
                )
            )
            // A new round of endpoints waits; the next endpoint of this round is tried at once.
            let wait = attempt % endpoints.count == 0 || hint != nil ? pause : .zero
            guard clock.now + wait < deadline else { break }
            do {
                try await Task.sleep(for: wait)
            } catch {
                last = "cancelled"
                break
            }
        }
        logger.error("\(kind) gave up", metadata: ["attempts": "\(attempt)", "last": "\(last)"])
        throw .gaveUp(attempts: attempt, last: last)
    }

    /// A ticket's parts the client uses.
    struct Ticket: Sendable {
        var sealedKeys: [UInt8]
        var kubeletCertificate: [UInt8] = []
        var material: JoinFiles.Material?
    }

    /// One attempt against `endpoint`: a fresh aTLS connection (a new challenge at the service), the
    /// ticket request written once the handshake has bound this node's join evidence.
    func attemptTicket(_ kind: JoinTicketKind, endpoint: HostPort, remaining: Duration) async throws -> Ticket {
        let role = configuration.role
        let nodeName = configuration.nodeName
        let csr = configuration.kubeletCSR
        return try await AttestedCall(
            keydSocketPath: keydSocketPath,
            role: role,
            nodeName: nodeName,
            serviceVerifier: configuration.serviceVerifier,
            threadPool: threadPool
        ).run(endpoint: endpoint, timeout: min(configuration.callTimeout, remaining)) { grpc, options, recorder in
            switch kind {
            case .join:
                let response: Join_IssueJoinTicketResponse = try await grpc.attestedUnary(
                    Join_API.Method.IssueJoinTicket.descriptor,
                    options: options
                ) {
                    let bound = try recorder.answer()
                    var request = Join_IssueJoinTicketRequest()
                    request.diskUuid = bound.diskUUID
                    request.bootPublicKey = Data(bound.bootPublicKey)
                    request.evidenceBinding = .sealedV1
                    request.isControlPlane = role == .controlPlane
                    request.nodeName = nodeName
                    request.certificateRequest = Data(csr)
                    return request
                }
                return Ticket(
                    sealedKeys: Array(response.sealedKeys),
                    kubeletCertificate: Array(response.kubeletCert),
                    material: JoinFiles.Material(
                        apiServerEndpoint: response.apiServerEndpoint,
                        token: response.token,
                        discoveryTokenCACertHash: response.discoveryTokenCaCertHash,
                        certificateKey: response.certificateKey.isEmpty ? nil : response.certificateKey,
                        kubernetesVersion: response.kubernetesVersion.isEmpty ? nil : response.kubernetesVersion,
                        nodeName: nodeName,
                        controlPlane: role == .controlPlane
                    )
                )
            case .rejoin:
                let response: Join_IssueRejoinTicketResponse = try await grpc.attestedUnary(
                    Join_API.Method.IssueRejoinTicket.descriptor,
                    options: options
                ) {
                    let bound = try recorder.answer()
                    var request = Join_IssueRejoinTicketRequest()
                    request.diskUuid = bound.diskUUID
                    request.bootPublicKey = Data(bound.bootPublicKey)
                    request.evidenceBinding = .sealedV1
                    request.isControlPlane = role == .controlPlane
                    request.nodeName = nodeName
                    return request
                }
                return Ticket(sealedKeys: Array(response.sealedKeys))
            }
        }
    }

    /// `envelope.accept` with this node's keyd. The envelope's purpose is the JoinService connection's
    /// challenge purpose, which is join for both tickets (the challenge is bound at the handshake, before
    /// the service knows which ticket follows).
    func accept(_ ticket: Ticket, kind: JoinTicketKind) throws(JoinClientError) -> EnvelopeAcceptAnswer {
        guard !ticket.sealedKeys.isEmpty else { throw .envelopeRefused("the ticket carries no sealed keys") }
        do {
            let connection = try KeydConnection(path: keydSocketPath)
            defer { connection.close() }
            return try connection.acceptEnvelope(.join, envelope: ticket.sealedKeys)
        } catch {
            throw .envelopeRefused("\(error)")
        }
    }

    /// Writes the join's files.
    func writeFiles(_ ticket: Ticket) throws(JoinClientError) {
        guard let material = ticket.material else { return }
        try JoinFiles(directory: configuration.outputDirectory).write(
            kubeletCertificatePEM: ticket.kubeletCertificate,
            material: material
        )
    }
}

/// One call to a service of another node over a fresh mutual aTLS connection: the service's attestation
/// is verified before anything is sent, and this node attests with join evidence from its keyd
/// (``KeydJoinEvidenceIssuer``) to the service's challenge. JoinClient and the local KMS use it.
struct AttestedCall: Sendable {
    let keydSocketPath: String
    let role: NodeRole
    let nodeName: String
    let serviceVerifier: ATLSVerifier
    let threadPool: NIOThreadPool

    /// Runs `body` with a gRPC client to `endpoint`, call options bounded by `timeout`, and the recorder
    /// of what the handshake's join evidence bound.
    func run<Result: Sendable>(
        endpoint: HostPort,
        timeout: Duration,
        _ body: (GRPCClient<HTTP2ClientTransport.Posix>, CallOptions, JoinEvidenceRecorder) async throws -> Result
    ) async throws -> Result {
        let recorder = JoinEvidenceRecorder()
        let evidence = KeydJoinEvidenceIssuer(
            socketPath: keydSocketPath,
            role: role,
            nodeName: nodeName,
            recorder: recorder
        )
        let client = ATLSClient(
            configuration: .init(
                verifier: serviceVerifier,
                issuer: AttestedCertificateIssuer(evidence: evidence, keyMode: .freshPerCertificate)
            ),
            threadPool: threadPool
        )
        let target: any ResolvableTarget =
            switch endpoint.kind {
            case .ipv4: .ipv4(address: endpoint.host, port: endpoint.port)
            case .ipv6: .ipv6(address: endpoint.host, port: endpoint.port)
            case .name: .dns(host: endpoint.host, port: endpoint.port)
            }
        var transportConfig = HTTP2ClientTransport.Posix.Config.defaults
        transportConfig.connection.maxIdleTime = nil
        transportConfig.backoff = .init(initial: timeout, max: timeout, multiplier: 1, jitter: 0)
        var options = CallOptions.defaults
        options.timeout = timeout
        options.waitForReady = false
        return try await withGRPCClient(transport: try client.grpcTransport(target: target, config: transportConfig)) {
            grpc in try await body(grpc, options, recorder)
        }
    }
}

/// Join evidence from this node's keyd (`joinEvidence.issue`) as an aTLS evidence issuer: the nonce is
/// the JoinService's challenge nonce (from its certificate request), the user data the client
/// certificate's key hash; keyd binds its own boot key and disk UUID, which ``JoinEvidenceRecorder``
/// keeps for the request. Blocks for the quote; the aTLS client runs it on its thread pool.
struct KeydJoinEvidenceIssuer: EvidenceIssuer {
    let socketPath: String
    let role: NodeRole
    let nodeName: String
    let recorder: JoinEvidenceRecorder

    var variant: AttestationVariant { .asterismTPM }

    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        let connection = try KeydConnection(path: socketPath)
        defer { connection.close() }
        let answer = try connection.joinEvidence(
            JoinEvidenceRequest(nonce: nonce, certificateKeyHash: userData, role: role, nodeName: nodeName)
        )
        recorder.record(answer)
        return answer.document
    }
}

/// The join evidence one attempt's handshake bound (boot key, disk UUID), for the request that follows.
final class JoinEvidenceRecorder: Sendable {
    private let last = Mutex<JoinEvidenceAnswer?>(nil)

    func record(_ answer: JoinEvidenceAnswer) { last.withLock { $0 = answer } }

    /// The recorded answer; throws when the handshake bound none.
    func answer() throws -> JoinEvidenceAnswer {
        guard let answer = last.withLock({ $0 }) else {
            throw RPCError(code: .failedPrecondition, message: "no join evidence was bound in the handshake")
        }
        return answer
    }
}
