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
/// derived with HKDF-SHA-256 (see ``KeyEncryptionKey/deriveKey(info:byteCount:)``).
///
/// - Important: keyd holds it in memory only; dropping it (`kek.lock`) frees and zeroes both secrets.
///   Nothing derived from it is exported except through sealed or verified operations.
public struct KeyEncryptionKey: ~Copyable, Sendable {
    /// Accepted master secret lengths in bytes (PROTOCOL.md `kek.import`).
    public static let masterSecretLengths = Limits.masterSecretLength
    /// Accepted salt lengths in bytes (PROTOCOL.md `kek.import`).
    public static let saltLengths = Limits.saltLength

    let masterSecret: SecretBytes
    let salt: SecretBytes

    /// Takes custody of a master secret (16…64 bytes) and salt (32…64 bytes).
    /// - Throws: ``CoreError/Code/secretLength`` naming the length and the limit.
    public init(masterSecret: consuming SecretBytes, salt: consuming SecretBytes) throws(CoreError) {
        // Lengths are checked; the bytes are never inspected or reported.
        guard Self.masterSecretLengths.contains(masterSecret.count) else {
            throw .secretLength("master secret", length: masterSecret.count, limit: Self.masterSecretLengths)
        }
        guard Self.saltLengths.contains(salt.count) else {
            throw .secretLength("salt", length: salt.count, limit: Self.saltLengths)
        }
        self.masterSecret = masterSecret
        self.salt = salt
    }
}
