import Crypto
import FoundationEssentials
import Synchronization

/// One TPM quote with what the attester reported beside it.
public struct TPMQuoteEvidence: Sendable {
    /// The attestation key's public area.
    public let akPublic: TPMTPublic
    /// The signed quote.
    public let attest: TPMSAttest
    /// The AK's signature over `attest.bytes`.
    public let signature: TPMTSignature
    /// The reported PCR values, by bank and index; only quoted values are trusted.
    public var pcrValues: [TPMAlgorithm: [Int: [UInt8]]] { reportedPCRs.banks }
    /// The raw TCG event log, nil or empty when the attester sent none.
    public let eventLog: [UInt8]?
    /// The reported PCR values as they were given.
    let reportedPCRs: ReportedPCRs
    /// The AK made usable once for every policy that needs it.
    let verificationKey: Result<TPMVerificationKey, AttestationError>

    public init(
        akPublic: TPMTPublic,
        attest: TPMSAttest,
        signature: TPMTSignature,
        pcrValues: [TPMAlgorithm: [Int: [UInt8]]],
        eventLog: [UInt8]? = nil
    ) {
        self.init(
            akPublic: akPublic,
            attest: attest,
            signature: signature,
            reportedPCRs: .banks(pcrValues),
            eventLog: eventLog,
            verificationKey: Result { () throws(AttestationError) in try TPMVerificationKey(akPublic.key) }
        )
    }

    /// Evidence whose AK was already made usable (a ``PreparedAK``) and whose PCR values may be flat.
    init(
        akPublic: TPMTPublic,
        attest: TPMSAttest,
        signature: TPMTSignature,
        reportedPCRs: ReportedPCRs,
        eventLog: [UInt8]?,
        verificationKey: Result<TPMVerificationKey, AttestationError>
    ) {
        self.akPublic = akPublic
        self.attest = attest
        self.signature = signature
        self.reportedPCRs = reportedPCRs
        self.eventLog = eventLog
        self.verificationKey = verificationKey
    }
}

/// Reported PCR values: banks of index → value as a caller gave them, or one bank read flat from a
/// native document (no dictionary and no array per value on the validation path).
enum ReportedPCRs: Sendable {
    case banks([TPMAlgorithm: [Int: [UInt8]]])
    /// The values of the indices set in `mask`, ascending, `size` bytes each, concatenated.
    case flat(bank: TPMAlgorithm, mask: UInt32, size: Int, values: [UInt8])

    /// The values by bank and index.
    var banks: [TPMAlgorithm: [Int: [UInt8]]] {
        switch self {
        case .banks(let banks):
            return banks
        case .flat(let bank, let mask, let size, let values):
            var byIndex: [Int: [UInt8]] = [:]
            var offset = values.startIndex
            for index in 0..<32 where mask & (1 << index) != 0 {
                byIndex[index] = Array(values[offset..<offset + size])
                offset += size
            }
            return [bank: byIndex]
        }
    }
}

/// An AK whose certificate chain verified against configured roots (made by ``AKCertificateVerifier``).
public struct CertifiedAK: Hashable, Sendable {
    /// SHA-256 of the AK's DER SubjectPublicKeyInfo.
    public let keyDigest: [UInt8]
    /// The AK certificate's subject, for reports.
    public let subject: String
    /// The AK made usable, reused by every quote it signs.
    let key: PreparedAK?

    init(keyDigest: [UInt8], subject: String, key: PreparedAK? = nil) {
        self.keyDigest = keyDigest
        self.subject = subject
        self.key = key
    }
}

/// How the AK of a quote is trusted. At least one of the three must accept the AK. Equal when the
/// trusted keys and the mode are equal (the remembered keys are a cache, not part of the value).
public struct AKTrust: Hashable, Sendable {
    /// SHA-256 digests of DER SubjectPublicKeyInfo of AKs known to belong to trusted TPMs.
    public var allowedKeyDigests: Set<[UInt8]>
    /// AKs known to belong to trusted TPMs, prepared once: allow-listed like ``allowedKeyDigests``, and a
    /// quote carrying one of them exactly reuses its parsed and usable form instead of building its own.
    public var allowedKeys: [PreparedAK]
    /// AKs whose certificate chain verified (see ``AKCertificateVerifier``).
    public var certifiedKeys: [CertifiedAK]
    /// Trusts whatever AK the evidence carries, as Constellation's qemu-vtpm validator does.
    /// - Important: Development only; anyone can make such evidence. Every report it produced says so.
    public var insecureTrustDocumentAK: Bool

