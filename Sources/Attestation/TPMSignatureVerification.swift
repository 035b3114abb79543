import Crypto
import _CryptoExtras
import FoundationEssentials

/// A TPM public key made usable for verification, with its DER SubjectPublicKeyInfo.
struct TPMVerificationKey: Sendable {
    enum Backing {
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case rsa(_RSA.Signing.PublicKey)
    }

    let backing: Backing
    /// The DER SubjectPublicKeyInfo, whose SHA-256 is the key's allow-list digest.
    let subjectPublicKeyInfo: [UInt8]

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
                  let sig = try? P256.Signing.ECDSASignature(rawRepresentation: leftPad(r, to: 32) + leftPad(s, to: 32))
            else { return false }
            return Self.verify(hash: hash, message: message) { key.isValidSignature(sig, for: $0) }
        case (.p384(let key), .ecdsa(let hash, let r, let s)):
            guard r.count <= 48, s.count <= 48,
                  let sig = try? P384.Signing.ECDSASignature(rawRepresentation: leftPad(r, to: 48) + leftPad(s, to: 48))
            else { return false }
            return Self.verify(hash: hash, message: message) { key.isValidSignature(sig, for: $0) }
        case (.rsa(let key), .rsassa(let hash, let bytes)):
            let sig = _RSA.Signing.RSASignature(rawRepresentation: bytes)
            return Self.verify(hash: hash, message: message) { key.isValidSignature(sig, for: $0, padding: .insecurePKCS1v1_5) }
        case (.rsa(let key), .rsapss(let hash, let bytes)):
            let sig = _RSA.Signing.RSASignature(rawRepresentation: bytes)
            return Self.verify(hash: hash, message: message) { key.isValidSignature(sig, for: $0, padding: .PSS) }
        default:
            return false
        }
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

/// `bytes` with leading zeros added up to `size` (unchanged when already that long or longer).
func leftPad(_ bytes: [UInt8], to size: Int) -> [UInt8] {
    bytes.count >= size ? bytes : [UInt8](repeating: 0, count: size - bytes.count) + bytes
}

extension TPMTPublic {
    /// The key's DER SubjectPublicKeyInfo.
    public func subjectPublicKeyInfo() throws(AttestationError) -> [UInt8] { try TPMVerificationKey(key).subjectPublicKeyInfo }

    /// SHA-256 of the key's DER SubjectPublicKeyInfo: the AK allow-list entry.
    public func keyDigest() throws(AttestationError) -> [UInt8] { try TPMVerificationKey(key).digest }
}
