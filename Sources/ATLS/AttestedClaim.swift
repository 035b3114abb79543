import Attestation
import Crypto
import FoundationEssentials
import SwiftASN1
import X509

/// What an attested certificate claims, checked as far as the certificate itself goes: strict parse,
/// self-signature, validity, and a document of one of the accepted variants. The document is NOT
/// validated here: this is for a server whose evidence check belongs to someone else (the JoinService
/// hands the document and key hash to keyd's `key.release`, which verifies the quote against its own
/// challenge nonce and the key hash). The TLS handshake has proved possession of the certificate's key.
public struct AttestedClaim: Sendable {
    /// The variant of the document.
    public let variant: AttestationVariant
    /// The evidence document as the certificate carries it.
    public let document: [UInt8]
    /// SHA-256 of the certificate key's SubjectPublicKeyInfo.
    public let keyHash: [UInt8]
    /// The certificate's NotAfter.
    public let notAfter: Date

    /// Reads the claim of the DER certificate `der` at `time`, taking the first extension whose OID is
    /// one of `variants`.
    public init(certificateDER der: [UInt8], variants: [AttestationVariant], at time: Date) throws(ATLSError) {
        let peer = try PeerCertificate(der: der)
        try peer.checkSelfSignedAndValid(at: time)
        var found: (variant: AttestationVariant, document: ArraySlice<UInt8>)?
        for item in peer.certificate.extensions where found == nil {
            if let variant = variants.first(where: { (try? ASN1ObjectIdentifier(elements: $0.oid)) == item.oid }) {
                found = (variant, item.value)
            }
        }
        guard let found else {
            throw .noAttestation(extensionOIDs: peer.certificate.extensions.map(\.oid.description))
        }
        variant = found.variant
        document = Array(found.document)
        keyHash = Array(SHA256.hash(data: peer.subjectPublicKeyInfo))
        notAfter = peer.certificate.notValidAfter
    }
}
