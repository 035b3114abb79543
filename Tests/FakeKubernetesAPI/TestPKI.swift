import AsterismTestSupport
import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import X509

/// A test CA, a server certificate it signed for `localhost` and 127.0.0.1, and client certificates on demand, made
/// with swift-certificates. The one CA signs both, as kubeadm's cluster CA does.
struct TestPKI: Sendable {
    /// A client certificate and its key, in PEM as a kubeconfig carries them.
    struct ClientIdentity: Sendable {
        /// The certificate, PEM.
        var certificatePEM: String
        /// The P-256 key, PEM (PKCS#8).
        var keyPEM: String
    }

    /// The CA the client trusts and the fake checks client certificates against.
    let caCertificate: NIOSSLCertificate
    /// The same CA, for swift-certificates' verifier.
    let ca: Certificate
    /// The same CA, PEM.
    let caPEM: String
    /// The fake API server's certificate.
    let serverCertificate: NIOSSLCertificate
    /// The fake API server's key.
    let serverKey: NIOSSLPrivateKey
    /// The CA's key, which signs client certificates.
    private let caKey: P256.Signing.PrivateKey

    /// A new CA (P-256) and server certificate valid for a day.
    init() throws {
        caKey = P256.Signing.PrivateKey()
        ca = try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(caKey), name: "fake-kube-apiserver-ca")
        caPEM = try ca.serializeAsPEM().pemString
        let serverKey = P256.Signing.PrivateKey()
        let server = try Self.issue(
            subject: try DistinguishedName { CommonName("kube-apiserver") },
            key: serverKey,
            usage: .serverAuth,
            names: SubjectAlternativeNames([
                .dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
            ]),
            issuer: ca,
            issuerKey: caKey
        )
        caCertificate = try NIOSSLCertificate(bytes: Array(caPEM.utf8), format: .pem)
        serverCertificate = try NIOSSLCertificate(
            bytes: Array(try server.serializeAsPEM().pemString.utf8),
            format: .pem
        )
        self.serverKey = try NIOSSLPrivateKey(bytes: Array(serverKey.pemRepresentation.utf8), format: .pem)
    }

    /// A client certificate for `commonName` in group `organization`, signed by this CA, with a new key.
    func clientIdentity(
        commonName: String = "kubernetes-admin",
        organization: String = "system:masters"
    ) throws -> ClientIdentity {
        let key = P256.Signing.PrivateKey()
        let certificate = try Self.issue(
            subject: try DistinguishedName {
                OrganizationName(organization)
                CommonName(commonName)
            },
            key: key,
            usage: .clientAuth,
            names: nil,
            issuer: ca,
            issuerKey: caKey
        )
        return ClientIdentity(certificatePEM: try certificate.serializeAsPEM().pemString, keyPEM: key.pemRepresentation)
    }

    /// A leaf certificate for `key`, valid for a day, with `usage` as its only extended key usage.
    private static func issue(
        subject: DistinguishedName,
        key: P256.Signing.PrivateKey,
        usage: ExtendedKeyUsage.Usage,
        names: SubjectAlternativeNames?,
        issuer: Certificate,
        issuerKey: P256.Signing.PrivateKey
    ) throws -> Certificate {
        let now = Date()
        return try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now - 3600,
            notValidAfter: now + 86400,
            issuer: issuer.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([usage])
                if let names { names }
            },
            issuerPrivateKey: Certificate.PrivateKey(issuerKey)
        )
    }
}
