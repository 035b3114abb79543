import Crypto
import FoundationEssentials

/// One TPM quote with what the attester reported beside it.
public struct TPMQuoteEvidence: Sendable {
    /// The attestation key's public area.
    public let akPublic: TPMTPublic
    /// The signed quote.
    public let attest: TPMSAttest
    /// The AK's signature over `attest.bytes`.
    public let signature: TPMTSignature
    /// The reported PCR values, by bank and index; only quoted values are trusted.
    public let pcrValues: [TPMAlgorithm: [Int: [UInt8]]]
    /// The raw TCG event log, nil or empty when the attester sent none.
    public let eventLog: [UInt8]?
    /// The AK made usable once for every policy that needs it.
    let verificationKey: Result<TPMVerificationKey, AttestationError>

    public init(akPublic: TPMTPublic, attest: TPMSAttest, signature: TPMTSignature,
                pcrValues: [TPMAlgorithm: [Int: [UInt8]]], eventLog: [UInt8]? = nil) {
        self.akPublic = akPublic
        self.attest = attest
        self.signature = signature
        self.pcrValues = pcrValues
        self.eventLog = eventLog
        self.verificationKey = Result { () throws(AttestationError) in try TPMVerificationKey(akPublic.key) }
    }
}

/// An AK whose certificate chain verified against configured roots (made by ``AKCertificateVerifier``).
public struct CertifiedAK: Hashable, Sendable {
    /// SHA-256 of the AK's DER SubjectPublicKeyInfo.
    public let keyDigest: [UInt8]
    /// The AK certificate's subject, for reports.
    public let subject: String

    init(keyDigest: [UInt8], subject: String) {
        self.keyDigest = keyDigest
        self.subject = subject
    }
}

/// How the AK of a quote is trusted. At least one of the three must accept the AK.
public struct AKTrust: Hashable, Sendable {
    /// SHA-256 digests of DER SubjectPublicKeyInfo of AKs known to belong to trusted TPMs.
    public var allowedKeyDigests: Set<[UInt8]>
    /// AKs whose certificate chain verified (see ``AKCertificateVerifier``).
    public var certifiedKeys: [CertifiedAK]
    /// Trusts whatever AK the evidence carries, as Constellation's qemu-vtpm validator does.
    /// - Important: Development only; anyone can make such evidence. Every report it produced says so.
    public var insecureTrustDocumentAK: Bool

    public init(allowedKeyDigests: Set<[UInt8]> = [], certifiedKeys: [CertifiedAK] = [], insecureTrustDocumentAK: Bool = false) {
        self.allowedKeyDigests = allowedKeyDigests
        self.certifiedKeys = certifiedKeys
        self.insecureTrustDocumentAK = insecureTrustDocumentAK
    }

    /// The note every report carries when the insecure mode accepted the AK.
    public static let insecureNote =
        "insecureTrustDocumentAK: the attestation key was taken from the evidence itself and is not authenticated; development only"
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

    public init(akTrust: AKTrust, expectedQualifyingData: [UInt8]? = nil, allowSHA1: Bool = false,
                measurements: Measurements? = nil, eventLogCheck: EventLogCheck = .enforce) {
        self.akTrust = akTrust
        self.expectedQualifyingData = expectedQualifyingData
        self.allowSHA1 = allowSHA1
        self.measurements = measurements
        self.eventLogCheck = eventLogCheck
    }

    /// The pure policies this configuration amounts to, in evaluation order.
    public var policySet: PolicySet<TPMQuoteEvidence> {
        PolicySet([
            QuoteHeaderPolicy(),
            AKAttributesPolicy(),
            AKTrustPolicy(trust: akTrust),
            QuoteSignaturePolicy(allowSHA1: allowSHA1),
            QualifyingDataPolicy(expected: expectedQualifyingData),
            PCRBankPolicy(allowSHA1: allowSHA1),
            PCRDigestPolicy(),
            MeasurementsPolicy(measurements: measurements),
            EventLogReplayPolicy(check: eventLogCheck),
        ])
    }
}

/// Validates TPM quotes.
public enum TPMQuoteValidator {
    /// Runs every policy of `policy` on `evidence`.
    public static func validate(_ evidence: TPMQuoteEvidence, policy: TPMQuotePolicy, context: ValidationContext) -> AttestationReport {
        var report = AttestationReport(evidence: "tpm-quote", results: policy.policySet.evaluate(evidence, context: context))
        let trust = report.result(of: AKTrustPolicy.name)
        if trust?.outcome == .passed, trust?.values.contains(PolicyResult.Value(name: "mode", value: "insecureTrustDocumentAK")) == true {
            report.note(AKTrust.insecureNote)
        }
        return report
    }

