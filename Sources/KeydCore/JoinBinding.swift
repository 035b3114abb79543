import Crypto
import KeydProtocol

/// A Kubernetes node name, validated: a DNS-1123 subdomain of 1…253 bytes (lowercase `a-z`, `0-9`,
/// `-` and `.`; each dot-separated label of 1…63 bytes starts and ends with a letter or digit).
///
/// - Important: The name is bound into join evidence, envelopes and the kubelet certificate's
///   subject (`CN=system:node:<name>`); the only initializer validates, so an unchecked string
///   cannot reach any of them.
public struct KubernetesNodeName: Hashable, Sendable, CustomStringConvertible {
    /// The longest name in bytes.
    public static let maximumLength = 253
    /// The longest label in bytes.
    public static let maximumLabelLength = 63

    /// The name.
    public let text: String

    /// Validates `text`; throws ``CoreError/Code/invalidNodeName`` naming the rule it breaks.
    public init(validating text: String) throws(CoreError) {
        if let problem = Self.problem(text) { throw .invalidNodeName(text, problem) }
        self.text = text
    }

    public var description: String { text }

    /// What makes `text` no DNS-1123 subdomain, or nil when it is one.
    static func problem(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        guard (1...maximumLength).contains(bytes.count) else {
            return "length \(bytes.count) is outside 1…\(maximumLength)"
        }
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard label.count <= maximumLabelLength else {
                return "a label of \(label.count) bytes exceeds \(maximumLabelLength)"
            }
            guard let first = label.first, let last = label.last, isAlphanumeric(first), isAlphanumeric(last) else {
                return "a label does not start and end with a lowercase letter or digit"
            }
            guard label.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") }) else {
                return "only lowercase letters, digits, '-' and '.' are allowed"
            }
        }
        return nil
    }
}

/// What a joining node's keyd binds into its join evidence: the verifier's challenge, the TLS
/// certificate key trustd presents, keyd's own boot key, and the node it asks keys for.
public struct JoinClaims: Sendable, Hashable {
    /// The length of every fixed field (nonce, certificate key hash, boot public key).
    public static let fieldLength = 32

    /// The verifier's challenge nonce.
    public let nonce: [UInt8]
    /// SHA-256 of the DER SubjectPublicKeyInfo of trustd's aTLS certificate.
    public let certificateKeyHash: [UInt8]
    /// The joining keyd's own X25519 boot public key, to which the envelope is sealed.
    public let bootPublicKey: [UInt8]
    /// The UUID of the joining node's state disk.
    public let diskUUID: DiskUUID
    /// The role the node joins as.
    public let role: NodeRole
    /// The Kubernetes node name.
    public let nodeName: KubernetesNodeName

    /// Checks the fixed lengths (32 bytes each); throws ``CoreError/Code/invalidJoinClaims`` naming the field.
    public init(
        nonce: [UInt8],
        certificateKeyHash: [UInt8],
        bootPublicKey: [UInt8],
        diskUUID: DiskUUID,
        role: NodeRole,
        nodeName: KubernetesNodeName
    ) throws(CoreError) {
        for (name, value) in [
            ("nonce", nonce), ("certificateKeyHash", certificateKeyHash), ("bootPublicKey", bootPublicKey),
        ]
        where value.count != Self.fieldLength {
            throw .invalidJoinClaims("\(name) is \(value.count) bytes, not \(Self.fieldLength)")
        }
        self.nonce = nonce
        self.certificateKeyHash = certificateKeyHash
        self.bootPublicKey = bootPublicKey
        self.diskUUID = diskUUID
        self.role = role
        self.nodeName = nodeName
    }
}

/// The qualifying data of join evidence, which keyd computes itself so that no caller chooses what a
/// quote binds (PROTOCOL.md, "Join binding").
public enum JoinBinding {
    /// The label hashed first; distinct from `asterism-tpm-evidence-v1`, so generic evidence never passes.
    public static let label = "asterism-join-v1"

    /// SHA-256 over the label's bytes, then each field as a u16 big-endian length and its bytes, in
    /// this order: nonce, certificateKeyHash, bootPublicKey, diskUUID (its 36 ASCII bytes), role (one
    /// byte, its raw value), nodeName (UTF-8). The lengths keep any two field lists from hashing alike.
    public static func qualifyingData(_ claims: JoinClaims) -> [UInt8] {
        var message = Array(label.utf8)
        for field in [
            claims.nonce, claims.certificateKeyHash, claims.bootPublicKey, Array(claims.diskUUID.text.utf8),
            [claims.role.rawValue], Array(claims.nodeName.text.utf8),
        ] {
            message.appendLengthPrefixed(field)
        }
        return Array(SHA256.hash(data: message))
    }
}

extension CoreError.Code {
    /// A node name is not a DNS-1123 subdomain.
    public static let invalidNodeName = CoreError.Code("invalidNodeName")
    /// A join claim has the wrong length.
    public static let invalidJoinClaims = CoreError.Code("invalidJoinClaims")
}

extension CoreError {
    /// A node name that is not a DNS-1123 subdomain; names are not secret, so it is quoted.
    static func invalidNodeName(
        _ name: String,
        _ problem: String,
        file: String = #fileID,
        line: UInt = #line
    )
        -> CoreError
    {
        CoreError(
            code: .invalidNodeName,
            reason: "node name \(quotedForMessage(name)) is not a DNS-1123 subdomain: \(problem)",
            file: file,
            line: line
        )
    }

    /// A join claim field has the wrong length.
    static func invalidJoinClaims(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidJoinClaims, reason: "join claims: \(reason)", file: file, line: line)
    }
}
