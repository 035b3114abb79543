import AsterismTestSupport
import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import X509

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1, made with swift-certificates.
struct TestPKI {
    /// The CA the client trusts.
    let caCertificate: NIOSSLCertificate
    /// The fake API server's certificate.
    let serverCertificate: NIOSSLCertificate
    /// The fake API server's key.
    let serverKey: NIOSSLPrivateKey

    /// A new CA (P-256) and server certificate valid for a day.
    init() throws {
        let now = Date()
        let caKey = P256.Signing.PrivateKey()
        let ca = try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(caKey), name: "fake-kube-apiserver-ca")
        let serverKey = P256.Signing.PrivateKey()
        let server = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(serverKey.publicKey),
            notValidBefore: now - 3600,
            notValidAfter: now + 86400,
            issuer: ca.subject,
            subject: try DistinguishedName { CommonName("kube-apiserver") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([
                    .dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                ])
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey)
        )
        caCertificate = try NIOSSLCertificate(bytes: Array(try ca.serializeAsPEM().pemString.utf8), format: .pem)
        serverCertificate = try NIOSSLCertificate(
            bytes: Array(try server.serializeAsPEM().pemString.utf8),
            format: .pem
        )
        self.serverKey = try NIOSSLPrivateKey(bytes: Array(serverKey.pemRepresentation.utf8), format: .pem)
    }
}
