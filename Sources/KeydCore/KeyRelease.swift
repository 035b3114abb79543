import Attestation
import FoundationEssentials
import KeydProtocol

/// What keyd decided about one key release.
public enum ReleaseVerdict: Sendable {
    /// The evidence passed the policy: keyd may derive and seal the keys. `report` holds every check,
    /// warn-only PCR mismatches among them, and the insecure AK trust when it was used.
    case granted(akDigest: [UInt8], report: AttestationReport)
    /// Refused with `status` (`evidenceRejected` or `revoked`); `reason` names the failing check
    /// (which PCR, expected and actual) and never holds key material. `akDigest` is nil when the
    /// evidence did not get as far as a usable AK.
    case refused(status: StatusCode, reason: String, akDigest: [UInt8]?)

    /// The AK's digest, when known.
    public var akDigest: [UInt8]? {
        switch self {
        case .granted(let akDigest, _): akDigest
        case .refused(_, _, let akDigest): akDigest
        }
    }

    /// True when a release was granted because the policy trusts any AK (development only; audit it).
    public var usedInsecureAKTrust: Bool {
        guard case .granted(_, let report) = self else { return false }
        return report.notes.contains(AKTrust.insecureNote)
    }
}

/// The release decision, made inside keyd (pure: the time is passed in).
public enum KeyRelease {
    /// The longest reason text (it goes into the audit record).
    public static let maximumReasonLength = 2048

    /// Validates `evidence` against `policy` with the expected qualifying data
    /// `JoinBinding.qualifyingData(claims)`, then the policy's revocation lists (disk UUID, AK digest).
    ///
    /// - Important: Only keyd's native TPM document is taken. Constellation's format does not parse as
    ///   one, and a native document made by `evidence.issue` carries the generic binding
    ///   (`asterism-tpm-evidence-v1`), never the join binding, so neither satisfies a release.
    /// - Parameter certifiedKeys: AKs whose certificate chains ``MeasurementPolicy/certifyAK(certificate:intermediates:akPublic:at:)`` verified.
    public static func decide(
        evidence: [UInt8],
        claims: JoinClaims,
        policy: MeasurementPolicy,
        certifiedKeys: [CertifiedAK] = [],
        at time: Date
    ) -> ReleaseVerdict {
        guard policy.evidenceVariants.contains(.asterismTPM) else {
            return .refused(
                status: .evidenceRejected,
                reason: "policy version \(policy.version) does not allow evidence variant asterism-tpm",
                akDigest: nil
            )
        }
        guard evidence.count <= Limits.maxEvidence else {
            return .refused(
                status: .evidenceRejected,
                reason: "evidence of \(evidence.count) bytes exceeds limit \(Limits.maxEvidence)",
                akDigest: nil
            )
        }
        let qualifying = JoinBinding.qualifyingData(claims)
        let validation: NativeEvidenceValidation
        do {
            validation = try TPMEvidenceValidator.validate(
                native: evidence,
                expectedQualifyingData: qualifying,
                policy: policy.quotePolicy(expectedQualifyingData: qualifying, certifiedKeys: certifiedKeys),
                at: time
            )
        } catch {
            return .refused(
                status: .evidenceRejected,
                reason: "evidence is not keyd's native TPM document: \(error.message)",
                akDigest: nil
            )
        }
        let report = validation.report
        guard report.isValid, let akDigest = validation.akDigest else {
            return .refused(status: .evidenceRejected, reason: reason(report.failures), akDigest: validation.akDigest)
        }
        return revocation(diskUUID: claims.diskUUID, akDigest: akDigest, policy: policy)
            ?? .granted(akDigest: akDigest, report: report)
    }

