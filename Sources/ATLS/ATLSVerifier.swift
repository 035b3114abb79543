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
    private let byOID: [[UInt]: any EvidenceValidator]

    /// A verifier for these validators. A dummy validator is accepted only with
    /// `insecureAcceptDummy`, so no configuration selects it by accident.
    public init(validators: [any EvidenceValidator], insecureAcceptDummy: Bool = false) {
        let kept = validators.filter { insecureAcceptDummy || $0.variant != .dummy }
        self.validators = kept
        var byOID: [[UInt]: any EvidenceValidator] = [:]
        for validator in kept where byOID[validator.variant.oid] == nil { byOID[validator.variant.oid] = validator }
        self.byOID = byOID
    }

    /// Verifies the DER certificate `der` against `nonce` at `time`.
    public func verify(certificateDER der: [UInt8], nonce: ATLSNonce, at time: Date) throws(ATLSError) -> ATLSPeerIdentity {
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: der)
        } catch {
            throw .certificateUnreadable("\(error)")
        }
        return try verify(certificate, nonce: nonce, at: time)
    }

    /// Verifies a parsed certificate against `nonce` at `time`.
    public func verify(_ certificate: Certificate, nonce: ATLSNonce, at time: Date) throws(ATLSError) -> ATLSPeerIdentity {
        guard let key = P256.Signing.PublicKey(certificate.publicKey) else {
            throw .unsupportedKey(String(describing: certificate.publicKey))
        }
        guard certificate.issuer == certificate.subject,
              certificate.publicKey.isValidSignature(certificate.signature, for: certificate)
        else {
            throw .badSelfSignature
        }
        guard time >= certificate.notValidBefore else { throw .notYetValid(notBefore: certificate.notValidBefore, now: time) }
        guard time <= certificate.notValidAfter else { throw .expired(notAfter: certificate.notValidAfter, now: time) }

        var serverNonce: ATLSNonce?
        var chosen: (validator: any EvidenceValidator, document: [UInt8])?
        for item in certificate.extensions {
            let arcs = item.oid.oidComponents
            if arcs == AttestedCertificate.serverNonceOID {
                serverNonce = try? ATLSNonce(bytes: Array(item.value))
            } else if chosen == nil, let validator = byOID[arcs] {
                chosen = (validator, Array(item.value))
            }
        }
        guard let chosen else {
            throw .noAttestation(extensionOIDs: certificate.extensions.map { $0.oid.description })
        }
        let evidence: ValidatedEvidence
        do {
            evidence = try chosen.validator.validate(document: chosen.document, nonce: nonce.bytes, at: time)
        } catch {
            let report: AttestationReport? = if case .refused(_, let report) = error { report } else { nil }
            throw .evidenceRefused(variant: chosen.validator.variant.name, reason: error.description, report: report)
        }
        let keyHash = AttestedCertificate.userData(for: key)
        guard evidence.userData == keyHash else { throw .userDataMismatch(expected: keyHash, actual: evidence.userData) }
        return ATLSPeerIdentity(
            variant: chosen.validator.variant, keyHash: keyHash, evidence: evidence, serverNonce: serverNonce,
            notAfter: certificate.notValidAfter
        )
    }
}
