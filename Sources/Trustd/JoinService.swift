import ATLS
import ATLSTransport
import AsterismProto
import FoundationEssentials
import GRPCCore
import KeydClient
import KeydProtocol
import Logging
import Synchronization
import TrustdCore
import X509

/// What a joining node needs besides its keys to run `kubeadm join`.
public struct JoinMaterial: Sendable, Equatable {
    /// `host:port` of the Kubernetes API server.
    public var apiServerEndpoint: String
    /// A kubeadm bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`.
    public var token: String
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo.
    public var discoveryTokenCACertHash: String
    /// kubeadm's certificate key (control planes only; empty for workers).
    public var certificateKey: String
    /// The Kubernetes version the cluster runs.
    public var kubernetesVersion: String

    public init(
        apiServerEndpoint: String,
        token: String,
        discoveryTokenCACertHash: String,
        certificateKey: String = "",
        kubernetesVersion: String = ""
    ) {
        self.apiServerEndpoint = apiServerEndpoint
        self.token = token
        self.discoveryTokenCACertHash = discoveryTokenCACertHash
        self.certificateKey = certificateKey
        self.kubernetesVersion = kubernetesVersion
    }
}

/// Where a JoinService gets join material for a node whose release keyd granted (a bootstrap token
/// created through the Kubernetes API; fixed material in tests).
public protocol JoinMaterialSource: Sendable {
    /// Join material for `nodeName` joining as `role`.
    func material(nodeName: String, role: NodeRole) async throws -> JoinMaterial
}

/// Admission in front of a service's expensive work (bounded in flight, bounded queue, per-source rate).
public protocol RequestAdmission: Sendable {
    /// Runs `body` once admitted for `source`, or throws a `RESOURCE_EXHAUSTED` RPCError with a retry hint.
    func withAdmission<T: Sendable>(source: String, _ body: @Sendable () async throws -> T) async throws -> T
}

/// Admits everything (tests, and services without limits).
public struct UnlimitedAdmission: RequestAdmission {
    public init() {}
    public func withAdmission<T: Sendable>(source: String, _ body: @Sendable () async throws -> T) async throws -> T {
        try await body()
    }
}

/// Constellation's JoinService with Asterism's sealed release. The joining node attests in the aTLS
/// handshake to a nonce from this node keyd's `challenge.issue` (``KeydChallengeSource``); the handler
/// hands keyd the claim its certificate carries (document and key hash), the request's boot key, disk
/// UUID, role, node name and CSR (`key.release`), and answers with keyd's envelope, the kubelet
/// certificate keyd signed and the join material. This process never sees a key. Refusals reach the
/// client as a status code and a short reason; the full reason goes to the log (and keyd's audit).
public struct JoinService: Join_API.SimpleServiceProtocol {
    /// keyd.
    public let keyd: KeydGateway
    /// The aTLS server's connections, for each caller's challenge and claim.
    public let peers: ATLSPeerRegistry
    /// Join material for granted joins.
    public let material: any JoinMaterialSource
    /// Admission in front of keyd.
    public let admission: any RequestAdmission
    /// Called with every ticket's outcome (metrics).
    public let observe: @Sendable (JoinTicketOutcome) -> Void
    public let logger: Logger
    /// Whether Constellation's binding is served: plain keys inside aTLS through keyd's `compat.release`.
    public let constellationCompatibility: Bool

    public init(
        keyd: KeydGateway,
        peers: ATLSPeerRegistry,
        material: any JoinMaterialSource,
        admission: any RequestAdmission = UnlimitedAdmission(),
        constellationCompatibility: Bool = false,
        logger: Logger,
        observe: @escaping @Sendable (JoinTicketOutcome) -> Void = { _ in }
    ) {
        self.keyd = keyd
        self.peers = peers
        self.material = material
        self.admission = admission
        self.constellationCompatibility = constellationCompatibility
        self.logger = logger
        self.observe = observe
    }

    public func issueJoinTicket(
        request: Join_IssueJoinTicketRequest,
        context: ServerContext
    ) async throws -> Join_IssueJoinTicketResponse {
        let role: NodeRole = request.isControlPlane ? .controlPlane : .worker
        if request.evidenceBinding == .constellation {
            return try await compatibleJoin(request, context: context, role: role)
        }
        return try await ticket(.join, context: context, role: role, nodeName: request.nodeName) { release in
            try Self.checkBinding(request.evidenceBinding)
            let answer = try await release(
                Array(request.bootPublicKey),
                request.diskUuid,
                Array(request.certificateRequest)
            )
            let material: JoinMaterial
            do {
                material = try await self.material.material(nodeName: request.nodeName, role: role)
            } catch {
                throw JoinRefusal(.unavailable, "join material unavailable", reason: "join material: \(error)")
            }
            var response = Join_IssueJoinTicketResponse()
            response.sealedKeys = Data(answer.envelope)
            response.kubeletCert = Data(answer.kubeletCertificate)
            response.apiServerEndpoint = material.apiServerEndpoint
            response.token = material.token
            response.discoveryTokenCaCertHash = material.discoveryTokenCACertHash
            response.kubernetesVersion = material.kubernetesVersion
            response.certificateKey = role == .controlPlane ? material.certificateKey : ""
            return response
        }
    }

