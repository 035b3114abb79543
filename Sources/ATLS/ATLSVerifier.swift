import Attestation
import Crypto
import FoundationEssentials

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
    /// The validators by their OID's DER content octets, as certificates carry them.
    private let byOID: [[UInt8]: any EvidenceValidator]
    /// The DER content octets of ``AttestedCertificate/serverNonceOID``.
    private static let serverNonceOID = oidContent(AttestedCertificate.serverNonceOID) ?? []

    /// A verifier for these validators. A dummy validator is accepted only with
    /// `insecureAcceptDummy`, so no configuration selects it by accident.
    public init(validators: [any EvidenceValidator], insecureAcceptDummy: Bool = false) {
        let kept = validators.filter { insecureAcceptDummy || $0.variant != .dummy }
        self.validators = kept
        var byOID: [[UInt8]: any EvidenceValidator] = [:]
        for validator in kept {
            if let oid = Self.oidContent(validator.variant.oid), byOID[oid] == nil { byOID[oid] = validator }
        }
        self.byOID = byOID
    }

    /// Verifies the DER certificate `der` against `nonce` at `time`.
    public func verify(certificateDER der: [UInt8], nonce: ATLSNonce, at time: Date) throws(ATLSError) -> ATLSPeerIdentity {
        let certificate = try AttestedCertificateReader(der: der)
        let key: P256.Signing.PublicKey
        do {
            key = try P256.Signing.PublicKey(x963Representation: certificate.publicKey)
        } catch {
            throw .unsupportedKey("the public key is not a point on P-256")
        }
        guard certificate.issuer.elementsEqual(certificate.subject), Self.isSelfSigned(certificate, by: key) else {
            throw .badSelfSignature
        }
        guard time >= certificate.notBefore else { throw .notYetValid(notBefore: certificate.notBefore, now: time) }
        guard time <= certificate.notAfter else { throw .expired(notAfter: certificate.notAfter, now: time) }

        var serverNonce: ATLSNonce?
        var chosen: (validator: any EvidenceValidator, document: [UInt8])?
        for item in certificate.extensions {
            if item.oid.elementsEqual(Self.serverNonceOID) {
                serverNonce = try? ATLSNonce(bytes: Array(item.value))
            } else if chosen == nil, let validator = byOID[Array(item.oid)] {
                chosen = (validator, Array(item.value))
            }
        }
        guard let chosen else {
            throw .noAttestation(extensionOIDs: certificate.extensions.map { AttestedCertificateReader.dotted($0.oid) })
        }
        let evidence: ValidatedEvidence
        do {
            evidence = try chosen.validator.validate(document: chosen.document, nonce: nonce.bytes, at: time)
        } catch {
            let report: AttestationReport? = if case .refused(_, let report) = error { report } else { nil }
            throw .evidenceRefused(variant: chosen.validator.variant.name, reason: error.description, report: report)
        }
        // The reader accepts only the canonical P-256 SubjectPublicKeyInfo, so its bytes are what Go and
        // swift-crypto encode for this key.
        let keyHash = Array(SHA256.hash(data: certificate.subjectPublicKeyInfo))
        guard evidence.userData == keyHash else { throw .userDataMismatch(expected: keyHash, actual: evidence.userData) }
        return ATLSPeerIdentity(
            variant: chosen.validator.variant, keyHash: keyHash, evidence: evidence, serverNonce: serverNonce, notAfter: certificate.notAfter
        )
    }

    /// Whether the certificate's signature over its TBSCertificate verifies with its own key.
    private static func isSelfSigned(_ certificate: AttestedCertificateReader, by key: P256.Signing.PublicKey) -> Bool {
        guard let signature = try? P256.Signing.ECDSASignature(derRepresentation: certificate.signature) else { return false }
        switch certificate.signatureHash {
        case .sha256: return key.isValidSignature(signature, for: SHA256.hash(data: certificate.tbs))
        case .sha384: return key.isValidSignature(signature, for: SHA384.hash(data: certificate.tbs))
        case .sha512: return key.isValidSignature(signature, for: SHA512.hash(data: certificate.tbs))
        }
    }

    /// The DER content octets of the OID `arcs`; nil when it cannot be encoded.
    static func oidContent(_ arcs: [UInt]) -> [UInt8]? {
        guard let tlv = try? AttestedCertificateDER.objectIdentifier(arcs), tlv.count >= 2, tlv[1] < 0x80 else { return nil }
        return Array(tlv[2...])
    }
}
