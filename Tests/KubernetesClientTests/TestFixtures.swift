import AsyncHTTPClient
import Foundation
import KubernetesClient
import Logging
import NIOCore
import NIOSSL
import Synchronization

@testable import FakeKubernetesAPI

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
    retry: RetryPolicy = patientRetry,
    tokens: TokenSequence? = nil,
    logger: Logger? = nil,
    _ body: (BootstrapTokenClient) async throws -> T
) async throws -> T {
    var configuration = BootstrapTokenClient.Configuration(
        apiServer: server.url,
        credentials: credentials,
        trustRoots: trustRoots ?? [pki.caCertificate],
        retry: retry
    )
    if let tokens { configuration.tokenSource = { tokens.next() } }
    let client =
        try logger.map { try BootstrapTokenClient(configuration: configuration, logger: $0) }
        ?? BootstrapTokenClient(configuration: configuration)
    do {
        let result = try await body(client)
        try await client.shutdown()
        return result
    } catch {
        try? await client.shutdown()
        throw error
    }
}

/// Timeouts no stalled thread on a loaded machine reaches, and short backoff: tests that count attempts assert
/// behaviour, never speed, and a slow machine must not turn an answer into a timeout.
let patientRetry = RetryPolicy(
    perCallTimeout: .seconds(60),
    deadline: .seconds(120),
    initialBackoff: .milliseconds(10),
    maximumBackoff: .milliseconds(50),
    maximumConflicts: 3
)

/// `identity` as the client's credentials.
func clientCertificateCredentials(_ identity: TestPKI.ClientIdentity) throws -> BootstrapTokenClient.Credentials {
    .clientCertificate(
        chain: [try NIOSSLCertificate(bytes: Array(identity.certificatePEM.utf8), format: .pem)],
        key: try NIOSSLPrivateKey(bytes: Array(identity.keyPEM.utf8), format: .pem)
    )
}

/// A swift-log handler keeping every entry in memory, to check what the client logs (and that no secret is in it).
struct RecordingLogHandler: LogHandler {
    /// One log call: level, message and metadata, rendered.
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    /// The entries, shared by every copy of the handler.
    final class Store: Sendable {
        private let entries = Mutex<[Entry]>([])

        /// Appends `entry`.
        func append(_ entry: Entry) { entries.withLock { $0.append(entry) } }

        /// Every entry so far.
        var all: [Entry] { entries.withLock { $0 } }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        store.append(Entry(level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" }))
    }
}

/// A logger writing into a new store, and the store.
func recordingLogger() -> (Logger, RecordingLogHandler.Store) {
    let store = RecordingLogHandler.Store()
    return (Logger(label: "test") { _ in RecordingLogHandler(store: store) }, store)
}

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

/// The client certificate a plain HTTP client presents to the fake.
enum ClientIdentityChoice {
    /// None.
    case none
    /// One the fake's test CA signed for `commonName`.
    case signedByTestCA(commonName: String)
    /// One another CA signed.
    case signedByAnotherCA

    /// The identity for the fake whose CA is `pki`'s.
    func identity(_ pki: TestPKI) throws -> TestPKI.ClientIdentity? {
        switch self {
        case .none: nil
        case .signedByTestCA(let commonName): try pki.clientIdentity(commonName: commonName)
        case .signedByAnotherCA: try TestPKI().clientIdentity()
        }
    }
}

/// Runs `body` with a fake API server and a plain HTTP client trusting its CA, for talking to the fake directly,
/// presenting the client certificate `identity` picks.
func withFakeAPIServerAndClient(
    identity: ClientIdentityChoice = .none,
    _ body: (FakeAPIServer, TestPKI, HTTPClient) async throws -> Void
) async throws {
    try await withFakeAPIServer { server, pki in
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates([pki.caCertificate])
        if let identity = try identity.identity(pki) {
            tls.certificateChain = [
                .certificate(try NIOSSLCertificate(bytes: Array(identity.certificatePEM.utf8), format: .pem))
            ]
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(identity.keyPEM.utf8), format: .pem))
        }
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
