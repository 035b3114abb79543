import KeydCore

/// The admin's policy inputs, checked with KeydCore's own parsers before anything is sent to keyd.
public enum PolicyFiles {
    /// Largest signed policy file read (`policy.set`'s limit).
    public static let maximumSignedPolicyLength = SignedPolicy.maximumLength
    /// Largest operator key file read: a PEM public key is under 200 bytes.
    public static let maximumKeyFileLength = 4096
    /// How errors name a signed policy file.
    static let signedPolicyFile = "signed policy file"
    /// How errors name an operator key file.
    static let operatorKeyFile = "operator key file"

    /// A signed policy file's contents, parsed, and the policy in it.
    public struct CheckedPolicy: Sendable {
        /// The signed policy (its ``SignedPolicy/encoded`` form is what keyd is sent).
        public let signed: SignedPolicy
        /// The policy inside, as keyd will read it once the signature verifies.
        public let policy: MeasurementPolicy

        /// Parses the policy inside `signed`; its signature is keyd's to check.
        init(_ signed: SignedPolicy) throws(CoreError) {
            self.signed = signed
            policy = try MeasurementPolicy(json: signed.policy)
        }
    }

    /// Reads and checks the signed policy file at `path` (`-` is standard input).
    public static func readSignedPolicy(path: String) throws(KeydctlError) -> CheckedPolicy {
        try signedPolicy(
            InputFile.read(path: path, what: signedPolicyFile, limit: maximumSignedPolicyLength),
            path: path
        )
    }

    /// Reads and parses the operator key file at `path` (`-` is standard input).
    public static func readOperatorKey(path: String) throws(KeydctlError) -> OperatorKey {
        try operatorKey(InputFile.read(path: path, what: operatorKeyFile, limit: maximumKeyFileLength), path: path)
    }

    /// Parses a signed policy's wire form and the policy inside it; the signature is keyd's to check.
    public static func signedPolicy(_ bytes: [UInt8], path: String) throws(KeydctlError) -> CheckedPolicy {
        let signed: SignedPolicy
        do throws(CoreError) {
            signed = try SignedPolicy(decoding: bytes)
        } catch {
            throw .invalidSignedPolicy(path: path, error.message)
        }
        do throws(CoreError) {
            return try CheckedPolicy(signed)
        } catch {
            throw .invalidPolicy(path: path, error.message)
        }
    }

    /// Parses a PEM `PUBLIC KEY` (Ed25519 or ECDSA P-256) or keyd's wire form (algorithm byte, then the key).
    public static func operatorKey(_ bytes: [UInt8], path: String) throws(KeydctlError) -> OperatorKey {
        let text = bytes.drop { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        guard text.starts(with: "-----BEGIN ".utf8) else {
            do throws(CoreError) {
                return try OperatorKey(decoding: bytes)
            } catch {
                throw .invalidOperatorKey(
                    path: path,
                    "neither a PEM PUBLIC KEY nor keyd's wire form (\(error.message))"
                )
            }
        }
        guard let pem = String(validating: bytes, as: UTF8.self) else {
            throw .invalidOperatorKey(path: path, "PEM text that is not UTF-8")
        }
        // A private key is never pinned, and its text is never echoed.
        if pem.contains("PRIVATE KEY-----") {
            throw .invalidOperatorKey(
                path: path,
                "holds a private key; pin its public key (openssl pkey -in KEY -pubout)"
            )
        }
        do throws(CoreError) {
            return try OperatorKey(pem: pem)
        } catch {
            throw .invalidOperatorKey(path: path, error.message)
        }
    }
}
