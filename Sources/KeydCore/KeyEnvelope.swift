import Crypto
import FoundationEssentials
import KeydProtocol

/// The boot key: an X25519 key pair keyd makes at every start and never writes anywhere. Envelopes and
/// init envelopes are sealed to its public half; only this process can open them.
public struct BootKey: ~Copyable, Sendable {
    /// The length of the public key.
    public static let publicKeyLength = 32

    let privateKey: Curve25519.KeyAgreement.PrivateKey

    /// Makes a fresh key pair from the system's secure random generator.
    public init() {
        privateKey = Curve25519.KeyAgreement.PrivateKey()
    }

    /// A boot key from a fixed private key (RFC 9180 test vectors only).
    init(privateKey: Curve25519.KeyAgreement.PrivateKey) {
        self.privateKey = privateKey
    }

    /// The X25519 public key, 32 bytes (`bootKey.get`).
    public var publicKey: [UInt8] { Array(privateKey.publicKey.rawRepresentation) }
}

/// What an envelope is for; it goes into the HPKE info, so an envelope opens only for what it was sealed for.
public struct EnvelopeBinding: Sendable, Hashable {
    /// The length of a challenge ID.
    public static let challengeIDLength = 16

    /// Join or rejoin.
    public let purpose: EnvelopePurpose
    /// The serving keyd's challenge the release consumed.
    public let challengeID: [UInt8]
    /// The joining node's state disk.
    public let diskUUID: DiskUUID
    /// The role the keys are for.
    public let role: NodeRole
    /// The node the keys are for.
    public let nodeName: KubernetesNodeName

    /// Checks the challenge ID's length (16 bytes); throws ``CoreError/Code/invalidEnvelope``.
    public init(
        purpose: EnvelopePurpose,
        challengeID: [UInt8],
        diskUUID: DiskUUID,
        role: NodeRole,
        nodeName: KubernetesNodeName
    ) throws(CoreError) {
        guard challengeID.count == Self.challengeIDLength else {
            throw .invalidEnvelope("challengeID is \(challengeID.count) bytes, not \(Self.challengeIDLength)")
        }
        self.purpose = purpose
        self.challengeID = challengeID
        self.diskUUID = diskUUID
        self.role = role
        self.nodeName = nodeName
    }

    /// HPKE info: `"asterism-envelope-v1"`, then purpose (1 byte), challengeID, diskUUID (36 ASCII bytes),
    /// role (1 byte) and nodeName (UTF-8), each as a u16 big-endian length and its bytes.
    var hpkeInfo: [UInt8] {
        var info = Array(KeyEnvelope.infoLabel.utf8)
        for field in [
            [purpose.rawValue], challengeID, Array(diskUUID.text.utf8), [role.rawValue], Array(nodeName.text.utf8),
        ] {
            info.appendLengthPrefixed(field)
        }
        return info
    }
}

/// What a release hands the joining node. Secrets live in ``SecretBytes`` and ``KeyEncryptionKey``.
public struct ReleasedKeys: ~Copyable, Sendable {
    /// The state disk's LUKS passphrase: `HKDF(KEK, "key-" + uuid)`, 32 bytes.
    public let diskKey: SecretBytes
    /// `HKDF(KEK, "key-measurementSecret")`, 32 bytes.
    public let measurementSecret: SecretBytes
    /// The cluster's measurement salt, 32 bytes; not secret.
    public let measurementSalt: [UInt8]
    /// The KEK itself: control planes only.
    public let clusterKEK: KeyEncryptionKey?

    init(
        diskKey: consuming SecretBytes,
        measurementSecret: consuming SecretBytes,
        measurementSalt: [UInt8],
        clusterKEK: consuming KeyEncryptionKey?
    ) {
        self.diskKey = diskKey
        self.measurementSecret = measurementSecret
        self.measurementSalt = measurementSalt
        self.clusterKEK = clusterKEK
    }

    /// The cluster ID, `HKDF(measurementSecret, measurementSalt, "key-clusterID", 32)`; PCR 15 is
    /// extended with it (CONSTELLATION-WIRE.md).
    public var clusterID: [UInt8] {
        KeyDerivation.clusterID(measurementSecret: measurementSecret, measurementSalt: measurementSalt)
    }

    /// True when a KEK is carried.
    public var carriesKEK: Bool {
        switch clusterKEK {
        case .some: true
        case .none: false
        }
    }
}