    public func issueRejoinTicket(
        request: Join_IssueRejoinTicketRequest,
        context: ServerContext
    ) async throws -> Join_IssueRejoinTicketResponse {
        let role: NodeRole = request.isControlPlane ? .controlPlane : .worker
        if request.evidenceBinding == .constellation {
            // Constellation's rejoin names no node; keyd records this name in its audit only (its
            // Constellation binding covers the certificate key and nonce, not a name).
            let nodeName = request.nodeName.isEmpty ? "rejoin-" + request.diskUuid.prefix(8) : request.nodeName
            let keys = try await compatibleRelease(
                .rejoin,
                context: context,
                role: role,
                nodeName: nodeName,
                diskUUID: request.diskUuid
            )
            var response = Join_IssueRejoinTicketResponse()
            response.stateDiskKey = Data(keys.diskKey)
            response.measurementSecret = Data(keys.measurementSecret)
            return response
        }
        return try await ticket(.rejoin, context: context, role: role, nodeName: request.nodeName) { release in
            try Self.checkBinding(request.evidenceBinding)
            let answer = try await release(Array(request.bootPublicKey), request.diskUuid, [])
            var response = Join_IssueRejoinTicketResponse()
            response.sealedKeys = Data(answer.envelope)
            return response
        }
    }

    /// Constellation's join: the node name from the kubelet CSR (`CN=system:node:<name>`), keyd's
    /// `compat.release` on the Constellation document the client attested with, and the keys in plain in
    /// Constellation's fields. Only workers: a Constellation control plane expects its PKI files
    /// (`control_plane_files`), which this JoinService does not hold.
    private func compatibleJoin(
        _ request: Join_IssueJoinTicketRequest,
        context: ServerContext,
        role: NodeRole
    ) async throws -> Join_IssueJoinTicketResponse {
        guard role == .worker else {
            throw JoinRefusal(
                .failedPrecondition,
                "control planes join with sealed release",
                reason: "a Constellation control plane asked to join; its PKI files are not served"
            ).rpcError
        }
        let nodeName =
            request.nodeName.isEmpty ? Self.nodeName(fromCSR: Array(request.certificateRequest)) : request.nodeName
        let keys = try await compatibleRelease(
            .join,
            context: context,
            role: role,
            nodeName: nodeName ?? "",
            diskUUID: request.diskUuid
        )
        let material: JoinMaterial
        do {
            material = try await self.material.material(nodeName: nodeName ?? "", role: role)
        } catch {
            logger.warning("join material unavailable", metadata: ["reason": "\(error)"])
            throw RPCError(code: .unavailable, message: "join material unavailable")
        }
        var response = Join_IssueJoinTicketResponse()
        response.stateDiskKey = Data(keys.diskKey)
        response.measurementSalt = Data(keys.measurementSalt)
        response.measurementSecret = Data(keys.measurementSecret)
        response.apiServerEndpoint = material.apiServerEndpoint
        response.token = material.token
        response.discoveryTokenCaCertHash = material.discoveryTokenCACertHash
        response.kubernetesVersion = material.kubernetesVersion
        return response
    }

    /// Keys in plain for Constellation's bootstrapper, from keyd's `compat.release`.
    struct PlainKeys: Sendable {
        var diskKey: [UInt8]
        var measurementSecret: [UInt8]
        var measurementSalt: [UInt8]
    }

