import AsyncHTTPClient
import Foundation
import KubernetesClient
import NIOCore
import NIOSSL
import Synchronization

/// The bearer token the fake API server accepts in these tests.
let fakeBearerToken = "fake-sa-token.eyJhbGciOiJSUzI1NiJ9-test-only"

/// Runs `body` with a fake API server on loopback and its test CA; stops the server afterwards.
func withFakeAPIServer<T>(_ body: (FakeAPIServer, TestPKI) async throws -> T) async throws -> T {
    let pki = try TestPKI()
    let server = try await FakeAPIServer(bearerToken: fakeBearerToken, pki: pki)
    do {
        let result = try await body(server, pki)
        try await server.stop()
        return result
    } catch {
        try? await server.stop()
        throw error
    }
}

/// Runs `body` with a bootstrap-token client for `server`; shuts the client down afterwards.
func withClient<T>(
    _ server: FakeAPIServer,
    _ pki: TestPKI,
    credentials: BootstrapTokenClient.Credentials = .bearerToken(fakeBearerToken),
    trustRoots: [NIOSSLCertificate]? = nil,
    retry: RetryPolicy = fastRetry,
    tokens: TokenSequence? = nil,
    _ body: (BootstrapTokenClient) async throws -> T
) async throws -> T {
    var configuration = BootstrapTokenClient.Configuration(
        apiServer: server.url,
        credentials: credentials,
        trustRoots: trustRoots ?? [pki.caCertificate],
        retry: retry
    )
    if let tokens { configuration.tokenSource = { tokens.next() } }
    let client = try BootstrapTokenClient(configuration: configuration)
    do {
        let result = try await body(client)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

/// Short timeouts and backoff so retry tests take a second or two.
let fastRetry = RetryPolicy(
    perCallTimeout: .milliseconds(500),
    deadline: .seconds(5),
    initialBackoff: .milliseconds(20),
    maximumBackoff: .milliseconds(100),
    maximumConflicts: 3
)

/// Tokens handed out in order, then fresh CSPRNG ones: lets a test make the client hit a taken id.
final class TokenSequence: Sendable {
    private let queue: Mutex<[BootstrapToken]>
    /// When set, every token after the queue is this one.
    private let repeating: BootstrapToken?

    init(_ tokens: [BootstrapToken], thenRepeat repeating: BootstrapToken? = nil) {
        queue = Mutex(tokens)
        self.repeating = repeating
    }

    /// The next token.
    func next() -> BootstrapToken {
        queue.withLock { $0.isEmpty ? nil : $0.removeFirst() } ?? repeating ?? BootstrapToken.generate()
    }
}

/// Runs `body` with a fake API server and a plain HTTP client trusting its CA, for talking to the fake directly.
func withFakeAPIServerAndClient(_ body: (FakeAPIServer, TestPKI, HTTPClient) async throws -> Void) async throws {
    try await withFakeAPIServer { server, pki in
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates([pki.caCertificate])
        let http = HTTPClient(configuration: HTTPClient.Configuration(tlsConfiguration: tls))
        do {
            try await body(server, pki, http)
            try await http.shutdown()
        } catch {
            try? await http.shutdown()
            throw error
        }
    }
}
