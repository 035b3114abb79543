import AsterismProto
import Attestation
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KeydClient
import Testing
import Trustd
import TrustdCore

#if canImport(Glibc)
import Glibc
#endif

/// trustd's VerificationService on a real keyd and swtpm (KeydAttestationSource over evidence.issue),
/// asked over plaintext gRPC; the documents are checked against the AK keyd reports.
@Suite(.serialized, .needsSwtpm) struct VerificationKeydTests {
    @Test func bothBindingsValidateAgainstKeydsAK() async throws {
        let tpm = try SoftwareTPM()
        let keyd = try KeydTPMTests.keyd(tpm)
        let status = try KeydTPMTests.tpmStatus(keyd)
        let pem = try #require((status["attestationKey"] as? [String: Any])?["publicKeyPEM"] as? String)
        let der = try #require(
            Data(base64Encoded: pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined())
        )
        let policy = TPMQuotePolicy(
            akTrust: AKTrust(allowedKeyDigests: [Array(SHA256.hash(data: der))]),
            eventLogCheck: .skip
        )
        let bootKey = try KeydConnection(path: keyd.socketPath).bootKey().publicKey

        let gateway = KeydGateway(socketPath: keyd.socketPath, maxConnections: 2)
        let metrics = TrustdMetrics()
        let gate = AdmissionGate(
            name: "verification",
            limits: AdmissionLimits(maxInFlight: 2, maxQueued: 8),
            sources: SourceBuckets(capacity: 16, ratePerSecond: 100, burst: 100),
            metrics: metrics
        )
        let service = VerificationService(source: KeydAttestationSource(gateway: gateway), gate: gate, metrics: metrics)
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: "127.0.0.1", port: 0),
            transportSecurity: .plaintext
        )
        try await withGRPCServer(transport: transport, services: [service]) { _ in
            let address = try #require(try await transport.listeningAddress.ipv4)
            let client = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: address.port),
                transportSecurity: .plaintext
            )
            try await withGRPCClient(transport: client) { grpc in
                let verify = Verify_API.Client(wrapping: grpc)
                let cases: [(Verify_AttestationBinding, [UInt8], [UInt8])] = [
                    (.constellation, VerificationUserData.constellation, []),
                    (.sealedV1, Array(SHA256.hash(data: bootKey)), bootKey),
                ]
                for (binding, digest, returnedKey) in cases {
                    let nonce = KeydTPMTests.random32()
                    var request = Verify_GetAttestationRequest()
                    request.nonce = Data(nonce)
                    request.binding = binding
                    let response = try await verify.getAttestation(request)
                    #expect(Array(response.bootPublicKey) == returnedKey)
                    let report = try TPMEvidenceValidator.validate(
                        native: Array(response.attestation),
                        nonce: nonce,
                        userDataDigest: digest,
                        policy: policy,
                        at: Date()
                    )
                    #expect(report.isValid, "\(binding): \(report.failures)")
                }
            }
        }
        await gateway.shutdown()
        #expect(try KeydTPMTests.tpmStatus(keyd)["evidenceIssued"] as? Int == 2)
    }
}
