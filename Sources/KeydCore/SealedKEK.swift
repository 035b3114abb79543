import Crypto
import FoundationEssentials
import KeydProtocol

/// The KEK at rest (`<state-dir>/kek.sealed`): the master secret and salt encrypted with AES-256-GCM
/// under a random 32-byte wrapping key, and that wrapping key sealed to the TPM under a PolicyPCR
/// policy as a *persistent* object. The KEK never reaches disk in the clear; without the same TPM,
/// PCR values and persistent object the file is noise.
///
/// ```
/// magic "AKEK" | version u16 = 2 | pcrCount u8 | pcrs u8… (ascending, < 24)
/// handle u32 | objectName bytes<68> | nonce fixed[12] | ciphertext bytes<256>
/// ```
/// The wrapping key lives in the TPM at the owner persistent `handle` and is unsealed only when the
/// object there has `objectName`; `kek.lock` evicts it, so a copy of the file saved before the lock
/// and put back later opens nothing, and a re-import makes another object (another name).
/// The ciphertext (GCM text ‖ 16-byte tag) covers `masterLength u8 ‖ master ‖ saltLength u8 ‖ salt ‖
/// measurementSalt fixed[32]`; the bytes before the nonce are its additional data, so a file cannot pair
/// one object with another's text.
public struct SealedKEKFile: Hashable, Sendable {
    /// ASCII `AKEK`.
    static let magic: [UInt8] = [0x41, 0x4B, 0x45, 0x4B]
    /// The only version (1 kept the sealed object in the file, where a saved copy outlived `kek.lock`).
    static let version: UInt16 = 2
    /// Length of the TPM wrapping key.
    public static let wrappingKeyByteCount = 32
    /// The largest file accepted.
    public static let maximumLength = 4096

    /// The PCRs the TPM policy binds.
    public var pcrs: [Int]
    /// The owner persistent handle of the sealed wrapping key.
    public var handle: UInt32
    /// The TPM name of the sealed wrapping key's object (nameAlg ‖ digest of its public area).
    public var objectName: [UInt8]
    /// The GCM nonce.
    var nonce: [UInt8]
    /// The GCM ciphertext and tag.
    var ciphertext: [UInt8]

    /// The bytes of the file.
    public var encoded: [UInt8] {
        var w = header
        w.fixed(nonce, count: 12)
        w.bytes(ciphertext, max: 256)
        return w.bytes
    }

    /// Everything before the nonce: the GCM additional data.
    private var header: WireWriter {
        var w = WireWriter(capacity: 1024)
        w.fixed(Self.magic, count: 4)
        w.u16(Self.version)
        w.u8(UInt8(pcrs.count))
        for index in pcrs { w.u8(UInt8(index)) }
        w.u32(handle)
        w.bytes(objectName, max: 68)
        return w
    }

    /// Parses a file strictly (magic, version, ascending PCRs, bounds, no trailing bytes).
    public init(decoding bytes: [UInt8]) throws(CoreError) {
        guard bytes.count <= Self.maximumLength else {
            throw .invalidSealedKEK("file of \(bytes.count) bytes exceeds \(Self.maximumLength)")
        }
        let result: Result<SealedKEKFile, ProtocolError> = bytes.withUnsafeBytes { raw in
            do throws(ProtocolError) {
                var r = WireReader(raw)
                guard try r.fixed(4, "magic") == Self.magic else { throw .badValue(field: "magic", "not AKEK") }
                let version = try r.u16("version")
                guard version == Self.version else {
                    throw .badValue(field: "version", "\(version) is not \(Self.version) (import the KEK again)")
                }
                let count = Int(try r.u8("pcrCount"))
                var pcrs: [Int] = []
                for _ in 0..<count {
                    let index = Int(try r.u8("pcr"))
                    guard index < 24, pcrs.last.map({ $0 < index }) ?? true else {
                        throw .badValue(field: "pcr", "\(index) not ascending below 24")
                    }
                    pcrs.append(index)
                }
                let file = SealedKEKFile(
                    pcrs: pcrs,
                    handle: try r.u32("handle"),
                    objectName: try r.bytes(max: 68, "objectName"),
                    nonce: try r.fixed(12, "nonce"),
                    ciphertext: try r.bytes(max: 256, "ciphertext")
                )
                try r.finish("sealed KEK file")
                return .success(file)
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let file): self = file
        case .failure(let error): throw .invalidSealedKEK(error.description)
        }
    }

    private init(pcrs: [Int], handle: UInt32, objectName: [UInt8], nonce: [UInt8], ciphertext: [UInt8]) {
        self.pcrs = pcrs
        self.handle = handle
        self.objectName = objectName
        self.nonce = nonce
        self.ciphertext = ciphertext
    }

    /// Encrypts `kek` under `wrappingKey`, which the caller has sealed to the TPM as the persistent
    /// object `objectName` at `handle`.
    public init(
        sealing kek: borrowing KeyEncryptionKey,
        wrappingKey: borrowing SecretBytes,
        pcrs: [Int],
        handle: UInt32,
        objectName: [UInt8]
    ) throws(CoreError) {
        precondition(wrappingKey.count == Self.wrappingKeyByteCount, "wrapping key of \(wrappingKey.count) bytes")
        self.init(pcrs: pcrs, handle: handle, objectName: objectName, nonce: [], ciphertext: [])
        let additionalData = header.bytes
        let nonce = AES.GCM.Nonce()
        let box: AES.GCM.SealedBox
        do {
            box = try kek.withSerialized { plaintext in
                try AES.GCM.seal(plaintext, using: wrappingKey.storage, nonce: nonce, authenticating: additionalData)
            }
        } catch {
            throw .invalidSealedKEK("AES-GCM seal failed")
        }
        self.nonce = Array(nonce)
        ciphertext = Array(box.ciphertext) + Array(box.tag)
    }

    /// Decrypts the KEK with the wrapping key the TPM unsealed; a wrong key or an edited file fails.
    public func open(wrappingKey: borrowing SecretBytes) throws(CoreError) -> KeyEncryptionKey {
        guard ciphertext.count > 16, let nonce = try? AES.GCM.Nonce(data: self.nonce),
            let box = try? AES.GCM.SealedBox(
                nonce: nonce,
                ciphertext: ciphertext.dropLast(16),
                tag: ciphertext.suffix(16)
            )
        else { throw .invalidSealedKEK("ciphertext of \(ciphertext.count) bytes") }
        guard var plaintext = try? AES.GCM.open(box, using: wrappingKey.storage, authenticating: header.bytes) else {
            throw .invalidSealedKEK("authentication failed (another TPM key, or the file was edited)")
        }
        defer { plaintext.wipe() }
        return try plaintext.withBytes { bytes throws(CoreError) in
            do throws(CoreError) {
                return try KeyEncryptionKey(serialized: bytes)
            } catch {
                throw .invalidSealedKEK(error.message)
            }
        }
    }
}

extension CoreError.Code {
    /// A sealed KEK file is malformed or does not open.
    public static let invalidSealedKEK = CoreError.Code("invalidSealedKEK")
}

extension CoreError {
    /// A sealed KEK file is malformed or does not open; never names key material.
    static func invalidSealedKEK(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidSealedKEK, reason: "sealed KEK: \(reason)", file: file, line: line)
    }
}
