import Attestation
import Crypto
import FoundationEssentials
import SwiftASN1
import X509

/// Constellation's attested certificate: self-signed, ECDSA P-256, CN `Constellation`, random 128-bit
/// serial, valid from two hours before to two hours after issuing, no key usage, EKU or SANs, and the
/// evidence document as one non-critical extension whose OID names the variant.
public enum AttestedCertificate {
    /// The subject and issuer common name.
    public static let commonName = "Constellation"
    /// How far NotBefore and NotAfter lie from the issuing time.
    public static let validityMargin: TimeInterval = 2 * 3600
    /// Asterism's extension carrying the server's nonce for a Swift client's own attestation (mutual
    /// aTLS): its value is the 32 nonce bytes. Go clients read the nonce from the CA name list instead.
    public static let serverNonceOID: [UInt] = [1, 3, 9900, 77, 2]
    /// The largest evidence document a certificate may carry (matches keyd's answer limit).
    public static let maxDocumentBytes = 253_952

    /// The user data an attested certificate binds: SHA-256 of the key's DER SubjectPublicKeyInfo.
    public static func userData(for key: P256.Signing.PublicKey) -> [UInt8] {
        Array(SHA256.hash(data: key.derRepresentation))
    }

    /// A DER certificate for `key` carrying `document` under `variant`'s OID, and the server's nonce
    /// when given. Written by swift-certificates (Go's x509 writes the same layout for these fields).
    public static func make(
        key: P256.Signing.PrivateKey,
        variant: AttestationVariant,
        document: [UInt8],
        serverNonce: ATLSNonce? = nil,
        now: Date
    ) throws(ATLSError) -> [UInt8] {
        guard document.count <= maxDocumentBytes else {
            throw .issuingFailed("evidence document of \(document.count) bytes exceeds \(maxDocumentBytes)")
        }
        do {
            var extensions = [
                Certificate.Extension(
                    oid: try ASN1ObjectIdentifier(elements: variant.oid),
                    critical: false,
                    value: document[...]
                )
            ]
            if let serverNonce {
                extensions.append(
                    Certificate.Extension(oid: serverNonceIdentifier, critical: false, value: serverNonce.bytes[...])
                )
            }
            return try selfSigned(
                key: Certificate.PrivateKey(key),
                publicKey: Certificate.PublicKey(key.publicKey),
                name: name,
                extensions: Certificate.Extensions(extensions),
                now: now
            )
        } catch {
            throw .issuingFailed("certificate encoding: \(error)")
        }
    }

    /// A throwaway self-signed certificate named `CN=<base64 nonce>`, valid like an attested one: a
    /// mutual server loads it as its one trust root so that its CertificateRequest lists the nonce as
    /// the CA name Go clients read. It certifies nothing and nothing trusts it (client certificates
    /// are checked by the aTLS verifier alone).
    public static func nonceNameCertificate(_ nonce: ATLSNonce, now: Date) throws(ATLSError) -> [UInt8] {
        do {
            let name = try DistinguishedName { CommonName(nonce.base64) }
            return try selfSigned(
                key: nonceNameKey,
                publicKey: nonceNameKey.publicKey,
                name: name,
                extensions: Certificate.Extensions(),
                now: now
            )
        } catch {
            throw .issuingFailed("the nonce-name certificate: \(error)")
        }
    }

    /// The DER of a v3 certificate issued by and to `name`, random serial, valid ±``validityMargin``
    /// around `now`, ECDSA with SHA-256.
    private static func selfSigned(
        key: Certificate.PrivateKey,
        publicKey: Certificate.PublicKey,
        name: DistinguishedName,
        extensions: Certificate.Extensions,
        now: Date
    ) throws -> [UInt8] {
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(bytes: randomSerial()),
            publicKey: publicKey,
            notValidBefore: now - validityMargin,
            notValidAfter: now + validityMargin,
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: key
        )
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    /// `CN=Constellation`.
    private static let name: DistinguishedName = {
        guard let name = try? DistinguishedName(builder: { CommonName(commonName) }) else {
            preconditionFailure("CN=\(commonName) is not encodable")
        }
        return name
    }()
    /// ``serverNonceOID`` as SwiftASN1 holds it.
    static let serverNonceIdentifier: ASN1ObjectIdentifier = {
        guard let oid = try? ASN1ObjectIdentifier(elements: serverNonceOID) else {
            preconditionFailure("serverNonceOID is not encodable")
        }
        return oid
    }()
    /// Signs the nonce-name certificates; one per process, certifying nothing.
    private static let nonceNameKey = Certificate.PrivateKey(newKey())

