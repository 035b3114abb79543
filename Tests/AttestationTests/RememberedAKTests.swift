import Foundation
import Testing

@testable import Attestation

/// AKs allow-listed by digest are kept prepared once a quote of theirs verified, and only then.
@Suite(.needsSwtpm)
struct RememberedAKTests {
    static func validate(_ document: [UInt8], _ trust: AKTrust) throws -> AttestationReport {
        try TPMEvidenceValidator.validate(
            native: document,
            nonce: SwtpmQuotes.nonce,
            userDataDigest: SwtpmQuotes.userDataDigest,
            policy: TPMQuotePolicy(akTrust: trust),
            at: PreparedAKTests.now
        )
    }

    @Test(
        "a verified quote of an allow-listed digest leaves its AK prepared; the next report is the same",
        arguments: TPMQuoteTests.Kind.allCases
    )
    func remembersAfterVerifiedQuote(kind: TPMQuoteTests.Kind) throws {
        let quote = kind.quote(try SwtpmQuotes.get())
        let trust = AKTrust(allowedKeyDigests: [try quote.akDigest])
        #expect(trust.preparedKey(marshaled: quote.akPublic[...]) == nil)
        let first = try Self.validate(PreparedAKTests.native(quote), trust)
        #expect(first.isValid, "\(first.failures)")
        let remembered = try #require(trust.preparedKey(marshaled: quote.akPublic[...]))
        #expect(remembered.keyDigest == (try quote.akDigest))
        let second = try Self.validate(PreparedAKTests.native(quote), trust)
        #expect(second == first)
        #expect(second.results.map(\.values) == first.results.map(\.values))
        // A copy shares what was remembered and is still equal to a trust that remembered nothing.
        let copy = trust
        #expect(copy.preparedKey(marshaled: quote.akPublic[...]) != nil)
        #expect(copy == AKTrust(allowedKeyDigests: [try quote.akDigest]))
    }

    @Test("a quote whose signature fails, or an AK trusted another way, leaves nothing prepared")
    func remembersOnlyVerifiedAllowListedKeys() throws {
        let quote = try SwtpmQuotes.get().ecc
        var attest = quote.attest
        attest[attest.count - 1] ^= 1
        let tampered = NativeTPMEvidenceDocument(
            akPublic: quote.akPublic,
            attest: attest,
            signature: quote.signature,
            pcrs: quote.pcrs,
            userDataDigest: SwtpmQuotes.userDataDigest
        ).serialized()
        let trust = AKTrust(allowedKeyDigests: [try quote.akDigest])
        let refused = try Self.validate(tampered, trust)
        #expect(refused.failures.map(\.policy).contains("tpm.quote.signature"))
        #expect(trust.preparedKey(marshaled: quote.akPublic[...]) == nil)

        // Trusted only through the insecure mode: the quote verifies, but the digest is not on the allow-list.
        let insecure = AKTrust(insecureTrustDocumentAK: true)
        #expect(try Self.validate(PreparedAKTests.native(quote), insecure).isValid)
        #expect(insecure.preparedKey(marshaled: quote.akPublic[...]) == nil)

        // Allow-listed, but another AK's quote: its key is not prepared either.
        let other = try SwtpmQuotes.get().ecc384
        let narrow = AKTrust(allowedKeyDigests: [try quote.akDigest])
        #expect(try Self.validate(PreparedAKTests.native(other), narrow).failures.map(\.policy) == ["tpm.ak.trust"])
        #expect(narrow.preparedKey(marshaled: other.akPublic[...]) == nil)
    }

    @Test("at most one key per allow-listed digest is kept")
    func boundedByAllowList() throws {
        let quotes = try SwtpmQuotes.get()
        let keys = RememberedAKs()
        keys.insert(try PreparedAK(bytes: quotes.ecc.akPublic), limit: 1)
        keys.insert(try PreparedAK(bytes: quotes.ecc384.akPublic), limit: 1)
        #expect(keys.key(marshaled: quotes.ecc.akPublic[...]) == nil)
        #expect(keys.key(marshaled: quotes.ecc384.akPublic[...]) != nil)
    }
}
