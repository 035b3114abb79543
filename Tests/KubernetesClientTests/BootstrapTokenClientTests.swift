import Foundation
import KubernetesClient
import Logging
import Testing

@testable import FakeKubernetesAPI

/// The bootstrap-token client against the fake API server over loopback HTTPS.
///
/// The suite runs beside hundreds of other tests on two loaded cores, where a thread can stall for seconds: tests
/// assert attempt counts, requests and tokens with timeouts no stall reaches (`patientRetry`), and the deadline
/// tests assert only what holds however slow the machine is.
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
            #expect(error == .conflictsExhausted(attempts: patientRetry.maximumConflicts))
            #expect(server.requests.count == patientRetry.maximumConflicts)
        }
    }

    /// Failures after which the client must retry with the same token, and the requests it must send.
    struct SameTokenCase: Sendable, CustomStringConvertible {
        var description: String
        var faults: [FakeAPIServer.Fault]
        /// The requests, given the token.
        var requests: @Sendable (BootstrapToken) -> [String]
    }

    static let sameTokenCases = [
        SameTokenCase(description: "503 twice, nothing written", faults: [.status(503), .status(503)]) { _ in
            [post, post, post]
        },
        SameTokenCase(description: "connection lost after the write: the 409 read back", faults: [.dropAfterWrite]) {
            [post, post, get($0)]
        },
    ]

    @Test("after a retryable failure the same token is created, its own 409 read back", arguments: sameTokenCases)
    func sameTokenAfterFailure(_ testCase: SameTokenCase) async throws {
        try await withFakeAPIServer { server, pki in
            let first = BootstrapToken.generate()
            server.inject(testCase.faults)
            let token = try await withClient(server, pki, tokens: TokenSequence([first])) {
                try await $0.createToken()
            }
            #expect(token == first)
            #expect(server.requests == testCase.requests(first))
            #expect(server.secrets.keys.sorted() == [first.secretName])
        }
    }

    @Test("an answer held past the per-call timeout: the token is kept, its Secret read back, no second token")
    func heldAnswer() async throws {
        try await withFakeAPIServer { server, pki in
            let first = BootstrapToken.generate()
            server.inject([.held])
            var retry = patientRetry
            // Only the held answer must time out; on a stalled machine a later call may too, which the loose
            // request check below allows (each further try is the same token, POST or read-back).
            retry.perCallTimeout = .seconds(1)
            let token = try await withClient(server, pki, retry: retry, tokens: TokenSequence([first])) { client in
                let token = try await client.createToken()
                server.releaseHeldAnswers()
                return token
            }
            #expect(token == first)
            #expect(server.secrets.keys.sorted() == [first.secretName])
            let requests = server.requests
            #expect(requests.first == Self.post)
            #expect(requests.contains(Self.get(first)))
            #expect(requests.allSatisfy { $0 == Self.post || $0 == Self.get(first) })
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

    @Test("a permanent 500 gives up with deadlineExceeded, at least one attempt, no more than the backoff allows")
    func permanentServerError() async throws {
        try await withFakeAPIServer { server, pki in
            server.failAlways(500)
            var retry = patientRetry
            retry.perCallTimeout = .seconds(1)
            retry.deadline = .seconds(1)
            retry.initialBackoff = .milliseconds(50)
            retry.maximumBackoff = .milliseconds(200)
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
            // However late it starts, one attempt is made; every further one waits at least the initial backoff,
            // so a slow machine can only lower the count.
            #expect(attempts >= 1)
            #expect(attempts <= 1 + Int(retry.deadline / retry.initialBackoff))
            #expect(server.requests.count <= attempts)
            // A stalled machine may see its last call time out instead of the 500.
            #expect(lastFailure.hasPrefix("HTTP 500") || lastFailure.hasPrefix("no answer within"))
            // It gives up: bounded by the deadline plus a margin no stall reaches (start, shutdown, last call).
            #expect(elapsed < retry.deadline + .seconds(60))
        }
    }

    @Test("cancelling the caller while it backs off ends the creation with .cancelled, without another request")
    func cancelled() async throws {
        try await withFakeAPIServer { server, pki in
            server.failAlways(503)
            var retry = patientRetry
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

    @Test("an API server certificate from another CA is never trusted: a final TLS error, no request reaches the fake")
    func untrustedServer() async throws {
        try await withFakeAPIServer { server, pki in
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, trustRoots: [try TestPKI().caCertificate]) {
                    try await $0.createToken()
                }
            }
            guard case .tlsHandshakeFailed(let reason) = error else {
                Issue.record("expected tlsHandshakeFailed, got \(String(describing: error))")
                return
            }
            // BoringSSL's reason codes only (which one depends on how the chain fails), no source paths.
            #expect(reason.wholeMatch(of: /[A-Z0-9_]+(, [A-Z0-9_]+)*/) != nil)
            #expect(server.requests.isEmpty)
        }
    }

    @Test("a client certificate the cluster CA signed authenticates alone (mutual TLS, no bearer token)")
    func clientCertificate() async throws {
        try await withFakeAPIServer { server, pki in
            let credentials = try clientCertificateCredentials(try pki.clientIdentity(commonName: "trustd"))
            let token = try await withClient(server, pki, credentials: credentials) { try await $0.createToken() }
            #expect(server.requests == [Self.post])
            #expect(server.credentials == ["x509 CN=trustd,O=system:masters"])
            #expect(server.secrets[token.secretName]?["token-secret"] == token.secret)
        }
    }

    @Test("a client certificate from another CA is refused with a final 401 whose text holds no key or certificate")
    func foreignClientCertificate() async throws {
        try await withFakeAPIServer { server, pki in
            let identity = try TestPKI().clientIdentity()
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, credentials: try clientCertificateCredentials(identity)) {
                    try await $0.createToken()
                }
            }
            #expect(error == .unauthorized(status: 401, reason: "Unauthorized: Unauthorized"))
            #expect(server.requests == [Self.post])
            #expect(server.credentials == ["none"])
            let text = String(describing: error)
            for line in (identity.keyPEM + identity.certificatePEM).split(separator: "\n") where !line.hasPrefix("-") {
                #expect(!text.contains(line))
            }
        }
    }

    @Test("a client key that is not the certificate's is a configuration error before any request")
    func mismatchedClientKey() async throws {
        try await withFakeAPIServer { server, pki in
            let identity = try pki.clientIdentity()
            var mismatched = identity
            mismatched.keyPEM = try pki.clientIdentity().keyPEM
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, credentials: try clientCertificateCredentials(mismatched)) {
                    try await $0.createToken()
                }
            }
            #expect(
                error
                    == .invalidConfiguration(field: "credentials", problem: "client key does not match the certificate")
            )
            #expect(!String(describing: error).contains(mismatched.keyPEM))
            #expect(server.requests.isEmpty)
        }
    }

    @Test("the logger gets every attempt's outcome by token id and attempt, and never the token secret or bearer")
    func logging() async throws {
        try await withFakeAPIServer { server, pki in
            let first = BootstrapToken.generate()
            server.inject([.status(503), .echo(422, "bad \"{token-secret}\" from {bearer}")])
            let (logger, log) = recordingLogger()
            let error = await #expect(throws: KubernetesClientError.self) {
                try await withClient(server, pki, tokens: TokenSequence([first]), logger: logger) {
                    try await $0.createToken()
                }
            }
            #expect(error?.isRejection(status: 422) == true)
            let entries = log.all
            let outcomes = entries.filter { $0.level == .info }
            #expect(
                outcomes.map(\.message) == [
                    "Bootstrap-token Secret creation failed, will retry", "Bootstrap-token Secret creation refused",
                ]
            )
            #expect(outcomes.map { $0.metadata["k8s.attempt"] } == ["1", "2"])
            #expect(outcomes.allSatisfy { $0.metadata["k8s.token.id"] == first.id })
            #expect(outcomes.first?.metadata["k8s.reason"] == "HTTP 503: InternalError: injected fault")
            #expect(entries.filter { $0.level == .debug }.count == 2)
            for entry in entries {
                let text = entry.message + entry.metadata.map { "\($0.key)=\($0.value)" }.joined()
                #expect(!text.contains(first.secret))
                #expect(!text.contains(fakeBearerToken))
            }
        }
    }
}

extension KubernetesClientError {
    /// Whether this is `.rejected` with `status`.
    func isRejection(status expected: Int) -> Bool {
        if case .rejected(let status, _) = self { return status == expected }
        return false
    }
}
