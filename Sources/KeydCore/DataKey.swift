import KeydProtocol

/// A data key's ID (`dataKey.release`): 1…128 bytes of `[A-Za-z0-9._-]`, not starting with `.`. It is
/// derived under `key-dek/<id>`, a namespace no disk key (`key-<uuid>`), `key-measurementSecret`,
/// `key-measurementSalt` or `key-clusterID` can share: each of those has no `/` after `key-`, and an ID
/// cannot hold one.
public struct DataKeyID: Hashable, Sendable, CustomStringConvertible {
    /// The ID.
    public let text: String

    /// Validates `text`; throws ``CoreError/Code/invalidDataKey`` naming the rule it breaks.
    public init(validating text: String) throws(CoreError) {
        let bytes = Array(text.utf8)
        guard Limits.dataKeyIDLength.contains(bytes.count) else {
            throw .invalidDataKey(
                "data key ID of \(bytes.count) bytes is outside \(Limits.dataKeyIDLength.lowerBound)…\(Limits.dataKeyIDLength.upperBound)"
            )
        }
        guard bytes.allSatisfy(Self.isAllowed) else {
            throw .invalidDataKey("data key ID \(quotedForMessage(text)) holds a byte outside [A-Za-z0-9._-]")
        }
        guard bytes[0] != UInt8(ascii: ".") else {
            throw .invalidDataKey("data key ID \(quotedForMessage(text)) starts with '.'")
        }
        self.text = text
    }

    public var description: String { text }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".")
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    /// Checks a data key length (16…64 bytes); throws ``CoreError/Code/invalidDataKey`` naming the bounds.
    public static func checkedLength(_ length: Int) throws(CoreError) -> Int {
        guard Limits.dataKeyLength.contains(length) else {
            throw .invalidDataKey(
                "data key length \(length) is outside \(Limits.dataKeyLength.lowerBound)…\(Limits.dataKeyLength.upperBound)"
            )
        }
        return length
    }
}

extension KeyDerivation {
    /// The prefix of every data key's `info`: `key-dek/`.
    public static let dataKeyInfoPrefix = "key-dek/"

    /// `info` for a data key: `"key-dek/" + id`.
    public static func dataKeyInfo(id: DataKeyID) -> String { dataKeyInfoPrefix + id.text }
}

extension KeyEncryptionKey {
    /// The data key `HKDF-SHA-256(master, salt, "key-dek/" + id, length)`.
    /// - Important: leaves keyd only sealed (``DataKeyEnvelope``), and in plain only from the node's own
    ///   keyd to its trustd (`dataKey.open`).
    public borrowing func dataKey(id: DataKeyID, length: Int) -> SecretBytes {
        deriveKey(info: KeyDerivation.dataKeyInfo(id: id), byteCount: length)
    }
}

/// What a data-key envelope is for: the challenge its release consumed, the node its evidence bound, and
/// the data key's ID and length. All of it goes into the HPKE info and the AAD.
public struct DataKeyBinding: Sendable, Hashable {
    /// The envelope purpose byte of a data-key envelope (join and rejoin are 1 and 2).
    public static let purpose: UInt8 = 3

    /// The serving keyd's challenge (purpose `dataKey`).
    public let challengeID: [UInt8]
    /// The requesting node's state disk.
    public let diskUUID: DiskUUID
    /// The requesting node's role.
    public let role: NodeRole
    /// The requesting node's name.
    public let nodeName: KubernetesNodeName
    /// The data key's ID.
    public let dataKeyID: DataKeyID
    /// The data key's length in bytes.
    public let length: Int

    /// Checks the challenge ID (16 bytes) and the length (16…64); throws ``CoreError/Code/invalidEnvelope``
    /// or ``CoreError/Code/invalidDataKey``.
    public init(
        challengeID: [UInt8],
        diskUUID: DiskUUID,
        role: NodeRole,
        nodeName: KubernetesNodeName,
        dataKeyID: DataKeyID,
        length: Int
    ) throws(CoreError) {
        guard challengeID.count == EnvelopeBinding.challengeIDLength else {
            throw .invalidEnvelope(
                "challengeID is \(challengeID.count) bytes, not \(EnvelopeBinding.challengeIDLength)"
            )
        }
        self.challengeID = challengeID
        self.diskUUID = diskUUID
        self.role = role
        self.nodeName = nodeName
        self.dataKeyID = dataKeyID
        self.length = try DataKeyID.checkedLength(length)
    }

    /// HPKE info: `"asterism-envelope-v1"`, then purpose (3), challengeID, diskUUID, role, nodeName,
    /// dataKeyID and length (one byte), each as a u16 big-endian length and its bytes. The purpose comes
    /// first in every envelope's info, so a data-key envelope never opens as a key envelope, nor one as the other.
    var hpkeInfo: [UInt8] {
        var info = Array(KeyEnvelope.infoLabel.utf8)
        for field in [
            [Self.purpose], challengeID, Array(diskUUID.text.utf8), [role.rawValue], Array(nodeName.text.utf8),
            Array(dataKeyID.text.utf8), [UInt8(length)],
        ] {
            info.appendLengthPrefixed(field)
        }
        return info
    }
}

/// A data key sealed to the requesting keyd's boot key, with the suite of ``KeyEnvelope``:
///
/// ```
/// magic "AENV" | version u16 = 1 | purpose u8 = 3 | role u8 | challengeID fixed[16] | diskUUID text<36> |
/// nodeName text<253> | dataKeyID text<128> | length u8 | encapsulatedKey fixed[32] | ciphertext bytes<80>
/// ```
/// The AAD is every byte before `encapsulatedKey`; the plaintext is the data key, exactly `length` bytes.
/// ``KeyEnvelope`` refuses purpose 3, and this type refuses every other purpose.
public enum DataKeyEnvelope {
    /// The longest ciphertext: a 64-byte key and the 16-byte tag.
    static let maximumCiphertext = Limits.dataKeyLength.upperBound + 16