    /// AKs allow-listed by digest whose quotes verified, kept prepared; shared by copies of this value.
    private let remembered = RememberedAKs()

    public init(
        allowedKeyDigests: Set<[UInt8]> = [],
        allowedKeys: [PreparedAK] = [],
        certifiedKeys: [CertifiedAK] = [],
        insecureTrustDocumentAK: Bool = false
    ) {
        self.allowedKeyDigests = allowedKeyDigests
        self.allowedKeys = allowedKeys
        self.certifiedKeys = certifiedKeys
        self.insecureTrustDocumentAK = insecureTrustDocumentAK
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.allowedKeyDigests == rhs.allowedKeyDigests && lhs.allowedKeys == rhs.allowedKeys
            && lhs.certifiedKeys == rhs.certifiedKeys
            && lhs.insecureTrustDocumentAK == rhs.insecureTrustDocumentAK
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(allowedKeyDigests)
        hasher.combine(allowedKeys)
        hasher.combine(certifiedKeys)
        hasher.combine(insecureTrustDocumentAK)
    }

    /// The prepared key whose marshaled TPMT_PUBLIC is exactly `bytes`, if any (allow-listed, certified,
    /// or remembered). Finding one grants nothing by itself: ``AKTrustPolicy`` still decides on the key's digest.
    func preparedKey(marshaled bytes: ArraySlice<UInt8>) -> PreparedAK? {
        if let key = allowedKeys.first(where: { $0.isMarshaled(as: bytes) }) { return key }
        if let key = certifiedKeys.lazy.compactMap(\.key).first(where: { $0.isMarshaled(as: bytes) }) { return key }
        return remembered.key(marshaled: bytes)
    }

    /// Keeps `akPublic` with its parsed `key` for the next quotes it signs, when its digest is allow-listed
    /// and a quote it signed just verified (so nobody without the TPM can make this server keep keys).
    func remember(_ akPublic: TPMTPublic, key: TPMVerificationKey) {
        guard allowedKeyDigests.contains(key.digest), remembered.key(marshaled: akPublic.bytes[...]) == nil else {
            return
        }
        remembered.insert(PreparedAK(akPublic, key: key), limit: allowedKeyDigests.count)
    }

    /// The note every report carries when the insecure mode accepted the AK.
    public static let insecureNote =
        "insecureTrustDocumentAK: the attestation key was taken from the evidence itself and is not authenticated; development only"
}

/// AKs allow-listed by digest, prepared after a quote of theirs verified: at most one per allow-listed
/// digest (a key marshaled another way replaces it), so the set stays as small as the allow-list.
final class RememberedAKs: Sendable {
    private let keys = Mutex<[PreparedAK]>([])

    /// The remembered key whose marshaled TPMT_PUBLIC is exactly `bytes`.
    func key(marshaled bytes: ArraySlice<UInt8>) -> PreparedAK? {
        keys.withLock { $0.first { $0.isMarshaled(as: bytes) } }
    }

    /// Remembers `key` in place of any with its digest, dropping the oldest beyond `limit`.
    func insert(_ key: PreparedAK, limit: Int) {
        keys.withLock { keys in
            keys.removeAll { $0.keyDigest == key.keyDigest }
            keys.append(key)
            if keys.count > limit { keys.removeFirst(keys.count - limit) }
        }
    }
}

/// What to do with the event log when one is present.
public enum EventLogCheck: String, Hashable, Sendable {
    /// A log that does not replay to the quoted PCRs fails validation.
    case enforce
    /// A mismatch is a warning.
    case warn
    /// The log is not read.
    case skip
}

/// What a quote must satisfy.
public struct TPMQuotePolicy: Sendable {
    /// Trust in the attestation key.
    public var akTrust: AKTrust
    /// The qualifying data the quote must carry; nil means freshness is not checked (reported as such).
    public var expectedQualifyingData: [UInt8]?
    /// Accept quotes over the SHA-1 bank.
    public var allowSHA1: Bool
    /// Expected PCR values; nil checks none.
    public var measurements: Measurements?
    /// Replay of the event log against the quoted PCRs.
    public var eventLogCheck: EventLogCheck