    /// The PCR values the quote covers, by index, when the quote's digest matches them; else nil.
    public static func quotedPCRs(_ evidence: TPMQuoteEvidence) -> (bank: TPMAlgorithm, values: [Int: [UInt8]])? {
        guard let bank = evidence.attest.pcrSelection.first, evidence.attest.pcrSelection.count == 1,
              case .passed = PCRDigestPolicy.check(evidence).outcome,
              let reported = evidence.pcrValues[bank.hash]
        else { return nil }
        return (bank.hash, reported.filter { bank.indices.contains($0.key) })
    }
}

// MARK: - The policies

/// TPM_GENERATED magic and TPM_ST_ATTEST_QUOTE type.
struct QuoteHeaderPolicy: EvidencePolicy {
    static let name = "tpm.quote.header"
    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        let magic = "0x" + String(evidence.attest.magic, radix: 16)
        let type = "0x" + String(evidence.attest.type, radix: 16)
        guard evidence.attest.magic == TPMSAttest.generatedMagic else {
            return [.failed(Self.name, "TPMS_ATTEST magic is not TPM_GENERATED_VALUE", [("magic", magic), ("expected", "0xff544347")])]
        }
        guard evidence.attest.type == TPMSAttest.quoteType else {
            return [.failed(Self.name, "TPMS_ATTEST is not a quote", [("type", type), ("expected", "0x8018")])]
        }
        return [.passed(Self.name, "TPM-generated quote", [("magic", magic), ("type", type)])]
    }
}

/// The AK is a restricted signing key, so the TPM signs only structures it made itself.
struct AKAttributesPolicy: EvidencePolicy {
    static let name = "tpm.ak.attributes"
    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        let attributes = evidence.akPublic.objectAttributes
        let required = TPMTPublic.attributeSign | TPMTPublic.attributeRestricted | TPMTPublic.attributeFixedTPM
        let values = [("objectAttributes", "0x" + String(attributes, radix: 16)), ("required", "0x" + String(required, radix: 16))]
        // A non-restricted key would sign arbitrary bytes that merely look like a TPMS_ATTEST.
        guard attributes & required == required else {
            return [.failed(Self.name, "the AK is not a fixedTPM restricted signing key", values)]
        }
        return [.passed(Self.name, "the AK is a fixedTPM restricted signing key", values)]
    }
}

/// The AK is allow-listed, certified by a configured root, or (insecurely) taken on trust.
struct AKTrustPolicy: EvidencePolicy {
    static let name = "tpm.ak.trust"
    let trust: AKTrust

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        let digest: [UInt8]
        switch evidence.verificationKey {
        case .success(let key): digest = key.digest
        case .failure(let error): return [.failed(Self.name, "the AK public key is unusable", [("error", error.message)])]
        }
        let hex = hexString(digest)
        if trust.allowedKeyDigests.contains(digest) {
            return [.passed(Self.name, "the AK is on the allow-list", [("akDigest", hex)])]
        }
        if let certified = trust.certifiedKeys.first(where: { $0.keyDigest == digest }) {
            return [.passed(Self.name, "the AK's certificate chains to a configured root", [("akDigest", hex), ("subject", certified.subject)])]
        }
        if trust.insecureTrustDocumentAK {
            return [.passed(Self.name, "insecureTrustDocumentAK: the AK from the evidence is trusted without authentication",
                            [("akDigest", hex), ("mode", "insecureTrustDocumentAK")])]
        }
        return [.failed(Self.name, "the AK is neither allow-listed nor certified by a configured root",
                        [("akDigest", hex), ("allowListed", String(trust.allowedKeyDigests.count)),
                         ("certified", String(trust.certifiedKeys.count))])]
    }
}

/// The AK's signature over the exact TPMS_ATTEST bytes.
struct QuoteSignaturePolicy: EvidencePolicy {
    static let name = "tpm.quote.signature"
    let allowSHA1: Bool

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        let signature = evidence.signature
        let values = [("scheme", signature.scheme.description), ("hash", signature.hash.description)]
        guard signature.hash != .sha1 || allowSHA1 else {
            return [.failed(Self.name, "SHA-1 signatures are not allowed by the policy", values)]
        }
        guard case .success(let key) = evidence.verificationKey else {
            return [.failed(Self.name, "the AK public key is unusable", values)]
        }
        guard key.isValid(signature, over: evidence.attest.bytes) else {
            return [.failed(Self.name, "the signature does not verify with the AK", values)]
        }
        return [.passed(Self.name, "the quote is signed by the AK", values)]
    }
}

/// The quote carries the expected qualifying data (nonce binding).
struct QualifyingDataPolicy: EvidencePolicy {
    static let name = "tpm.quote.qualifying-data"
    let expected: [UInt8]?

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        let actual = hexString(evidence.attest.extraData)
        guard let expected else {
            return [.notChecked(Self.name, "no nonce given: freshness was not checked", [("actual", actual)])]
        }
        let values = [("expected", hexString(expected)), ("actual", actual)]
        guard expected == evidence.attest.extraData else {
            return [.failed(Self.name, "the quote's qualifying data does not match the nonce binding", values)]
        }
        return [.passed(Self.name, "the quote is bound to the nonce", values)]
    }
}

