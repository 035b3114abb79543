import AsterismTestSupport
import Crypto
import Foundation
import KeydCore
import SwiftASN1
import Testing
@_spi(FixedExpiryValidationTime) import X509
import _CryptoExtras

/// The kubelet CA in keyd: CSRs made with swift-certificates, issued certificates checked with its Verifier.
@Suite struct KubeletCertificateAuthorityTests {
    /// A CA key kind, as kubeadm may make one.
    enum CAKind: String, Sendable, CaseIterable {
        case rsa2048, p256, p384

        func makeKey() throws -> (key: Certificate.PrivateKey, pem: String) {
            switch self {
            case .rsa2048:
                let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
                return (Certificate.PrivateKey(key), key.pemRepresentation)
            case .p256:
                let key = P256.Signing.PrivateKey()
                return (Certificate.PrivateKey(key), key.pemRepresentation)
            case .p384:
                let key = P384.Signing.PrivateKey()
                return (Certificate.PrivateKey(key), key.pemRepresentation)
            }
        }
    }

    static let now = Date()
    static let node = try! KubernetesNodeName(validating: "worker-1")

    /// A CA of `kind`: the authority in keyd and the CA certificate.
    static func authority(_ kind: CAKind) throws -> (KubeletCertificateAuthority, Certificate) {
        let (key, pem) = try kind.makeKey()
        let certificate = try TestCertificates.selfSignedCA(key: key, now: now)
        let authority = try KubeletCertificateAuthority(
            certificatePEM: try certificate.serializeAsPEM().pemString,
            privateKeyPEM: SecretBytes(copying: Array(pem.utf8))
        )
        return (authority, certificate)
    }