    public init(
        akTrust: AKTrust,
        expectedQualifyingData: [UInt8]? = nil,
        allowSHA1: Bool = false,
        measurements: Measurements? = nil,
        eventLogCheck: EventLogCheck = .enforce
    ) {
        self.akTrust = akTrust
        self.expectedQualifyingData = expectedQualifyingData
        self.allowSHA1 = allowSHA1
        self.measurements = measurements
        self.eventLogCheck = eventLogCheck
    }

    /// Runs every quote policy, in this one order, appending to `results` (no array per policy);
    /// `expectedQualifyingData` stands for this policy's own.
    func evaluate(
        _ evidence: TPMQuoteEvidence,
        expectedQualifyingData: [UInt8]?,
        context: ValidationContext,
        into results: inout [PolicyResult]
    ) {
        QuoteHeaderPolicy().evaluate(evidence, context: context, into: &results)
        AKAttributesPolicy().evaluate(evidence, context: context, into: &results)
        AKTrustPolicy(trust: akTrust).evaluate(evidence, context: context, into: &results)
        QuoteSignaturePolicy(allowSHA1: allowSHA1).evaluate(evidence, context: context, into: &results)
        QualifyingDataPolicy(expected: expectedQualifyingData).evaluate(evidence, context: context, into: &results)
        PCRBankPolicy(allowSHA1: allowSHA1).evaluate(evidence, context: context, into: &results)
        // The PCR digest is checked once; measurements and the event log reuse the verdict.
        let digest = PCRDigestPolicy.check(evidence)
        results.append(digest)
        var quoted: QuotedPCRs = .notComputed
        MeasurementsPolicy(measurements: measurements).evaluate(
            evidence,
            quoted: &quoted,
            digest: digest,
            into: &results
        )
        EventLogReplayPolicy(check: eventLogCheck).evaluate(evidence, quoted: &quoted, digest: digest, into: &results)
    }
}

/// Validates TPM quotes.
public enum TPMQuoteValidator {
    /// Runs every policy of `policy` on `evidence`.
    public static func validate(
        _ evidence: TPMQuoteEvidence,
        policy: TPMQuotePolicy,
        context: ValidationContext
    ) -> AttestationReport {
        var results: [PolicyResult] = []
        results.reserveCapacity(10)
        policy.evaluate(
            evidence,
            expectedQualifyingData: policy.expectedQualifyingData,
            context: context,
            into: &results
        )
        return report("tpm-quote", results)
    }

    /// The report of `results`, with the insecure-mode note when that mode accepted the AK.
    static func report(_ evidence: String, _ results: [PolicyResult]) -> AttestationReport {
        var report = AttestationReport(evidence: evidence, results: results)
        let trust = report.result(of: AKTrustPolicy.name)
        if trust?.outcome == .passed, trust?.values.contains(AKTrustPolicy.insecureMode) == true {
            report.note(AKTrust.insecureNote)
        }
        return report
    }

    /// The PCR values the quote covers, by index, when the quote's digest matches them; else nil.
    public static func quotedPCRs(_ evidence: TPMQuoteEvidence) -> (bank: TPMAlgorithm, values: [Int: [UInt8]])? {
        quotedPCRs(evidence, digest: PCRDigestPolicy.check(evidence))
    }

    /// The quoted PCR values given the PCR digest policy's verdict on `evidence`.
    static func quotedPCRs(
        _ evidence: TPMQuoteEvidence,
        digest: PolicyResult
    ) -> (bank: TPMAlgorithm, values: [Int: [UInt8]])? {
        guard let bank = evidence.attest.pcrSelection.first, evidence.attest.pcrSelection.count == 1,
            digest.outcome == .passed,
            let reported = evidence.pcrValues[bank.hash]
        else { return nil }
        return (bank.hash, reported.filter { (0..<32).contains($0.key) && bank.mask & (1 << UInt32($0.key)) != 0 })
    }
}

// MARK: - The policies

