import AsterismProto
import Attestation
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KeydCore
import TrustdCore

/// A client of nodes' VerificationService (`verify.API/GetAttestation`, plaintext gRPC): evidence over a fresh
/// nonce, its own consistency checked, and full validation against a measurement policy, for the operator's
/// `policy from-evidence`, `init`, `verify` and `recover`.
///
/// - Important: Plaintext is enough: nothing secret travels, and the answer is trusted only through the
///   quote it carries (signed by the TPM's AK over the client's nonce and the node's boot key).
public struct NodeAttestationClient: Sendable {
    /// The length of the nonce every request carries.
    public static let nonceLength = 32
    /// The user data Constellation's binding carries (Constellation's `ConstellationVerifyServiceUserData`).
    public static let constellationUserData: [UInt8] = Array("VerifyService".utf8)

    /// A client; every call opens its own connection.
    public init() {}

    /// Reads `HOST:PORT`, `[V6]:PORT` or `NAME:PORT`; throws ``NodeAttestationError/Code/invalidEndpoint``.
    public static func endpoint(parsing text: String) throws(NodeAttestationError) -> HostPort {
        switch HostPort.parse(text, allowingNames: true) {
        case .success(let endpoint): return endpoint
        case .failure(.portOutOfRange): throw .invalidEndpoint(text, "the port is outside 1…65535")
        case .failure(.malformed): throw .invalidEndpoint(text, "not HOST:PORT (an IPv6 address in brackets)")
        }
    }

    /// Asks `endpoint` for evidence over a fresh random nonce under `binding`, parses it and checks its own
    /// consistency (``NodeAttestation/integrity``); whether the node is trusted is ``validate(_:against:at:)``'s.
    /// - Throws: ``NodeAttestationError/Code/unreachable`` when no answer came within `timeout`, and
    ///   ``NodeAttestationError/Code/invalidAnswer`` when the answer is not keyd's native document (or lacks
    ///   the boot key `sealedV1` binds).
    public func fetch(
        _ endpoint: HostPort,
        binding: Verify_AttestationBinding = .sealedV1,
        timeout: Duration = .seconds(10)
    ) async throws(NodeAttestationError) -> NodeAttestation {
        var nonce = [UInt8](repeating: 0, count: Self.nonceLength)
        var generator = SystemRandomNumberGenerator()
        for index in nonce.indices { nonce[index] = generator.next() }
        let response: Verify_GetAttestationResponse
        do {
            response = try await Self.getAttestation(endpoint, nonce: nonce, binding: binding, timeout: timeout)
        } catch let error as RPCError {
            throw .unreachable(endpoint, "VerificationService answered \(error.code): \(error.message)")
        } catch {
            throw .unreachable(endpoint, "\(error)")
        }
        return try NodeAttestation(
            endpoint: endpoint,
            binding: binding,
            nonce: nonce,
            documentBytes: Array(response.attestation),
            bootPublicKey: Array(response.bootPublicKey)
        )
    }

    /// ``fetch(_:binding:timeout:)`` of every endpoint at once; the answers in the order of `endpoints`.
    public func fetchAll(
        _ endpoints: [HostPort],
        binding: Verify_AttestationBinding = .sealedV1,
        timeout: Duration = .seconds(10)
    ) async throws(NodeAttestationError) -> [NodeAttestation] {
        // Untyped throws inside the child tasks, and an array by index: typed throws in the task closure,
        // collected through a dictionary, lost answers in a release build (Swift 6.3).
        let results = await withTaskGroup(of: (Int, Result<NodeAttestation, NodeAttestationError>).self) { group in
            for (index, endpoint) in endpoints.enumerated() {
                group.addTask {
                    do {
                        return (index, .success(try await fetch(endpoint, binding: binding, timeout: timeout)))
                    } catch {
                        let failure =
                            (error as? NodeAttestationError) ?? .unreachable(endpoint, "\(error)")
                        return (index, .failure(failure))
                    }
                }
            }
            var results = [Result<NodeAttestation, NodeAttestationError>?](repeating: nil, count: endpoints.count)
            while let (index, result) = await group.next() { results[index] = result }
            return results
        }
        var attestations: [NodeAttestation] = []
        for (index, result) in results.enumerated() {
            guard let result else { throw .unreachable(endpoints[index], "no answer was collected") }
            attestations.append(try result.get())
        }
        return attestations
    }

