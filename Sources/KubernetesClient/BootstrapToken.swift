import Foundation

/// A kubeadm bootstrap token, `<id>.<secret>`: a 6-character public id and a 16-character secret over [a-z0-9].
///
/// `description` shows the id only; the secret leaves this value only through `secret` and `text`.
public struct BootstrapToken: Sendable, Hashable, CustomStringConvertible {
    /// The characters of id and secret, as the bootstrap-token authenticator accepts them.
    public static let alphabet: [Character] = Array("abcdefghijklmnopqrstuvwxyz0123456789")
    /// Characters in the id.
    public static let idLength = 6
    /// Characters in the secret.
    public static let secretLength = 16

    /// The public part; the Secret is named `bootstrap-token-<id>`.
    public let id: String
    /// The private part, which authenticates the joining kubelet.
    public let secret: String

    /// A token from its parts, or nil when either has the wrong length or a character outside [a-z0-9].
    public init?(id: String, secret: String) {
        guard Self.isValid(id, length: Self.idLength), Self.isValid(secret, length: Self.secretLength) else {
            return nil
        }
        self.id = id
        self.secret = secret
    }

    /// A token in the `<id>.<secret>` form, or nil when it is not one.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        self.init(id: String(parts[0]), secret: String(parts[1]))
    }

    /// A new token from the system's CSPRNG (`SystemRandomNumberGenerator`: getrandom(2) on Linux).
    public static func generate() -> BootstrapToken {
        var generator = SystemRandomNumberGenerator()
        return generate(using: &generator)
    }

    /// A new token drawn uniformly from `alphabet` with `generator` (no modulo bias: `randomElement(using:)`).
    public static func generate<Generator: RandomNumberGenerator>(using generator: inout Generator) -> BootstrapToken {
        func draw(_ count: Int) -> String {
            String((0..<count).map { _ in alphabet.randomElement(using: &generator)! })
        }
        return BootstrapToken(id: draw(idLength), secret: draw(secretLength))!
    }

    /// The `<id>.<secret>` form kubeadm's `--token` takes. Secret: never log it.
    public var text: String { "\(id).\(secret)" }

    /// The Secret's name in `kube-system`.
    public var secretName: String { "bootstrap-token-\(id)" }

    /// The id and a placeholder for the secret.
    public var description: String { "\(id).<redacted>" }

    /// Whether `value` has `length` characters, all from `alphabet`.
    private static func isValid(_ value: String, length: Int) -> Bool {
        value.count == length && value.allSatisfy { alphabet.contains($0) }
    }
}