    /// `compat.release` for the caller's challenge and Constellation document, as one admitted, logged,
    /// observed and sanitized ticket.
    private func compatibleRelease(
        _ kind: JoinTicketKind,
        context: ServerContext,
        role: NodeRole,
        nodeName: String,
        diskUUID: String
    ) async throws -> PlainKeys {
        guard constellationCompatibility else {
            observe(JoinTicketOutcome(kind: kind, reason: "binding", seconds: nil))
            logger.warning("Constellation binding asked for; compatibility mode is off")
            throw RPCError(code: .failedPrecondition, message: "this JoinService serves sealed release only")
        }
        return try await ticket(kind, context: context, role: role, nodeName: nodeName) { _ in
            guard let connection = peers.connection(forPeer: context.remotePeer),
                let challengeID = connection.challengeID, let claim = connection.claim
            else {
                throw JoinRefusal(.unauthenticated, "attestation required", reason: "no attested connection")
            }
            let request = CompatReleaseRequest(
                challengeID: challengeID,
                evidence: claim.document,
                certificateKeyHash: claim.keyHash,
                diskUUID: diskUUID,
                role: role,
                nodeName: nodeName
            )
            do {
                return try await keyd.call { connection in
                    let answer = try connection.call(.compatRelease(request))
                    let keys = try answer.decodePayload(.compatRelease, CompatReleaseAnswer.read)
                    func bytes(_ field: SecretField) -> [UInt8] {
                        Array(answer.payload[field.offset..<(field.offset + field.count)])
                    }
                    return PlainKeys(
                        diskKey: bytes(keys.diskKey),
                        measurementSecret: bytes(keys.measurementSecret),
                        measurementSalt: keys.measurementSalt
                    )
                }
            } catch let error as KeydClientError {
                throw JoinRefusal(keyd: error)
            }
        }
    }

    /// The node name a kubelet CSR asks for (`CN=system:node:<name>`), or nil.
    static func nodeName(fromCSR der: [UInt8]) -> String? {
        guard let csr = try? CertificateSigningRequest(derEncoded: der) else { return nil }
        for rdn in csr.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                let text = String(describing: attribute.value)
                if text.hasPrefix("system:node:") { return String(text.dropFirst("system:node:".count)) }
            }
        }
        return nil
    }

    /// A release function for one request: boot key, disk UUID, CSR → keyd's answer.
    typealias Release = @Sendable ([UInt8], String, [UInt8]) async throws -> KeyReleaseAnswer

    /// Runs one ticket request: admission, the caller's challenge and claim, keyd's release through
    /// `body`, the outcome logged and observed, and every failure sanitized.
    private func ticket<Response: Sendable>(
        _ kind: JoinTicketKind,
        context: ServerContext,
        role: NodeRole,
        nodeName: String,
        _ body: @escaping @Sendable (Release) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        let source = AdmissionSource.key(grpcPeer: context.remotePeer)
        var log = logger
        log[metadataKey: "ticket"] = "\(kind)"
        log[metadataKey: "source"] = "\(source)"
        log[metadataKey: "node"] = "\(nodeName.prefix(253))"
        do {
            let response = try await admission.withAdmission(source: source) { () async throws -> Response in
                guard let connection = peers.connection(forPeer: context.remotePeer),
                    let challengeID = connection.challengeID, let claim = connection.claim
                else {
                    throw JoinRefusal(.unauthenticated, "attestation required", reason: "no attested connection")
                }
                let keyd = self.keyd
                return try await body { bootPublicKey, diskUUID, csr in
                    // A field over keyd's wire bound would not encode: refused here, not a crash.
                    try KeydRequestFields.check(
                        bootPublicKey: bootPublicKey,
                        diskUUID: diskUUID,
                        nodeName: nodeName,
                        evidence: claim.document
                    )
                    guard csr.count <= Limits.maxKubeletCSR else {
                        throw JoinRefusal(.invalidArgument, "request refused", reason: "CSR of \(csr.count) bytes")
                    }
                    let release = KeyReleaseRequest(
                        challengeID: challengeID,
                        evidence: claim.document,
                        certificateKeyHash: claim.keyHash,
                        bootPublicKey: bootPublicKey,
                        diskUUID: diskUUID,
                        role: role,
                        nodeName: nodeName,
                        kubeletCSR: csr
                    )
                    do {
                        return try await keyd.call { try $0.releaseKeys(release) }
                    } catch let error as KeydClientError {
                        throw JoinRefusal(keyd: error)
                    }
                }
            }
            let seconds = (ContinuousClock.now - started).seconds
            observe(JoinTicketOutcome(kind: kind, reason: nil, seconds: seconds))
            log.info("ticket issued", metadata: ["seconds": "\(seconds)"])
            return response
        } catch let refusal as JoinRefusal {
            observe(JoinTicketOutcome(kind: kind, reason: refusal.metricReason, seconds: nil))
            log.warning("ticket refused", metadata: ["reason": "\(refusal.reason)"])
            throw refusal.rpcError
        } catch let error as RPCError {
            // Admission's own refusal: already sanitized.
            observe(JoinTicketOutcome(kind: kind, reason: "admission", seconds: nil))
            log.notice("ticket not admitted", metadata: ["reason": "\(error.message)"])
            throw error
        } catch {
            observe(JoinTicketOutcome(kind: kind, reason: "internal", seconds: nil))
            log.error("ticket failed", metadata: ["reason": "\(error)"])
            throw RPCError(code: .internalError, message: "internal error")
        }
    }

    /// Sealed release only: Constellation's binding would carry plain keys.
    static func checkBinding(_ binding: Join_EvidenceBinding) throws {
        guard binding == .sealedV1 else {
            throw JoinRefusal(
                .failedPrecondition,
                "this JoinService serves sealed release only",
                reason: "the request asked for evidence binding \(binding)"
            )
        }
    }
}

