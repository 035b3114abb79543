import Crypto
import FoundationEssentials
import KeydProtocol
import SwiftASN1
import X509
import _CryptoExtras

/// The cluster's Kubernetes CA inside keyd: it signs a kubelet's client certificate only for the node
/// name the release's evidence bound, so trustd can never mint a node identity.
///
/// - Important: The CA's private key stays in this value (swift-crypto's storage); nothing here
///   returns or describes it.
public struct KubeletCertificateAuthority: Sendable {
    /// The largest CSR accepted, PEM or DER.
    public static let maximumCSRLength = 8192
    /// The longest validity of an issued certificate in seconds: 365 days.
    public static let maximumValidity: TimeInterval = 365 * 24 * 3600
    /// How far before `now` an issued certificate is valid, in seconds (clock skew between nodes).
    public static let backdating: TimeInterval = 5 * 60
    /// The organization every kubelet's certificate carries.
    public static let nodesOrganization = "system:nodes"
    /// The prefix of a kubelet's common name, before the node name.
    public static let nodeCommonNamePrefix = "system:node:"

    /// The CA certificate.
    public let certificate: Certificate
    private let privateKey: Certificate.PrivateKey
    private let signatureAlgorithm: Certificate.SignatureAlgorithm
    /// The CA's key identifier, the authority key identifier of every certificate it issues.
    private let keyIdentifier: ArraySlice<UInt8>