/// An envelope opened with the boot key: the binding it was sealed with and the keys.
public struct OpenedEnvelope: ~Copyable, Sendable {
    /// What the envelope was sealed for; the caller compares it with what it attested.
    public let binding: EnvelopeBinding
    /// The keys.
    public let keys: ReleasedKeys
}

/// A key envelope: the keys of one release, sealed with HPKE (RFC 9180, base mode, DHKEM(X25519,
/// HKDF-SHA256), HKDF-SHA256, AES-256-GCM) to the joining keyd's boot key.
///
/// ```
/// magic "AENV" | version u16 = 1 | purpose u8 | role u8 | challengeID fixed[16] | diskUUID text<36> |
/// nodeName text<253> | encapsulatedKey fixed[32] | ciphertext bytes<512>
/// ```
/// HPKE info is ``EnvelopeBinding``'s (label `asterism-envelope-v1`, the binding's fields length-prefixed);
/// the AAD is every byte before `encapsulatedKey`. The plaintext is `diskKey(32) measurementSecret(32)
/// measurementSalt(32) hasKEK u8`, then for a control plane (`hasKEK` 1, and only then) the KEK's
/// serialized form `masterLength u8 master(16…64) saltLength u8 salt(32…64) measurementSalt fixed[32]`
/// (its measurement salt equal to the one before), read to the exact end.
///
/// - Important: The header's binding is authenticated only once ``open(with:)`` succeeds.
public struct KeyEnvelope: Hashable, Sendable {
    /// ASCII `AENV`.
    static let magic: [UInt8] = Array("AENV".utf8)
    /// The only version.
    static let version: UInt16 = 1
    /// The label in front of the HPKE info.
    public static let infoLabel = "asterism-envelope-v1"
    /// The longest ciphertext (the largest plaintext is 97 + 162 bytes, plus the 16-byte tag).
    public static let maximumCiphertext = 512
    /// The largest envelope: every field at its bound.
    public static let maximumLength =
        4 + 2 + 1 + 1 + 16 + 2 + 36 + 2 + KubernetesNodeName.maximumLength + 32 + 2 + maximumCiphertext

    /// What the envelope says it is for (authenticated only by ``open(with:)``).
    public let binding: EnvelopeBinding
    /// The HPKE encapsulated key.
    let encapsulatedKey: [UInt8]
    /// The AEAD ciphertext and tag.
    let ciphertext: [UInt8]

    /// The envelope's bytes.
    public var encoded: [UInt8] {
        var w = Self.header(binding)
        w.fixed(encapsulatedKey, count: EnvelopeHPKE.encapsulatedKeyLength)
        w.bytes(ciphertext, max: Self.maximumCiphertext)
        return w.bytes
    }

    /// The fields before the encapsulated key: the AEAD's additional data.
    private static func header(_ binding: EnvelopeBinding) -> WireWriter {
        var w = WireWriter(capacity: 512)
        w.fixed(magic, count: 4)
        w.u16(version)
        w.u8(binding.purpose.rawValue)
        w.u8(binding.role.rawValue)
        w.fixed(binding.challengeID, count: EnvelopeBinding.challengeIDLength)
        w.text(binding.diskUUID.text, max: 36)
        w.text(binding.nodeName.text, max: KubernetesNodeName.maximumLength)
        return w
    }

    /// Parses an envelope strictly (magic, version, enums, a valid UUID and node name, bounds, no trailing
    /// bytes); throws ``CoreError/Code/invalidEnvelope`` naming the field.
    public init(decoding bytes: [UInt8]) throws(CoreError) {
        guard bytes.count <= Self.maximumLength else {
            throw .invalidEnvelope("\(bytes.count) bytes exceed \(Self.maximumLength)")
        }
        let fields: (EnvelopePurpose, NodeRole, [UInt8], String, String, [UInt8], [UInt8])
        do throws(ProtocolError) {
            fields = try WireReader.read(bytes) { r throws(ProtocolError) in
                guard try r.fixed(4, "magic") == Self.magic else { throw .badValue(field: "magic", "not AENV") }
                let version = try r.u16("version")
                guard version == Self.version else { throw .badValue(field: "version", "\(version) is not 1") }
                let fields = (
                    try r.enumeration(EnvelopePurpose.self, "purpose"), try r.enumeration(NodeRole.self, "role"),
                    try r.fixed(EnvelopeBinding.challengeIDLength, "challengeID"), try r.text(max: 36, "diskUUID"),
                    try r.text(max: KubernetesNodeName.maximumLength, "nodeName"),
                    try r.fixed(EnvelopeHPKE.encapsulatedKeyLength, "encapsulatedKey"),
                    try r.bytes(max: Self.maximumCiphertext, "ciphertext")
                )
                try r.finish("ciphertext")
                return fields
            }
        } catch {
            throw .invalidEnvelope(error.description)
        }
        do {
            binding = try EnvelopeBinding(
                purpose: fields.0,
                challengeID: fields.2,
                diskUUID: try DiskUUID(validating: fields.3),
                role: fields.1,
                nodeName: try KubernetesNodeName(validating: fields.4)
            )
        } catch {
            throw .invalidEnvelope(error.message)
        }
        encapsulatedKey = fields.5
        ciphertext = fields.6
    }

