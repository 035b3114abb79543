import Attestation
import Crypto
import FoundationEssentials
import KeydProtocol
import X509

/// The operator's public signing key, pinned at init: only a policy it signed is ever accepted.
///
/// Wire and file form: `algorithm u8` then the key: 1 Ed25519 (32 raw bytes), 2 ECDSA P-256 (the 65-byte
/// uncompressed X9.63 point). Signatures: Ed25519 (64 bytes, RFC 8032) over the message; ECDSA P-256
/// over SHA-256 of the message, DER-encoded (X9.62 `ECDSA-Sig-Value`, as `openssl dgst -sha256 -sign`
/// makes it).
public struct OperatorKey: Hashable, Sendable, CustomStringConvertible {
    /// The signature algorithm and its key form.
    public enum Algorithm: UInt8, Sendable, CaseIterable, CustomStringConvertible {
        /// Ed25519: 32 raw bytes.
        case ed25519 = 1
        /// ECDSA P-256 with SHA-256: the 65-byte uncompressed point.
        case ecdsaP256 = 2

        /// The length of the key bytes after the algorithm byte.
        public var keyLength: Int {
            switch self {
            case .ed25519: 32
            case .ecdsaP256: 65
            }
        }

        public var description: String {
            switch self {
            case .ed25519: "ed25519"
            case .ecdsaP256: "ecdsa-p256"
            }
        }
    }

    /// The key made usable once.
    private enum Key: Sendable {
        case ed25519(Curve25519.Signing.PublicKey)
        case ecdsaP256(P256.Signing.PublicKey)
    }

    private let key: Key
    /// The wire and file form.
    public let encoded: [UInt8]

    /// The algorithm.
    public var algorithm: Algorithm {
        switch key {
        case .ed25519: .ed25519
        case .ecdsaP256: .ecdsaP256
        }
    }

    /// An Ed25519 key.
    public init(_ key: Curve25519.Signing.PublicKey) {
        self.key = .ed25519(key)
        encoded = [Algorithm.ed25519.rawValue] + Array(key.rawRepresentation)
    }

    /// An ECDSA P-256 key.
    public init(_ key: P256.Signing.PublicKey) {
        self.key = .ecdsaP256(key)
        encoded = [Algorithm.ecdsaP256.rawValue] + Array(key.x963Representation)
    }

    /// Parses the wire and file form strictly (known algorithm, exact length, a P-256 point on the
    /// curve); throws ``CoreError/Code/invalidOperatorKey``.
    public init(decoding bytes: [UInt8]) throws(CoreError) {
        guard let first = bytes.first else { throw .invalidOperatorKey("empty") }
        guard let algorithm = Algorithm(rawValue: first) else {
            throw .invalidOperatorKey("algorithm \(first) is neither 1 (ed25519) nor 2 (ecdsa-p256)")
        }
        let keyBytes = bytes.dropFirst()
        guard keyBytes.count == algorithm.keyLength else {
            throw .invalidOperatorKey("\(algorithm) key of \(keyBytes.count) bytes, not \(algorithm.keyLength)")
        }
        switch algorithm {
        case .ed25519:
            guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: keyBytes) else {
                throw .invalidOperatorKey("ed25519 key refused")
            }
            self.init(key)
        case .ecdsaP256:
            guard keyBytes.first == 0x04, let key = try? P256.Signing.PublicKey(x963Representation: keyBytes) else {
                throw .invalidOperatorKey("ecdsa-p256 key is not an uncompressed point on the curve")
            }
            self.init(key)
        }
    }

    /// Reads a PEM `PUBLIC KEY` (DER SubjectPublicKeyInfo) of an Ed25519 or P-256 key, as
    /// `openssl pkey -pubout` writes it; throws ``CoreError/Code/invalidOperatorKey``.
    public init(pem: String) throws(CoreError) {
        let key: Certificate.PublicKey
        do {
            key = try Certificate.PublicKey(pemEncoded: pem)
        } catch {
            throw .invalidOperatorKey("not a PEM PUBLIC KEY")
        }
        if let ed25519 = Curve25519.Signing.PublicKey(key) {
            self.init(ed25519)
        } else if let p256 = P256.Signing.PublicKey(key) {
            self.init(p256)
        } else {
            throw .invalidOperatorKey("a PEM key other than Ed25519 or ECDSA P-256")
        }
    }

    /// The key as PEM `PUBLIC KEY`.
    public var pem: String {
        let key: Certificate.PublicKey
        switch self.key {
        case .ed25519(let inner): key = Certificate.PublicKey(inner)
        case .ecdsaP256(let inner): key = Certificate.PublicKey(inner)
        }
        // Serializing a key swift-certificates made itself does not fail.
        guard let document = try? key.serializeAsPEM() else { preconditionFailure("PEM of a valid public key") }
        return document.pemString
    }

    /// SHA-256 of ``encoded``: how `status` and audit records name the key.
    public var digest: [UInt8] { Array(SHA256.hash(data: encoded)) }

    public var description: String { "\(algorithm) key sha256:\(hexString(digest.prefix(8)))…" }

    /// True when `signature` is this key's signature over `message` (see the type's documentation).
    public func verify(signature: [UInt8], message: [UInt8]) -> Bool {
        switch key {
        case .ed25519(let key):
            return key.isValidSignature(signature, for: message)
        case .ecdsaP256(let key):
            guard let parsed = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return key.isValidSignature(parsed, for: SHA256.hash(data: message))
        }
    }

    public static func == (lhs: OperatorKey, rhs: OperatorKey) -> Bool { lhs.encoded == rhs.encoded }

    public func hash(into hasher: inout Hasher) { hasher.combine(encoded) }
}

extension CoreError.Code {
    /// An operator key does not decode.
    public static let invalidOperatorKey = CoreError.Code("invalidOperatorKey")
}

extension CoreError {
    /// An operator key is malformed; `reason` names what.
    static func invalidOperatorKey(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidOperatorKey, reason: "operator key: \(reason)", file: file, line: line)
    }
}
