import Crypto
import KeydProtocol

/// The operator's init envelope: the cluster's master secret, salt and measurement salt, sealed with
/// the envelope HPKE suite (``KeyEnvelope``) to one keyd's boot key (`init.accept`).
///
/// ```
/// magic "AINI" | version u16 = 1 | encapsulatedKey fixed[32] | ciphertext bytes<512>
/// ```
/// HPKE info is `"asterism-init-v1"` then the boot public key as a u16 big-endian length and its 32
/// bytes; the AAD is magic and version, then SHA-256 of the operator key and SHA-256 of the signed policy
/// that `init.accept` carries beside it, so a relay cannot swap either (the operator's key would be
/// pinned, its policy stored). The plaintext is the KEK's serialized form, read to its exact end:
/// `masterLength u8 master(16…64) saltLength u8 salt(32…64) measurementSalt fixed[32]`.
public struct InitEnvelope: Hashable, Sendable {
    /// ASCII `AINI`.
    static let magic: [UInt8] = Array("AINI".utf8)
    /// The only version.
    static let version: UInt16 = 1
    /// The label in front of the HPKE info.
    public static let infoLabel = "asterism-init-v1"
    /// The longest ciphertext (the largest plaintext is 162 bytes, plus the 16-byte tag).
    public static let maximumCiphertext = 512
    /// The largest init envelope.
    public static let maximumLength = 4 + 2 + 32 + 2 + maximumCiphertext

    /// The HPKE encapsulated key.
    let encapsulatedKey: [UInt8]
    /// The AEAD ciphertext and tag.
    let ciphertext: [UInt8]

    /// The init envelope's bytes.
    public var encoded: [UInt8] {
        var w = Self.header
        w.fixed(encapsulatedKey, count: EnvelopeHPKE.encapsulatedKeyLength)
        w.bytes(ciphertext, max: Self.maximumCiphertext)
        return w.bytes
    }

    /// The AEAD's additional data: magic, version and the digests of the operator key and signed policy
    /// the envelope travels with.
    private static func additionalData(operatorKey: [UInt8], signedPolicy: [UInt8]) -> [UInt8] {
        header.bytes + Array(SHA256.hash(data: operatorKey)) + Array(SHA256.hash(data: signedPolicy))
    }

    /// Magic and version.
    private static var header: WireWriter {
        var w = WireWriter(capacity: 64 + maximumCiphertext)
        w.fixed(magic, count: 4)
        w.u16(version)
        return w
    }

    /// The HPKE info for the boot key `bootPublicKey`.
    private static func info(_ bootPublicKey: [UInt8]) -> [UInt8] {
        var info = Array(infoLabel.utf8)
        info.appendLengthPrefixed(bootPublicKey)
        return info
    }

    /// Parses an init envelope strictly; throws ``CoreError/Code/invalidEnvelope`` naming the field.
    public init(decoding bytes: [UInt8]) throws(CoreError) {
        guard bytes.count <= Self.maximumLength else {
            throw .invalidEnvelope("init envelope of \(bytes.count) bytes exceeds \(Self.maximumLength)")
        }
        do throws(ProtocolError) {
            (encapsulatedKey, ciphertext) = try WireReader.read(bytes) { r throws(ProtocolError) in
                guard try r.fixed(4, "magic") == Self.magic else { throw .badValue(field: "magic", "not AINI") }
                let version = try r.u16("version")
                guard version == Self.version else { throw .badValue(field: "version", "\(version) is not 1") }
                let fields = (
                    try r.fixed(EnvelopeHPKE.encapsulatedKeyLength, "encapsulatedKey"),
                    try r.bytes(max: Self.maximumCiphertext, "ciphertext")
                )
                try r.finish("ciphertext")
                return fields
            }
        } catch {
            throw .invalidEnvelope("init envelope: \(error.description)")
        }
    }

    private init(encapsulatedKey: [UInt8], ciphertext: [UInt8]) {
        self.encapsulatedKey = encapsulatedKey
        self.ciphertext = ciphertext
    }

    /// Seals `kek` (master secret, salt and measurement salt) to `bootPublicKey`, bound to the encoded
    /// operator key and signed policy sent with it: for the operator's CLI and tests.
    public static func seal(
        _ kek: borrowing KeyEncryptionKey,
        to bootPublicKey: [UInt8],
        operatorKey: [UInt8],
        signedPolicy: [UInt8]
    ) throws(CoreError) -> [UInt8] {
        let aad = additionalData(operatorKey: operatorKey, signedPolicy: signedPolicy)
        let sealed = try kek.withSerialized { plaintext throws(CoreError) in
            try EnvelopeHPKE.seal(plaintext, to: bootPublicKey, info: info(bootPublicKey), additionalData: aad)
        }
        return InitEnvelope(encapsulatedKey: sealed.encapsulatedKey, ciphertext: sealed.ciphertext).encoded
    }

    /// Parses `envelope` and opens it with `bootKey`; `operatorKey` and `signedPolicy` must be the bytes it was
    /// sealed with.
    public static func open(
        _ envelope: [UInt8],
        with bootKey: borrowing BootKey,
        operatorKey: [UInt8],
        signedPolicy: [UInt8]
    ) throws(CoreError) -> KeyEncryptionKey {
        try InitEnvelope(decoding: envelope).open(with: bootKey, operatorKey: operatorKey, signedPolicy: signedPolicy)
    }

    /// Opens the init envelope with `bootKey`: the cluster's KEK with its measurement salt. Any other operator
    /// key or signed policy than the one it was sealed with fails like a changed byte.
    public func open(
        with bootKey: borrowing BootKey,
        operatorKey: [UInt8],
        signedPolicy: [UInt8]
    ) throws(CoreError) -> KeyEncryptionKey {
        try EnvelopeHPKE.open(
            ciphertext,
            encapsulatedKey: encapsulatedKey,
            info: Self.info(bootKey.publicKey),
            additionalData: Self.additionalData(operatorKey: operatorKey, signedPolicy: signedPolicy),
            with: bootKey
        ) { plaintext throws(CoreError) in
            do throws(CoreError) {
                return try KeyEncryptionKey(serialized: plaintext)
            } catch {
                throw .invalidEnvelope("init envelope: \(error.message)")
            }
        }
    }
}