/// TPM_GENERATED magic and TPM_ST_ATTEST_QUOTE type.
struct QuoteHeaderPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.quote.header"
    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        let magic = PolicyResult.Value.hex("magic", UInt64(evidence.attest.magic))
        let type = PolicyResult.Value.hex("type", UInt64(evidence.attest.type))
        guard evidence.attest.magic == TPMSAttest.generatedMagic else {
            return results.append(
                .failed(
                    Self.name,
                    "TPMS_ATTEST magic is not TPM_GENERATED_VALUE",
                    [magic, .text("expected", "0xff544347")]
                )
            )
        }
        guard evidence.attest.type == TPMSAttest.quoteType else {
            return results.append(
                .failed(Self.name, "TPMS_ATTEST is not a quote", [type, .text("expected", "0x8018")])
            )
        }
        return results.append(.passed(Self.name, "TPM-generated quote", [magic, type]))
    }
}

/// The AK is a restricted signing key, so the TPM signs only structures it made itself.
struct AKAttributesPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.ak.attributes"
    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        let attributes = evidence.akPublic.objectAttributes
        let required = TPMTPublic.attributeSign | TPMTPublic.attributeRestricted | TPMTPublic.attributeFixedTPM
        let values: [PolicyResult.Value] = [
            .hex("objectAttributes", UInt64(attributes)), .hex("required", UInt64(required)),
        ]
        // A non-restricted key would sign arbitrary bytes that merely look like a TPMS_ATTEST.
        guard attributes & required == required else {
            return results.append(.failed(Self.name, "the AK is not a fixedTPM restricted signing key", values))
        }
        return results.append(.passed(Self.name, "the AK is a fixedTPM restricted signing key", values))
    }
}

/// The AK is allow-listed, certified by a configured root, or (insecurely) taken on trust.
struct AKTrustPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.ak.trust"
    /// The value that marks a result of the insecure mode.
    static let insecureMode = PolicyResult.Value.text("mode", "insecureTrustDocumentAK")
    let trust: AKTrust

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        let digest: [UInt8]
        switch evidence.verificationKey {
        case .success(let key): digest = key.digest
        case .failure(let error):
            return results.append(.failed(Self.name, "the AK public key is unusable", [("error", error.message)]))
        }
        let hex = PolicyResult.Value.hex("akDigest", digest)
        if trust.allowedKeys.contains(where: { $0.keyDigest == digest }) || trust.allowedKeyDigests.contains(digest) {
            return results.append(.passed(Self.name, "the AK is on the allow-list", [hex]))
        }
        if let certified = trust.certifiedKeys.first(where: { $0.keyDigest == digest }) {
            return results.append(
                .passed(
                    Self.name,
                    "the AK's certificate chains to a configured root",
                    [hex, .text("subject", certified.subject)]
                )
            )
        }
        if trust.insecureTrustDocumentAK {
            return results.append(
                .passed(
                    Self.name,
                    "insecureTrustDocumentAK: the AK from the evidence is trusted without authentication",
                    [hex, Self.insecureMode]
                )
            )
        }
        return results.append(
            .failed(
                Self.name,
                "the AK is neither allow-listed nor certified by a configured root",
                [
                    hex, .text("allowListed", String(trust.allowedKeyDigests.count + trust.allowedKeys.count)),
                    .text("certified", String(trust.certifiedKeys.count)),
                ]
            )
        )
    }
}

/// The AK's signature over the exact TPMS_ATTEST bytes.
struct QuoteSignaturePolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.quote.signature"
    let allowSHA1: Bool

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        let signature = evidence.signature
        let values: [PolicyResult.Value] = [
            .text("scheme", signature.scheme.description), .text("hash", signature.hash.description),
        ]
        guard signature.hash != .sha1 || allowSHA1 else {
            return results.append(.failed(Self.name, "SHA-1 signatures are not allowed by the policy", values))
        }
        guard case .success(let key) = evidence.verificationKey else {
            return results.append(.failed(Self.name, "the AK public key is unusable", values))
        }
        guard key.isValid(signature, over: evidence.attest.bytes) else {
            return results.append(.failed(Self.name, "the signature does not verify with the AK", values))
        }
        return results.append(.passed(Self.name, "the quote is signed by the AK", values))
    }
}

