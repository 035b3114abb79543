import Crypto
import FoundationEssentials
import KeydProtocol

/// A measurement policy with the operator's signature: what `policy.set` and `init.accept` carry and
/// what keyd keeps in its state directory.
///
/// Wire and file form (at most 16,384 bytes): `{"policy":"<base64 of the policy JSON bytes>","signature":
/// "<base64>"}`, exactly these two members, standard base64 with padding in its one canonical spelling.
/// The signature (see ``OperatorKey``) is over `"asterism-policy-v1\n"` followed by the policy bytes
/// exactly as carried.
public struct SignedPolicy: Hashable, Sendable {
    /// The largest signed policy (`policy.set`'s limit): it holds the base64 of a policy at its limit, a
    /// signature and the object around them.
    public static let maximumLength = 16_384
    /// The longest signature (a DER ECDSA P-256 signature is at most 72 bytes, Ed25519's 64).
    public static let maximumSignatureLength = 128
    /// The text signed in front of the policy bytes.
    public static let signatureLabel = "asterism-policy-v1\n"

    /// The policy JSON bytes, not yet read.
    public let policy: [UInt8]
    /// The operator's signature.
    public let signature: [UInt8]

    /// Wraps policy bytes and their signature.
    public init(policy: [UInt8], signature: [UInt8]) {
        self.policy = policy
        self.signature = signature
    }

    /// The message an operator key signs for `policy`.
    public static func signedMessage(_ policy: [UInt8]) -> [UInt8] {
        Array(signatureLabel.utf8) + policy
    }

    /// SHA-256 of the policy bytes (``MeasurementPolicy/digest`` once verified).
    public var digest: [UInt8] { Array(SHA256.hash(data: policy)) }

    /// The wire and file form.
    public var encoded: [UInt8] {
        Array(
            #"{"policy":"\#(Data(policy).base64EncodedString())","signature":"\#(Data(signature).base64EncodedString())"}"#
                .utf8
        )
    }

    /// Parses the wire and file form strictly; throws ``CoreError/Code/invalidSignedPolicy`` naming the member.
    public init(decoding bytes: [UInt8]) throws(CoreError) {
        let members: Members
        do throws(CoreError) {
            members = try KeydJSON.decode(Members.self, from: bytes, limit: Self.maximumLength, what: "JSON")
        } catch {
            throw .invalidSignedPolicy(error.message)
        }
        guard members.policy.count <= MeasurementPolicy.maximumLength else {
            throw .invalidSignedPolicy(
                "policy of \(members.policy.count) bytes exceeds limit \(MeasurementPolicy.maximumLength)"
            )
        }
        guard members.signature.count <= Self.maximumSignatureLength else {
            throw .invalidSignedPolicy(
                "signature of \(members.signature.count) bytes exceeds limit \(Self.maximumSignatureLength)"
            )
        }
        self.init(policy: members.policy, signature: members.signature)
    }

    /// The policy, once its signature by `key` verifies, it parses, and its version is above `currentVersion`
    /// (nil: keyd holds no policy yet). Each refusal answers `policyRejected` on the wire.
    /// - Throws: ``CoreError/Code/policySignatureInvalid``, ``CoreError/Code/invalidPolicy`` or
    ///   ``CoreError/Code/policyVersionNotNewer``, in that order of checks.
    public func verified(by key: OperatorKey, above currentVersion: UInt64?) throws(CoreError) -> MeasurementPolicy {
        // Nothing of an unsigned policy is read, so a forged one cannot even exercise the parser.
        guard key.verify(signature: signature, message: Self.signedMessage(policy)) else {
            throw .policySignatureInvalid(key)
        }
        let parsed = try MeasurementPolicy(json: policy)
        if let currentVersion, parsed.version <= currentVersion {
            throw .policyVersionNotNewer(parsed.version, current: currentVersion)
        }
        return parsed
    }

    /// The two members, each base64 in its canonical spelling.
    private struct Members: Decodable {
        let policy: [UInt8]
        let signature: [UInt8]

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: KeydJSON.Name.self)
            try container.refuseMembers(except: ["policy", "signature"])
            policy = try Self.base64(container, "policy")
            signature = try Self.base64(container, "signature")
        }

        /// The bytes of the base64 member `name`; a spelling that does not re-encode identically is refused.
        private static func base64(
            _ container: KeyedDecodingContainer<KeydJSON.Name>,
            _ name: String
        ) throws
            -> [UInt8]
        {
            let text = try container.decode(String.self, forKey: KeydJSON.Name(name))
            guard let data = Data(base64Encoded: text), data.base64EncodedString() == text else {
                throw KeydJSON.MemberError(
                    path: container.codingPath + [KeydJSON.Name(name)],
                    problem: "not canonical standard base64"
                )
            }
            return Array(data)
        }
    }
}

extension CoreError.Code {
    /// A signed policy does not decode.
    public static let invalidSignedPolicy = CoreError.Code("invalidSignedPolicy")
    /// A policy's signature does not verify with the pinned operator key.
    public static let policySignatureInvalid = CoreError.Code("policySignatureInvalid")
    /// A policy's version is not above the current policy's.
    public static let policyVersionNotNewer = CoreError.Code("policyVersionNotNewer")
}

extension CoreError {
    /// A signed policy is malformed; `reason` names the member.
    static func invalidSignedPolicy(_ reason: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(code: .invalidSignedPolicy, reason: "signed policy: \(reason)", file: file, line: line)
    }

    /// The signature does not verify with `key`.
    static func policySignatureInvalid(_ key: OperatorKey, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(
            code: .policySignatureInvalid,
            reason: "signed policy: the signature does not verify with the pinned operator key (\(key))",
            file: file,
            line: line
        )
    }

    /// Version `version` is not above `current`.
    static func policyVersionNotNewer(
        _ version: UInt64,
        current: UInt64,
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        CoreError(
            code: .policyVersionNotNewer,
            reason: "signed policy: version \(version) is not above the current version \(current)",
            file: file,
            line: line
        )
    }
}