    /// The fields before the encapsulated key: the AEAD's additional data.
    private static func header(_ binding: DataKeyBinding) -> WireWriter {
        var w = WireWriter(capacity: 512)
        w.fixed(KeyEnvelope.magic, count: 4)
        w.u16(KeyEnvelope.version)
        w.u8(DataKeyBinding.purpose)
        w.u8(binding.role.rawValue)
        w.fixed(binding.challengeID, count: EnvelopeBinding.challengeIDLength)
        w.text(binding.diskUUID.text, max: 36)
        w.text(binding.nodeName.text, max: KubernetesNodeName.maximumLength)
        w.text(binding.dataKeyID.text, max: Limits.dataKeyIDLength.upperBound)
        w.u8(UInt8(binding.length))
        return w
    }

    /// Seals `key` (exactly `binding.length` bytes) for `binding` to `bootPublicKey`.
    public static func seal(
        _ key: borrowing SecretBytes,
        binding: DataKeyBinding,
        to bootPublicKey: [UInt8]
    ) throws(CoreError) -> [UInt8] {
        var plaintext = key.withUnsafeBytes { Array($0) }
        defer { plaintext.wipe() }
        guard plaintext.count == binding.length else {
            throw .invalidDataKey("a key of \(plaintext.count) bytes for a binding of \(binding.length)")
        }
        let sealed = try EnvelopeHPKE.seal(
            plaintext,
            to: bootPublicKey,
            info: binding.hpkeInfo,
            additionalData: header(binding).bytes
        )
        var w = header(binding)
        w.fixed(sealed.encapsulatedKey, count: EnvelopeHPKE.encapsulatedKeyLength)
        w.bytes(sealed.ciphertext, max: maximumCiphertext)
        return w.bytes
    }

    /// Parses `envelope` strictly (magic, version, purpose 3, a valid UUID, node name, ID and length, no
    /// trailing bytes) and opens it with `bootKey`; an envelope sealed to another key or for another
    /// purpose, or with any byte changed, fails with ``CoreError/Code/invalidEnvelope``.
    public static func open(
        _ envelope: [UInt8],
        with bootKey: borrowing BootKey
    ) throws(CoreError) -> OpenedDataKey {
        guard envelope.count <= Limits.maxDataKeyEnvelope else {
            throw .invalidEnvelope("\(envelope.count) bytes exceed \(Limits.maxDataKeyEnvelope)")
        }
        let fields: (UInt8, [UInt8], String, String, String, UInt8, [UInt8], [UInt8])
        do throws(ProtocolError) {
            fields = try WireReader.read(envelope) { r throws(ProtocolError) in
                guard try r.fixed(4, "magic") == KeyEnvelope.magic else {
                    throw .badValue(field: "magic", "not AENV")
                }
                let version = try r.u16("version")
                guard version == KeyEnvelope.version else { throw .badValue(field: "version", "\(version) is not 1") }
                let purpose = try r.u8("purpose")
                guard purpose == DataKeyBinding.purpose else {
                    throw .badValue(field: "purpose", "\(purpose) is not a data key's (\(DataKeyBinding.purpose))")
                }
                let fields = (
                    try r.u8("role"), try r.fixed(EnvelopeBinding.challengeIDLength, "challengeID"),
                    try r.text(max: 36, "diskUUID"), try r.text(max: KubernetesNodeName.maximumLength, "nodeName"),
                    try r.text(max: Limits.dataKeyIDLength.upperBound, "dataKeyID"), try r.u8("length"),
                    try r.fixed(EnvelopeHPKE.encapsulatedKeyLength, "encapsulatedKey"),
                    try r.bytes(max: maximumCiphertext, "ciphertext")
                )
                try r.finish("ciphertext")
                return fields
            }
        } catch {
            throw .invalidEnvelope(error.description)
        }
        let binding: DataKeyBinding
        do throws(CoreError) {
            guard let role = NodeRole(rawValue: fields.0) else { throw .invalidEnvelope("role \(fields.0)") }
            binding = try DataKeyBinding(
                challengeID: fields.1,
                diskUUID: try DiskUUID(validating: fields.2),
                role: role,
                nodeName: try KubernetesNodeName(validating: fields.3),
                dataKeyID: try DataKeyID(validating: fields.4),
                length: Int(fields.5)
            )
        } catch {
            throw .invalidEnvelope(error.message)
        }
        let key = try EnvelopeHPKE.open(
            fields.7,
            encapsulatedKey: fields.6,
            info: binding.hpkeInfo,
            additionalData: header(binding).bytes,
            with: bootKey
        ) { plaintext throws(CoreError) in
            guard plaintext.count == binding.length else {
                throw .invalidEnvelope("plaintext of \(plaintext.count) bytes for a key of \(binding.length)")
            }
            return SecretBytes(copying: plaintext)
        }
        return OpenedDataKey(binding: binding, key: key)
    }
}

/// A data-key envelope opened with the boot key: what it was sealed for, and the key.
public struct OpenedDataKey: ~Copyable, Sendable {
    /// What the envelope binds; the caller compares it with what it asked for and attested.
    public let binding: DataKeyBinding
    /// The data key, `binding.length` bytes.
    public let key: SecretBytes
}

extension CoreError.Code {
    /// A data key ID or length is outside its bounds.
    public static let invalidDataKey = CoreError.Code("invalidDataKey")
}

extension CoreError {
    /// A data key ID or length refused; IDs are not secret, so the message may quote them.
    static func invalidDataKey(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidDataKey, reason: reason, file: file, line: line)
    }
}
