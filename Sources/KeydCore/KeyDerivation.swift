import Crypto

/// HKDF-SHA-256 (RFC 5869, extract then expand) and the `info` strings Constellation derives with.
public enum KeyDerivation {
    /// The longest HKDF-SHA-256 output: 255 blocks of 32 bytes.
    public static let maxByteCount = 255 * 32

    /// `info` for the measurement secret.
    public static let measurementSecretInfo = "key-measurementSecret"

    /// `info` for the cluster ID (derived from the measurement secret and salt).
    public static let clusterIDInfo = "key-clusterID"

    /// `info` for a measurement salt derived from the master secret when an import gives none.
    public static let measurementSaltInfo = "key-measurementSalt"

    /// The length of a disk key, the measurement secret and the cluster ID.
    public static let dataKeyLength = 32

    /// The cluster ID: `HKDF-SHA-256(measurementSecret, measurementSalt, "key-clusterID", 32)`; not secret
    /// (PCR 15 is extended with it).
    public static func clusterID(measurementSecret: borrowing SecretBytes, measurementSalt: [UInt8]) -> [UInt8] {
        measurementSalt.withUnsafeBytes { saltBytes in
            hkdfSHA256(
                inputKeyMaterial: measurementSecret.storage,
                salt: saltBytes,
                info: clusterIDInfo.utf8,
                byteCount: dataKeyLength
            )
            .withUnsafeBytes { Array($0) }
        }
    }

    /// PCR 15 after a fresh boot's one cluster-ID event (TPM2_PCR_Event of the 32-byte ID):
    /// `SHA-256(0^32 ‖ SHA-256(clusterID))` (CONSTELLATION-WIRE.md).
    public static func markedClusterPCR(clusterID: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: [UInt8](repeating: 0, count: 32) + Array(SHA256.hash(data: clusterID))))
    }

    /// `info` for a state disk's key: "key-" + its validated UUID.
    public static func diskKeyInfo(uuid: DiskUUID) -> String {
        "key-" + uuid.text
    }

    /// HKDF-SHA-256 of `secret` with `salt` and `info`, `byteCount` (1…8160) bytes long.
    ///
    /// Any lengths are accepted here (RFC 5869's vectors use 22-byte secrets);
    /// ``KeyEncryptionKey`` enforces keyd's own lengths.
    public static func hkdfSHA256(
        secret: UnsafeRawBufferPointer,
        salt: UnsafeRawBufferPointer,
        info: some Collection<UInt8>,
        byteCount: Int
    ) -> SecretBytes {
        SecretBytes(
            storage: hkdfSHA256(
                inputKeyMaterial: SymmetricKey(data: secret),
                salt: salt,
                info: info,
                byteCount: byteCount
            )
        )
    }

    /// HKDF-SHA-256 over key material already in swift-crypto storage.
    static func hkdfSHA256(
        inputKeyMaterial: SymmetricKey,
        salt: UnsafeRawBufferPointer,
        info: some Collection<UInt8>,
        byteCount: Int
    ) -> SymmetricKey {
        // Our bug if out of range: callers pass fixed sizes. HKDF's counter is one byte.
        precondition((1...maxByteCount).contains(byteCount), "HKDF output \(byteCount) bytes outside 1…\(maxByteCount)")
        return HKDF<SHA256>.deriveKey(
            inputKeyMaterial: inputKeyMaterial,
            salt: salt,
            info: Array(info),
            outputByteCount: byteCount
        )
    }
}

extension KeyEncryptionKey {
    /// Derives `byteCount` (1…8160) bytes: HKDF-SHA-256(master secret, salt, `info`).
    /// - Important: The result is a data key; keep it in ``SecretBytes`` and never export it.
    public borrowing func deriveKey(info: some Collection<UInt8>, byteCount: Int) -> SecretBytes {
        let derived = salt.storage.withUnsafeBytes { saltBytes in
            KeyDerivation.hkdfSHA256(
                inputKeyMaterial: masterSecret.storage,
                salt: saltBytes,
                info: info,
                byteCount: byteCount
            )
        }
        return SecretBytes(storage: derived)
    }

    /// Derives `byteCount` bytes with the UTF-8 of `info`, e.g. ``KeyDerivation/diskKeyInfo(uuid:)``.
    public borrowing func deriveKey(info: String, byteCount: Int) -> SecretBytes {
        deriveKey(info: info.utf8, byteCount: byteCount)
    }
}

extension KeyEncryptionKey {
    /// The keys a release hands a node: its disk key (`key-<uuid>`), the measurement secret, the
    /// measurement salt, and for a control plane (`includeKEK`) this KEK itself.
    public borrowing func releasedKeys(for uuid: DiskUUID, includeKEK: Bool) -> ReleasedKeys {
        ReleasedKeys(
            diskKey: deriveKey(info: KeyDerivation.diskKeyInfo(uuid: uuid), byteCount: KeyDerivation.dataKeyLength),
            measurementSecret: deriveKey(
                info: KeyDerivation.measurementSecretInfo,
                byteCount: KeyDerivation.dataKeyLength
            ),
            measurementSalt: measurementSalt,
            clusterKEK: includeKEK ? copy() : nil
        )
    }

    /// The cluster ID every node of this cluster extends PCR 15 with (``KeyDerivation/clusterID(measurementSecret:measurementSalt:)``).
    public var clusterID: [UInt8] {
        let measurementSecret = deriveKey(
            info: KeyDerivation.measurementSecretInfo,
            byteCount: KeyDerivation.dataKeyLength
        )
        return KeyDerivation.clusterID(measurementSecret: measurementSecret, measurementSalt: measurementSalt)
    }
}
