import Crypto
import Foundation
import SwiftASN1
import X509
import _CryptoExtras

/// Self-signed CA certificates and kubelet CSRs made in tests with swift-certificates.
public enum TestCertificates {
    /// A CA certificate for `key`, valid from an hour before `now` for `days`, named `name`.
    public static func selfSignedCA(
        key: Certificate.PrivateKey,
        name: String = "kubernetes",
        now: Date = Date(),
        days: Double = 3650,
        isCA: Bool = true
    ) throws -> Certificate {
        let subject = try DistinguishedName { CommonName(name) }
        return try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: key.publicKey,
            notValidBefore: now - 3600,
            notValidAfter: now + days * 86400,
            issuer: subject,
            subject: subject,
            signatureAlgorithm: signatureAlgorithm(for: key),
            extensions: try Certificate.Extensions {
                Critical(
                    isCA ? BasicConstraints.isCertificateAuthority(maxPathLength: nil) : .notCertificateAuthority
                )
                Critical(KeyUsage(digitalSignature: true, keyCertSign: isCA))
                SubjectKeyIdentifier(hash: key.publicKey)
            },
            issuerPrivateKey: key
        )
    }

    /// SHA-256 with RSA or P-256, SHA-384 with P-384, Ed25519.
    public static func signatureAlgorithm(for key: Certificate.PrivateKey) -> Certificate.SignatureAlgorithm {
        if Curve25519.Signing.PublicKey(key.publicKey) != nil { return .ed25519 }
        if P384.Signing.PublicKey(key.publicKey) != nil { return .ecdsaWithSHA384 }
        if _RSA.Signing.PublicKey(key.publicKey) != nil { return .sha256WithRSAEncryption }
        return .ecdsaWithSHA256
    }

    /// A DER CSR signed by `key` for `subject`.
    public static func csr(_ subject: DistinguishedName, key: Certificate.PrivateKey) throws -> [UInt8] {
        let request = try CertificateSigningRequest(
            version: .v1,
            subject: subject,
            privateKey: key,
            attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: signatureAlgorithm(for: key)
        )
        var serializer = DER.Serializer()
        try serializer.serialize(request)
        return serializer.serializedBytes
    }

    /// The subject a kubelet's client certificate must have: `O=system:nodes, CN=system:node:<name>`.
    public static func kubeletSubject(_ name: String = "worker-1") throws -> DistinguishedName {
        try DistinguishedName {
            OrganizationName("system:nodes")
            CommonName("system:node:\(name)")
        }
    }
}
