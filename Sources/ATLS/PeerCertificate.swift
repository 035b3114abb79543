import Crypto
import FoundationEssentials
import SwiftASN1
import X509

/// A peer's certificate as swift-certificates parses it (strict DER through SwiftASN1: minimal lengths,
/// nothing after the certificate, valid times, duplicate extensions refused), with the few checks aTLS
/// needs on top of that parse: a P-256 key, ECDSA with SHA-2, the same signature algorithm inside and
/// outside the TBSCertificate, and the SubjectPublicKeyInfo in its canonical encoding.
struct PeerCertificate {
    /// The parsed certificate.
    let certificate: Certificate
    /// The SubjectPublicKeyInfo as sent, tag and length included; equal to its canonical DER.
    let subjectPublicKeyInfo: ArraySlice<UInt8>

    /// Parses `der`.
    /// - Throws: ``ATLSError/certificateUnreadable(_:)`` or ``ATLSError/unsupportedKey(_:)``.
    init(der: [UInt8]) throws(ATLSError) {
        let certificate: Certificate
        do {
            certificate = try Certificate(derEncoded: der)
        } catch let error as CertificateError where error.code == .unsupportedPublicKeyAlgorithm {
            throw .unsupportedKey("\(error)")
        } catch {
            throw .certificateUnreadable("\(error)")
        }
        self.certificate = certificate
        // Constellation's certificates are P-256 with ECDSA-SHA256; the library also reads RSA, P-384,
        // P-521 and Ed25519, which no attested certificate uses.
        guard let key = P256.Signing.PublicKey(certificate.publicKey) else {
            throw .unsupportedKey(String(describing: certificate.publicKey))
        }
        guard let algorithm = Self.signatureAlgorithms.first(where: { $0.algorithm == certificate.signatureAlgorithm })
        else {
            throw .unsupportedKey("signature algorithm \(certificate.signatureAlgorithm), not ECDSA with SHA-2")
        }
        let (innerAlgorithm, spki) = try Self.signatureAlgorithmAndKey(in: certificate.tbsCertificateBytes)
        // RFC 5280 §4.1.1.2: the signed copy of the algorithm must equal the unsigned one. swift-certificates
        // verifies with the outer one and does not compare them.
        guard innerAlgorithm == algorithm.oid else {
            throw .certificateUnreadable("the TBSCertificate's signature algorithm differs from the certificate's")
        }
        // The evidence binds SHA-256 of the SubjectPublicKeyInfo: the key hash is over the bytes as sent,
        // and any encoding but the canonical one is refused (the library accepts, say, a BIT STRING that
        // declares unused bits, and re-encodes the key), so every verifier (Go re-encodes the key) hashes the same bytes.
        guard spki.elementsEqual(key.derRepresentation) else {
            throw .certificateUnreadable("the SubjectPublicKeyInfo is not the canonical DER of its key")
        }
        subjectPublicKeyInfo = spki
    }

    /// Whether the certificate's signature over its TBSCertificate verifies with its own key.
    var isSelfSigned: Bool { certificate.publicKey.isValidSignature(certificate.signature, for: certificate) }

    /// Throws unless the certificate is its own issuer, validly self-signed, and valid at `time`.
    func checkSelfSignedAndValid(at time: Date) throws(ATLSError) {
        guard certificate.issuer == certificate.subject, isSelfSigned else { throw .badSelfSignature }
        guard time >= certificate.notValidBefore else {
            throw .notYetValid(notBefore: certificate.notValidBefore, now: time)
        }
        guard time <= certificate.notValidAfter else { throw .expired(notAfter: certificate.notValidAfter, now: time) }
    }

    /// ECDSA with SHA-256, -384 or -512 and their OIDs (RFC 5758: no parameters).
    private static let signatureAlgorithms: [(algorithm: Certificate.SignatureAlgorithm, oid: ASN1ObjectIdentifier)] = [
        (.ecdsaWithSHA256, [1, 2, 840, 10045, 4, 3, 2]), (.ecdsaWithSHA384, [1, 2, 840, 10045, 4, 3, 3]),
        (.ecdsaWithSHA512, [1, 2, 840, 10045, 4, 3, 4]),
    ]

    /// The OID of the TBSCertificate's `signature` AlgorithmIdentifier (which must have no parameters) and
    /// the `subjectPublicKeyInfo` as sent (RFC 5280 §4.1).
    private static func signatureAlgorithmAndKey(
        in tbs: ArraySlice<UInt8>
    ) throws(ATLSError) -> (ASN1ObjectIdentifier, ArraySlice<UInt8>) {
        do {
            return try DER.sequence(try DER.parse(tbs), identifier: .sequence) { nodes in
                var field = nodes.next()
                if field?.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
                    field = nodes.next()
                }  // version
                // field is the serialNumber; then signature, issuer, validity, subject, subjectPublicKeyInfo.
                guard field != nil, let algorithm = nodes.next(), nodes.next() != nil, nodes.next() != nil,
                    nodes.next() != nil,
                    let key = nodes.next()
                else { throw ASN1Error.invalidASN1Object(reason: "TBSCertificate lacks fields") }
                while nodes.next() != nil {}
                let oid = try DER.sequence(algorithm, identifier: .sequence) {
                    try ASN1ObjectIdentifier(derEncoded: &$0)
                }
                return (oid, key.encodedBytes)
            }
        } catch {
            throw .certificateUnreadable("\(error)")
        }
    }
}