    /// Validates `attestation` against `policy` as keyd's release does: the policy takes the `asterism-tpm`
    /// variant, the native document passes the policy's quote policy (AK trust, signature, the generic
    /// binding of this client's nonce and the expected user data, measurements, event log enforced), and the
    /// AK is not revoked. One report, every check named; `isValid` when the node meets the policy.
    public func validate(
        _ attestation: NodeAttestation,
        against policy: MeasurementPolicy,
        at time: Date = Date()
    ) -> AttestationReport {
        var results: [PolicyResult] = []
        let variant = AttestationVariant.asterismTPM.name
        results.append(
            policy.evidenceVariants.contains(.asterismTPM)
                ? PolicyResult(
                    policy: "policy.evidence-variant",
                    outcome: .passed,
                    message: "the policy takes \(variant)",
                    values: [("version", String(policy.version))]
                )
                : PolicyResult(
                    policy: "policy.evidence-variant",
                    outcome: .failed,
                    message: "the policy does not take \(variant)",
                    values: [("version", String(policy.version))]
                )
        )
        // The same validation trustd's join client runs (NativeTPMDocumentValidator), with the user data
        // compared here rather than by the caller.
        let report: AttestationReport
        do {
            report = try TPMEvidenceValidator.validate(
                native: attestation.documentBytes,
                nonce: attestation.nonce,
                userDataDigest: attestation.expectedUserDataDigest,
                policy: policy.quotePolicy(expectedQualifyingData: []),
                at: time
            )
        } catch {
            // fetch parsed the document already; kept for a document assembled by hand.
            results.append(PolicyResult(policy: "evidence.parse", outcome: .failed, message: error.message))
            return AttestationReport(evidence: "native-tpm-document", results: results)
        }
        results += report.results
        let revoked = policy.revokedAKDigests.contains(attestation.akDigest)
        results.append(
            PolicyResult(
                policy: "policy.revoked-ak",
                outcome: revoked ? .failed : .passed,
                message: revoked ? "the policy revokes this AK" : "the AK is not revoked",
                values: [("akDigest", hexString(attestation.akDigest))]
            )
        )
        return AttestationReport(evidence: report.evidence, results: results, notes: report.notes)
    }

    /// One GetAttestation call on a connection of its own, no retry, bounded by `timeout`.
    private static func getAttestation(
        _ endpoint: HostPort,
        nonce: [UInt8],
        binding: Verify_AttestationBinding,
        timeout: Duration
    ) async throws -> Verify_GetAttestationResponse {
        let target: any ResolvableTarget =
            switch endpoint.kind {
            case .ipv4: .ipv4(address: endpoint.host, port: endpoint.port)
            case .ipv6: .ipv6(address: endpoint.host, port: endpoint.port)
            case .name: .dns(host: endpoint.host, port: endpoint.port)
            }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.backoff = .init(initial: timeout, max: timeout, multiplier: 1, jitter: 0)
        var options = CallOptions.defaults
        options.timeout = timeout
        options.waitForReady = false
        var request = Verify_GetAttestationRequest()
        request.nonce = Data(nonce)
        request.binding = binding
        let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext, config: config)
        return try await withGRPCClient(transport: transport) { grpc in
            try await Verify_API.Client(wrapping: grpc).getAttestation(request, options: options)
        }
    }
}

