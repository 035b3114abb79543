import FoundationEssentials

/// Validates keyd's native TPM evidence documents (variant `asterism-tpm`) with a quote policy.
public struct NativeTPMDocumentValidator: EvidenceValidator {
    public var variant: AttestationVariant { .asterismTPM }
    /// AK trust, measurements, event-log handling; the expected qualifying data is set per call.
    public let policy: TPMQuotePolicy

    public init(policy: TPMQuotePolicy) { self.policy = policy }

    public func validate(
        document: [UInt8],
        nonce: [UInt8],
        at time: Date
    ) throws(EvidenceRejection) -> ValidatedEvidence {
        try TPMDocumentValidation.run(variant) { () throws(AttestationError) in
            try TPMEvidenceValidator.validateNative(
                document,
                nonce: nonce,
                userDataDigest: nil,
                policy: policy,
                at: time
            )
        }
    }
}

/// Validates Constellation's qemu-vtpm documents (variant `qemu-vtpm`) with a quote policy. Constellation
/// trusts the AK inside the document; here that needs `policy.akTrust.insecureTrustDocumentAK`.
public struct ConstellationVTPMValidator: EvidenceValidator {
    public var variant: AttestationVariant { .qemuVTPM }
    /// AK trust, measurements, event-log handling; the expected qualifying data is set per call.
    public let policy: TPMQuotePolicy

    public init(policy: TPMQuotePolicy) { self.policy = policy }

    public func validate(
        document: [UInt8],
        nonce: [UInt8],
        at time: Date
    ) throws(EvidenceRejection) -> ValidatedEvidence {
        try TPMDocumentValidation.run(variant) { () throws(AttestationError) in
            try TPMEvidenceValidator.validateConstellation(
                document,
                nonce: nonce,
                userData: nil,
                policy: policy,
                at: time
            )
        }
    }
}

/// The part both TPM document validators share: a parse error is `malformed`, a failed policy `refused`.
enum TPMDocumentValidation {
    static func run(
        _ variant: AttestationVariant,
        _ body: () throws(AttestationError) -> ([UInt8], AttestationReport)
    ) throws(EvidenceRejection) -> ValidatedEvidence {
        let (userData, report): ([UInt8], AttestationReport)
        do {
            (userData, report) = try body()
        } catch {
            throw .malformed(variant, error)
        }
        guard report.isValid else { throw .refused(variant, report) }
        return ValidatedEvidence(
            variant: variant,
            userData: userData,
            report: report,
            isInsecure: report.notes.contains(AKTrust.insecureNote)
        )
    }
}

/// Constellation's `dummy` variant: a JSON object `{"UserData": base64, "Nonce": base64}` that proves
/// nothing. For tests and development only; a verifier accepts it only when told so explicitly.
public enum DummyEvidence {
    /// The note on every report the dummy validator produced.
    public static let insecureNote = "dummy variant: the document is not evidence of anything; development only"
    /// The largest document the validator reads.
    public static let maxBytes = 4096

    private struct Document: Codable {
        var UserData: Data
        var Nonce: Data
    }

    /// Makes dummy documents.
    public struct Issuer: EvidenceIssuer {
        public var variant: AttestationVariant { .dummy }
        public init() {}
        public func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
            Array(try JSONEncoder().encode(Document(UserData: Data(userData), Nonce: Data(nonce))))
        }
    }

    /// Reads dummy documents; checks only that the nonce is the verifier's.
    public struct Validator: EvidenceValidator {
        public var variant: AttestationVariant { .dummy }
        public init() {}
        public func validate(
            document: [UInt8],
            nonce: [UInt8],
            at time: Date
        ) throws(EvidenceRejection) -> ValidatedEvidence {
            guard document.count <= DummyEvidence.maxBytes,
                let parsed = try? JSONDecoder().decode(Document.self, from: Data(document))
            else {
                throw .malformed(
                    variant,
                    .invalidJSON("dummy document", "not a JSON object with base64 UserData and Nonce")
                )
            }
            var report = AttestationReport(evidence: "dummy")
            let values = [("expected", hexString(nonce)), ("actual", hexString(Array(parsed.Nonce)))]
            guard Array(parsed.Nonce) == nonce else {
                report.append(.failed("binding.nonce", "the document carries another nonce", values))
                throw .refused(variant, report)
            }
            report.append(.passed("binding.nonce", "the document carries the verifier's nonce", values))
            report.note(DummyEvidence.insecureNote)
            return ValidatedEvidence(
                variant: variant,
                userData: Array(parsed.UserData),
                report: report,
                isInsecure: true
            )
        }
    }
}
