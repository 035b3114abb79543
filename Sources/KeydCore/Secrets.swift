import Crypto
import KeydProtocol

/// Secret bytes in zeroed-on-free storage, compared in constant time.
///
/// - Important: `SecretBytes` is `~Copyable` and has no `description`, `Equatable` or `Hashable`:
///   `print(secret)` and `"\(secret)"` do not compile, and the bytes exist once. Read them only
///   inside ``withUnsafeBytes(_:)`` and never keep them in a `String` or `[UInt8]` past the call.
public struct SecretBytes: ~Copyable, Sendable {
    /// swift-crypto's key storage: wiped when the last reference goes, compared in constant time.
    let storage: SymmetricKey

    /// Copies `bytes` into secret storage; the caller wipes its own buffer afterwards.
    public init(copying bytes: UnsafeRawBufferPointer) {
        storage = SymmetricKey(data: bytes)
    }

    /// Copies contiguous bytes (an array, a slice of a receive buffer) into secret storage; the
    /// caller wipes its own buffer afterwards. A collection without contiguous storage is our bug.
    public init(copying bytes: some Collection<UInt8>) {
        guard let key = bytes.withContiguousStorageIfAvailable({ SymmetricKey(data: UnsafeRawBufferPointer($0)) })
        else {
            preconditionFailure("secret bytes must be contiguous")
        }
        storage = key
    }

    /// Makes `randomByteCount` bytes from the system's secure random generator.
    public init(randomByteCount: Int) {
        precondition(randomByteCount > 0, "random secret of \(randomByteCount) bytes")
        storage = SymmetricKey(size: SymmetricKeySize(bitCount: randomByteCount * 8))
    }

    /// Takes over a key that swift-crypto produced.
    init(storage: SymmetricKey) {
        self.storage = storage
    }

    /// The number of bytes; a length is not secret.
    public var count: Int { storage.bitCount / 8 }

    /// Lends the bytes to `body`; the pointer must not escape it.
    public borrowing func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes(body)
    }

    /// True when both hold the same bytes; the time taken depends on the lengths only.
    public borrowing func constantTimeEquals(_ other: borrowing SecretBytes) -> Bool {
        storage == other.storage
    }
}

/// The key-encryption key: the cluster's master secret and salt, from which every data key is
/// derived with HKDF-SHA-256 (see ``KeyEncryptionKey/deriveKey(info:byteCount:)``), and the cluster's
/// measurement salt.
///
/// - Important: keyd holds it in memory only; dropping it (`kek.lock`) frees and zeroes both secrets.
///   Nothing derived from it is exported except through sealed or verified operations.
public struct KeyEncryptionKey: ~Copyable, Sendable {
    /// Accepted master secret lengths in bytes (PROTOCOL.md `kek.import`).
    public static let masterSecretLengths = Limits.masterSecretLength
    /// Accepted salt lengths in bytes (PROTOCOL.md `kek.import`).
    public static let saltLengths = Limits.saltLength
    /// The length of the measurement salt.
    public static let measurementSaltLength = 32

    let masterSecret: SecretBytes
    let salt: SecretBytes
    /// The salt of the cluster ID (`HKDF(measurementSecret, measurementSalt, "key-clusterID", 32)`) and
    /// of the measurement secret's uses; not secret (Constellation sends it in the clear at init).
    public let measurementSalt: [UInt8]

    /// Takes custody of a master secret (16…64 bytes), salt (32…64 bytes) and measurement salt (32 bytes).
    ///
    /// A nil `measurementSalt` (an import in Constellation's form, which carries only key and salt) is
    /// derived: `HKDF-SHA-256(master secret, salt, "key-measurementSalt", 32)`, so every keyd holding the
    /// same master secret and salt agrees on it.
    /// - Throws: ``CoreError/Code/secretLength`` naming the length and the limit.
    public init(
        masterSecret: consuming SecretBytes,
        salt: consuming SecretBytes,
        measurementSalt: [UInt8]? = nil
    ) throws(CoreError) {
        // Lengths are checked; the bytes are never inspected or reported.
        guard Self.masterSecretLengths.contains(masterSecret.count) else {
            throw .secretLength("master secret", length: masterSecret.count, limit: Self.masterSecretLengths)
        }
        guard Self.saltLengths.contains(salt.count) else {
            throw .secretLength("salt", length: salt.count, limit: Self.saltLengths)
        }
        let lengths = Self.measurementSaltLength...Self.measurementSaltLength
        if let measurementSalt, measurementSalt.count != Self.measurementSaltLength {
            throw .secretLength("measurement salt", length: measurementSalt.count, limit: lengths)
        }
        self.measurementSalt =
            measurementSalt
            ?? Self.derive(
                masterSecret: masterSecret,
                salt: salt,
                info: KeyDerivation.measurementSaltInfo,
                byteCount: Self.measurementSaltLength
            )
        self.masterSecret = masterSecret
        self.salt = salt
    }

