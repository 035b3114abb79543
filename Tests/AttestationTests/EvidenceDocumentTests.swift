import Attestation
import Crypto
import Foundation
import Testing

/// Native and Constellation documents built around swtpm quotes.
@Suite(.needsSwtpm)
struct EvidenceDocumentTests {
    static let now = Date()

    static func native(
        _ quote: MadeQuote,
        userData: [UInt8] = SwtpmQuotes.userDataDigest,
        eventLog: [UInt8] = []
    ) -> [UInt8] {
        NativeTPMEvidenceDocument(
            akPublic: quote.akPublic,
            attest: quote.attest,
            signature: quote.signature,
            pcrs: quote.pcrs,
            userDataDigest: userData,
            eventLog: eventLog
        ).serialized()
    }

    static func policy(_ quote: MadeQuote) throws -> TPMQuotePolicy {
        TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [try quote.akDigest]))
    }

    @Test("a native document validates with its nonce and user data")
    func nativeValid() throws {
        let quote = try SwtpmQuotes.get().ecc
        let document = Self.native(quote)
        #expect(try NativeTPMEvidenceDocument(bytes: document).serialized() == document)
        let report = try TPMEvidenceValidator.validate(
            native: document,
            nonce: SwtpmQuotes.nonce,
            userDataDigest: SwtpmQuotes.userDataDigest,
            policy: try Self.policy(quote),
            at: Self.now
        )
        #expect(report.isValid, "\(report.failures)")
        #expect(report.result(of: "binding.user-data")?.outcome == .passed)
        #expect(report.result(of: "tpm.quote.qualifying-data")?.outcome == .passed)
    }

    /// (nonce, expected user data, document's user data, failing policies)
    static let bindingCases: [(String, [UInt8], [UInt8], [UInt8], [String])] = [
        (
            "wrong nonce", [UInt8](repeating: 0, count: 32), SwtpmQuotes.userDataDigest, SwtpmQuotes.userDataDigest,
            ["tpm.quote.qualifying-data"]
        ),
        (
            "other user data expected", SwtpmQuotes.nonce, [UInt8](repeating: 7, count: 32), SwtpmQuotes.userDataDigest,
            ["binding.user-data"]
        ),
        (
            "document claims other user data", SwtpmQuotes.nonce, [UInt8](repeating: 7, count: 32),
            [UInt8](repeating: 7, count: 32),
            ["tpm.quote.qualifying-data"]
        ),
    ]

    @Test("nonce and user data binding", arguments: bindingCases)
    func nativeBinding(name: String, nonce: [UInt8], expected: [UInt8], claimed: [UInt8], failing: [String]) throws {
        let quote = try SwtpmQuotes.get().ecc
        let report = try TPMEvidenceValidator.validate(
            native: Self.native(quote, userData: claimed),
            nonce: nonce,
            userDataDigest: expected,
            policy: try Self.policy(quote),
            at: Self.now
        )
        #expect(report.failures.map(\.policy) == failing, "\(name)")
    }

    @Test("a native document with a firmware event log that does not match the quote names the PCRs")
    func nativeEventLogMismatch() throws {
        let quote = try SwtpmQuotes.get().ecc
        let log = try TestVectors.bytes("tpm-eventlogs/crypto_agile_eventlog")
        var policy = try Self.policy(quote)
        let report = try TPMEvidenceValidator.validate(
            native: Self.native(quote, eventLog: log),
            nonce: SwtpmQuotes.nonce,
            userDataDigest: SwtpmQuotes.userDataDigest,
            policy: policy,
            at: Self.now
        )
        let failures = report.failures
        #expect(!failures.isEmpty && failures.allSatisfy { $0.policy == "tpm.event-log" })
        #expect(failures.first?.values.first == PolicyResult.Value(name: "pcr", value: "0"))
        policy.eventLogCheck = .warn
        let warned = try TPMEvidenceValidator.validate(
            native: Self.native(quote, eventLog: log),
            nonce: SwtpmQuotes.nonce,
            userDataDigest: SwtpmQuotes.userDataDigest,
            policy: policy,
            at: Self.now
        )
        #expect(warned.isValid)
        #expect(!warned.warnings.isEmpty)
    }

    @Test("every truncation of a native document is a typed error")
    func nativeTruncated() throws {
        let document = Self.native(try SwtpmQuotes.get().rsassa)
        for length in 0..<document.count {
            #expect(throws: AttestationError.self) { try NativeTPMEvidenceDocument(bytes: document.prefix(length)) }
        }
        #expect(
            (#expect(throws: AttestationError.self) { try NativeTPMEvidenceDocument(bytes: document + [0]) })?.code
                == .trailingBytes
        )
    }

    static func constellation(_ quote: MadeQuote) -> [UInt8] {
        ConstellationVTPMDocument(
            akPublic: quote.akPublic,
            quotes: [.init(quote: quote.attest, rawSignature: quote.signature, hash: 11, pcrs: quote.pcrs)],
            userData: SwtpmQuotes.userDataDigest
        ).jsonBytes()
    }

    @Test("a qemu-vtpm document validates only in the insecure mode, and says so")
    func constellationDocument() throws {
        let quote = try SwtpmQuotes.get().constellation
        let document = Self.constellation(quote)
        let strict = try TPMEvidenceValidator.validate(
            constellation: document,
            nonce: SwtpmQuotes.nonce,
            userData: SwtpmQuotes.userDataDigest,
            policy: TPMQuotePolicy(akTrust: AKTrust()),
            at: Self.now
        )
        #expect(strict.failures.map(\.policy) == ["tpm.ak.trust"])
        let insecure = try TPMEvidenceValidator.validate(
            constellation: document,
            nonce: SwtpmQuotes.nonce,
            userData: SwtpmQuotes.userDataDigest,
            policy: TPMQuotePolicy(akTrust: AKTrust(insecureTrustDocumentAK: true)),
            at: Self.now
        )
        #expect(insecure.isValid, "\(insecure.failures)")
        #expect(insecure.notes == [AKTrust.insecureNote])
        let stale = try TPMEvidenceValidator.validate(
            constellation: document,
            nonce: [UInt8](repeating: 1, count: 32),
            userData: SwtpmQuotes.userDataDigest,
            policy: TPMQuotePolicy(akTrust: AKTrust(insecureTrustDocumentAK: true)),
            at: Self.now
        )
        #expect(stale.failures.map(\.policy) == ["tpm.quote.qualifying-data"])
    }

    @Test("the Go encoding/json shape decodes")
    func constellationGoShape() throws {
        let quote = try SwtpmQuotes.get().constellation
        let pcrs = quote.pcrs.map { "\"\($0.key)\":\"\(Data($0.value).base64EncodedString())\"" }.joined(separator: ",")
        let json = """
            {"Attestation":{"ak_pub":"\(Data(quote.akPublic).base64EncodedString())","quotes":[{"quote":"\(Data(quote.attest).base64EncodedString())",\
            "raw_sig":"\(Data(quote.signature).base64EncodedString())","pcrs":{"hash":11,"pcrs":{\(pcrs)}}}],"event_log":"","TeeAttestation":null},\
            "InstanceInfo":null,"UserData":"\(Data(SwtpmQuotes.userDataDigest).base64EncodedString())"}
            """
        let report = try TPMEvidenceValidator.validate(
            constellation: Array(json.utf8),
            nonce: SwtpmQuotes.nonce,
            userData: SwtpmQuotes.userDataDigest,
            policy: TPMQuotePolicy(akTrust: AKTrust(insecureTrustDocumentAK: true)),
            at: Self.now
        )
        #expect(report.isValid, "\(report.failures)")
    }
}