/// A node's answer to one GetAttestation call: the nonce it was asked, the native TPM document it returned,
/// parsed, and the document's own consistency.
public struct NodeAttestation: Sendable {
    /// Where it came from.
    public let endpoint: HostPort
    /// The binding asked for.
    public let binding: Verify_AttestationBinding
    /// The client's fresh nonce.
    public let nonce: [UInt8]
    /// The document as received.
    public let documentBytes: [UInt8]
    /// The document, parsed.
    public let document: NativeTPMEvidenceDocument
    /// The node keyd's boot public key (`sealedV1`), empty for Constellation's binding.
    public let bootPublicKey: [UInt8]
    /// The user data digest the quote must bind: SHA-256 of the boot key (`sealedV1`), or of
    /// ``NodeAttestationClient/constellationUserData``.
    public let expectedUserDataDigest: [UInt8]
    /// SHA-256 of the AK's DER SubjectPublicKeyInfo, as a policy's `akTrust.allowedDigests` lists it.
    public let akDigest: [UInt8]
    /// The document's consistency with itself and this request: the quote is signed by the document's AK
    /// (trusted here, unauthenticated), over this nonce and the expected user data, the PCR values match the
    /// quote's digest, the event log (if any) replays to them. Says nothing of whether the AK or the values
    /// are the right ones.
    public let integrity: AttestationReport

    /// The quoted SHA-256 PCR values by index, nil unless ``integrity`` is valid.
    public var quotedPCRs: [Int: [UInt8]]? { integrity.isValid ? document.pcrs : nil }

    /// Parses `documentBytes` and checks its consistency; throws ``NodeAttestationError/Code/invalidAnswer``.
    public init(
        endpoint: HostPort,
        binding: Verify_AttestationBinding,
        nonce: [UInt8],
        documentBytes: [UInt8],
        bootPublicKey: [UInt8],
        at time: Date = Date()
    ) throws(NodeAttestationError) {
        switch binding {
        case .sealedV1:
            guard bootPublicKey.count == BootKey.publicKeyLength else {
                throw .invalidAnswer(
                    endpoint,
                    "boot public key of \(bootPublicKey.count) bytes, not \(BootKey.publicKeyLength)"
                )
            }
            expectedUserDataDigest = Array(SHA256.hash(data: bootPublicKey))
        case .constellation:
            expectedUserDataDigest = Array(SHA256.hash(data: NodeAttestationClient.constellationUserData))
        case .UNRECOGNIZED(let value):
            throw .invalidAnswer(endpoint, "attestation binding \(value) is unknown")
        }
        do {
            document = try NativeTPMEvidenceDocument(bytes: documentBytes)
            akDigest = try TPMTPublic(bytes: document.akPublic).keyDigest()
            integrity = try TPMEvidenceValidator.validate(
                native: documentBytes,
                nonce: nonce,
                userDataDigest: expectedUserDataDigest,
                policy: TPMQuotePolicy(akTrust: AKTrust(insecureTrustDocumentAK: true), eventLogCheck: .enforce),
                at: time
            )
        } catch {
            throw .invalidAnswer(endpoint, "not keyd's native TPM document: \(error.message)")
        }
        self.endpoint = endpoint
        self.binding = binding
        self.nonce = nonce
        self.documentBytes = documentBytes
        self.bootPublicKey = bootPublicKey
    }
}

/// Why a node's attestation could not be had: equal by code, the message names the endpoint and the value.
public struct NodeAttestationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Not `HOST:PORT`.
        public static let invalidEndpoint = Code("invalidEndpoint")
        /// No answer: connection refused, timed out, or an error status.
        public static let unreachable = Code("unreachable")
        /// An answer that is not keyd's native document for the binding asked.
        public static let invalidAnswer = Code("invalidAnswer")
    }

    /// What failed.
    public let code: Code
    /// The endpoint and what was wrong.
    public let message: String

    public var description: String { message }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }

    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    static func invalidEndpoint(_ text: String, _ problem: String) -> Self {
        Self(code: .invalidEndpoint, message: "\(quotedEndpoint(text)): \(problem)")
    }

    static func unreachable(_ endpoint: HostPort, _ problem: String) -> Self {
        Self(code: .unreachable, message: "\(endpoint): \(problem)")
    }

    static func invalidAnswer(_ endpoint: HostPort, _ problem: String) -> Self {
        Self(code: .invalidAnswer, message: "\(endpoint): \(problem)")
    }

    /// `text` quoted, cut at 64 characters (it came from the command line).
    private static func quotedEndpoint(_ text: String) -> String {
        "\"\(text.prefix(64))\"" + (text.count > 64 ? "…" : "")
    }
}