    /// A new P-256 certificate key from 32 random bytes (retried in the ~2^-32 case that they are not
    /// below the group order). `P256.Signing.PrivateKey()` also runs BoringSSL's FIPS pairwise test,
    /// a signature and its verification, which costs several times the key itself on every fresh-key
    /// handshake; the scalar comes from the same system CSPRNG either way.
    static func newKey() -> P256.Signing.PrivateKey {
        for _ in 0..<16 {
            if let key = try? P256.Signing.PrivateKey(rawRepresentation: SymmetricKey(size: .bits256)) { return key }
        }
        return P256.Signing.PrivateKey(compactRepresentable: false)
    }

    /// 128 random bits, as a positive DER INTEGER's content (a leading zero when the top bit is set).
    static func randomSerial() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(17)
        for _ in 0..<2 { withUnsafeBytes(of: generator.next() as UInt64) { bytes.append(contentsOf: $0) } }
        if bytes[0] == 0 { bytes[0] = 1 }
        return bytes[0] & 0x80 != 0 ? [0] + bytes : bytes
    }
}

/// A certificate key and the attested certificate made for it, ready to hand to TLS.
public struct AttestedCredential: Sendable {
    /// The certificate, DER.
    public let certificateDER: [UInt8]
    /// The key the certificate certifies.
    public let privateKey: P256.Signing.PrivateKey
    /// SHA-256 of the key's SubjectPublicKeyInfo, which the evidence binds.
    public let keyHash: [UInt8]
}

/// Makes attested certificates with an evidence issuer: a fresh key per certificate, or one key kept
/// for the issuer's life with a fresh certificate (and evidence) each time.
public struct AttestedCertificateIssuer: Sendable {
    /// Where certificate keys come from.
    public enum KeyMode: Sendable, Equatable {
        /// A new P-256 key for every certificate.
        case freshPerCertificate
        /// One key, made when the issuer is made; every certificate still gets fresh evidence.
        case cached
    }

    /// The evidence issuer (a TPM quote through keyd, or a test issuer).
    public let evidence: any EvidenceIssuer
    /// The key mode.
    public let keyMode: KeyMode
    private let cachedKey: P256.Signing.PrivateKey?
    private let cachedKeyHash: [UInt8]

    public init(evidence: any EvidenceIssuer, keyMode: KeyMode) {
        self.evidence = evidence
        self.keyMode = keyMode
        if keyMode == .cached {
            let key = AttestedCertificate.newKey()
            cachedKey = key
            cachedKeyHash = AttestedCertificate.userData(for: key.publicKey)
        } else {
            cachedKey = nil
            cachedKeyHash = []
        }
    }

    /// The variant of the certificates this issuer makes.
    public var variant: AttestationVariant { evidence.variant }

    /// A certificate whose evidence binds its key to `nonce`. Blocks while the evidence is made.
    public func issue(
        nonce: ATLSNonce,
        serverNonce: ATLSNonce? = nil,
        now: Date = Date()
    ) throws(ATLSError) -> AttestedCredential {
        let key: P256.Signing.PrivateKey
        let keyHash: [UInt8]
        if let cachedKey {
            key = cachedKey
            keyHash = cachedKeyHash
        } else {
            key = AttestedCertificate.newKey()
            keyHash = AttestedCertificate.userData(for: key.publicKey)
        }
        let document: [UInt8]
        do {
            document = try evidence.issue(userData: keyHash, nonce: nonce.bytes)
        } catch {
            throw .issuingFailed("\(evidence.variant.name) evidence: \(error)")
        }
        let der = try AttestedCertificate.make(
            key: key,
            variant: evidence.variant,
            document: document,
            serverNonce: serverNonce,
            now: now
        )
        return AttestedCredential(certificateDER: der, privateKey: key, keyHash: keyHash)
    }
}
