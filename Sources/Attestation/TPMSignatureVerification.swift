import Crypto
import FoundationEssentials
import _CryptoExtras

/// A TPM public key parsed into swift-crypto's key type (BoringSSL verifies every signature), with its
/// DER SubjectPublicKeyInfo. A class, so the evidence and policies that share it copy one reference.
final class TPMVerificationKey: Sendable {
    enum Backing: Sendable {
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case rsa(_RSA.Signing.PublicKey)
    }

    let backing: Backing
    /// The DER SubjectPublicKeyInfo, whose SHA-256 is the key's allow-list digest.
    let subjectPublicKeyInfo: [UInt8]

    /// The key parsed and checked (a point on its curve, an RSA key of a size BoringSSL accepts).
    init(_ key: TPMPublicKey) throws(AttestationError) {
        switch key {
        case .ecc(let curve, let x, let y):
            let size = curve.coordinateSize
            let point = [0x04] + leftPad(x, to: size) + leftPad(y, to: size)
            do {
                switch curve {
                case .nistP256:
                    let key = try P256.Signing.PublicKey(x963Representation: point)
                    backing = .p256(key)
                    subjectPublicKeyInfo = Array(key.derRepresentation)
                    digest = Array(SHA256.hash(data: subjectPublicKeyInfo))
                case .nistP384:
                    let key = try P384.Signing.PublicKey(x963Representation: point)
                    backing = .p384(key)
                    subjectPublicKeyInfo = Array(key.derRepresentation)
                    digest = Array(SHA256.hash(data: subjectPublicKeyInfo))
                }
            } catch {
                throw .invalidKey("TPMT_PUBLIC.unique.ecc", "not a point on \(curve)")
            }
        case .rsa(let modulus, let exponent):
            var e = withUnsafeBytes(of: exponent.bigEndian) { Array($0) }
            while e.first == 0 { e.removeFirst() }
            do {
                let key = try _RSA.Signing.PublicKey(n: modulus, e: e)
                backing = .rsa(key)
                subjectPublicKeyInfo = Array(key.derRepresentation)
                digest = Array(SHA256.hash(data: subjectPublicKeyInfo))
            } catch {
                throw .invalidKey("TPMT_PUBLIC.unique.rsa", "RSA key of \(modulus.count * 8) bits refused (\(error))")
            }
        }
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo.
    let digest: [UInt8]

    /// Whether `signature` is a valid signature over `message` by this key.
    func isValid(_ signature: TPMTSignature, over message: [UInt8]) -> Bool {
        switch (backing, signature) {
        case (.p256(let key), .ecdsa(let hash, let r, let s)):
            guard r.count <= 32, s.count <= 32,
                let sig = try? P256.Signing.ECDSASignature(rawRepresentation: Self.concatenate(r, s, size: 32))
            else { return false }
            return Self.verify(hash: hash, message: message) { key.isValidSignature(sig, for: $0) }
        case (.p384(let key), .ecdsa(let hash, let r, let s)):
            guard r.count <= 48, s.count <= 48,
                let sig = try? P384.Signing.ECDSASignature(rawRepresentation: Self.concatenate(r, s, size: 48))
            else { return false }
            return Self.verify(hash: hash, message: message) { key.isValidSignature(sig, for: $0) }
        case (.rsa(let key), .rsassa(let hash, let bytes)):
            let sig = _RSA.Signing.RSASignature(rawRepresentation: bytes)
            return Self.verify(hash: hash, message: message) {
                key.isValidSignature(sig, for: $0, padding: .insecurePKCS1v1_5)
            }
        case (.rsa(let key), .rsapss(let hash, let bytes)):
            let sig = _RSA.Signing.RSASignature(rawRepresentation: bytes)
            return Self.verify(hash: hash, message: message) { key.isValidSignature(sig, for: $0, padding: .PSS) }
        default:
            return false
        }
    }

    /// r || s, each left-padded to `size` bytes (both at most `size` long), in one allocation.
    private static func concatenate(_ r: [UInt8], _ s: [UInt8], size: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 2 * size)
        out.replaceSubrange((size - r.count)..<size, with: r)
        out.replaceSubrange((2 * size - s.count)..<(2 * size), with: s)
        return out
    }

