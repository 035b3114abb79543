import Foundation
import KubernetesClient
import Testing

/// The pure parts: token format, the Secret's JSON, backoff, sanitizing.
@Suite("Bootstrap token values")
struct BootstrapTokenTests {
    @Test("generated tokens: 6 + 16 characters over [a-z0-9], id.secret form, all distinct")
    func generated() {
        let tokens = (0..<1000).map { _ in BootstrapToken.generate() }
        for token in tokens {
            #expect(token.text.wholeMatch(of: /[a-z0-9]{6}\.[a-z0-9]{16}/) != nil)
            #expect(BootstrapToken(token.text) == token)
        }
        #expect(Set(tokens).count == tokens.count)
        // Every character of the alphabet turns up in 22,000 draws (each is missed with probability ~e^-611).
        #expect(Set(tokens.flatMap { $0.id + $0.secret }) == Set(BootstrapToken.alphabet))
    }

    @Test(
        "malformed tokens are refused",
        arguments: [
            "abc12.0123456789abcdef", "abc123.0123456789abcde", "ABC123.0123456789abcdef", "abc123-0123456789abcdef",
            "abc123.0123456789abcdef.x", "abc123.0123456789abcdeé",
        ]
    )
    func malformed(_ text: String) {
        #expect(BootstrapToken(text) == nil)
    }

    @Test("description shows the id, never the secret")
    func description() {
        let token = BootstrapToken(id: "abc123", secret: "0123456789abcdef")!
        #expect(String(describing: token) == "abc123.<redacted>")
        #expect(token.secretName == "bootstrap-token-abc123")
    }

    @Test("the Secret's JSON is Kubernetes' documented bootstrap-token format, with stringData")
    func secretJSON() throws {
        let token = BootstrapToken(id: "abc123", secret: "0123456789abcdef")!
        let secret = BootstrapTokenSecret(token: token, expiration: Date(timeIntervalSince1970: 1_900_000_000))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(secret.json())) as? [String: Any])
        #expect(object["apiVersion"] as? String == "v1")
        #expect(object["kind"] as? String == "Secret")
        #expect(object["type"] as? String == "bootstrap.kubernetes.io/token")
        #expect(
            object["metadata"] as? [String: String] == ["name": "bootstrap-token-abc123", "namespace": "kube-system"]
        )
        #expect(object["data"] == nil)
        #expect(
            object["stringData"] as? [String: String] == [
                "token-id": "abc123", "token-secret": "0123456789abcdef", "expiration": "2030-03-17T17:46:40Z",
                "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
                "description": "Bootstrap token created by Asterism trustd for a node join.",
            ]
        )
    }

    @Test("backoff doubles from the initial wait and stops at the cap")
    func backoff() {
        let policy = RetryPolicy(initialBackoff: .milliseconds(100), maximumBackoff: .milliseconds(1000))
        #expect(
            (1...7).map { policy.backoff(afterFailures: $0) }
                == [100, 200, 400, 800, 1000, 1000, 1000].map { .milliseconds($0) }
        )
        #expect(policy.backoff(afterFailures: 10_000) == .milliseconds(1000))
    }

    @Test("sanitize redacts the secrets, replaces non-printable characters and caps the length")
    func sanitize() {
        let text = KubernetesClientError.sanitize("value \"s3cret\"\n\u{1B}[31m and s3cret", hiding: ["s3cret", ""])
        #expect(text == "value \"<redacted>\"??[31m and <redacted>")
        let long = KubernetesClientError.sanitize(String(repeating: "x", count: 1000), hiding: [])
        #expect(long.count == KubernetesClientError.maximumReasonLength + 3)
    }
}
