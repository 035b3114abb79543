import Attestation
import Crypto
import FoundationEssentials
import SwiftASN1
import X509

/// What a verified attested certificate proved about the peer.
public struct ATLSPeerIdentity: Sendable {
    /// The evidence variant that was validated.
    public let variant: AttestationVariant
    /// SHA-256 of the certificate key's SubjectPublicKeyInfo; the evidence is bound to it.
    public let keyHash: [UInt8]
    /// What the validator proved, with every policy's result.
    public let evidence: ValidatedEvidence
    /// The nonce the server placed in its certificate for the client's own attestation, if any.
    public let serverNonce: ATLSNonce?
    /// The certificate's NotAfter.
    public let notAfter: Date

    /// True when the proof rests on an insecure development setting.
    public var isInsecure: Bool { evidence.isInsecure }
}

/// Verifies attested certificates: self-signature, validity, the first extension whose OID has a
/// configured validator, that validator with the verifier's own nonce, and the user data against the
/// certificate's key hash. Pure; the caller passes the time.
public struct ATLSVerifier: Sendable {
    /// The configured validators, by variant.
    public let validators: [any EvidenceValidator]
    /// The validators by their variant's OID.
    private let byOID: [ASN1ObjectIdentifier: any EvidenceValidator]

    /// A verifier for these validators. A dummy validator is accepted only with
    /// `insecureAcceptDummy`, so no configuration selects it by accident.
    public init(validators: [any EvidenceValidator], insecureAcceptDummy: Bool = false) {
        let kept = validators.filter { insecureAcceptDummy || $0.variant != .dummy }
        self.validators = kept
        var byOID: [ASN1ObjectIdentifier: any EvidenceValidator] = [:]
        for validator in kept {
            if let oid = try? ASN1ObjectIdentifier(elements: validator.variant.oid), byOID[oid] == nil {
                byOID[oid] = validator
            }
        }
        self.byOID = byOID
    }

    /// Verifies the DER certificate `der` against `nonce` at `time`.
    public func verify(
        certificateDER der: [UInt8],
        nonce: ATLSNonce,
        at time: Date
    ) throws(ATLSError) -> ATLSPeerIdentity {
        let peer = try PeerCertificate(der: der)
        let certificate = peer.certificate
        try peer.checkSelfSignedAndValid(at: time)

        var serverNonce: ATLSNonce?
        var chosen: (validator: any EvidenceValidator, document: ArraySlice<UInt8>)?
        for item in certificate.extensions {
            if item.oid == AttestedCertificate.serverNonceIdentifier {
                serverNonce = try? ATLSNonce(bytes: Array(item.value))
            } else if chosen == nil, let validator = byOID[item.oid] {
                chosen = (validator, item.value)
            }
        }
        guard let chosen else { throw .noAttestation(extensionOIDs: certificate.extensions.map(\.oid.description)) }
        let evidence: ValidatedEvidence
        do {
            evidence = try chosen.validator.validate(document: Array(chosen.document), nonce: nonce.bytes, at: time)
        } catch {
            let report: AttestationReport? = if case .refused(_, let report) = error { report } else { nil }
            throw .evidenceRefused(variant: chosen.validator.variant.name, reason: error.description, report: report)
        }
        // The SubjectPublicKeyInfo as sent, which PeerCertificate checked is the key's canonical DER.
        let keyHash = Array(SHA256.hash(data: peer.subjectPublicKeyInfo))
        guard evidence.userData == keyHash else {
            throw .userDataMismatch(expected: keyHash, actual: evidence.userData)
        }
        return ATLSPeerIdentity(
            variant: chosen.validator.variant,
            keyHash: keyHash,
            evidence: evidence,
            serverNonce: serverNonce,
            notAfter: certificate.notValidAfter
        )
    }
}