    private init(binding: EnvelopeBinding, encapsulatedKey: [UInt8], ciphertext: [UInt8]) {
        self.binding = binding
        self.encapsulatedKey = encapsulatedKey
        self.ciphertext = ciphertext
    }

    /// Seals `keys` for `binding` to `bootPublicKey` (the key bound in the join evidence).
    /// - Throws: ``CoreError/Code/invalidEnvelope`` when the boot public key is refused (not 32 bytes, or a
    ///   low-order point) or the keys do not fit the role (a KEK exactly for a control plane).
    public static func seal(
        _ keys: borrowing ReleasedKeys,
        binding: EnvelopeBinding,
        to bootPublicKey: [UInt8]
    ) throws(CoreError) -> [UInt8] {
        guard keys.carriesKEK == (binding.role == .controlPlane) else {
            throw .invalidEnvelope("a KEK goes to a control plane and only there (role \(binding.role))")
        }
        var plaintext = plaintext(keys)
        defer { plaintext.wipe() }
        let sealed = try EnvelopeHPKE.seal(
            plaintext,
            to: bootPublicKey,
            info: binding.hpkeInfo,
            additionalData: header(binding).bytes
        )
        return KeyEnvelope(binding: binding, encapsulatedKey: sealed.encapsulatedKey, ciphertext: sealed.ciphertext)
            .encoded
    }

    /// Parses `envelope` and opens it with `bootKey`.
    public static func open(_ envelope: [UInt8], with bootKey: borrowing BootKey) throws(CoreError) -> OpenedEnvelope {
        try KeyEnvelope(decoding: envelope).open(with: bootKey)
    }

    /// Opens the envelope with `bootKey`; an envelope sealed to another key, or with any byte of its
    /// header, binding or ciphertext changed, fails with ``CoreError/Code/invalidEnvelope``.
    public func open(with bootKey: borrowing BootKey) throws(CoreError) -> OpenedEnvelope {
        let binding = self.binding
        let keys = try EnvelopeHPKE.open(
            ciphertext,
            encapsulatedKey: encapsulatedKey,
            info: binding.hpkeInfo,
            additionalData: Self.header(binding).bytes,
            with: bootKey
        ) { plaintext throws(CoreError) in try Self.keys(fromPlaintext: plaintext, role: binding.role) }
        return OpenedEnvelope(binding: binding, keys: keys)
    }

    /// The fixed part of the plaintext: disk key, measurement secret, measurement salt, hasKEK.
    private static let fixedPlaintextLength = 3 * 32 + 1

    /// `diskKey ‖ measurementSecret ‖ measurementSalt ‖ hasKEK [‖ masterLength ‖ master ‖ salt]`.
    private static func plaintext(_ keys: borrowing ReleasedKeys) -> [UInt8] {
        var plaintext: [UInt8] = []
        plaintext.reserveCapacity(fixedPlaintextLength + 1 + 128)
        keys.diskKey.withUnsafeBytes { plaintext.append(contentsOf: $0) }
        keys.measurementSecret.withUnsafeBytes { plaintext.append(contentsOf: $0) }
        plaintext.append(contentsOf: keys.measurementSalt)
        switch keys.clusterKEK {
        case .some(let kek):
            plaintext.append(1)
            kek.withSerialized { plaintext.append(contentsOf: $0) }
        case .none:
            plaintext.append(0)
        }
        return plaintext
    }

