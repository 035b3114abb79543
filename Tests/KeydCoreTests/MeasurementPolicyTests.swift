import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import KeydCore
import Testing
import X509

/// The measurement policy's JSON form, its limits, and the signed policy around it.
@Suite struct MeasurementPolicyTests {
    static let pcr4 = String(repeating: "ab", count: 32)
    static let pcr15 = String(repeating: "00", count: 32)
    static let akDigest = String(repeating: "11", count: 32)
    static let revokedAK = String(repeating: "22", count: 32)
    static let uuid = "0f0e0d0c-0b0a-4988-8776-655443322110"

    /// The example of the format's documentation, with a real CA certificate.
    static func example(caPEM: String) -> String {
        """
        {"version": 7,
         "measurements": {"4": {"expected": "\(pcr4)", "warnOnly": true}, "15": "\(pcr15)"},
         "akTrust": {"allowedDigests": ["\(akDigest)"], "caCertificatesPEM": [\(jsonString(caPEM))],
                     "insecureTrustAnyAK": false},
         "snpMinimumTCB": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
         "evidenceVariants": ["asterism-tpm", "qemu-vtpm"],
         "challengeLifetimeSeconds": 90,
         "revoked": {"diskUUIDs": ["\(uuid)"], "akDigests": ["\(revokedAK)"]}}
        """
    }

    /// `text` as a JSON string literal.
    static func jsonString(_ text: String) -> String {
        String(decoding: try! JSONEncoder().encode(text), as: UTF8.self)
    }