/// The quote carries the expected qualifying data (nonce binding).
struct QualifyingDataPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.quote.qualifying-data"
    let expected: [UInt8]?

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        let actual = PolicyResult.Value.hex("actual", evidence.attest.extraDataSlice)
        guard let expected else {
            return results.append(.notChecked(Self.name, "no nonce given: freshness was not checked", [actual]))
        }
        let values = [PolicyResult.Value.hex("expected", expected), actual]
        guard equalBytes(expected[...], evidence.attest.extraDataSlice) else {
            return results.append(
                .failed(Self.name, "the quote's qualifying data does not match the nonce binding", values)
            )
        }
        return results.append(.passed(Self.name, "the quote is bound to the nonce", values))
    }
}

/// One SHA-256 bank (SHA-1 where allowed).
struct PCRBankPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.quote.pcr-bank"
    let allowSHA1: Bool

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        let selection = evidence.attest.pcrSelection
        let values = [
            PolicyResult.Value.text(
                "banks",
                selection.count == 1
                    ? selection[0].hash.description
                    : selection.map(\.hash.description).joined(separator: ",")
            )
        ]
        guard selection.count == 1, let bank = selection.first?.hash else {
            return results.append(.failed(Self.name, "the quote must select exactly one PCR bank", values))
        }
        guard bank == .sha256 || (bank == .sha1 && allowSHA1) else {
            return results.append(
                .failed(
                    Self.name,
                    bank == .sha1 ? "the SHA-1 bank is not allowed by the policy" : "the PCR bank is not SHA-256",
                    values
                )
            )
        }
        return results.append(
            .passed(
                Self.name,
                bank == .sha256 ? "the quote covers the sha256 bank" : "the quote covers the sha1 bank",
                values
            )
        )
    }
}

/// The quote's PCR digest equals the digest of the reported values for the quoted selection.
struct PCRDigestPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.quote.pcr-digest"

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        results.append(Self.check(evidence))
    }

    static func check(_ evidence: TPMQuoteEvidence) -> PolicyResult {
        // A native document's flat values for exactly the quoted selection are already the TPM's concatenation.
        if case .flat(let bank, let mask, let size, let values) = evidence.reportedPCRs,
            evidence.attest.pcrSelection.count == 1,
            evidence.attest.pcrSelection[0].hash == bank, evidence.attest.pcrSelection[0].mask == mask,
            bank.digestSize == size
        {
            return compare(evidence, concatenated: values)
        }
        var concatenated: [UInt8] = []
        var quoted: [TPMAlgorithm: Set<Int>] = [:]
        for bank in evidence.attest.pcrSelection {
            guard let size = bank.hash.digestSize else {
                return .failed(name, "the quoted bank's hash is not supported", [("bank", bank.hash.description)])
            }
            let reported = evidence.pcrValues[bank.hash] ?? [:]
            for index in bank.indices {
                guard let value = reported[index] else {
                    return .failed(
                        name,
                        "a quoted PCR value is missing",
                        [("bank", bank.hash.description), ("pcr", String(index))]
                    )
                }
                guard value.count == size else {
                    return .failed(
                        name,
                        "a PCR value has the wrong size",
                        [
                            ("bank", bank.hash.description), ("pcr", String(index)), ("size", String(value.count)),
                            ("expected", String(size)),
                        ]
                    )
                }
                concatenated += value
            }
            quoted[bank.hash, default: []].formUnion(bank.indices)
        }
        for (bank, values) in evidence.pcrValues {
            if let extra = values.keys.sorted().first(where: { !(quoted[bank]?.contains($0) ?? false) }) {
                return .failed(
                    name,
                    "a reported PCR value is not covered by the quote",
                    [("bank", bank.description), ("pcr", String(extra))]
                )
            }
        }
        return compare(evidence, concatenated: concatenated)
    }

    /// The quote's PCR digest against the hash of the concatenated selected values.
    private static func compare(_ evidence: TPMQuoteEvidence, concatenated: [UInt8]) -> PolicyResult {
        // The TPM hashes the selected values with the signing scheme's hash.
        guard let digest = evidence.signature.hash.hash(concatenated) else {
            return .failed(
                name,
                "the signature's hash is not supported",
                [("hash", evidence.signature.hash.description)]
            )
        }
        let values = [PolicyResult.Value.hex("quoted", evidence.attest.pcrDigestSlice), .hex("computed", digest)]
        guard equalBytes(digest[...], evidence.attest.pcrDigestSlice) else {
            return .failed(name, "the reported PCR values do not match the quote's PCR digest", values)
        }
        return .passed(name, "the reported PCR values are the quoted ones", values)
    }
}

