import Attestation
import Crypto
import Foundation
import Testing

/// The fast path of native documents (prepared AKs, flat PCR values, one results array) against the
/// general one, on swtpm quotes.
@Suite(.needsSwtpm)
struct PreparedAKTests {
    static let now = Date()

    static func native(_ quote: MadeQuote, pcrs: [Int: [UInt8]]? = nil) -> [UInt8] {
        NativeTPMEvidenceDocument(
            akPublic: quote.akPublic,
            attest: quote.attest,
            signature: quote.signature,
            pcrs: pcrs ?? quote.pcrs,
            userDataDigest: SwtpmQuotes.userDataDigest
        ).serialized()
    }

    static func validate(_ document: [UInt8], _ trust: AKTrust) throws -> AttestationReport {
        try TPMEvidenceValidator.validate(
            native: document,
            nonce: SwtpmQuotes.nonce,
            userDataDigest: SwtpmQuotes.userDataDigest,
            policy: TPMQuotePolicy(akTrust: trust),
            at: now
        )
    }

    @Test(
        "a prepared AK gives the very report its digest on the allow-list gives",
        arguments: TPMQuoteTests.Kind.allCases
    )
    func preparedEqualsDigest(kind: TPMQuoteTests.Kind) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        let prepared = try PreparedAK(bytes: quote.akPublic)
        #expect(prepared.keyDigest == (try quote.akDigest))
        let byKey = try Self.validate(Self.native(quote), AKTrust(allowedKeys: [prepared]))
        let byDigest = try Self.validate(Self.native(quote), AKTrust(allowedKeyDigests: [try quote.akDigest]))
        #expect(byKey.isValid, "\(byKey.failures)")
        #expect(byKey == byDigest)
        #expect(byKey.results.map(\.values) == byDigest.results.map(\.values))
        // The quote evidence path (no document) agrees as well.
        let direct = TPMQuoteValidator.validate(
            try quote.evidence,
            policy: TPMQuotePolicy(
                akTrust: AKTrust(allowedKeys: [prepared]),
                expectedQualifyingData: quote.qualifyingData
            ),
            context: ValidationContext(time: Self.now)
        )
        #expect(direct.results == Array(byKey.results.dropFirst()))
    }

    @Test("a prepared key of another AK trusts nothing, and a tampered quote still fails with a prepared AK")
    func preparedGrantsNothingElse() throws {
        let quotes = try SwtpmQuotes.get()
        let other = try PreparedAK(bytes: quotes.ecc384.akPublic)
        let report = try Self.validate(Self.native(quotes.ecc), AKTrust(allowedKeys: [other]))
        #expect(report.failures.map(\.policy) == ["tpm.ak.trust"])
        #expect(report.result(of: "tpm.quote.signature")?.outcome == .passed)

        var attest = quotes.ecc.attest
        attest[attest.count - 1] ^= 1  // last byte of the PCR digest: signature and digest both break
        let tampered = NativeTPMEvidenceDocument(
            akPublic: quotes.ecc.akPublic,
            attest: attest,
            signature: quotes.ecc.signature,
            pcrs: quotes.ecc.pcrs,
            userDataDigest: SwtpmQuotes.userDataDigest
        ).serialized()
        let refused = try Self.validate(tampered, AKTrust(allowedKeys: [try PreparedAK(bytes: quotes.ecc.akPublic)]))
        #expect(refused.failures.map(\.policy) == ["tpm.quote.signature", "tpm.quote.pcr-digest"])
    }

    @Test(
        "flat PCR values: a changed, missing or extra value fails the PCR digest like the dictionary path",
        arguments: [
            "changed", "missing", "extra",
        ]
    )
    func flatPCRs(change: String) throws {
        let quote = try SwtpmQuotes.get().rsapss  // PCRs 0, 4, 7, 8, 9, 15
        var pcrs = quote.pcrs
        switch change {
        case "changed": pcrs[7]![0] ^= 1
        case "missing": pcrs[4] = nil
        default: pcrs[5] = [UInt8](repeating: 0, count: 32)
        }
        let prepared = try PreparedAK(bytes: quote.akPublic)
        let report = try Self.validate(Self.native(quote, pcrs: pcrs), AKTrust(allowedKeys: [prepared]))
        #expect(report.failures.map(\.policy) == ["tpm.quote.pcr-digest"])
        let evidence = TPMQuoteEvidence(
            akPublic: try TPMTPublic(bytes: quote.akPublic),
            attest: try TPMSAttest(bytes: quote.attest),
            signature: try TPMTSignature(bytes: quote.signature),
            pcrValues: [.sha256: pcrs]
        )
        let general = TPMQuoteValidator.validate(
            evidence,
            policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeys: [prepared])),
            context: ValidationContext(time: Self.now)
        )
        #expect(report.result(of: "tpm.quote.pcr-digest") == general.result(of: "tpm.quote.pcr-digest"))
    }

    @Test("the native document reads back the PCR values it was made of")
    func nativeRoundTrip() throws {
        let quote = try SwtpmQuotes.get().rsapss
        let document = try NativeTPMEvidenceDocument(bytes: Self.native(quote))
        #expect(document.pcrs == quote.pcrs)
        #expect(try document.quoteEvidence().pcrValues == [.sha256: quote.pcrs])
    }
}
