import AsterismProto
import Attestation
import Crypto
import Foundation
import GRPCCore
import KeydClient
import KeydProtocol
import Testing
import Trustd
import TrustdCore

/// VerificationService over real gRPC (plaintext HTTP/2 on loopback), its documents checked with the
/// Attestation module's native validator.
@Suite struct VerificationServiceTests {
    @Test func constellationBindingValidatesAgainstTheNonce() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withGRPC { verify in
            let nonce = randomNonce()
            let request = attestationRequest(nonce)
            let response = try await verify.getAttestation(request)
            #expect(response.bootPublicKey.isEmpty)
            let document = Array(response.attestation)
            let validated = try source.validator.validate(document: document, nonce: nonce, at: Date())
            #expect(validated.userData == VerificationUserData.constellation)
            #expect(validated.userData == Array(SHA256.hash(data: Array("VerifyService".utf8))))
            // The same document is no evidence for another nonce.
            #expect(throws: EvidenceRejection.self) {
                _ = try source.validator.validate(document: document, nonce: randomNonce(), at: Date())
            }
        }
    }

    @Test func sealedBindingCarriesTheBootKey() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withGRPC { verify in
            let nonce = randomNonce()
            let request = attestationRequest(nonce, binding: .sealedV1)
            let response = try await verify.getAttestation(request)
            #expect(Array(response.bootPublicKey) == source.bootPublicKey)
            let validated = try source.validator.validate(
                document: Array(response.attestation),
                nonce: nonce,
                at: Date()
            )
            #expect(validated.userData == Array(SHA256.hash(data: Array(response.bootPublicKey))))
        }
    }

    @Test(arguments: [0, 1, 31, 33, 64, 4096])
    func wrongNonceSizeIsInvalidArgument(size: Int) async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withGRPC { verify in
            let request = attestationRequest([UInt8](repeating: 7, count: size))
            let error = await #expect(throws: RPCError.self) { _ = try await verify.getAttestation(request) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message == "nonce must be 32 bytes")
        }
        #expect(source.calls == 0)
    }

    @Test func unknownBindingIsInvalidArgument() async throws {
        let source = FakeAttestationSource()
        let fixture = VerificationFixture(source: source)
        try await fixture.withGRPC { verify in
            let request = attestationRequest(binding: .UNRECOGNIZED(7))
            let error = await #expect(throws: RPCError.self) { _ = try await verify.getAttestation(request) }
            #expect(error?.code == .invalidArgument)
        }
        #expect(source.calls == 0)
    }

    @Test func concurrencyCapRefusesWithRetryHintAndRecovers() async throws {
        let source = GatedAttestationSource()
        let fixture = VerificationFixture(source: source, limits: AdmissionLimits(maxInFlight: 1, maxQueued: 0))
        try await fixture.withGRPC { verify in
            let nonce = randomNonce()
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The first call takes the only slot and stays in the TPM until the source opens.
                group.addTask {
                    let request = attestationRequest(nonce)
                    let response = try await verify.getAttestation(request)
                    _ = try source.inner.validator.validate(
                        document: Array(response.attestation),
                        nonce: nonce,
                        at: Date()
                    )
                }
                await source.waitUntilStarted(1)
                let second = attestationRequest()
                let error = await #expect(throws: RPCError.self) { _ = try await verify.getAttestation(second) }
                #expect(error?.code == .resourceExhausted)
                #expect(error?.message == "busy; retry later")
                let hint = try #require(error.flatMap(AdmissionGate.retryAfterMilliseconds(of:)))
                #expect((100...10_000).contains(hint))
                source.open()
                try await group.waitForAll()
            }
            // With the slot free again, a good call goes through.
            let third = attestationRequest()
            let response = try await verify.getAttestation(third)
            #expect(!response.attestation.isEmpty)
        }
    }

    @Test func sourceRateLimitRefusesWithRetryHint() async throws {
        let source = FakeAttestationSource()
        // Two calls, then one a second on a clock that stands still: the third call is over the rate.
        let fixture = VerificationFixture(source: source, ratePerSecond: 1, burst: 2)
        try await fixture.withGRPC { verify in
            for _ in 0..<2 {
                let request = attestationRequest()
                _ = try await verify.getAttestation(request)
            }
            let request = attestationRequest()
            let error = await #expect(throws: RPCError.self) { _ = try await verify.getAttestation(request) }
            #expect(error?.code == .resourceExhausted)
            // One token's time.
            #expect(error.flatMap(AdmissionGate.retryAfterMilliseconds(of:)) == 1000)
        }
        #expect(source.calls == 2)
        let exposition = String(decoding: fixture.metrics.exposition(), as: UTF8.self)
        #expect(
            sample(#"trustd_admission_rejections_total{service="verification",reason="source_rate"}"#, in: exposition)
                == 1
        )
    }

    @Test(arguments: [StatusCode.rateLimited, .busy])
    func keydBusyIsResourceExhausted(status: StatusCode) async throws {
        struct Refusing: AttestationSource {
            let status: StatusCode
            func attestation(
                nonce: [UInt8],
                binding: Verify_AttestationBinding
            ) async throws -> (document: [UInt8], bootPublicKey: [UInt8]) {
                throw KeydClientError.refused(status, request: .evidenceIssue)
            }
        }
        let fixture = VerificationFixture(source: Refusing(status: status))
        try await fixture.withGRPC { verify in
            let request = attestationRequest()
            let error = await #expect(throws: RPCError.self) { _ = try await verify.getAttestation(request) }
            #expect(error?.code == .resourceExhausted)
            #expect(error?.message == "busy; retry later")
            #expect(error.flatMap(AdmissionGate.retryAfterMilliseconds(of:)) == 1000)
        }
    }

    /// A source that fails with `error`.
    struct Broken: AttestationSource {
        let error: any Error
        func attestation(
            nonce: [UInt8],
            binding: Verify_AttestationBinding
        ) async throws -> (document: [UInt8], bootPublicKey: [UInt8]) {
            throw error
        }
    }

    @Test(arguments: [
        (POSIXError(.EIO) as any Error, "EIO"),
        (RPCError(code: .internalError, message: "stack trace at 0xdeadbeef"), "0xdeadbeef"),
        (KeydClientError.refused(.tpmFailure, request: .evidenceIssue), "tpmFailure"),
        (KeydClientError.unreachable(path: "/run/keyd/secret-path.sock", errno: ENOENT), "secret-path"),
    ])
    func sourceFailureIsSanitized(error: any Error, marker: String) async throws {
        let fixture = VerificationFixture(source: Broken(error: error))
        try await fixture.withGRPC { verify in
            let request = attestationRequest()
            let refusal = await #expect(throws: RPCError.self) { _ = try await verify.getAttestation(request) }
            #expect(refusal?.code == .unavailable)
            #expect(refusal?.message == "attestation unavailable")
            // Nothing of the internal error reaches the client, in the status or its metadata.
            let seen = refusal.map { "\($0) \($0.metadata)" } ?? ""
            #expect(!seen.contains(marker))
        }
    }
}