    /// Hashes `message` with `hash` and hands the digest to `check`; false for an unsupported hash.
    private static func verify(hash: TPMAlgorithm, message: [UInt8], _ check: (any Digest) -> Bool) -> Bool {
        switch hash {
        case .sha1: check(Insecure.SHA1.hash(data: message))
        case .sha256: check(SHA256.hash(data: message))
        case .sha384: check(SHA384.hash(data: message))
        case .sha512: check(SHA512.hash(data: message))
        default: false
        }
    }
}

/// An attestation key parsed into swift-crypto's key type once, to validate many quotes without parsing
/// the key, re-encoding its SubjectPublicKeyInfo or hashing it again. An immutable value; equal when the
/// marshaled TPMT_PUBLIC is equal.
public struct PreparedAK: Hashable, Sendable {
    /// Everything behind one reference: copies of a prepared AK cost one retain.
    private final class Storage: Sendable {
        let akPublic: TPMTPublic
        let verificationKey: TPMVerificationKey

        init(_ akPublic: TPMTPublic, key: TPMVerificationKey) {
            self.akPublic = akPublic
            self.verificationKey = key
        }
    }

    private let storage: Storage

    /// The parsed TPMT_PUBLIC (its `bytes` are the marshaled form quotes are matched against).
    public var akPublic: TPMTPublic { storage.akPublic }
    /// SHA-256 of the key's DER SubjectPublicKeyInfo: its allow-list digest.
    public var keyDigest: [UInt8] { storage.verificationKey.digest }
    /// The key made usable for verification.
    var verificationKey: TPMVerificationKey { storage.verificationKey }

    /// Prepares `akPublic`.
    /// - Throws: ``AttestationError`` when the key is not a usable ECC or RSA key.
    public init(_ akPublic: TPMTPublic) throws(AttestationError) {
        storage = Storage(akPublic, key: try TPMVerificationKey(akPublic.key))
    }

    /// `akPublic` with the key already parsed from it.
    init(_ akPublic: TPMTPublic, key: TPMVerificationKey) {
        storage = Storage(akPublic, key: key)
    }

    /// Whether this key's marshaled TPMT_PUBLIC is exactly `bytes`.
    func isMarshaled(as bytes: ArraySlice<UInt8>) -> Bool {
        storage.akPublic.bytes.withUnsafeBytes { mine in bytes.withUnsafeBytes { theirs in equalBytes(mine, theirs) } }
    }

    /// Prepares a marshaled TPMT_PUBLIC or TPM2B_PUBLIC.
    public init(bytes: some Collection<UInt8>) throws(AttestationError) {
        try self.init(TPMTPublic(anyEncoding: bytes))
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.akPublic == rhs.akPublic }
    public func hash(into hasher: inout Hasher) { hasher.combine(akPublic.bytes) }
}

/// Whether two byte buffers hold the same bytes, compared a word at a time (not constant time: public data only).
func equalBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    var offset = 0
    while offset + 8 <= a.count {
        guard
            a.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                == b.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        else {
            return false
        }
        offset += 8
    }
    while offset < a.count {
        guard a[offset] == b[offset] else { return false }
        offset += 1
    }
    return true
}

/// Whether two byte arrays are equal, compared a word at a time (not constant time: public data only).
func equalBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.withUnsafeBytes { a in b.withUnsafeBytes { b in equalBytes(a, b) } }
}

/// Whether two byte slices are equal, compared a word at a time (not constant time: public data only).
func equalBytes(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Bool {
    a.withUnsafeBytes { a in b.withUnsafeBytes { b in equalBytes(a, b) } }
}

/// `bytes` with leading zeros added up to `size` (unchanged when already that long or longer).
func leftPad(_ bytes: [UInt8], to size: Int) -> [UInt8] {
    bytes.count >= size ? bytes : [UInt8](repeating: 0, count: size - bytes.count) + bytes
}

extension TPMTPublic {
    /// The key's DER SubjectPublicKeyInfo.
    public func subjectPublicKeyInfo() throws(AttestationError) -> [UInt8] {
        try TPMVerificationKey(key).subjectPublicKeyInfo
    }

    /// SHA-256 of the key's DER SubjectPublicKeyInfo: the AK allow-list entry.
    public func keyDigest() throws(AttestationError) -> [UInt8] { try TPMVerificationKey(key).digest }
}