    /// Reads the CA as kubeadm writes it (`/etc/kubernetes/pki/ca.crt` and `ca.key`: PEM, an RSA key by
    /// default, or ECDSA P-256/P-384). The key PEM arrives in secret storage; parsing it makes transient
    /// copies inside swift-certificates that this code cannot wipe.
    /// - Throws: ``CoreError/Code/invalidKubernetesCA`` when either does not parse, the key is not the
    ///   certificate's, the certificate is no CA, or the key type is not supported.
    public init(certificatePEM: String, privateKeyPEM: borrowing SecretBytes) throws(CoreError) {
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw .invalidKubernetesCA("the CA certificate is not a PEM certificate")
        }
        let keyText = privateKeyPEM.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        do {
            privateKey = try Certificate.PrivateKey(pemEncoded: keyText)
        } catch {
            throw .invalidKubernetesCA("the CA key is not a PEM private key (PKCS#8, SEC1 or PKCS#1)")
        }
        guard privateKey.publicKey == certificate.publicKey else {
            throw .invalidKubernetesCA("the CA key does not belong to the CA certificate")
        }
        guard let algorithm = Self.signatureAlgorithm(for: privateKey.publicKey) else {
            throw .invalidKubernetesCA("the CA key is neither RSA nor ECDSA P-256/P-384")
        }
        signatureAlgorithm = algorithm
        let extensions = certificate.extensions
        guard case .isCertificateAuthority = try? extensions.basicConstraints else {
            throw .invalidKubernetesCA("the certificate's basic constraints do not make it a CA")
        }
        if let usage = try? extensions.keyUsage, !usage.keyCertSign {
            throw .invalidKubernetesCA("the certificate's key usage lacks keyCertSign")
        }
        keyIdentifier =
            (try? extensions.subjectKeyIdentifier)?.keyIdentifier
            ?? SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier
    }

    /// The signature algorithm for a CA key: SHA-256 with RSA or P-256, SHA-384 with P-384.
    private static func signatureAlgorithm(for key: Certificate.PublicKey) -> Certificate.SignatureAlgorithm? {
        if _RSA.Signing.PublicKey(key) != nil { return .sha256WithRSAEncryption }
        if P256.Signing.PublicKey(key) != nil { return .ecdsaWithSHA256 }
        if P384.Signing.PublicKey(key) != nil { return .ecdsaWithSHA384 }
        return nil
    }

    /// Issues the kubelet client certificate a CSR asks for, as PEM, when the CSR's signature verifies
    /// and its subject is exactly `O=system:nodes, CN=system:node:<nodeName>`: key usage
    /// digitalSignature (and keyEncipherment for an RSA key), extended key usage clientAuth, valid from
    /// five minutes before `now` for a year at most (never past the CA's own expiry), a random serial.
    /// - Important: Call it only for a granted release, with the node name its evidence bound.
    /// - Throws: ``CoreError/Code/kubeletCSRRefused`` naming the reason.
    public func signKubeletCSR(_ csr: [UInt8], nodeName: KubernetesNodeName, now: Date) throws(CoreError) -> [UInt8] {
        let request = try Self.parse(csr)
        guard request.publicKey.isValidSignature(request.signature, for: request) else {
            throw .kubeletCSRRefused("the CSR's signature does not verify with its key")
        }
        try Self.checkSubject(request.subject, nodeName: nodeName)
        let isRSA: Bool
        if let rsa = _RSA.Signing.PublicKey(request.publicKey) {
            guard rsa.keySizeInBits >= 2048 else {
                throw .kubeletCSRRefused("RSA key of \(rsa.keySizeInBits) bits is under 2048")
            }
            isRSA = true
        } else {
            guard P256.Signing.PublicKey(request.publicKey) != nil || P384.Signing.PublicKey(request.publicKey) != nil
            else {
                throw .kubeletCSRRefused("the CSR's key is neither RSA nor ECDSA P-256/P-384")
            }
            isRSA = false
        }
        // Whole seconds, as the certificate encodes them, so the validity never exceeds a year by a fraction.
        let start = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let notBefore = start - Self.backdating
        let notAfter = min(start + Self.maximumValidity, certificate.notValidAfter)
        guard notAfter > now else {
            throw .kubeletCSRRefused("the CA certificate expired at \(certificate.notValidAfter)")
        }
        do {
            let issued = try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: request.publicKey,
                notValidBefore: notBefore,
                notValidAfter: notAfter,
                issuer: certificate.subject,
                subject: request.subject,
                signatureAlgorithm: signatureAlgorithm,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true, keyEncipherment: isRSA))
                    try ExtendedKeyUsage([.clientAuth])
                    AuthorityKeyIdentifier(keyIdentifier: keyIdentifier)
                    SubjectKeyIdentifier(hash: request.publicKey)
                },
                issuerPrivateKey: privateKey
            )
            return Array(try issued.serializeAsPEM().pemString.utf8)
        } catch {
            throw .kubeletCSRRefused("the certificate could not be made (\(type(of: error)))")
        }
    }

    /// A PKCS#10 request from PEM (`CERTIFICATE REQUEST`) or DER bytes, read to the end.
    private static func parse(_ csr: [UInt8]) throws(CoreError) -> CertificateSigningRequest {
        guard csr.count <= maximumCSRLength else {
            throw .kubeletCSRRefused("CSR of \(csr.count) bytes exceeds limit \(maximumCSRLength)")
        }
        do {
            if csr.starts(with: Array("-----BEGIN".utf8)) {
                return try CertificateSigningRequest(pemEncoded: String(decoding: csr, as: UTF8.self))
            }
            return try CertificateSigningRequest(derEncoded: csr)
        } catch {
            throw .kubeletCSRRefused("not a PKCS#10 certificate request (PEM or DER)")
        }
    }

    /// Exactly two single-attribute RDNs, `O=system:nodes` and `CN=system:node:<nodeName>`, in either order.
    private static func checkSubject(_ subject: DistinguishedName, nodeName: KubernetesNodeName) throws(CoreError) {
        let expectedCommonName = nodeCommonNamePrefix + nodeName.text
        var organizations: [String] = []
        var commonNames: [String] = []
        for rdn in subject {
            guard rdn.count == 1, let attribute = rdn.first else {
                throw .kubeletCSRRefused("the subject has a multi-valued RDN")
            }
            guard let value = String(attribute.value) else {
                throw .kubeletCSRRefused("a subject attribute is not a string")
            }
            switch attribute.type {
            case .RDNAttributeType.organizationName: organizations.append(value)
            case .RDNAttributeType.commonName: commonNames.append(value)
            default: throw .kubeletCSRRefused("the subject has an attribute other than O and CN (\(attribute.type))")
            }
        }
        guard organizations == [nodesOrganization] else {
            throw .kubeletCSRRefused(
                "the subject's organizations \(organizations.map(quotedForMessage)) are not exactly '\(nodesOrganization)'"
            )
        }
        guard commonNames == [expectedCommonName] else {
            throw .kubeletCSRRefused(
                "the subject's common names \(commonNames.map(quotedForMessage)) are not exactly '\(expectedCommonName)'"
            )
        }
    }
}

extension CoreError.Code {
    /// The Kubernetes CA certificate or key is unusable.
    public static let invalidKubernetesCA = CoreError.Code("invalidKubernetesCA")
    /// A kubelet CSR was refused.
    public static let kubeletCSRRefused = CoreError.Code("kubeletCSRRefused")
}

extension CoreError {
    /// The Kubernetes CA is unusable; never names key material.
    static func invalidKubernetesCA(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidKubernetesCA, reason: "Kubernetes CA: \(reason)", file: file, line: line)
    }

    /// A kubelet CSR was refused; `reason` names the check.
    static func kubeletCSRRefused(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .kubeletCSRRefused, reason: "kubelet CSR: \(reason)", file: file, line: line)
    }
}
