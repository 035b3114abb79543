import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import KeydCore
import KeydPlatform
import KeydProtocol
import Testing
import X509

@testable import KeydDaemon

/// `key.release` in process, against a software AK on the policy's allow-list: the envelope opens
/// with the joining node's boot key and holds the keys derived independently here; the kubelet
/// certificate is signed only for the node name the evidence bound, and only with a CA configured.
@Suite struct InProcessReleaseTests {
    /// A keyd holding `secret`'s KEK and a policy (signed by a pinned Ed25519 key) trusting `issuer`'s AK.
    static func servingKeyd(
        _ secret: KnownSecret,
        issuer: SoftwareTPMEvidenceIssuer,
        settings: ReleaseSettings = ReleaseSettings(),
        revokedDisks: Set<DiskUUID> = []
    ) throws -> InProcessKeyd {
        let keyd = try InProcessKeyd(settings: settings)
        let operatorKey = Curve25519.Signing.PrivateKey()
        let pin = try keyd.perform(.operatorKeyPin(operatorKey: OperatorKey(operatorKey.publicKey).encoded))
        #expect(pin.status == .ok)
        #expect(try keyd.importKEK(secret).status == .ok)
        let policy = try MeasurementPolicy(
            version: 1,
            measurements: Measurements([15: .init(value: issuer.pcrs[15] ?? [])]),
            allowedAKDigests: [issuer.akDigest],
            revokedDiskUUIDs: revokedDisks
        )
        let signature = try operatorKey.signature(for: SignedPolicy.signedMessage(policy.json))
        let signed = SignedPolicy(policy: policy.json, signature: Array(signature)).encoded
        #expect(try keyd.perform(.policySet(signedPolicy: signed)).status == .ok)
        return keyd
    }

    /// One joining node's request: a challenge from `keyd`, evidence from `issuer` bound to it.
    static func request(
        _ keyd: InProcessKeyd,
        issuer: SoftwareTPMEvidenceIssuer,
        bootKey: borrowing BootKey,
        uuid: String = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
        role: NodeRole = .worker,
        nodeName: String = "worker-1",
        csr: [UInt8] = []
    ) throws -> KeyReleaseRequest {
        let challenge = try keyd.perform(.challengeIssue(.join), as: keyd.trustd)
            .decodePayload(.challengeIssue, ChallengeAnswer.read)
        let keyHash = [UInt8](repeating: 7, count: 32)
        let claims = try JoinClaims(
            nonce: challenge.nonce,
            certificateKeyHash: keyHash,
            bootPublicKey: bootKey.publicKey,
            diskUUID: try DiskUUID(validating: uuid),
            role: role,
            nodeName: try KubernetesNodeName(validating: nodeName)
        )
        let evidence = try issuer.issueNative(
            qualifyingData: JoinBinding.qualifyingData(claims),
            userDataDigest: keyHash
        )
        return KeyReleaseRequest(
            challengeID: challenge.challengeID,
            evidence: evidence,
            certificateKeyHash: keyHash,
            bootPublicKey: bootKey.publicKey,
            diskUUID: uuid,
            role: role,
            nodeName: nodeName,
            kubeletCSR: csr
        )
    }

    /// A kubelet CA: the settings keyd loads and the CA certificate.
    static func kubeletCA() throws -> (ReleaseSettings, Certificate) {
        let key = P256.Signing.PrivateKey()
        let certificate = try TestCertificates.selfSignedCA(key: Certificate.PrivateKey(key))
        var settings = ReleaseSettings()
        settings.kubeletCA = try KubeletCertificateAuthority(
            certificatePEM: try certificate.serializeAsPEM().pemString,
            privateKeyPEM: SecretBytes(copying: Array(key.pemRepresentation.utf8))
        )
        return (settings, certificate)
    }

