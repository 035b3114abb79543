import Foundation

/// The Secret that makes a `BootstrapToken` valid in a cluster, as Kubernetes documents it
/// (kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens, "Bootstrap Token Secret Format").
///
/// Encoded with `stringData` (plain strings, which the API server stores base64 in `data`), not `data`.
public struct BootstrapTokenSecret: Sendable, Equatable, Encodable {
    /// The namespace bootstrap-token Secrets must live in.
    public static let namespace = "kube-system"
    /// The Secret type the bootstrap-token authenticator reads.
    public static let type = "bootstrap.kubernetes.io/token"
    /// The group kubeadm's node bootstrap RBAC rules name.
    public static let defaultExtraGroups = "system:bootstrappers:kubeadm:default-node-token"

    /// `metadata`: name and namespace.
    public struct Metadata: Sendable, Equatable, Encodable {
        /// `bootstrap-token-<id>`.
        public var name: String
        /// Always `kube-system`.
        public var namespace: String
    }

    /// Always `v1`.
    public var apiVersion = "v1"
    /// Always `Secret`.
    public var kind = "Secret"
    /// Name and namespace.
    public var metadata: Metadata
    /// `bootstrap.kubernetes.io/token`.
    public var type = BootstrapTokenSecret.type
    /// token-id, token-secret, expiration, usages, auth-extra-groups, description; plain strings.
    public var stringData: [String: String]

    /// The Secret for `token`, expiring at `expiration` (RFC 3339, UTC), with both usages and kubeadm's group.
    public init(token: BootstrapToken, expiration: Date, extraGroups: String = Self.defaultExtraGroups) {
        metadata = Metadata(name: token.secretName, namespace: Self.namespace)
        stringData = [
            "description": "Bootstrap token created by Asterism trustd for a node join.",
            "token-id": token.id,
            "token-secret": token.secret,
            "expiration": Self.rfc3339(expiration),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": extraGroups,
        ]
    }

    /// The JSON body of the create request, keys sorted.
    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding strings and string maps cannot fail.
        return Array(try! encoder.encode(self))
    }

    /// `date` in RFC 3339 at whole seconds, UTC: `2026-12-07T12:00:00Z`.
    public static func rfc3339(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(timeZone: TimeZone(identifier: "UTC")!))
    }
}