/// One SHA-256 bank (SHA-1 where allowed).
struct PCRBankPolicy: EvidencePolicy {
    static let name = "tpm.quote.pcr-bank"
    let allowSHA1: Bool

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        let banks = evidence.attest.pcrSelection.map(\.hash)
        let values = [("banks", banks.map(\.description).joined(separator: ","))]
        guard banks.count == 1, let bank = banks.first else {
            return [.failed(Self.name, "the quote must select exactly one PCR bank", values)]
        }
        guard bank == .sha256 || (bank == .sha1 && allowSHA1) else {
            return [.failed(Self.name, bank == .sha1 ? "the SHA-1 bank is not allowed by the policy" : "the PCR bank is not SHA-256", values)]
        }
        return [.passed(Self.name, "the quote covers the \(bank) bank", values)]
    }
}

/// The quote's PCR digest equals the digest of the reported values for the quoted selection.
struct PCRDigestPolicy: EvidencePolicy {
    static let name = "tpm.quote.pcr-digest"

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] { [Self.check(evidence)] }

    static func check(_ evidence: TPMQuoteEvidence) -> PolicyResult {
        var concatenated: [UInt8] = []
        var quoted: [TPMAlgorithm: Set<Int>] = [:]
        for bank in evidence.attest.pcrSelection {
            guard let size = bank.hash.digestSize else {
                return .failed(name, "the quoted bank's hash is not supported", [("bank", bank.hash.description)])
            }
            let reported = evidence.pcrValues[bank.hash] ?? [:]
            for index in bank.indices {
                guard let value = reported[index] else {
                    return .failed(name, "a quoted PCR value is missing", [("bank", bank.hash.description), ("pcr", String(index))])
                }
                guard value.count == size else {
                    return .failed(name, "a PCR value has the wrong size",
                                   [("bank", bank.hash.description), ("pcr", String(index)), ("size", String(value.count)), ("expected", String(size))])
                }
                concatenated += value
            }
            quoted[bank.hash, default: []].formUnion(bank.indices)
        }
        for (bank, values) in evidence.pcrValues {
            if let extra = values.keys.sorted().first(where: { !(quoted[bank]?.contains($0) ?? false) }) {
                return .failed(name, "a reported PCR value is not covered by the quote", [("bank", bank.description), ("pcr", String(extra))])
            }
        }
        // The TPM hashes the selected values with the signing scheme's hash.
        guard let digest = evidence.signature.hash.hash(concatenated) else {
            return .failed(name, "the signature's hash is not supported", [("hash", evidence.signature.hash.description)])
        }
        let values = [("quoted", hexString(evidence.attest.pcrDigest)), ("computed", hexString(digest))]
        guard digest == evidence.attest.pcrDigest else {
            return .failed(name, "the reported PCR values do not match the quote's PCR digest", values)
        }
        return .passed(name, "the reported PCR values are the quoted ones", values)
    }
}

/// Quoted PCR values against expected measurements.
struct MeasurementsPolicy: EvidencePolicy {
    let measurements: Measurements?

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        guard let measurements else { return [] }
        guard let quoted = TPMQuoteValidator.quotedPCRs(evidence) else {
            return [.failed("measurements", "no authenticated PCR values to compare", [])]
        }
        return measurements.results(for: quoted.values)
    }
}

/// The event log replays to the quoted PCR values.
struct EventLogReplayPolicy: EvidencePolicy {
    static let name = "tpm.event-log"
    let check: EventLogCheck

    func evaluate(_ evidence: TPMQuoteEvidence, context: ValidationContext) -> [PolicyResult] {
        guard check != .skip else { return [.notChecked(Self.name, "event log check is off")] }
        guard let raw = evidence.eventLog, !raw.isEmpty else {
            return [.notChecked(Self.name, "the evidence carries no event log")]
        }
        guard let quoted = TPMQuoteValidator.quotedPCRs(evidence) else {
            return [.failed(Self.name, "no authenticated PCR values to replay against")]
        }
        let log: TCGEventLog
        do {
            log = try TCGEventLog(bytes: raw)
        } catch {
            return [.failed(Self.name, "the event log does not parse", [("error", error.message)])]
        }
        let mismatches: [EventLogMismatch]
        do {
            mismatches = try log.compare(with: quoted.values, bank: quoted.bank)
        } catch {
            return [.failed(Self.name, "the event log cannot be replayed", [("error", error.message)])]
        }
        guard mismatches.isEmpty else {
            return mismatches.map { mismatch in
                let values = mismatch.values
                let message = "PCR \(mismatch.pcr) replayed from the event log differs from the quote"
                return check == .enforce ? .failed(Self.name, message, values) : .warned(Self.name, message, values)
            }
        }
        let pcrs = log.replayedPCRs(bank: quoted.bank).sorted()
        return [.passed(Self.name, "the event log replays to the quoted PCRs",
                        [("events", String(log.events.count)), ("pcrs", pcrs.map(String.init).joined(separator: ","))])]
    }
}