    /// Reads the plaintext to its exact end; a KEK must come exactly with a control-plane `role`.
    private static func keys(
        fromPlaintext plaintext: UnsafeRawBufferPointer,
        role: NodeRole
    ) throws(CoreError)
        -> ReleasedKeys
    {
        guard plaintext.count >= fixedPlaintextLength else {
            throw .invalidEnvelope("plaintext of \(plaintext.count) bytes is under \(fixedPlaintextLength)")
        }
        let hasKEK = plaintext[fixedPlaintextLength - 1]
        guard hasKEK <= 1, (hasKEK == 1) == (role == .controlPlane) else {
            throw .invalidEnvelope("hasKEK \(hasKEK) does not fit role \(role)")
        }
        let measurementSalt = Array(plaintext[64..<96])
        guard hasKEK == 1 || plaintext.count == fixedPlaintextLength else {
            throw .invalidEnvelope("\(plaintext.count - fixedPlaintextLength) bytes after a plaintext without KEK")
        }
        let kek =
            try hasKEK == 1
            ? Self.kek(UnsafeRawBufferPointer(rebasing: plaintext[fixedPlaintextLength...]), measurementSalt) : nil
        return ReleasedKeys(
            diskKey: SecretBytes(copying: UnsafeRawBufferPointer(rebasing: plaintext[0..<32])),
            measurementSecret: SecretBytes(copying: UnsafeRawBufferPointer(rebasing: plaintext[32..<64])),
            measurementSalt: measurementSalt,
            clusterKEK: kek
        )
    }

    /// The KEK's serialized form after `hasKEK`, read to the end; its measurement salt must be the envelope's.
    private static func kek(
        _ bytes: UnsafeRawBufferPointer,
        _ measurementSalt: [UInt8]
    ) throws(CoreError)
        -> KeyEncryptionKey
    {
        let kek: KeyEncryptionKey
        do throws(CoreError) {
            kek = try KeyEncryptionKey(serialized: bytes)
        } catch {
            throw .invalidEnvelope(error.message)
        }
        guard kek.measurementSalt == measurementSalt else {
            throw .invalidEnvelope("the KEK's measurement salt differs from the envelope's")
        }
        return kek
    }
}

/// The HPKE suite of every envelope and the sealing and opening steps they share.
enum EnvelopeHPKE {
    /// RFC 9180 base mode: KEM 0x0020 DHKEM(X25519, HKDF-SHA256), KDF 0x0001 HKDF-SHA256, AEAD 0x0002 AES-256-GCM.
    static let ciphersuite = HPKE.Ciphersuite(kem: .Curve25519_HKDF_SHA256, kdf: .HKDF_SHA256, aead: .AES_GCM_256)
    /// The length of an X25519 encapsulated key.
    static let encapsulatedKeyLength = 32

    /// The key that probes points for low order; it derives nothing secret, so one serves every probe.
    private static let lowOrderProbe = Curve25519.KeyAgreement.PrivateKey()

    /// RFC 9180 §7.1.4: X25519 with a low-order point gives the all-zero shared secret for every
    /// (clamped) private key, and swift-crypto does not refuse it; one agreement with a fixed probe
    /// key finds such a point.
    static func isLowOrder(_ key: Curve25519.KeyAgreement.PublicKey) -> Bool {
        guard let shared = try? lowOrderProbe.sharedSecretFromKeyAgreement(with: key) else { return true }
        return shared.withUnsafeBytes { !$0.contains { $0 != 0 } }
    }

