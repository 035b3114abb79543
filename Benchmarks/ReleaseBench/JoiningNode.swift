import AsterismTestSupport
import Crypto
import KeydCore
import KeydProtocol

/// One joining node as the bench plays it: a software P-256 AK (on the policy's allow-list), its own
/// boot key, state-disk UUID, node name and aTLS certificate key hash. Each release it asks for binds
/// a fresh challenge's nonce into a fresh quote, as the joining node's keyd would.
final class JoiningNode: Sendable {
    /// The AK that signs this node's quotes.
    let issuer: SoftwareTPMEvidenceIssuer
    /// The boot key the envelopes are sealed to; only this bench can open them.
    let bootKey: BootKey
    /// The boot key's public half, bound in every quote.
    let bootPublicKey: [UInt8]
    /// The node's state disk.
    let diskUUID: DiskUUID
    /// The node's name.
    let nodeName: KubernetesNodeName
    /// SHA-256 of the node's (imagined) aTLS certificate key.
    let certificateKeyHash: [UInt8]

    /// Node `index` (0…255): a new AK and boot key, disk UUID and name numbered by `index`.
    init(index: Int) throws(CoreError) {
        precondition((0...255).contains(index), "node index \(index) outside 0...255")
        issuer = SoftwareTPMEvidenceIssuer(format: .native)
        bootKey = BootKey()
        bootPublicKey = bootKey.publicKey
        let suffix = String(index, radix: 16)
        diskUUID = try DiskUUID(
            validating: "5e1ea5e0-0b0a-4988-8776-6554433221" + String(repeating: "0", count: 2 - suffix.count) + suffix
        )
        nodeName = try KubernetesNodeName(validating: "worker-\(index)")
        certificateKeyHash = Array(SHA256.hash(data: Array("release-bench certificate key \(index)".utf8)))
    }

    /// What the node's quote for `nonce` binds (role worker).
    func claims(nonce: [UInt8]) throws(CoreError) -> JoinClaims {
        try JoinClaims(
            nonce: nonce,
            certificateKeyHash: certificateKeyHash,
            bootPublicKey: bootPublicKey,
            diskUUID: diskUUID,
            role: .worker,
            nodeName: nodeName
        )
    }

    /// The `key.release` request for `challenge`: a new quote over the join binding of the challenge's
    /// nonce, signed by the software AK (the client's signing work), and the claims it binds.
    func releaseRequest(for challenge: ChallengeAnswer) throws -> (request: KeyReleaseRequest, claims: JoinClaims) {
        let claims = try claims(nonce: challenge.nonce)
        let evidence = try issuer.issueNative(
            qualifyingData: JoinBinding.qualifyingData(claims),
            userDataDigest: certificateKeyHash
        )
        let request = KeyReleaseRequest(
            challengeID: challenge.challengeID,
            evidence: evidence,
            certificateKeyHash: certificateKeyHash,
            bootPublicKey: bootPublicKey,
            diskUUID: diskUUID.text,
            role: .worker,
            nodeName: nodeName.text
        )
        return (request, claims)
    }

    /// Why `envelope` is not the release keyd owed this node for `challengeID`, or nil when it opens with
    /// the boot key, names this node, disk, role and challenge, carries no KEK (a worker), and holds the
    /// disk key `HKDF(master secret, salt, "key-<uuid>")` computed here from the KEK the bench imported.
    func problem(envelope: [UInt8], challengeID: [UInt8], masterSecret: [UInt8], salt: [UInt8]) -> String? {
        let opened: OpenedEnvelope
        do {
            opened = try KeyEnvelope.open(envelope, with: bootKey)
        } catch {
            return "does not open with \(nodeName)'s boot key: \(error.message)"
        }
        let binding = opened.binding
        guard binding.challengeID == challengeID, binding.diskUUID == diskUUID, binding.nodeName == nodeName,
            binding.role == .worker, binding.purpose == .join
        else {
            return
                "binds \(binding.nodeName), \(binding.diskUUID), \(binding.role), \(binding.purpose), not this release"
        }
        guard !opened.keys.carriesKEK else { return "carries the KEK to a worker" }
        let expected: [UInt8] = masterSecret.withUnsafeBytes { secret in
            salt.withUnsafeBytes { salt in
                KeyDerivation.hkdfSHA256(
                    secret: secret,
                    salt: salt,
                    info: Array(KeyDerivation.diskKeyInfo(uuid: diskUUID).utf8),
                    byteCount: KeyDerivation.dataKeyLength
                )
                .withUnsafeBytes { Array($0) }
            }
        }
        let matches = opened.keys.diskKey.constantTimeEquals(SecretBytes(copying: expected))
        guard matches else { return "holds another disk key than HKDF(KEK, \"key-\(diskUUID)\")" }
        return nil
    }
}