    @Test(arguments: CAKind.allCases)
    func anIssuedCertificateVerifiesAgainstTheCA(kind: CAKind) async throws {
        let (authority, ca) = try Self.authority(kind)
        let kubeletKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let pem = try authority.signKubeletCSR(
            try TestCertificates.csr(try TestCertificates.kubeletSubject(), key: kubeletKey),
            nodeName: Self.node,
            now: Self.now
        )
        let issued = try Certificate(pemEncoded: String(decoding: pem, as: UTF8.self))
        #expect(issued.subject == (try TestCertificates.kubeletSubject()))
        #expect(issued.issuer == ca.subject)
        #expect(issued.publicKey == kubeletKey.publicKey)
        #expect(abs(issued.notValidBefore.timeIntervalSince(Self.now - 300)) < 1)
        #expect(issued.notValidAfter.timeIntervalSince(Self.now) <= 365 * 86400)
        #expect(issued.notValidAfter.timeIntervalSince(Self.now) > 364 * 86400)
        let extensions = issued.extensions
        #expect(try extensions.extendedKeyUsage == ExtendedKeyUsage([.clientAuth]))
        #expect(try extensions.keyUsage == KeyUsage(digitalSignature: true))
        #expect(try extensions.basicConstraints == .notCertificateAuthority)
        #expect(
            try extensions.authorityKeyIdentifier?.keyIdentifier == ca.extensions.subjectKeyIdentifier?.keyIdentifier
        )
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) {
            RFC5280Policy(fixedExpiryValidationTime: Self.now)
        }
        guard case .validCertificate = await verifier.validate(leaf: issued, intermediates: CertificateStore()) else {
            Issue.record("the issued certificate does not verify against the CA")
            return
        }
        // Two certificates for the same CSR differ in their random serials.
        let again = try Certificate(
            pemEncoded: String(
                decoding: try authority.signKubeletCSR(
                    try TestCertificates.csr(try TestCertificates.kubeletSubject(), key: kubeletKey),
                    nodeName: Self.node,
                    now: Self.now
                ),
                as: UTF8.self
            )
        )
        #expect(again.serialNumber != issued.serialNumber)
    }

    @Test func anRSAKubeletKeyAlsoGetsKeyEnciphermentAndPEMCSRsAreRead() throws {
        let (authority, _) = try Self.authority(.p256)
        let key = Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        let request = try CertificateSigningRequest(
            version: .v1,
            subject: try TestCertificates.kubeletSubject(),
            privateKey: key,
            attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .sha256WithRSAEncryption
        )
        let pem = Array(try request.serializeAsPEM().pemString.utf8)
        let issued = try Certificate(
            pemEncoded: String(
                decoding: try authority.signKubeletCSR(pem, nodeName: Self.node, now: Self.now),
                as: UTF8.self
            )
        )
        #expect(try issued.extensions.keyUsage == KeyUsage(digitalSignature: true, keyEncipherment: true))
    }

    @Test func theValidityEndsWithTheCA() throws {
        let key = P256.Signing.PrivateKey()
        let ca = try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(key), now: Self.now, days: 30)
        let authority = try KubeletCertificateAuthority(
            certificatePEM: try ca.serializeAsPEM().pemString,
            privateKeyPEM: SecretBytes(copying: Array(key.pemRepresentation.utf8))
        )
        let csr = try TestCertificates.csr(
            try TestCertificates.kubeletSubject(),
            key: Certificate.PrivateKey(P256.Signing.PrivateKey())
        )
        let issued = try Certificate(
            pemEncoded: String(
                decoding: try authority.signKubeletCSR(csr, nodeName: Self.node, now: Self.now),
                as: UTF8.self
            )
        )
        #expect(issued.notValidAfter == ca.notValidAfter)
        let expired = #expect(throws: CoreError.self) {
            try authority.signKubeletCSR(csr, nodeName: Self.node, now: Self.now + 31 * 86400)
        }
        #expect(expired?.message.contains("expired") == true)
    }

    /// (a CSR, what the refusal names)
    static func refusals() throws -> [([UInt8], String)] {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let good = try TestCertificates.csr(try TestCertificates.kubeletSubject(), key: key)
        let forged = try CertificateSigningRequest(
            version: .v1,
            subject: try TestCertificates.kubeletSubject(),
            publicKey: Certificate.PrivateKey(P256.Signing.PrivateKey()).publicKey,
            attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256,
            signature: try CertificateSigningRequest(derEncoded: good).signature
        )
        var serializer = DER.Serializer()
        try serializer.serialize(forged)
        return [
            (
                try TestCertificates.csr(try TestCertificates.kubeletSubject("worker-2"), key: key),
                "are not exactly 'system:node:worker-1'"
            ),
            (
                try TestCertificates.csr(
                    try DistinguishedName {
                        OrganizationName("system:nodes")
                        OrganizationName("system:masters")
                        CommonName("system:node:worker-1")
                    },
                    key: key
                ), "organizations"
            ),
            (
                try TestCertificates.csr(
                    try DistinguishedName {
                        OrganizationName("system:nodes")
                        CommonName("system:node:worker-1")
                        OrganizationalUnitName("extra")
                    },
                    key: key
                ), "an attribute other than O and CN"
            ),
            (
                try TestCertificates.csr(try DistinguishedName { CommonName("system:node:worker-1") }, key: key),
                "organizations []"
            ),
            (
                try TestCertificates.csr(try DistinguishedName { OrganizationName("system:nodes") }, key: key),
                "common names []"
            ),
            (serializer.serializedBytes, "signature does not verify"),
            (good + [0], "not a PKCS#10"),
            (Array(good.dropLast()), "not a PKCS#10"),
            ([UInt8](repeating: 0x30, count: KubeletCertificateAuthority.maximumCSRLength + 1), "exceeds limit"),
            (
                try TestCertificates.csr(
                    try TestCertificates.kubeletSubject(),
                    key: Certificate.PrivateKey(Curve25519.Signing.PrivateKey())
                ),
                "neither RSA nor ECDSA"
            ),
        ]
    }

    @Test func refusedCSRs() throws {
        let (authority, _) = try Self.authority(.p256)
        for (csr, reason) in try Self.refusals() {
            let error = #expect(throws: CoreError.self, "\(reason)") {
                try authority.signKubeletCSR(csr, nodeName: Self.node, now: Self.now)
            }
            #expect(error?.code == .kubeletCSRRefused)
            #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
        }
    }

    @Test func unusableAuthoritiesAreRefused() throws {
        let key = P256.Signing.PrivateKey()
        let ca = try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(key)).serializeAsPEM().pemString
        let notCA = try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(key), isCA: false)
            .serializeAsPEM().pemString
        let ed25519 = Curve25519.Signing.PrivateKey()
        let ed25519CA = try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(ed25519)).serializeAsPEM()
            .pemString
        let cases: [(String, String, String)] = [
            (ca, P256.Signing.PrivateKey().pemRepresentation, "does not belong to the CA certificate"),
            (notCA, key.pemRepresentation, "do not make it a CA"),
            ("junk", key.pemRepresentation, "not a PEM certificate"),
            (ca, "junk", "not a PEM private key"),
            (ed25519CA, ed25519.pemRepresentation, "neither RSA nor ECDSA"),
        ]
        for (certificate, privateKey, reason) in cases {
            let error = #expect(throws: CoreError.self, "\(reason)") {
                try KubeletCertificateAuthority(
                    certificatePEM: certificate,
                    privateKeyPEM: SecretBytes(copying: Array(privateKey.utf8))
                )
            }
            #expect(error?.code == .invalidKubernetesCA)
            #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
            // The key is never quoted.
            #expect(error?.description.contains("PRIVATE KEY") == false)
        }
    }
}