/// Quoted PCR values against expected measurements.
struct MeasurementsPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    let measurements: Measurements?

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        var quoted: QuotedPCRs = .notComputed
        evaluate(evidence, quoted: &quoted, digest: nil, into: &results)
    }

    /// Evaluates with the quoted values computed at most once per validation.
    func evaluate(
        _ evidence: TPMQuoteEvidence,
        quoted cache: inout QuotedPCRs,
        digest: PolicyResult?,
        into results: inout [PolicyResult]
    ) {
        guard let measurements else { return }
        guard let quoted = cache.get(evidence, digest: digest) else {
            return results.append(.failed("measurements", "no authenticated PCR values to compare"))
        }
        results.append(contentsOf: measurements.results(for: quoted.values))
    }
}

/// The event log replays to the quoted PCR values.
struct EventLogReplayPolicy: AppendingEvidencePolicy {
    typealias Evidence = TPMQuoteEvidence
    static let name = "tpm.event-log"
    let check: EventLogCheck

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext, into results: inout [PolicyResult]) {
        var quoted: QuotedPCRs = .notComputed
        evaluate(evidence, quoted: &quoted, digest: nil, into: &results)
    }

    /// Evaluates with the quoted values computed at most once per validation.
    func evaluate(
        _ evidence: TPMQuoteEvidence,
        quoted cache: inout QuotedPCRs,
        digest: PolicyResult?,
        into results: inout [PolicyResult]
    ) {
        guard check != .skip else { return results.append(.notChecked(Self.name, "event log check is off")) }
        guard let raw = evidence.eventLog, !raw.isEmpty else {
            return results.append(.notChecked(Self.name, "the evidence carries no event log"))
        }
        guard let quoted = cache.get(evidence, digest: digest) else {
            return results.append(.failed(Self.name, "no authenticated PCR values to replay against"))
        }
        let log: TCGEventLog
        do {
            log = try TCGEventLog(bytes: raw)
        } catch {
            return results.append(.failed(Self.name, "the event log does not parse", [("error", error.message)]))
        }
        let mismatches: [EventLogMismatch]
        do {
            mismatches = try log.compare(with: quoted.values, bank: quoted.bank)
        } catch {
            return results.append(.failed(Self.name, "the event log cannot be replayed", [("error", error.message)]))
        }
        guard mismatches.isEmpty else {
            return results.append(
                contentsOf: mismatches.map { mismatch in
                    let values = mismatch.values
                    let message = "PCR \(mismatch.pcr) replayed from the event log differs from the quote"
                    return check == .enforce ? .failed(Self.name, message, values) : .warned(Self.name, message, values)
                }
            )
        }
        let pcrs = log.replayedPCRs(bank: quoted.bank).sorted()
        return results.append(
            .passed(
                Self.name,
                "the event log replays to the quoted PCRs",
                [("events", String(log.events.count)), ("pcrs", pcrs.map(String.init).joined(separator: ","))]
            )
        )
    }
}

/// The authenticated PCR values of one validation, computed when first needed.
enum QuotedPCRs {
    case notComputed
    case computed((bank: TPMAlgorithm, values: [Int: [UInt8]])?)

    /// The quoted values (see ``TPMQuoteValidator/quotedPCRs(_:)``), from the PCR digest verdict when given.
    mutating func get(
        _ evidence: TPMQuoteEvidence,
        digest: PolicyResult?
    ) -> (bank: TPMAlgorithm, values: [Int: [UInt8]])? {
        if case .computed(let quoted) = self { return quoted }
        let quoted = TPMQuoteValidator.quotedPCRs(evidence, digest: digest ?? PCRDigestPolicy.check(evidence))
        self = .computed(quoted)
        return quoted
    }
}