    static func caPEM() throws -> String {
        try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(P256.Signing.PrivateKey()), name: "AK CA")
            .serializeAsPEM().pemString
    }

    @Test func theDocumentedExampleParses() throws {
        let pem = try Self.caPEM()
        let json = Array(Self.example(caPEM: pem).utf8)
        let policy = try MeasurementPolicy(json: json)
        #expect(policy.version == 7)
        #expect(
            policy.measurements.entries[4] == Measurements.Expected(value: bytes(fromHex: Self.pcr4)!, warnOnly: true)
        )
        #expect(policy.measurements.entries[15] == Measurements.Expected(value: [UInt8](repeating: 0, count: 32)))
        #expect(policy.measurements.entries.count == 2)
        #expect(policy.allowedAKDigests == [bytes(fromHex: Self.akDigest)!])
        #expect(policy.akCACertificates == [try Certificate(pemEncoded: pem)])
        #expect(!policy.insecureTrustAnyAK)
        #expect(policy.snpMinimumTCB == .init(bootloader: 3, tee: 0, snp: 8, microcode: 115))
        #expect(policy.evidenceVariants == [.asterismTPM, .qemuVTPM])
        #expect(policy.challengeLifetimeSeconds == 90)
        #expect(policy.revokedDiskUUIDs == [try DiskUUID(validating: Self.uuid)])
        #expect(policy.revokedAKDigests == [bytes(fromHex: Self.revokedAK)!])
        #expect(policy.json == json)
        #expect(policy.digest == Array(SHA256.hash(data: json)))
    }

    @Test func theCanonicalFormReadsBackAsTheSamePolicy() throws {
        let policy = try MeasurementPolicy(json: Array(Self.example(caPEM: try Self.caPEM()).utf8))
        let canonical = try MeasurementPolicy(json: policy.canonicalJSON)
        #expect(canonical.canonicalJSON == policy.canonicalJSON)
        #expect(canonical.version == policy.version && canonical.measurements == policy.measurements)
        #expect(canonical.akCACertificates == policy.akCACertificates)
        #expect(canonical.revokedDiskUUIDs == policy.revokedDiskUUIDs)
        // A policy made in code carries its canonical JSON.
        let made = try MeasurementPolicy(
            version: 1,
            measurements: Measurements([4: .init(value: [UInt8](repeating: 1, count: 32))]),
            allowedAKDigests: [[UInt8](repeating: 2, count: 32)]
        )
        #expect(made.json == made.canonicalJSON)
        #expect(try MeasurementPolicy(json: made.json) == made)
        #expect(made.challengeLifetimeSeconds == 60 && made.evidenceVariants == [.asterismTPM])
    }

    @Test func optionalMembersTakeTheirDefaults() throws {
        let policy = try MeasurementPolicy(
            json: Array(#"{"version":1,"measurements":{},"akTrust":{},"evidenceVariants":["asterism-tpm"]}"#.utf8)
        )
        #expect(policy.challengeLifetimeSeconds == 60)
        #expect(policy.allowedAKDigests.isEmpty && policy.akCACertificates.isEmpty && !policy.insecureTrustAnyAK)
        #expect(policy.snpMinimumTCB == nil && policy.revokedDiskUUIDs.isEmpty && policy.revokedAKDigests.isEmpty)
    }

    @Test func theQuotePolicyCarriesTrustMeasurementsAndTheBinding() throws {
        let policy = try MeasurementPolicy(json: Array(Self.example(caPEM: try Self.caPEM()).utf8))
        let qualifying = [UInt8](repeating: 9, count: 32)
        let quote = policy.quotePolicy(expectedQualifyingData: qualifying)
        #expect(quote.expectedQualifyingData == qualifying)
        #expect(quote.akTrust.allowedKeyDigests == policy.allowedAKDigests)
        #expect(!quote.akTrust.insecureTrustDocumentAK && quote.akTrust.certifiedKeys.isEmpty)
        #expect(quote.measurements == policy.measurements)
        #expect(quote.eventLogCheck == .enforce && !quote.allowSHA1)
    }

    /// (a member replaced in a valid policy, what the error names)
    static let refusals: [(String, String)] = [
        (#""version":0"#, "version 0"),
        (#""version":-1"#, "JSON does not decode"),
        (#""version":"1""#, "wrong type at 'version'"),
        (#""measurements":{"24":"\#(pcr15)"}"#, "not a PCR index 0…23 at 'measurements.24'"),
        (#""measurements":{"04":"\#(pcr15)"}"#, "not a PCR index 0…23 at 'measurements.04'"),
        (#""measurements":{"4":"\#(pcr15)00"}"#, "not hex of exactly 32 bytes at 'measurements.4'"),
        (#""measurements":{"4":"zz\#(pcr15.dropFirst(2))"}"#, "not hex of exactly 32 bytes"),
        (#""measurements":{"4":{"expected":"\#(pcr15)","extra":1}}"#, "at 'measurements.4.extra'"),
        (#""measurements":{"4":{"warnOnly":true}}"#, "member 'expected' missing"),
        (#""akTrust":{"allowedDigests":["\#(akDigest)","\#(akDigest)"]}"#, "repeats an earlier entry"),
        (#""akTrust":{"allowedDigests":["1111"]}"#, "not hex of exactly 32 bytes at 'akTrust.allowedDigests.0'"),
        (#""akTrust":{"caCertificatesPEM":["nope"]}"#, "not a PEM certificate at 'akTrust.caCertificatesPEM.0'"),
        (#""akTrust":{"insecureTrustAnyAK":1}"#, "wrong type at 'akTrust.insecureTrustAnyAK'"),
        (#""akTrust":{"insecureTrustAnyAK":null}"#, "akTrust.insecureTrustAnyAK"),
        (
            #""akTrust":{"trustEveryone":true}"#,
            "unknown member (known: allowedDigests, caCertificatesPEM, insecureTrustAnyAK) at 'akTrust.trustEveryone'"
        ),
        (#""evidenceVariants":[]"#, "at least one variant"),
        (#""evidenceVariants":["asterism-tpm","asterism-tpm"]"#, "each once"),
        (#""evidenceVariants":["nitro"]"#, "'nitro' is not a known evidence variant"),
        (#""challengeLifetimeSeconds":0"#, "challengeLifetimeSeconds 0 is outside 1…3600"),
        (#""challengeLifetimeSeconds":3601"#, "challengeLifetimeSeconds 3601 is outside 1…3600"),
        (#""snpMinimumTCB":{"bootloader":256,"tee":0,"snp":0,"microcode":0}"#, "JSON does not decode"),
        (#""snpMinimumTCB":{"bootloader":1,"tee":0,"snp":0}"#, "member 'microcode' missing"),
        (#""revoked":{"diskUUIDs":["0F0E0D0C-0B0A-4988-8776-655443322110"]}"#, "not a lowercase 8-4-4-4-12 UUID"),
        (#""revoked":{"hosts":[]}"#, "unknown member (known: akDigests, diskUUIDs) at 'revoked.hosts'"),
        (#""comment":"hello""#, "unknown member (known: akTrust, challengeLifetimeSeconds, evidenceVariants, "),
    ]

    @Test(arguments: refusals)
    func strictRefusals(member: String, reason: String) {
        // The member goes first; a replaced member's original later in the object is a duplicate that
        // JSONDecoder ignores (it reads the first occurrence).
        let base = #""version":3,"measurements":{},"akTrust":{},"evidenceVariants":["asterism-tpm"]"#
        let json = Array("{\(member),\(base)}".utf8)
        let error = #expect(throws: CoreError.self) { try MeasurementPolicy(json: json) }
        #expect(error?.code == .invalidPolicy)
        #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
    }

    @Test func requiredMembersAndLimits() throws {
        for missing in ["version", "measurements", "akTrust", "evidenceVariants"] {
            var members = [
                #""version":1"#, #""measurements":{}"#, #""akTrust":{}"#, #""evidenceVariants":["asterism-tpm"]"#,
            ]
            members.removeAll { $0.hasPrefix("\"\(missing)\"") }
            let error = #expect(throws: CoreError.self) {
                try MeasurementPolicy(json: Array("{\(members.joined(separator: ","))}".utf8))
            }
            #expect(error?.message.contains("'\(missing)' missing") == true, "\(String(describing: error))")
        }
        let digests = (0...MeasurementPolicy.maximumAKDigests).map { "\"\(String(format: "%064x", $0))\"" }
        let tooMany =
            #"{"version":1,"measurements":{},"akTrust":{"allowedDigests":[\#(digests.joined(separator: ","))]},"evidenceVariants":["asterism-tpm"]}"#
        let error = #expect(throws: CoreError.self) { try MeasurementPolicy(json: Array(tooMany.utf8)) }
        #expect(error?.message.contains("akTrust.allowedDigests has 65 entries, exceeds limit 64") == true)
        let padded =
            Array(#"{"version":1,"measurements":{},"akTrust":{},"evidenceVariants":["asterism-tpm"]}"#.utf8)
            + [UInt8](repeating: 0x20, count: MeasurementPolicy.maximumLength)
        let large = #expect(throws: CoreError.self) { try MeasurementPolicy(json: padded) }
        #expect(large?.message.contains("exceeds limit \(MeasurementPolicy.maximumLength)") == true)
        #expect(throws: CoreError.self) { try MeasurementPolicy(json: Array("[]".utf8)) }
        #expect(throws: CoreError.self) { try MeasurementPolicy(json: Array("{} x".utf8)) }
    }
}

/// The signed policy: the operator's signature over the exact policy bytes, then the version order.
@Suite struct SignedPolicyTests {
    static func policyJSON(version: UInt64) -> [UInt8] {
        Array(#"{"version":\#(version),"measurements":{},"akTrust":{},"evidenceVariants":["asterism-tpm"]}"#.utf8)
    }

    static func signed(_ policy: [UInt8], by signer: OperatorKeyTests.Signer) -> SignedPolicy {
        SignedPolicy(policy: policy, signature: signer.sign(SignedPolicy.signedMessage(policy)))
    }

    @Test(arguments: OperatorKeyTests.signers)
    func aSignedPolicyRoundTripsAndVerifies(signer: OperatorKeyTests.Signer) throws {
        let policy = Self.policyJSON(version: 5)
        let signed = Self.signed(policy, by: signer)
        let decoded = try SignedPolicy(decoding: signed.encoded)
        #expect(decoded == signed)
        #expect(decoded.digest == Array(SHA256.hash(data: policy)))
        let verified = try decoded.verified(by: signer.key, above: nil)
        #expect(verified.version == 5 && verified.json == policy && verified.digest == decoded.digest)
        #expect(try decoded.verified(by: signer.key, above: 4).version == 5)
        #expect(SignedPolicy.signedMessage(policy) == Array("asterism-policy-v1\n".utf8) + policy)
    }

    @Test(arguments: OperatorKeyTests.signers)
    func refusalsNameTheirCheck(signer: OperatorKeyTests.Signer) throws {
        let policy = Self.policyJSON(version: 5)
        let signed = Self.signed(policy, by: signer)
        let stranger = OperatorKeyTests.Signer.ed25519()
        // Another key's signature, or the signed bytes changed (one space added): signature refused.
        let other = #expect(throws: CoreError.self) {
            try Self.signed(policy, by: stranger).verified(by: signer.key, above: nil)
        }
        #expect(other?.code == .policySignatureInvalid)
        let edited = SignedPolicy(policy: policy + [0x20], signature: signed.signature)
        #expect(throws: CoreError.self) { try edited.verified(by: signer.key, above: nil) }
        // Signed without the label: refused.
        let unlabeled = SignedPolicy(policy: policy, signature: signer.sign(policy))
        let label = #expect(throws: CoreError.self) { try unlabeled.verified(by: signer.key, above: nil) }
        #expect(label?.code == .policySignatureInvalid)
        // Not above the current version.
        for current: UInt64 in [5, 6, UInt64.max] {
            let old = #expect(throws: CoreError.self) { try signed.verified(by: signer.key, above: current) }
            #expect(old?.code == .policyVersionNotNewer)
            #expect(old?.message.contains("version 5 is not above the current version \(current)") == true)
        }
        // Signed but not a policy.
        let garbage = Self.signed(Array(#"{"version":5}"#.utf8), by: signer)
        let invalid = #expect(throws: CoreError.self) { try garbage.verified(by: signer.key, above: nil) }
        #expect(invalid?.code == .invalidPolicy)
    }

    /// (wire text, what the error names)
    static let malformed: [(String, String)] = [
        (#"{"policy":"e30=","signature":"AA==","extra":""}"#, "unknown member (known: policy, signature) at 'extra'"),
        (#"{"policy":"e30="}"#, "member 'signature' missing"),
        (#"{"policy":"e30","signature":"AA=="}"#, "not canonical standard base64 at 'policy'"),
        (#"{"policy":"e31=","signature":"AA=="}"#, "not canonical standard base64 at 'policy'"),
        (#"{"policy":"e30=","signature":"A A="}"#, "not canonical standard base64 at 'signature'"),
        (
            #"{"policy":"e30=","signature":"\#(String(repeating: "A", count: 176))"}"#,
            "signature of 132 bytes exceeds limit 128"
        ),
        (#"{"policy":1,"signature":"AA=="}"#, "wrong type at 'policy'"),
        ("[]", "wrong type"),
        ("", "not valid JSON"),
    ]

    @Test(arguments: malformed)
    func strictDecoding(text: String, reason: String) {
        let error = #expect(throws: CoreError.self) { try SignedPolicy(decoding: Array(text.utf8)) }
        #expect(error?.code == .invalidSignedPolicy)
        #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
    }

    @Test func sizeLimits() throws {
        let large =
            Array(#"{"policy":""#.utf8) + [UInt8](repeating: 0x41, count: SignedPolicy.maximumLength)
            + Array(#""}"#.utf8)
        let error = #expect(throws: CoreError.self) { try SignedPolicy(decoding: large) }
        #expect(error?.message.contains("exceeds limit \(SignedPolicy.maximumLength)") == true)
        // A policy at its limit with the longest signature fits the signed policy's limit.
        let largest = SignedPolicy(
            policy: [UInt8](repeating: 0x20, count: MeasurementPolicy.maximumLength),
            signature: [UInt8](repeating: 1, count: SignedPolicy.maximumSignatureLength)
        )
        #expect(largest.encoded.count <= SignedPolicy.maximumLength)
        #expect(try SignedPolicy(decoding: largest.encoded) == largest)
        let policy = [UInt8](repeating: 0x20, count: MeasurementPolicy.maximumLength + 1)
        let oversized = SignedPolicy(policy: policy, signature: [1]).encoded
        #expect(oversized.count <= SignedPolicy.maximumLength)
        let refused = #expect(throws: CoreError.self) { try SignedPolicy(decoding: oversized) }
        #expect(refused?.message.contains("policy of \(policy.count) bytes exceeds limit") == true)
    }
}