/// One ticket's outcome, for metrics: `reason` nil when issued, `seconds` its latency when issued.
public struct JoinTicketOutcome: Sendable {
    public let kind: JoinTicketKind
    public let reason: String?
    public let seconds: Double?
}

/// A refused ticket: what the client is told (a status and a short, fixed reason) and what the log gets.
struct JoinRefusal: Error {
    let code: RPCError.Code
    let message: String
    let reason: String
    let retryAfterMilliseconds: Int?
    let metricReason: String

    init(
        _ code: RPCError.Code,
        _ message: String,
        reason: String,
        retryAfterMilliseconds: Int? = nil,
        metricReason: String? = nil
    ) {
        self.code = code
        self.message = message
        self.reason = reason
        self.retryAfterMilliseconds = retryAfterMilliseconds
        self.metricReason = metricReason ?? "\(code)".lowercased()
    }

    /// keyd's refusal (or failure) as the client sees it.
    init(keyd error: KeydClientError) {
        let reason = "keyd: \(error)"
        guard let status = error.refusal else {
            self.init(.unavailable, "key service unavailable", reason: reason, metricReason: "keyd_unavailable")
            return
        }
        switch status {
        case .evidenceRejected:
            self.init(.permissionDenied, "attestation refused", reason: reason, metricReason: "evidence")
        case .revoked: self.init(.permissionDenied, "node revoked", reason: reason, metricReason: "revoked")
        case .challengeUnknown, .challengeExpired, .challengeEvicted:
            self.init(
                .failedPrecondition,
                "challenge no longer valid; reconnect",
                reason: reason,
                metricReason: "challenge"
            )
        case .policyMissing:
            self.init(.unavailable, "not ready to release keys", reason: reason, metricReason: "policy_missing")
        case .invalidArgument, .malformed:
            self.init(.invalidArgument, "request refused", reason: reason, metricReason: "invalid_request")
        case .rateLimited, .busy:
            self.init(
                .resourceExhausted,
                "busy; retry later",
                reason: reason,
                retryAfterMilliseconds: 200,
                metricReason: "keyd_busy"
            )
        default: self.init(.internalError, "internal error", reason: reason, metricReason: "keyd_\(status)")
        }
    }

    /// The sanitized error.
    var rpcError: RPCError {
        var metadata = Metadata()
        if let retryAfterMilliseconds { metadata.addString("\(retryAfterMilliseconds)", forKey: "retry-after-ms") }
        return RPCError(code: code, message: message, metadata: metadata)
    }
}

/// Server nonces from keyd's `challenge.issue` (purpose join for JoinService, dataKey for the KMS
/// listener), one per connection: the client's evidence binds the nonce, and keyd's `key.release` (or
/// `dataKey.release`) consumes the challenge, which serves no other release. Blocking
/// (the aTLS server calls it on its thread pool); keeps up to `maxIdle` keyd connections for reuse, so
/// a handshake costs one round trip, not a connect and hello as well. A connection that failed is dropped.
public final class KeydChallengeSource: ATLSChallengeSource {
    /// keyd's trustd socket.
    public let socketPath: String
    /// Most connections kept for reuse.
    public let maxIdle: Int
    /// What every challenge is issued for.
    public let purpose: ChallengePurpose
    private let idle = Mutex<[KeydConnectionBox]>([])

    public init(socketPath: String, purpose: ChallengePurpose = .join, maxIdle: Int = 8) {
        self.socketPath = socketPath
        self.purpose = purpose
        self.maxIdle = maxIdle
    }

    deinit { for box in idle.withLock({ $0 }) { box.connection.close() } }

    public func challenge() throws -> ATLSChallenge {
        let box = try idle.withLock { $0.popLast() } ?? KeydConnectionBox(KeydConnection(path: socketPath))
        let answer: ChallengeAnswer
        do {
            answer = try box.connection.challenge(purpose)
        } catch {
            box.connection.close()
            throw error
        }
        let kept = idle.withLock { list in
            guard list.count < maxIdle else { return false }
            list.append(box)
            return true
        }
        if !kept { box.connection.close() }
        return ATLSChallenge(id: answer.challengeID, nonce: try ATLSNonce(bytes: answer.nonce))
    }
}