    /// A second custodian of the same secrets (for a control-plane release), sharing their wiped storage.
    public borrowing func copy() -> KeyEncryptionKey {
        KeyEncryptionKey(copying: self)
    }

    private init(copying other: borrowing KeyEncryptionKey) {
        masterSecret = SecretBytes(storage: other.masterSecret.storage)
        salt = SecretBytes(storage: other.salt.storage)
        measurementSalt = other.measurementSalt
    }

    /// HKDF over the two secrets before `self` exists; the output here is the public measurement salt.
    private static func derive(
        masterSecret: borrowing SecretBytes,
        salt: borrowing SecretBytes,
        info: String,
        byteCount: Int
    ) -> [UInt8] {
        salt.withUnsafeBytes { saltBytes in
            KeyDerivation.hkdfSHA256(
                inputKeyMaterial: masterSecret.storage,
                salt: saltBytes,
                info: info.utf8,
                byteCount: byteCount
            )
            .withUnsafeBytes { Array($0) }
        }
    }
}

extension KeyEncryptionKey {
    /// The KEK's serialized form, the plaintext the sealed KEK file and both envelopes carry:
    /// `masterLength u8 ‖ master ‖ saltLength u8 ‖ salt ‖ measurementSalt fixed[32]`.
    /// Lends it to `body` in a buffer wiped afterwards.
    borrowing func withSerialized<R, E: Error>(_ body: ([UInt8]) throws(E) -> R) throws(E) -> R {
        var plaintext: [UInt8] = []
        plaintext.reserveCapacity(2 + masterSecret.count + salt.count + measurementSalt.count)
        plaintext.append(UInt8(masterSecret.count))
        masterSecret.withUnsafeBytes { plaintext.append(contentsOf: $0) }
        plaintext.append(UInt8(salt.count))
        salt.withUnsafeBytes { plaintext.append(contentsOf: $0) }
        plaintext.append(contentsOf: measurementSalt)
        defer { plaintext.wipe() }
        return try body(plaintext)
    }

    /// Reads the serialized form (``withSerialized(_:)``) to its exact end.
    /// - Throws: ``CoreError/Code/invalidKEKLayout`` for the layout, ``CoreError/Code/secretLength`` for a length.
    init(serialized bytes: UnsafeRawBufferPointer) throws(CoreError) {
        guard let first = bytes.first, bytes.count > 1 + Int(first),
            case let saltLength = Int(bytes[1 + Int(first)]),
            bytes.count == 2 + Int(first) + saltLength + Self.measurementSaltLength
        else {
            throw .invalidKEKLayout(byteCount: bytes.count)
        }
        let masterLength = Int(first)
        let salt = (2 + masterLength)..<(2 + masterLength + saltLength)
        try self.init(
            masterSecret: SecretBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[1..<(1 + masterLength)])),
            salt: SecretBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[salt])),
            measurementSalt: Array(bytes.suffix(Self.measurementSaltLength))
        )
    }
}

extension CoreError.Code {
    /// A serialized KEK does not have the layout of its lengths.
    public static let invalidKEKLayout = CoreError.Code("invalidKEKLayout")
}

extension CoreError {
    /// A serialized KEK of `byteCount` bytes does not have the layout its length bytes give.
    static func invalidKEKLayout(byteCount: Int, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(
            code: .invalidKEKLayout,
            reason:
                "serialized KEK of \(byteCount) bytes is not masterLength, master, saltLength, salt, measurementSalt(32)",
            file: file,
            line: line
        )
    }
}
