import KeydCore
import KeydProtocol

/// keyd's pinned operator key and the measurement policy in force (`policy.get`), parsed with KeydCore.
public struct PolicyState: Sendable {
    /// The pinned operator key, if any.
    public let operatorKey: OperatorKey?
    /// The policy in force with its signed form, if any.
    public let policy: PolicyFiles.CheckedPolicy?

    /// Parses keyd's answer; a part that does not parse is keyd's fault, not the admin's (exit status 2).
    public init(_ answer: PolicyGetAnswer) throws(KeydctlError) {
        do throws(CoreError) {
            operatorKey = answer.operatorKey.isEmpty ? nil : try OperatorKey(decoding: answer.operatorKey)
            policy =
                answer.signedPolicy.isEmpty
                ? nil : try PolicyFiles.CheckedPolicy(SignedPolicy(decoding: answer.signedPolicy))
        } catch {
            throw .badAnswer(.policyGet, error.message)
        }
    }

    /// Whether the policy's signature verifies under the pinned key; nil unless keyd holds both.
    public var signatureVerifies: Bool? {
        guard let operatorKey, let signed = policy?.signed else { return nil }
        return operatorKey.verify(signature: signed.signature, message: SignedPolicy.signedMessage(signed.policy))
    }
}

extension Report {
    // MARK: policy show

    /// `keydctl policy show`: key and policy lines, then the key's PEM and the policy's canonical JSON.
    public static func policy(_ state: PolicyState) -> String {
        var pairs: [(String, String)] = []
        if let key = state.operatorKey {
            pairs += [("operator key", key.algorithm.description), ("operator key sha256", hex(key.digest))]
        } else {
            pairs.append(("operator key", "none pinned (keydctl policy pin-operator-key, or init.accept)"))
        }
        if let checked = state.policy {
            let signature: String
            switch state.signatureVerifies {
            case true?: signature = "verifies under the pinned operator key"
            case false?: signature = "DOES NOT VERIFY under the pinned operator key"
            case nil: signature = "not checked (no operator key pinned)"
            }
            pairs += [
                ("policy version", String(checked.policy.version)),
                ("policy sha256", hex(checked.signed.digest)),
                ("policy signature", signature),
            ]
        } else {
            pairs.append(("policy", "none: keyd releases no keys until one is set (keydctl policy set)"))
        }
        var sections = [aligned(pairs)]
        if let key = state.operatorKey { sections.append(trimmingTrailingNewlines(key.pem)) }
        if let checked = state.policy {
            sections.append(printable(String(decoding: checked.policy.canonicalJSON, as: UTF8.self)))
        }
        return sections.joined(separator: "\n\n")
    }

    /// `keydctl policy show --json`: the names of `status --json`, absent parts null.
    public static func policyJSON(_ state: PolicyState) -> String {
        var object = JSONObject()
        object.bool("operatorKeyPinned", state.operatorKey != nil)
        if let key = state.operatorKey {
            object.string("operatorKeyAlgorithm", key.algorithm.description)
            object.string("operatorKeyDigest", hex(key.digest))
            object.string("operatorKeyPEM", trimmingTrailingNewlines(key.pem) + "\n")
        } else {
            for name in ["operatorKeyAlgorithm", "operatorKeyDigest", "operatorKeyPEM"] { object.null(name) }
        }
        if let checked = state.policy {
            object.number("policyVersion", checked.policy.version)
            object.string("policyDigest", hex(checked.signed.digest))
            if let verifies = state.signatureVerifies {
                object.bool("policySignatureVerifies", verifies)
            } else {
                object.null("policySignatureVerifies")
            }
            object.json("policy", String(decoding: checked.policy.canonicalJSON, as: UTF8.self))
        } else {
            object.number("policyVersion", 0)
            for name in ["policyDigest", "policySignatureVerifies", "policy"] { object.null(name) }
        }
        return object.text
    }

    private static func trimmingTrailingNewlines(_ text: String) -> String {
        var copy = text
        while copy.last == "\n" { copy.removeLast() }
        return copy
    }
}
