import Attestation
import Crypto
import Foundation
import Testing

/// Quotes made by swtpm at test time, validated, then tampered with.
@Suite(.needsSwtpm)
struct TPMQuoteTests {
    enum Kind: String, CaseIterable, Sendable {
        case ecc, ecc384, rsassa, rsapss

        func quote(_ all: SwtpmQuotes) -> MadeQuote {
            switch self {
            case .ecc: all.ecc
            case .ecc384: all.ecc384
            case .rsassa: all.rsassa
            case .rsapss: all.rsapss
            }
        }
    }

    static let now = Date()

    func policy(for quote: MadeQuote, qualifying: [UInt8]? = nil) throws -> TPMQuotePolicy {
        TPMQuotePolicy(
            akTrust: AKTrust(allowedKeyDigests: [try quote.akDigest]),
            expectedQualifyingData: qualifying ?? quote.qualifyingData
        )
    }

    @Test("a fresh quote from an allow-listed AK validates", arguments: Kind.allCases)
    func validQuote(kind: Kind) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        let report = TPMQuoteValidator.validate(
            try quote.evidence,
            policy: try policy(for: quote),
            context: .init(time: Self.now)
        )
        #expect(report.isValid, "\(report.failures)")
        for name in [
            "tpm.quote.header", "tpm.ak.attributes", "tpm.ak.trust", "tpm.quote.signature",
            "tpm.quote.qualifying-data", "tpm.quote.pcr-bank", "tpm.quote.pcr-digest",
        ] {
            #expect(report.result(of: name)?.outcome == .passed, "\(name)")
        }
        #expect(report.notes.isEmpty)
    }

    @Test("parsed structures carry what tpm2-tools was asked for", arguments: Kind.allCases)
    func parsedFields(kind: Kind) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        let evidence = try quote.evidence
        #expect(evidence.attest.magic == TPMSAttest.generatedMagic)
        #expect(evidence.attest.extraData == quote.qualifyingData)
        #expect(evidence.attest.pcrSelection.map(\.hash) == [.sha256])
        #expect(evidence.attest.pcrSelection[0].indices == quote.pcrs.keys.sorted())
        // qualifiedSigner is the AK's qualified name (under the EK), not its name: same algorithm, other digest.
        #expect(evidence.attest.qualifiedSigner.prefix(2) == evidence.akPublic.name?.prefix(2))
        switch (kind, evidence.akPublic.key, evidence.signature) {
        case (.ecc, .ecc(.nistP256, _, _), .ecdsa(.sha256, _, _)),
            (.ecc384, .ecc(.nistP384, _, _), .ecdsa(.sha384, _, _)),
            (.rsassa, .rsa(_, 65537), .rsassa(.sha256, _)), (.rsapss, .rsa(_, 65537), .rsapss(.sha256, _)):
            break
        default:
            Issue.record("unexpected key/signature \(evidence.akPublic.key) \(evidence.signature.scheme)")
        }
    }

    /// Byte positions inside TPMS_ATTEST: magic, type, signer name, extraData, clock, firmware, digest.
    static let tamperOffsets = [0, 5, 8, 40, 80, -1]

    @Test("any changed byte of the signed quote fails the signature", arguments: Kind.allCases, tamperOffsets)
    func tamperedQuote(kind: Kind, offset: Int) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        var attest = quote.attest
        let position = offset < 0 ? attest.count + offset : min(offset, attest.count - 1)
        attest[position] ^= 0x01
        // A changed type or size no longer parses: refused too.
        guard let parsed = try? TPMSAttest(bytes: attest) else { return }
        let evidence = TPMQuoteEvidence(
            akPublic: try TPMTPublic(bytes: quote.akPublic),
            attest: parsed,
            signature: try TPMTSignature(bytes: quote.signature),
            pcrValues: [.sha256: quote.pcrs]
        )
        let report = TPMQuoteValidator.validate(
            evidence,
            policy: try policy(for: quote),
            context: .init(time: Self.now)
        )
        #expect(!report.isValid)
        #expect(report.result(of: "tpm.quote.signature")?.outcome == .failed)
    }

    @Test("a wrong nonce fails the qualifying-data policy and names both values", arguments: Kind.allCases)
    func wrongNonce(kind: Kind) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        let other = NativeTPMEvidenceDocument.qualifyingData(
            nonce: [UInt8](repeating: 0x5A, count: 32),
            userDataDigest: SwtpmQuotes.userDataDigest
        )
        let report = TPMQuoteValidator.validate(
            try quote.evidence,
            policy: try policy(for: quote, qualifying: other),
            context: .init(time: Self.now)
        )
        let result = try #require(report.result(of: "tpm.quote.qualifying-data"))
        #expect(result.outcome == .failed)
        #expect(result.values.contains(PolicyResult.Value(name: "expected", value: hex(other))))
        #expect(result.values.contains(PolicyResult.Value(name: "actual", value: hex(quote.qualifyingData))))
        #expect(report.failures.count == 1)
    }

    @Test("without a nonce the report says freshness was not checked")
    func noNonce() throws {
        let quote = try SwtpmQuotes.get().ecc
        var policy = try policy(for: quote)
        policy.expectedQualifyingData = nil
        let report = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.now))
        #expect(report.isValid)
        #expect(report.result(of: "tpm.quote.qualifying-data")?.outcome == .notChecked)
    }

    @Test("an AK that is not trusted fails; the insecure mode passes and says so", arguments: Kind.allCases)
    func untrustedAK(kind: Kind) throws {
        let all = try SwtpmQuotes.get()
        let quote = kind.quote(all)
        let otherKey = kind == .ecc ? all.rsassa : all.ecc
        var policy = TPMQuotePolicy(
            akTrust: AKTrust(allowedKeyDigests: [try otherKey.akDigest]),
            expectedQualifyingData: quote.qualifyingData
        )
        let refused = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.now))
        #expect(refused.failures.map(\.policy) == ["tpm.ak.trust"])
        #expect(refused.result(of: "tpm.ak.trust")?.values.first?.value == hex(try quote.akDigest))

        policy.akTrust = AKTrust(insecureTrustDocumentAK: true)
        let insecure = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.now))
        #expect(insecure.isValid)
        #expect(insecure.notes == [AKTrust.insecureNote])
        #expect(
            insecure.result(of: "tpm.ak.trust")?.values.contains(
                PolicyResult.Value(name: "mode", value: "insecureTrustDocumentAK")
            ) == true
        )
    }

    @Test("a signature by another AK fails even when that AK is trusted")
    func signatureFromAnotherKey() throws {
        let all = try SwtpmQuotes.get()
        let evidence = TPMQuoteEvidence(
            akPublic: try TPMTPublic(bytes: all.rsassa.akPublic),
            attest: try TPMSAttest(bytes: all.ecc.attest),
            signature: try TPMTSignature(bytes: all.ecc.signature),
            pcrValues: [.sha256: all.ecc.pcrs]
        )
        let report = TPMQuoteValidator.validate(
            evidence,
            policy: try policy(for: all.rsassa, qualifying: all.ecc.qualifyingData),
            context: .init(time: Self.now)
        )
        #expect(report.failures.map(\.policy) == ["tpm.quote.signature"])
    }

    @Test("a changed, missing or extra PCR value fails the PCR digest", arguments: ["changed", "missing", "extra"])
    func tamperedPCRs(change: String) throws {
        let quote = try SwtpmQuotes.get().rsapss
        var pcrs = quote.pcrs
        switch change {
        case "changed": pcrs[7]![0] ^= 0xFF
        case "missing": pcrs[8] = nil
        default: pcrs[1] = [UInt8](repeating: 0, count: 32)
        }
        let evidence = TPMQuoteEvidence(
            akPublic: try TPMTPublic(bytes: quote.akPublic),
            attest: try TPMSAttest(bytes: quote.attest),
            signature: try TPMTSignature(bytes: quote.signature),
            pcrValues: [.sha256: pcrs]
        )
        let report = TPMQuoteValidator.validate(
            evidence,
            policy: try policy(for: quote),
            context: .init(time: Self.now)
        )
        #expect(report.failures.map(\.policy) == ["tpm.quote.pcr-digest"])
    }

    @Test("the SHA-1 bank is refused unless the policy allows it")
    func sha1Bank() throws {
        let quote = try SwtpmQuotes.get().sha1Bank
        var policy = try policy(for: quote)
        let refused = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.now))
        #expect(refused.failures.map(\.policy) == ["tpm.quote.pcr-bank"])
        policy.allowSHA1 = true
        let allowed = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.now))
        #expect(allowed.isValid, "\(allowed.failures)")
    }

    @Test("measurements compare with the quoted values")
    func measurements() throws {
        let quote = try SwtpmQuotes.get().ecc
        var policy = try policy(for: quote)
        policy.measurements = Measurements([
            4: .init(value: quote.pcrs[4]!), 15: .init(value: [UInt8](repeating: 0, count: 32)),
            9: .init(value: [UInt8](repeating: 1, count: 32), warnOnly: true),
        ])
        let report = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.now))
        #expect(report.isValid)
        #expect(report.warnings.map(\.policy) == ["measurements.pcr[9]"])
        policy.measurements = Measurements([4: .init(value: [UInt8](repeating: 1, count: 32))])
        let refused = TPMQuoteValidator.validate(try quote.evidence, policy: policy, context: .init(time: Self.now))
        #expect(refused.failures.map(\.policy) == ["measurements.pcr[4]"])
    }

    @Test("every prefix of each structure is refused with a typed error, never a crash", arguments: Kind.allCases)
    func truncatedStructures(kind: Kind) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        for length in 0..<quote.attest.count {
            #expect(throws: AttestationError.self) { try TPMSAttest(bytes: quote.attest.prefix(length)) }
        }
        for length in 0..<quote.akPublic.count {
            #expect(throws: AttestationError.self) { try TPMTPublic(bytes: quote.akPublic.prefix(length)) }
        }
        for length in 0..<quote.signature.count {
            #expect(throws: AttestationError.self) { try TPMTSignature(bytes: quote.signature.prefix(length)) }
        }
        let errors = [
            #expect(throws: AttestationError.self) { try TPMSAttest(bytes: quote.attest + [0]) },
            #expect(throws: AttestationError.self) { try TPMTPublic(bytes: quote.akPublic + [0]) },
            #expect(throws: AttestationError.self) { try TPMTSignature(bytes: quote.signature + [0]) },
        ]
        #expect(errors.map { $0?.code } == [.trailingBytes, .trailingBytes, .trailingBytes])
    }

    @Test("TPM2B_PUBLIC and TPMT_PUBLIC encodings give the same key", arguments: Kind.allCases)
    func sizedPublic(kind: Kind) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        let sized = [UInt8(quote.akPublic.count >> 8), UInt8(quote.akPublic.count & 0xFF)] + quote.akPublic
        #expect(try TPMTPublic(bytes: sized, sized: true) == TPMTPublic(bytes: quote.akPublic))
        #expect(try TPMTPublic(anyEncoding: sized) == TPMTPublic(anyEncoding: quote.akPublic))
    }
}
