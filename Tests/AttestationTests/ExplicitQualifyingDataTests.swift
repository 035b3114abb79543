import Attestation
import Crypto
import Foundation
import Testing

/// `TPMEvidenceValidator.validate(native:expectedQualifyingData:policy:at:)`: the native document against
/// qualifying data the caller computed (keyd's join binding), with a software AK on the allow-list.
struct ExplicitQualifyingDataTests {
    static let issuer = SoftwareTPMEvidenceIssuer(format: .native)
    static let policy = TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [issuer.akDigest]))
    static let joinBinding = Array(SHA256.hash(data: Array("asterism-join-v1 fields".utf8)))
    static let userDataDigest = [UInt8](repeating: 0x5A, count: 32)

    static func validate(_ document: [UInt8], expecting qualifying: [UInt8]) throws -> NativeEvidenceValidation {
        try TPMEvidenceValidator.validate(
            native: document,
            expectedQualifyingData: qualifying,
            policy: policy,
            at: Date()
        )
    }

    @Test func aQuoteOverTheExplicitBindingPasses() throws {
        let document = try Self.issuer.issueNative(
            qualifyingData: Self.joinBinding,
            userDataDigest: Self.userDataDigest
        )
        let validation = try Self.validate(document, expecting: Self.joinBinding)
        #expect(validation.report.isValid, "\(validation.report.failures)")
        #expect(validation.akDigest == Self.issuer.akDigest)
        #expect(validation.userDataDigest == Self.userDataDigest)
        #expect(validation.report.result(of: "tpm.quote.qualifying-data")?.outcome == .passed)
        // The user data field is not the binding here, and the report says it was not compared.
        #expect(validation.report.result(of: "binding.user-data")?.outcome == .notChecked)
    }

    @Test func aQuoteOverOtherQualifyingDataFails() throws {
        let document = try Self.issuer.issueNative(
            qualifyingData: Self.joinBinding,
            userDataDigest: Self.userDataDigest
        )
        var other = Self.joinBinding
        other[31] ^= 1
        let validation = try Self.validate(document, expecting: other)
        #expect(!validation.report.isValid)
        #expect(validation.report.failures.map(\.policy) == ["tpm.quote.qualifying-data"])
        #expect(validation.akDigest == Self.issuer.akDigest, "the AK digest is known even when the binding fails")
    }

    @Test func genericEvidenceSatisfiesOnlyItsOwnGenericBinding() throws {
        let nonce = [UInt8](repeating: 0x11, count: 32)
        let generic = try Self.issuer.issue(userData: Self.userDataDigest, nonce: nonce)
        // Evidence made for evidence.issue never carries a join binding computed over the same nonce.
        let refused = try Self.validate(generic, expecting: Self.joinBinding)
        #expect(refused.report.failures.map(\.policy) == ["tpm.quote.qualifying-data"])
        // The entry compares exactly: the generic binding itself, given explicitly, passes.
        let own = NativeTPMEvidenceDocument.qualifyingData(nonce: nonce, userDataDigest: Self.userDataDigest)
        #expect(try Self.validate(generic, expecting: own).report.isValid)
    }

    @Test func anUntrustedAKFailsAndStillReportsItsDigest() throws {
        let stranger = SoftwareTPMEvidenceIssuer(format: .native)
        let document = try stranger.issueNative(qualifyingData: Self.joinBinding, userDataDigest: Self.userDataDigest)
        let validation = try Self.validate(document, expecting: Self.joinBinding)
        #expect(validation.report.failures.map(\.policy) == ["tpm.ak.trust"])
        #expect(validation.akDigest == stranger.akDigest)
    }

    @Test func aDocumentThatDoesNotParseThrows() throws {
        let constellation = try SoftwareTPMEvidenceIssuer(format: .constellation).issue(
            userData: Self.userDataDigest,
            nonce: [UInt8](repeating: 0, count: 32)
        )
        #expect(throws: AttestationError.self) { try Self.validate(constellation, expecting: Self.joinBinding) }
        #expect(throws: AttestationError.self) { try Self.validate([], expecting: Self.joinBinding) }
    }
}