    /// The decision of a compatibility release (`compat.release`): Constellation's qemu-vtpm document,
    /// bound as Constellation binds it (its `UserData` is `certificateKeyHash`, its qualifying data
    /// `SHA-256(SHA-256(UserData || nonce))`), against the same policy checks and revocation lists.
    /// - Important: Only for a keyd configured with `constellation-compatibility`; keys released this
    ///   way pass through trustd in plain.
    public static func decideCompatibility(
        evidence: [UInt8],
        nonce: [UInt8],
        certificateKeyHash: [UInt8],
        diskUUID: DiskUUID,
        policy: MeasurementPolicy,
        at time: Date
    ) -> ReleaseVerdict {
        guard policy.evidenceVariants.contains(.qemuVTPM) else {
            return .refused(
                status: .evidenceRejected,
                reason:
                    "policy version \(policy.version) does not allow evidence variant \(AttestationVariant.qemuVTPM.name)",
                akDigest: nil
            )
        }
        guard evidence.count <= Limits.maxEvidence else {
            return .refused(
                status: .evidenceRejected,
                reason: "evidence of \(evidence.count) bytes exceeds limit \(Limits.maxEvidence)",
                akDigest: nil
            )
        }
        let report: AttestationReport
        let akDigest: [UInt8]
        do {
            let document = try Attestation.ConstellationVTPMDocument(json: evidence)
            akDigest = try TPMTPublic(anyEncoding: document.akPublic).keyDigest()
            report = try TPMEvidenceValidator.validate(
                constellation: evidence,
                nonce: nonce,
                userData: certificateKeyHash,
                policy: policy.quotePolicy(expectedQualifyingData: []),
                at: time
            )
        } catch {
            return .refused(
                status: .evidenceRejected,
                reason: "evidence is not a Constellation qemu-vtpm document: \(error.message)",
                akDigest: nil
            )
        }
        guard report.isValid else {
            return .refused(status: .evidenceRejected, reason: reason(report.failures), akDigest: akDigest)
        }
        return revocation(diskUUID: diskUUID, akDigest: akDigest, policy: policy)
            ?? .granted(akDigest: akDigest, report: report)
    }

    /// The refusal when the policy revokes the disk or the AK, else nil.
    static func revocation(diskUUID: DiskUUID, akDigest: [UInt8], policy: MeasurementPolicy) -> ReleaseVerdict? {
        if policy.revokedDiskUUIDs.contains(diskUUID) {
            return .refused(
                status: .revoked,
                reason: "disk \(diskUUID) is revoked by policy version \(policy.version)",
                akDigest: akDigest
            )
        }
        if policy.revokedAKDigests.contains(akDigest) {
            return .refused(
                status: .revoked,
                reason: "AK \(hexString(akDigest)) is revoked by policy version \(policy.version)",
                akDigest: akDigest
            )
        }
        return nil
    }

    /// The failed checks as one line: `policy: message (name=value, …)`, joined by `; `, cut to
    /// ``maximumReasonLength`` characters.
    static func reason(_ failures: [PolicyResult]) -> String {
        guard !failures.isEmpty else { return "evidence failed validation" }
        let text = failures.map { failure in
            let values = failure.values.map { "\($0.name)=\($0.value)" }.joined(separator: ", ")
            return "\(failure.policy): \(failure.message)" + (values.isEmpty ? "" : " (\(values))")
        }
        .joined(separator: "; ")
        return text.count <= maximumReasonLength ? text : text.prefix(maximumReasonLength - 1) + "…"
    }
}

extension ReleasedKeys {
    /// Writes `compat.release`'s answer: the disk key, measurement secret and salt, then the master
    /// secret and salt for a control plane (empty for a worker), as secret fields.
    /// - Important: Constellation compatibility only: these bytes leave keyd in plain.
    public borrowing func writeCompatibilityAnswer(_ w: inout WireWriter) {
        diskKey.withUnsafeBytes { w.secret($0) }
        measurementSecret.withUnsafeBytes { w.secret($0) }
        w.fixed(measurementSalt, count: KeyEncryptionKey.measurementSaltLength)
        if clusterKEK?.writeSecrets(&w) == nil {
            w.secret(UnsafeRawBufferPointer(start: nil, count: 0))
            w.secret(UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }
}

extension KeyEncryptionKey {
    /// Writes the master secret and the salt as secret fields (``ReleasedKeys/writeCompatibilityAnswer(_:)``).
    borrowing func writeSecrets(_ w: inout WireWriter) {
        masterSecret.withUnsafeBytes { w.secret($0) }
        salt.withUnsafeBytes { w.secret($0) }
    }
}
