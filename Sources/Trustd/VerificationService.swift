import AsterismProto
import Crypto
import FoundationEssentials
import GRPCCore
import KeydClient
import KeydProtocol
import Logging
import TrustdCore

/// Where VerificationService's evidence comes from: keyd in trustd, an in-memory issuer in tests.
public protocol AttestationSource: Sendable {
    /// An attestation document over `nonce` (32 bytes) whose user data is what `binding` names
    /// (``VerificationUserData``); `bootPublicKey` is the bound boot key for sealed v1, empty otherwise.
    func attestation(
        nonce: [UInt8],
        binding: Verify_AttestationBinding
    ) async throws -> (document: [UInt8], bootPublicKey: [UInt8])
}

/// The user data digest VerificationService's documents carry, per binding.
public enum VerificationUserData {
    /// What Constellation's VerificationService binds: the fixed text `VerifyService`
    /// (Constellation's `constants.ConstellationVerifyServiceUserData`).
    public static let constellationUserData: [UInt8] = Array("VerifyService".utf8)

    /// The digest for ``Verify_AttestationBinding/constellation``: SHA-256 of ``constellationUserData``
    /// (keyd's native document binds a 32-byte digest, never free-form user data).
    public static let constellation: [UInt8] = Array(SHA256.hash(data: constellationUserData))

    /// The digest for ``Verify_AttestationBinding/sealedV1``: SHA-256 of keyd's 32-byte boot public key.
    public static func sealedV1(bootPublicKey: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: bootPublicKey)) }
}

/// Evidence from this node's keyd (`evidence.issue`, native variant) through the gateway.
public struct KeydAttestationSource: AttestationSource {
    /// trustd's connections to keyd.
    public let gateway: KeydGateway

    /// A source over `gateway`.
    public init(gateway: KeydGateway) { self.gateway = gateway }

    public func attestation(
        nonce: [UInt8],
        binding: Verify_AttestationBinding
    ) async throws -> (document: [UInt8], bootPublicKey: [UInt8]) {
        switch binding {
        case .constellation:
            let answer = try await gateway.call {
                try $0.evidence(
                    .native,
                    nonce: nonce,
                    userDataDigest: VerificationUserData.constellation,
                    asAdmin: false
                )
            }
            return (answer.document, [])
        case .sealedV1:
            // Boot key and evidence on one connection: a keyd restart in between closes it.
            return try await gateway.call { keyd in
                let bootPublicKey = try keyd.bootKey().publicKey
                let digest = VerificationUserData.sealedV1(bootPublicKey: bootPublicKey)
                let answer = try keyd.evidence(.native, nonce: nonce, userDataDigest: digest, asAdmin: false)
                return (answer.document, bootPublicKey)
            }
        case .UNRECOGNIZED(let value):
            throw KeydClientError.invalidArgument("attestation binding \(value) is unknown")
        }
    }
}

/// Constellation's VerificationService (`verify.API/GetAttestation`), also behind the HTTP form: a
/// document over the caller's 32-byte nonce, after per-source rate limiting and a concurrency cap in front
/// of the TPM. Peers get sanitized statuses; the full reason goes to the log.
public struct VerificationService: Verify_API.SimpleServiceProtocol {
    /// The nonce length every request must have.
    public static let nonceLength = 32

    private let source: any AttestationSource
    private let gate: AdmissionGate
    private let metrics: TrustdMetrics
    private let logger: Logger

    /// A service answering from `source` behind `gate`.
    public init(
        source: any AttestationSource,
        gate: AdmissionGate,
        metrics: TrustdMetrics,
        logger: Logger = Logger(label: "trustd.verification")
    ) {
        self.source = source
        self.gate = gate
        self.metrics = metrics
        self.logger = logger
    }

    public func getAttestation(
        request: Verify_GetAttestationRequest,
        context: ServerContext
    ) async throws -> Verify_GetAttestationResponse {
        let evidence = try await attest(
            nonce: Array(request.nonce),
            binding: request.binding,
            peer: context.remotePeer,
            source: AdmissionSource.key(grpcPeer: context.remotePeer),
            transport: .grpc
        )
        var response = Verify_GetAttestationResponse()
        response.attestation = Data(evidence.document)
        response.bootPublicKey = Data(evidence.bootPublicKey)
        return response
    }

    /// Checks the request, passes the gate, asks the source; every failure is a sanitized `RPCError`
    /// (counted and logged here), which the HTTP form maps to its statuses.
    func attest(
        nonce: [UInt8],
        binding: Verify_AttestationBinding,
        peer: String,
        source key: String,
        transport: TrustdMetrics.VerificationTransport
    ) async throws(RPCError) -> (document: [UInt8], bootPublicKey: [UInt8]) {
        var log = logger
        log[metadataKey: "peer.address"] = "\(peer)"
        log[metadataKey: "verify.transport"] = "\(transport.rawValue)"
        guard nonce.count == Self.nonceLength else {
            metrics.verificationRequests(transport, .invalid).increment()
            log.info("Attestation request refused", metadata: ["nonce.length": "\(nonce.count)"])
            throw RPCError(code: .invalidArgument, message: "nonce must be \(Self.nonceLength) bytes")
        }
        if case .UNRECOGNIZED(let value) = binding {
            metrics.verificationRequests(transport, .invalid).increment()
            log.info("Attestation request refused", metadata: ["verify.binding": "\(value)"])
            throw RPCError(code: .invalidArgument, message: "unknown attestation binding")
        }
        let attestationSource = source
        do {
            let evidence = try await gate.withAdmission(source: key) {
                try await attestationSource.attestation(nonce: nonce, binding: binding)
            }
            metrics.verificationRequests(transport, .ok).increment()
            return evidence
        } catch let error as RPCError where error.code == .resourceExhausted {
            // The gate's refusal: rebuilt, so that nothing but the retry hint goes out.
            metrics.verificationRequests(transport, .busy).increment()
            log.notice("Attestation request refused by admission control")
            let hint = AdmissionGate.retryAfterMilliseconds(of: error) ?? Self.keydBusyRetryMilliseconds
            throw AdmissionGate.refusalError(retryAfterMilliseconds: hint)
        } catch is CancellationError {
            throw RPCError(code: .cancelled, message: "cancelled")
        } catch let error as KeydClientError where error.refusal == .rateLimited || error.refusal == .busy {
            metrics.verificationRequests(transport, .busy).increment()
            log.notice("Evidence refused by keyd", metadata: ["error": "\(error)"])
            throw AdmissionGate.refusalError(retryAfterMilliseconds: Self.keydBusyRetryMilliseconds)
        } catch {
            metrics.verificationRequests(transport, .unavailable).increment()
            log.error("Attestation failed", metadata: ["error": "\(error)"])
            throw RPCError(code: .unavailable, message: "attestation unavailable")
        }
    }

    /// The retry hint in milliseconds when keyd itself is busy or rate-limits trustd.
    static let keydBusyRetryMilliseconds = 1000
}
