import Crypto

/// RFC 9180 base-mode sealing (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) with an all-zero
/// DH output, as an attacker who picks a low-order encapsulated key computes it. Test-only: it builds
/// the forgery the product must refuse.
public enum ZeroDHSender {
    static let kemSuite = Array("KEM".utf8) + [0x00, 0x20]
    static let hpkeSuite = Array("HPKE".utf8) + [0x00, 0x20, 0x00, 0x01, 0x00, 0x02]

    static func labeledExtract(salt: [UInt8], label: String, ikm: [UInt8], suite: [UInt8]) -> SymmetricKey {
        let key = SymmetricKey(data: Array("HPKE-v1".utf8) + suite + Array(label.utf8) + ikm)
        return SymmetricKey(data: Array(HKDF<SHA256>.extract(inputKeyMaterial: key, salt: salt)))
    }

    static func labeledExpand(prk: SymmetricKey, label: String, info: [UInt8], length: Int, suite: [UInt8]) -> [UInt8] {
        let labeled =
            [UInt8(length >> 8), UInt8(length & 0xFF)] + Array("HPKE-v1".utf8) + suite + Array(label.utf8) + info
        return HKDF<SHA256>.expand(pseudoRandomKey: prk, info: labeled, outputByteCount: length)
            .withUnsafeBytes { Array($0) }
    }

    public static func seal(
        _ plaintext: [UInt8],
        encapsulatedKey: [UInt8],
        recipient: [UInt8],
        info: [UInt8],
        additionalData: [UInt8]
    ) throws -> [UInt8] {
        let dh = [UInt8](repeating: 0, count: 32)
        let eaePRK = labeledExtract(salt: [], label: "eae_prk", ikm: dh, suite: kemSuite)
        let sharedSecret = labeledExpand(
            prk: eaePRK,
            label: "shared_secret",
            info: encapsulatedKey + recipient,
            length: 32,
            suite: kemSuite
        )
        let pskIDHash = labeledExtract(salt: [], label: "psk_id_hash", ikm: [], suite: hpkeSuite)
        let infoHash = labeledExtract(salt: [], label: "info_hash", ikm: info, suite: hpkeSuite)
        let context =
            [0] + pskIDHash.withUnsafeBytes { Array($0) } + infoHash.withUnsafeBytes { Array($0) }
        let secret = labeledExtract(salt: sharedSecret, label: "secret", ikm: [], suite: hpkeSuite)
        let key = labeledExpand(prk: secret, label: "key", info: context, length: 32, suite: hpkeSuite)
        let nonce = labeledExpand(prk: secret, label: "base_nonce", info: context, length: 12, suite: hpkeSuite)
        let box = try AES.GCM.seal(
            plaintext,
            using: SymmetricKey(data: key),
            nonce: try AES.GCM.Nonce(data: nonce),
            authenticating: additionalData
        )
        return Array(box.ciphertext) + Array(box.tag)
    }

    /// A key envelope in PROTOCOL.md's layout for these binding fields, its encapsulated key the all-zero
    /// point and its ciphertext sealed with the zero DH output: what keyd must refuse.
    public static func keyEnvelope(
        purpose: UInt8,
        role: UInt8,
        challengeID: [UInt8],
        diskUUID: String,
        nodeName: String,
        recipient: [UInt8],
        plaintext: [UInt8]
    ) throws -> [UInt8] {
        func prefixed(_ field: [UInt8]) -> [UInt8] { [UInt8(field.count >> 8), UInt8(field.count & 0xFF)] + field }
        let header =
            Array("AENV".utf8) + [0, 1, purpose, role] + challengeID + prefixed(Array(diskUUID.utf8))
            + prefixed(Array(nodeName.utf8))
        let info =
            Array("asterism-envelope-v1".utf8) + prefixed([purpose]) + prefixed(challengeID)
            + prefixed(Array(diskUUID.utf8)) + prefixed([role]) + prefixed(Array(nodeName.utf8))
        let zeroPoint = [UInt8](repeating: 0, count: 32)
        let ciphertext = try seal(
            plaintext,
            encapsulatedKey: zeroPoint,
            recipient: recipient,
            info: info,
            additionalData: header
        )
        return header + zeroPoint + prefixed(ciphertext)
    }
}
