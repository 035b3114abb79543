import Foundation
import KubernetesClient
import Testing

/// The bootstrap-token client against the fake API server over loopback HTTPS.
@Suite("Bootstrap-token client against the fake API server")
struct BootstrapTokenClientTests {
    static let post = "POST \(FakeAPIContract.secretsPath)"

    /// `GET` of `token`'s Secret, as the request log writes it.
    static func get(_ token: BootstrapToken) -> String { "GET \(FakeAPIContract.secretsPath)/\(token.secretName)" }

    @Test("creates the documented Secret in one request and returns its token")
    func success() async throws {
        try await withFakeAPIServer { server, pki in
            let now = Date(timeIntervalSince1970: 1_900_000_000)
            let token = try await withClient(server, pki) { try await $0.createToken(now: { now }) }
            #expect(server.requests == [Self.post])
            #expect(
                server.secrets == [
                    token.secretName: [
                        "token-id": token.id, "token-secret": token.secret,
                        "expiration": BootstrapTokenSecret.rfc3339(now + 86400),
                        "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                        "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
                        "description": "Bootstrap token created by Asterism trustd for a node join.",
                    ]
                ]
            )
        }
    }

    @Test("reads the bearer token from a service-account token file, trailing newline trimmed")
    func tokenFile() async throws {
        try await withFakeAPIServer { server, pki in
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("sa-token-\(UUID())").path
            try (fakeBearerToken + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let token = try await withClient(server, pki, credentials: .bearerTokenFile(path)) {
                try await $0.createToken()
            }
            #expect(server.secrets[token.secretName] != nil)
        }
    }

    @Test("a missing token file is a final error naming the path, with no request sent")
    func missingTokenFile() async throws {
        try await withFakeAPIServer { server, pki in
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, credentials: .bearerTokenFile("/nonexistent/sa-token")) {
                    try await $0.createToken()
                }
            }
            #expect(
                error == .credentialsUnreadable(path: "/nonexistent/sa-token", problem: "cannot read the token file")
            )
            #expect(server.requests.isEmpty)
        }
    }

    @Test("409 for a taken id: a new token is generated and created; the existing Secret is untouched")
    func conflictNewToken() async throws {
        try await withFakeAPIServer { server, pki in
            let taken = BootstrapToken(id: "taken1", secret: "0000000000000000")!
            let fresh = BootstrapToken.generate()
            let existing = ["token-id": "taken1", "token-secret": "1111111111111111", "expiration": "x"]
            server.preload(name: taken.secretName, values: existing)
            let token = try await withClient(server, pki, tokens: TokenSequence([taken, fresh])) {
                try await $0.createToken()
            }
            #expect(token == fresh)
            #expect(server.requests == [Self.post, Self.post])
            #expect(server.secrets[taken.secretName] == existing)
            #expect(server.secrets[fresh.secretName]?["token-secret"] == fresh.secret)
        }
    }

    @Test("409 on every fresh id gives up after maximumConflicts")
    func conflictsExhausted() async throws {
        try await withFakeAPIServer { server, pki in
            let taken = BootstrapToken(id: "taken1", secret: "0000000000000000")!
            server.preload(name: taken.secretName, values: ["token-id": "taken1"])
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, tokens: TokenSequence([], thenRepeat: taken)) {
                    try await $0.createToken()
                }
            }
            #expect(error == .conflictsExhausted(attempts: fastRetry.maximumConflicts))
            #expect(server.requests.count == fastRetry.maximumConflicts)
        }
    }

    @Test("503 twice, then success with the same token")
    func unavailableTwice() async throws {
        try await withFakeAPIServer { server, pki in
            let first = BootstrapToken.generate()
            server.inject([.status(503), .status(503)])
            let token = try await withClient(server, pki, tokens: TokenSequence([first])) {
                try await $0.createToken()
            }
            #expect(token == first)
            #expect(server.requests == [Self.post, Self.post, Self.post])
            #expect(server.secrets.keys.sorted() == [first.secretName])
        }
    }

    @Test("an answer slower than the per-call timeout: the retry's 409 is read back as this client's own write")
    func slowAnswer() async throws {
        try await withFakeAPIServer { server, pki in
            let first = BootstrapToken.generate()
            server.inject([.slow(.seconds(2))])
            let token = try await withClient(server, pki, tokens: TokenSequence([first])) {
                try await $0.createToken()
            }
            #expect(token == first)
            #expect(server.requests == [Self.post, Self.post, Self.get(first)])
            #expect(server.secrets.keys.sorted() == [first.secretName])
        }
    }

    @Test("after a 503, a 409 whose stored secret is another's means the id is taken: new token")
    func slowAnswerThenForeignConflict() async throws {
        try await withFakeAPIServer { server, pki in
            let first = BootstrapToken.generate()
            let fresh = BootstrapToken.generate()
            // The first POST fails without a write; then someone else takes the id.
            server.inject([.status(503)])
            server.preload(name: first.secretName, values: ["token-id": first.id, "token-secret": "ffffffffffffffff"])
            let token = try await withClient(server, pki, tokens: TokenSequence([first, fresh])) {
                try await $0.createToken()
            }
            #expect(token == fresh)
            #expect(server.requests == [Self.post, Self.post, Self.get(first), Self.post])
        }
    }

    @Test("a permanent 500 gives up with deadlineExceeded after several attempts, within the deadline")
    func permanentServerError() async throws {
        try await withFakeAPIServer { server, pki in
            server.failAlways(500)
            var retry = fastRetry
            retry.deadline = .seconds(1)
            let clock = ContinuousClock()
            let started = clock.now
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, retry: retry) { try await $0.createToken() }
            }
            let elapsed = clock.now - started
            guard case .deadlineExceeded(let deadline, let attempts, let lastFailure) = error else {
                Issue.record("expected deadlineExceeded, got \(String(describing: error))")
                return
            }
            #expect(deadline == .seconds(1))
            #expect(attempts >= 3)
            #expect(attempts == server.requests.count)
            #expect(lastFailure.hasPrefix("HTTP 500"))
            // The deadline bounds the retries; the slack covers the client's start and shutdown.
            #expect(elapsed < .seconds(3))
        }
    }

    @Test("cancelling the caller while it backs off ends the creation with .cancelled, without another request")
    func cancelled() async throws {
        try await withFakeAPIServer { server, pki in
            server.failAlways(503)
            var retry = fastRetry
            retry.deadline = .seconds(60)
            retry.initialBackoff = .seconds(30)
            retry.maximumBackoff = .seconds(30)
            try await withClient(server, pki, retry: retry) { client in
                let creation = Task { try await client.createToken() }
                await server.waitForRequests(1)
                creation.cancel()
                let result = await creation.result
                #expect(throws: KubernetesClientError.cancelled) { try result.get() }
                #expect(server.requests == [Self.post])
            }
        }
    }

    @Test("401 is final after one request")
    func unauthorized() async throws {
        try await withFakeAPIServer { server, pki in
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, credentials: .bearerToken("wrong-token")) {
                    try await $0.createToken()
                }
            }
            #expect(error == .unauthorized(status: 401, reason: "Unauthorized: Unauthorized"))
            #expect(server.requests == [Self.post])
        }
    }

    @Test("403 and 422 are final after one request", arguments: [403, 422])
    func finalStatus(_ status: Int) async throws {
        try await withFakeAPIServer { server, pki in
            server.inject([.status(status)])
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki) { try await $0.createToken() }
            }
            let reason = "InternalError: injected fault"
            #expect(
                error
                    == (status == 403
                        ? .unauthorized(status: status, reason: reason) : .rejected(status: status, reason: reason))
            )
            #expect(server.requests == [Self.post])
        }
    }

    @Test("a server message echoing the token secret and bearer token reaches the error redacted")
    func noSecretInErrors() async throws {
        try await withFakeAPIServer { server, pki in
            let token = BootstrapToken.generate()
            server.inject([.echo(422, "Invalid value: \"{token-secret}\" presented with {bearer}")])
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, tokens: TokenSequence([token])) { try await $0.createToken() }
            }
            let text = String(describing: error)
            #expect(!text.contains(token.secret))
            #expect(!text.contains(fakeBearerToken))
            #expect(text.contains("Invalid value: \"<redacted>\" presented with <redacted>"))
        }
    }

    @Test("an API server certificate from another CA is never trusted: no request reaches the fake")
    func untrustedServer() async throws {
        try await withFakeAPIServer { server, pki in
            var retry = fastRetry
            retry.deadline = .milliseconds(500)
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, trustRoots: [try TestPKI().caCertificate], retry: retry) {
                    try await $0.createToken()
                }
            }
            guard case .deadlineExceeded(_, _, let lastFailure) = error else {
                Issue.record("expected deadlineExceeded, got \(String(describing: error))")
                return
            }
            #expect(lastFailure.hasPrefix("connection failed"))
            #expect(server.requests.isEmpty)
        }
    }
}
