import FoundationEssentials
import SwiftASN1
@_spi(FixedExpiryValidationTime) import X509

/// Verifies an AK certificate chain with swift-certificates' `Verifier` (RFC 5280 policy at the given
/// time, against the given roots) and checks that the certificate certifies the evidence's AK.
public enum AKCertificateVerifier {
    /// The policy name in results.
    public static let policyName = "tpm.ak.certificate"

    /// A ``CertifiedAK`` for ``AKTrust/certifiedKeys`` when the chain verifies, else the failed result.
    public static func verify(
        akCertificate: Certificate,
        intermediates: [Certificate],
        roots: [Certificate],
        akPublic: TPMTPublic,
        at time: Date
    ) async -> Result<CertifiedAK, PolicyFailureResult> {
        let subject = akCertificate.subject.description
        let prepared: PreparedAK
        do {
            prepared = try PreparedAK(akPublic)
        } catch {
            return .failure(
                PolicyFailureResult(.failed(policyName, "the AK public key is unusable", [("error", error.message)]))
            )
        }
        let key = prepared.verificationKey
        // Compare keys, not encodings: the same key may be serialized in more than one way.
        guard let evidenceKey = try? Certificate.PublicKey(derEncoded: key.subjectPublicKeyInfo),
            evidenceKey == akCertificate.publicKey
        else {
            return .failure(
                PolicyFailureResult(
                    .failed(
                        policyName,
                        "the certificate does not certify the evidence's AK",
                        [("subject", subject), ("akDigest", hexString(key.digest))]
                    )
                )
            )
        }
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy(fixedExpiryValidationTime: time)
        }
        switch await verifier.validate(leaf: akCertificate, intermediates: CertificateStore(intermediates)) {
        case .validCertificate:
            return .success(CertifiedAK(keyDigest: key.digest, subject: subject, key: prepared))
        case .couldNotValidate(let failures):
            let reasons = failures.map { "\($0.policyFailureReason)" }.joined(separator: "; ")
            return .failure(
                PolicyFailureResult(
                    .failed(
                        policyName,
                        "the AK certificate does not chain to a configured root",
                        [("subject", subject), ("reasons", reasons.isEmpty ? "no chain found" : reasons)]
                    )
                )
            )
        }
    }
}

/// A failed ``PolicyResult`` as an `Error`, for `Result`.
public struct PolicyFailureResult: Error, Hashable, Sendable {
    public let result: PolicyResult
    init(_ result: PolicyResult) { self.result = result }
}