    @Test(arguments: [NodeRole.worker, .controlPlane])
    func grantedReleaseSealsTheDerivedKeysToTheBoundBootKey(role: NodeRole) throws {
        let secret = KnownSecret()
        let issuer = SoftwareTPMEvidenceIssuer(format: .native)
        let keyd = try Self.servingKeyd(secret, issuer: issuer)
        let bootKey = BootKey()
        let request = try Self.request(keyd, issuer: issuer, bootKey: bootKey, role: role)
        let answer = try keyd.perform(.keyRelease(request), as: keyd.trustd)
        #expect(answer.status == .ok)
        let release = try answer.decodePayload(.keyRelease, KeyReleaseAnswer.read)
        #expect(release.kubeletCertificate.isEmpty)
        let opened = try KeyEnvelope.open(release.envelope, with: bootKey)
        let expected = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: secret.master),
            salt: secret.salt,
            info: Array("key-\(request.diskUUID)".utf8),
            outputByteCount: 32
        )
        #expect(opened.keys.diskKey.withUnsafeBytes { Array($0) } == expected.withUnsafeBytes { Array($0) })
        #expect(opened.keys.carriesKEK == (role == .controlPlane))
        #expect(opened.binding.nodeName.text == "worker-1" && opened.binding.challengeID == request.challengeID)
        // The envelope and the audit record hold no key bytes; the record names the release.
        let diskKey = opened.keys.diskKey.withUnsafeBytes { Array($0) }
        #expect(!release.envelope.contains(diskKey) && !release.envelope.contains(secret.master))
        let record = try #require(keyd.auditLines.last { $0.contains(#""event":"key.release""#) })
        #expect(record.contains(#""decision":"granted""#) && record.contains(hex(issuer.akDigest)))
        #expect(record.contains(request.diskUUID) && record.contains(hex(request.challengeID)))
        #expect(!record.contains(hex(diskKey)) && !record.contains(hex(secret.master)))
        // Used once.
        let replay = try keyd.perform(.keyRelease(request), as: keyd.trustd)
        #expect(replay.status == .challengeUnknown && replay.payload.isEmpty)
        #expect(keyd.auditLines.last?.contains("used") == true)
    }

    @Test func kubeletCertificateIsSignedOnlyForTheBoundNodeName() throws {
        let secret = KnownSecret()
        let issuer = SoftwareTPMEvidenceIssuer(format: .native)
        let (settings, caCertificate) = try Self.kubeletCA()
        let keyd = try Self.servingKeyd(secret, issuer: issuer, settings: settings)
        let bootKey = BootKey()
        let kubeletKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let csr = try TestCertificates.csr(try TestCertificates.kubeletSubject("worker-1"), key: kubeletKey)
        let granted = try keyd.perform(
            .keyRelease(try Self.request(keyd, issuer: issuer, bootKey: bootKey, csr: csr)),
            as: keyd.trustd
        )
        let release = try granted.decodePayload(.keyRelease, KeyReleaseAnswer.read)
        let certificate = try Certificate(pemEncoded: String(decoding: release.kubeletCertificate, as: UTF8.self))
        #expect(certificate.subject == (try TestCertificates.kubeletSubject("worker-1")))
        #expect(certificate.issuer == caCertificate.subject && certificate.publicKey == kubeletKey.publicKey)
        // A CSR for another node than the evidence binds: no certificate and no envelope.
        let foreign = try TestCertificates.csr(try TestCertificates.kubeletSubject("worker-2"), key: kubeletKey)
        let refused = try keyd.perform(
            .keyRelease(try Self.request(keyd, issuer: issuer, bootKey: bootKey, csr: foreign)),
            as: keyd.trustd
        )
        #expect(refused.status == .invalidArgument && refused.payload.isEmpty)
        #expect(keyd.auditLines.last?.contains("system:node:worker-1") == true)
        // Without a configured CA keyd mints no node identity.
        let noCA = try Self.servingKeyd(secret, issuer: issuer)
        let unsigned = try noCA.perform(
            .keyRelease(try Self.request(noCA, issuer: issuer, bootKey: bootKey, csr: csr)),
            as: noCA.trustd
        )
        #expect(unsigned.status == .invalidArgument && unsigned.payload.isEmpty)
        #expect(noCA.auditLines.last?.contains("no Kubernetes CA is configured") == true)
    }

    @Test func kubernetesCAIsConfiguredWholeOrKeydDoesNotStart() throws {
        var configuration = KeydConfiguration()
        configuration.kubernetesCACertificate = "/etc/kubernetes/pki/ca.crt"
        let half = #expect(throws: KeydError.self) { try ReleaseSettings.load(configuration) }
        #expect(half?.description.contains("set together or not at all") == true)
        configuration.kubernetesCAKey = "/nonexistent/ca.key"
        configuration.kubernetesCACertificate = "/nonexistent/ca.crt"
        let missing = #expect(throws: KeydError.self) { try ReleaseSettings.load(configuration) }
        #expect(missing?.description.contains("/nonexistent/ca.crt") == true)
        #expect(try ReleaseSettings.load(KeydConfiguration()).kubeletCA == nil)
    }

    @Test func noPolicyMeansNoReleaseAndARevokedDiskGetsNothing() throws {
        let issuer = SoftwareTPMEvidenceIssuer(format: .native)
        let keyd = try InProcessKeyd()
        #expect(try keyd.importKEK(KnownSecret()).status == .ok)
        let bootKey = BootKey()
        let answer = try keyd.perform(
            .keyRelease(try Self.request(keyd, issuer: issuer, bootKey: bootKey)),
            as: keyd.trustd
        )
        #expect(answer.status == .policyMissing && answer.payload.isEmpty)
        let uuid = "7a1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
        let revoking = try Self.servingKeyd(
            KnownSecret(),
            issuer: issuer,
            revokedDisks: [try DiskUUID(validating: uuid)]
        )
        let revoked = try revoking.perform(
            .keyRelease(try Self.request(revoking, issuer: issuer, bootKey: bootKey, uuid: uuid)),
            as: revoking.trustd
        )
        #expect(revoked.status == .revoked && revoked.payload.isEmpty)
        #expect(revoking.auditLines.last?.contains("is revoked by policy version 1") == true)
    }
}

/// Lowercase hex.
private func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

extension Array where Element == UInt8 {
    /// Whether `needle` occurs as a contiguous run.
    fileprivate func contains(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        return (0...(count - needle.count)).contains { self[$0..<($0 + needle.count)].elementsEqual(needle) }
    }
}