    /// The encodings of the X25519 points of small order with the top bit cleared (X25519 ignores it),
    /// as libsodium lists them (RFC 7748 §6.1): u = 0, 1, the two points of order 8, p - 1, p, p + 1.
    static let smallOrderEncodings: [[UInt8]] = [
        [UInt8](repeating: 0, count: 32),
        [1] + [UInt8](repeating: 0, count: 31),
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
            0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
        ],
        [
            0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
            0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57,
        ],
        [0xec] + [UInt8](repeating: 0xff, count: 30) + [0x7f],
        [0xed] + [UInt8](repeating: 0xff, count: 30) + [0x7f],
        [0xee] + [UInt8](repeating: 0xff, count: 30) + [0x7f],
    ]

    /// Whether the 32-byte `encoding` is a small-order point: a table lookup, where ``isLowOrder(_:)``
    /// costs an X25519 agreement (a sixth of keyd's time per release). Tests check that both agree.
    static func isSmallOrderEncoding(_ encoding: [UInt8]) -> Bool {
        guard encoding.count == 32 else { return false }
        var masked = encoding
        masked[31] &= 0x7F
        return smallOrderEncodings.contains(masked)
    }

    /// Seals `plaintext` to the X25519 `publicKey`.
    static func seal(
        _ plaintext: [UInt8],
        to publicKey: [UInt8],
        info: [UInt8],
        additionalData: [UInt8]
    ) throws(CoreError) -> (encapsulatedKey: [UInt8], ciphertext: [UInt8]) {
        guard publicKey.count == BootKey.publicKeyLength,
            let recipient = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: publicKey)
        else {
            throw .invalidEnvelope("boot public key of \(publicKey.count) bytes is not an X25519 key")
        }
        guard !isSmallOrderEncoding(publicKey) else {
            throw .invalidEnvelope("the boot public key is a low-order X25519 point")
        }
        do {
            var sender = try HPKE.Sender(recipientKey: recipient, ciphersuite: ciphersuite, info: Data(info))
            let ciphertext = try sender.seal(plaintext, authenticating: additionalData)
            return (Array(sender.encapsulatedKey), Array(ciphertext))
        } catch {
            throw .invalidEnvelope("HPKE refused the boot public key")
        }
    }

    /// Opens `ciphertext` with `bootKey` and lends the plaintext to `body`, wiping it afterwards.
    static func open<Result: ~Copyable>(
        _ ciphertext: [UInt8],
        encapsulatedKey: [UInt8],
        info: [UInt8],
        additionalData: [UInt8],
        with bootKey: borrowing BootKey,
        _ body: (UnsafeRawBufferPointer) throws(CoreError) -> Result
    ) throws(CoreError) -> Result {
        // A low-order encapsulated key makes the shared secret zero whatever the boot key: anyone could
        // seal such an envelope to every keyd. Refused before HPKE runs.
        guard let ephemeral = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: encapsulatedKey),
            !isLowOrder(ephemeral)
        else {
            throw .invalidEnvelope("the encapsulated key is a low-order X25519 point")
        }
        var plaintext: Data
        do {
            var recipient = try HPKE.Recipient(
                privateKey: bootKey.privateKey,
                ciphersuite: ciphersuite,
                info: Data(info),
                encapsulatedKey: Data(encapsulatedKey)
            )
            plaintext = try recipient.open(ciphertext, authenticating: additionalData)
        } catch {
            throw .invalidEnvelope("HPKE open failed (sealed to another boot key, or an edited envelope)")
        }
        defer { plaintext.wipe() }
        return try plaintext.withBytes(body)
    }
}

extension Array where Element == UInt8 {
    /// Appends `field` as a u16 big-endian length and its bytes.
    mutating func appendLengthPrefixed(_ field: [UInt8]) {
        precondition(field.count <= Int(UInt16.max), "bound field of \(field.count) bytes")
        append(UInt8(field.count >> 8))
        append(UInt8(field.count & 0xFF))
        append(contentsOf: field)
    }

    /// Overwrites every byte with zero.
    mutating func wipe() {
        withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
    }
}

extension Data {
    /// Overwrites every byte with zero.
    mutating func wipe() {
        withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    /// Lends the bytes to `body`, which may make a noncopyable value (a KEK) or throw a ``CoreError``.
    func withBytes<Result: ~Copyable>(
        _ body: (UnsafeRawBufferPointer) throws(CoreError) -> Result
    ) throws(CoreError) -> Result {
        var outcome: Swift.Result<Result, CoreError> = .failure(.invalidEnvelope("plaintext not read"))
        withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            do throws(CoreError) { outcome = .success(try body(bytes)) } catch { outcome = .failure(error) }
        }
        return try outcome.get()
    }
}

extension WireReader {
    /// Runs `body` over a reader of `bytes`.
    static func read<T>(
        _ bytes: [UInt8],
        _ body: (inout WireReader) throws(ProtocolError) -> T
    ) throws(ProtocolError)
        -> T
    {
        let result: Result<T, ProtocolError> = bytes.withUnsafeBytes { raw in
            var reader = WireReader(raw)
            do throws(ProtocolError) { return .success(try body(&reader)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

extension CoreError.Code {
    /// An envelope or init envelope is malformed, sealed to another key, or does not fit its binding.
    public static let invalidEnvelope = CoreError.Code("invalidEnvelope")
}

extension CoreError {
    /// An envelope is malformed or does not open; never names key material.
    static func invalidEnvelope(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidEnvelope, reason: "envelope: \(reason)", file: file, line: line)
    }
}
