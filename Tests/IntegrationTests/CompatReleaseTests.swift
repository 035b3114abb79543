import Attestation
import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `compat.release`: keys in plain for Constellation's bootstrapper, only when configured, only for
/// Constellation-format evidence bound as Constellation binds it, audited as a compatibility release.
@Suite(.serialized) struct CompatReleaseTests {
    /// keyd on `tpm` with Constellation compatibility `enabled`, holding the KEK of `secret` and a policy
    /// that allow-lists its own AK for `variants`; returns keyd and the AK digest.
    static func keyd(
        _ tpm: SoftwareTPM,
        enabled: Bool,
        secret: Data,
        variants: [String] = ["qemu-vtpm"]
    ) throws -> KeydHarness {
        let keyd = try KeydHarness(configuration: [
            "tpm-tcti = \(tpm.tcti)", "trustd-uids = \(geteuid())", "constellation-compatibility = \(enabled)",
        ])
        let trustd = try KeydConnection(path: keyd.socketPath)
        let probe = try trustd.call(
            .evidenceIssue(
                EvidenceRequest(
                    variant: .constellationQEMUVTPM,
                    nonce: Self.random(32),
                    userDataDigest: Self.random(32)
                )
            )
        )
        .decodePayload(.evidenceIssue, EvidenceAnswer.read)
        let document = try Attestation.ConstellationVTPMDocument(json: probe.document)
        let akDigest = try TPMTPublic(anyEncoding: document.akPublic).keyDigest()
        let operatorKey = Curve25519.Signing.PrivateKey()
        let variantList = variants.map { "\"\($0)\"" }.joined(separator: ",")
        let json = Array(
            #"{"version":1,"measurements":{},"akTrust":{"allowedDigests":["\#(hex(akDigest))"]},"evidenceVariants":[\#(variantList)]}"#
                .utf8
        )
        let signed = SignedPolicy(
            policy: json,
            signature: Array(try operatorKey.signature(for: SignedPolicy.signedMessage(json)))
        )
        let admin = try keyd.admin()
        _ = try admin.call(.operatorKeyPin(operatorKey: OperatorKey(operatorKey.publicKey).encoded))
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: secret).status == 0)
        _ = try admin.call(.policySet(signedPolicy: signed.encoded))
        return keyd
    }

    static func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

    /// A challenge from `keyd` and Constellation evidence bound to its nonce and `certificateKeyHash`.
    static func evidence(
        _ keyd: KeydHarness,
        certificateKeyHash: [UInt8],
        variant: EvidenceVariant = .constellationQEMUVTPM
    ) throws -> (challenge: ChallengeAnswer, document: [UInt8]) {
        let trustd = try KeydConnection(path: keyd.socketPath)
        let challenge = try trustd.call(.challengeIssue(.join)).decodePayload(.challengeIssue, ChallengeAnswer.read)
        let evidence = try trustd.call(
            .evidenceIssue(
                EvidenceRequest(variant: variant, nonce: challenge.nonce, userDataDigest: certificateKeyHash)
            )
        )
        .decodePayload(.evidenceIssue, EvidenceAnswer.read)
        return (challenge, evidence.document)
    }

    @Test(.needsSwtpm) func configuredKeydReleasesTheDerivedKeysInPlainAndAuditsTheCompatibilityUse() throws {
        let tpm = try SoftwareTPM()
        try withExtendedLifetime(tpm) {
            let secret = masterSecretJSON()
            let keyd = try Self.keyd(tpm, enabled: true, secret: secret)
            let fields = try JSONSerialization.jsonObject(with: secret) as? [String: String]
            let master = try #require(Data(base64Encoded: fields?["key"] ?? ""))
            let salt = try #require(Data(base64Encoded: fields?["salt"] ?? ""))
            let uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
            let keyHash = Self.random(32)
            for role in [NodeRole.worker, .controlPlane] {
                let (challenge, document) = try Self.evidence(keyd, certificateKeyHash: keyHash)
                let request = CompatReleaseRequest(
                    challengeID: challenge.challengeID,
                    evidence: document,
                    certificateKeyHash: keyHash,
                    diskUUID: uuid,
                    role: role,
                    nodeName: "worker-7"
                )
                let answer = try KeydConnection(path: keyd.socketPath).call(.compatRelease(request))
                let keys = try answer.decodePayload(.compatRelease, CompatReleaseAnswer.read)
                func bytes(_ field: SecretField) -> [UInt8] {
                    Array(answer.payload[field.offset..<(field.offset + field.count)])
                }
                let expected = HKDF<SHA256>.deriveKey(
                    inputKeyMaterial: SymmetricKey(data: master),
                    salt: salt,
                    info: Array("key-\(uuid)".utf8),
                    outputByteCount: 32
                )
                #expect(bytes(keys.diskKey) == expected.withUnsafeBytes { Array($0) })
                #expect(bytes(keys.masterSecret) == (role == .controlPlane ? Array(master) : []))
                #expect(bytes(keys.salt) == (role == .controlPlane ? Array(salt) : []))
                let record = try #require(keyd.auditLines.last { $0.contains(#""event":"compat.release""#) })
                #expect(record.contains(#""decision":"granted""#) && record.contains("keys released in plain"))
                // The record names the release, never a key.
                #expect(!record.contains(hex(bytes(keys.diskKey))) && !record.contains(hex(Array(master))))
                // The challenge is used up.
                let replay = try KeydConnection(path: keyd.socketPath).roundTrip(.compatRelease(request))
                #expect(replay.status == .challengeUnknown && replay.payload.isEmpty)
            }
            // Native evidence (the generic binding) never satisfies a compatibility release.
            let (challenge, native) = try Self.evidence(keyd, certificateKeyHash: keyHash, variant: .native)
            let refused = try KeydConnection(path: keyd.socketPath).roundTrip(
                .compatRelease(
                    CompatReleaseRequest(
                        challengeID: challenge.challengeID,
                        evidence: native,
                        certificateKeyHash: keyHash,
                        diskUUID: uuid,
                        role: .worker,
                        nodeName: "worker-7"
                    )
                )
            )
            #expect(refused.status == .evidenceRejected && refused.payload.isEmpty)
            let record = try #require(keyd.auditLines.last { $0.contains(#""event":"compat.release""#) })
            #expect(record.contains("not a Constellation qemu-vtpm document"), "\(record)")
        }
    }

    @Test(.needsSwtpm) func unconfiguredKeydAnswersUnsupportedAndKeepsTheChallenge() throws {
        let tpm = try SoftwareTPM()
        try withExtendedLifetime(tpm) {
            let keyd = try Self.keyd(tpm, enabled: false, secret: masterSecretJSON())
            let keyHash = Self.random(32)
            let (challenge, document) = try Self.evidence(keyd, certificateKeyHash: keyHash)
            let request = CompatReleaseRequest(
                challengeID: challenge.challengeID,
                evidence: document,
                certificateKeyHash: keyHash,
                diskUUID: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
                role: .controlPlane,
                nodeName: "cp-0"
            )
            let answer = try KeydConnection(path: keyd.socketPath).roundTrip(.compatRelease(request))
            #expect(answer.status == .unsupported && answer.payload.isEmpty)
            // Constellation's evidence never satisfies the sealed release either.
            let sealed = try KeydConnection(path: keyd.socketPath).roundTrip(
                .keyRelease(
                    KeyReleaseRequest(
                        challengeID: challenge.challengeID,
                        evidence: document,
                        certificateKeyHash: keyHash,
                        bootPublicKey: BootKey().publicKey,
                        diskUUID: request.diskUUID,
                        role: .controlPlane,
                        nodeName: "cp-0",
                        kubeletCSR: []
                    )
                )
            )
            #expect(sealed.status == .evidenceRejected && sealed.payload.isEmpty)
        }
    }
}