/// Duplicate keys in a qemu-vtpm document: FoundationEssentials reads the first occurrence, Go's
/// encoding/json the last. Whichever is read must be the signed value for the document to pass, so a
/// duplicate cannot make a forged value count.
struct DuplicateJSONKeyTests {
    static let issuer = SoftwareTPMEvidenceIssuer(format: .constellation)
    static let nonce = [UInt8](repeating: 0x42, count: 32)
    static let userData = Array(SHA256.hash(data: Array("certificate key".utf8)))
    static let forged = Data([UInt8](repeating: 7, count: 32)).base64EncodedString()

    /// The issuer's document with `key`'s string value repeated: the genuine one first, or the forged one first.
    static func document(duplicating key: String, genuineFirst: Bool) throws -> [UInt8] {
        var text = String(decoding: try issuer.issue(userData: userData, nonce: nonce), as: UTF8.self)
        let start = try #require(text.range(of: "\"\(key)\":\"")).upperBound
        let end = try #require(text[start...].firstIndex(of: "\""))
        let genuine = String(text[start..<end])
        let pair = genuineFirst ? (genuine, forged) : (forged, genuine)
        text.replaceSubrange(start..<end, with: "\(pair.0)\",\"\(key)\":\"\(pair.1)")
        return Array(text.utf8)
    }

    static func validate(_ document: [UInt8]) throws -> AttestationReport {
        try TPMEvidenceValidator.validate(
            constellation: document,
            nonce: nonce,
            userData: userData,
            policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [issuer.akDigest])),
            at: Date()
        )
    }

    @Test(
        "a duplicated UserData or PCR value counts only when the occurrence read is the signed one",
        arguments: ["UserData", "4"]
    )
    func duplicates(key: String) throws {
        let genuineFirst = try Self.document(duplicating: key, genuineFirst: true)
        let report = try Self.validate(genuineFirst)
        #expect(report.isValid, "\(report.failures)")
        let parsed = try ConstellationVTPMDocument(json: genuineFirst)
        #expect(parsed.userData == Self.userData)
        #expect(parsed.quotes.first?.pcrs[4] == Self.issuer.pcrs[4])
        let forgedFirst = try Self.validate(try Self.document(duplicating: key, genuineFirst: false))
        #expect(!forgedFirst.isValid)
        #expect(!forgedFirst.failures.isEmpty)
    }
}
