import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// Creates bootstrap-token Secrets through the Kubernetes REST API: `POST /api/v1/namespaces/kube-system/secrets`
/// over HTTPS with a bearer token (a service-account token) or a client certificate (from a kubeconfig).
///
/// Retries are idempotent: 5xx, 429, timeouts and connection failures are retried with the same token, with
/// exponential backoff, until the overall deadline. A 409 after such a failure may be this client's own earlier
/// write, so the client reads the Secret back and keeps the token when its secret matches; otherwise a 409 means
/// the id is taken and a fresh token is tried. 401, 403, other 4xx answers and failed TLS handshakes are final.
/// The first attempt is always made, however late it starts.
public final class BootstrapTokenClient: Sendable {
    /// How the client authenticates to the API server. `description` shows the kind, never the secret.
    public enum Credentials: Sendable, CustomStringConvertible {
        /// A token given directly (tests, or a token the caller already holds).
        case bearerToken(String)
        /// A token file, read anew for each creation since the kubelet rotates projected service-account
        /// tokens: `/var/run/secrets/kubernetes.io/serviceaccount/token` in a pod.
        case bearerTokenFile(String)
        /// A TLS client certificate (leaf first, then intermediates) and its key: mutual TLS, no bearer token.
        case clientCertificate(chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)

        public var description: String {
            switch self {
            case .bearerToken: "bearer token <redacted>"
            case .bearerTokenFile(let path): "bearer token file \(path)"
            case .clientCertificate(let chain, _): "client certificate (\(chain.count) in chain, key <redacted>)"
            }
        }
    }

    /// What the client talks to and how.
    public struct Configuration: Sendable {
        /// `https://host:port` of the API server, without a path.
        public var apiServer: String
        /// The bearer token's source.
        public var credentials: Credentials
        /// CAs the API server's certificate must chain to (the service account's `ca.crt`).
        public var trustRoots: [NIOSSLCertificate]
        /// How long a created token stays valid (its `expiration`).
        public var tokenLifetime: Duration
        /// `auth-extra-groups` of the Secret.
        public var extraGroups: String
        /// Timeouts, backoff and deadline.
        public var retry: RetryPolicy
        /// Where new tokens come from: the CSPRNG unless a test pins them.
        public var tokenSource: @Sendable () -> BootstrapToken

        /// A configuration; tokens live 24 hours as kubeadm's do, with kubeadm's default group.
        public init(
            apiServer: String,
            credentials: Credentials,
            trustRoots: [NIOSSLCertificate],
            tokenLifetime: Duration = .seconds(24 * 3600),
            extraGroups: String = BootstrapTokenSecret.defaultExtraGroups,
            retry: RetryPolicy = RetryPolicy(),
            tokenSource: @escaping @Sendable () -> BootstrapToken = { BootstrapToken.generate() }
        ) {
            self.apiServer = apiServer
            self.credentials = credentials
            self.trustRoots = trustRoots
            self.tokenLifetime = tokenLifetime
            self.extraGroups = extraGroups
            self.retry = retry
            self.tokenSource = tokenSource
        }
    }

    /// What one HTTP exchange meant for the creation.
    enum Outcome: Equatable {
        /// 2xx: the Secret exists as sent (or, for a read-back, was read).
        case success
        /// 409: a Secret of that name exists.
        case conflict
        /// 404, with the sanitized reason: final for a create, "create again" for a read-back.
        case notFound(String)
        /// Worth another try with the same token; the text says why (sanitized).
        case retryable(String)
        /// Not worth another try.
        case final(KubernetesClientError)
    }

    /// The path Secrets of `kube-system` are created under.
    public static let secretsPath = "/api/v1/namespaces/\(BootstrapTokenSecret.namespace)/secrets"
    /// Longest answer body read.
    static let maximumBodyBytes = 1 << 20

    private let configuration: Configuration
    private let baseURL: String
    private let http: HTTPClient
    private let logger: Logger

    /// A client for `configuration`'s API server; call `shutdown()` when done. `logger` gets each attempt's
    /// outcome (token id, attempt, status, sanitized reason; never a secret); by default nothing is logged.
    public init(
        configuration: Configuration,
        eventLoopGroup: any EventLoopGroup = HTTPClient.defaultEventLoopGroup,
        logger: Logger = Logger(label: "asterism.kubernetes", factory: { _ in SwiftLogNoOpLogHandler() })
    )
        throws(KubernetesClientError)
    {
        guard let url = URL(string: configuration.apiServer), url.scheme == "https", let host = url.host,
            !host.isEmpty, url.path.isEmpty || url.path == "/", url.query == nil, url.user == nil
        else {
            throw .invalidConfiguration(field: "apiServer", problem: "not an https://host[:port] URL")
        }
        guard !configuration.trustRoots.isEmpty else {
            throw .invalidConfiguration(field: "trustRoots", problem: "no CA certificate")
        }
        guard configuration.retry.maximumConflicts >= 1, configuration.retry.perCallTimeout > .zero,
            configuration.retry.deadline > .zero
        else {
            throw .invalidConfiguration(field: "retry", problem: "timeouts and maximumConflicts must be positive")
        }
        self.configuration = configuration
        self.logger = logger
        baseURL =
            configuration.apiServer.hasSuffix("/")
            ? String(configuration.apiServer.dropLast()) : configuration.apiServer
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(configuration.trustRoots)
        tls.minimumTLSVersion = .tlsv12
        if case .clientCertificate(let chain, let key) = configuration.credentials {
            guard !chain.isEmpty else {
                throw .invalidConfiguration(field: "credentials", problem: "client certificate chain is empty")
            }
            tls.certificateChain = chain.map { .certificate($0) }
            tls.privateKey = .privateKey(key)
            // BoringSSL checks here that the key belongs to the leaf, instead of at the first handshake.
            do { _ = try NIOSSLContext(configuration: tls) } catch {
                throw .invalidConfiguration(field: "credentials", problem: "client key does not match the certificate")
            }
        }
        // No redirects: the bearer token goes to the configured API server only. Connection failures come back
        // to the retry loop at once instead of being retried inside the pool until the per-call timeout.
        var http = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow)
        http.connectionPool.retryConnectionEstablishment = false
        self.http = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: http)
    }

    /// Closes the connections.
    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// Creates a new token's Secret, expiring `tokenLifetime` after `now()`, and returns the token.
    public func createToken(
        now: @Sendable () -> Date = { Date() }
    ) async throws(KubernetesClientError)
        -> BootstrapToken
    {
        let retry = configuration.retry
        let clock = ContinuousClock()
        let deadline = clock.now + retry.deadline
        var token = configuration.tokenSource()
        var conflicts = 0
        var failures = 0
        var attempts = 0
        // Whether an earlier attempt with `token` may have created its Secret before failing.
        var mayExist = false
        var lastFailure = "none"
        while true {
            // The first attempt is made however late it starts (a stalled thread must not turn into zero tries).
            let remaining = max(deadline - clock.now, Self.minimumCallTimeout)
            guard attempts == 0 || clock.now < deadline else {
                throw giveUp(deadline: retry.deadline, attempts: attempts, lastFailure: lastFailure, token: token)
            }
            if Task.isCancelled { throw .cancelled }
            attempts += 1
            let bearer = try readBearerToken()
            let hidden = [token.secret] + (bearer.map { [$0] } ?? [])
            let manifest = BootstrapTokenSecret(
                token: token,
                expiration: now().addingTimeInterval(Self.seconds(configuration.tokenLifetime)),
                extraGroups: configuration.extraGroups
            )
            logger.debug(
                "Creating bootstrap-token Secret",
                metadata: ["k8s.token.id": "\(token.id)", "k8s.attempt": "\(attempts)"]
            )
            var (outcome, _) = await exchange(
                .POST,
                path: Self.secretsPath,
                body: manifest.json(),
                bearer: bearer,
                timeout: min(retry.perCallTimeout, remaining),
                hiding: hidden
            )
            if outcome == .conflict, mayExist {
                logger.debug(
                    "Reading back bootstrap-token Secret after 409",
                    metadata: ["k8s.token.id": "\(token.id)", "k8s.attempt": "\(attempts)"]
                )
                outcome = await readBack(
                    token,
                    bearer: bearer,
                    timeout: min(retry.perCallTimeout, max(deadline - clock.now, Self.minimumCallTimeout))
                )
            }
            log(outcome, token: token, attempt: attempts)
            switch outcome {
            case .success:
                return token
            case .conflict:
                conflicts += 1
                guard conflicts < retry.maximumConflicts else { throw .conflictsExhausted(attempts: conflicts) }
                token = configuration.tokenSource()
                mayExist = false
                failures = 0
            case .notFound(let reason):
                // No such namespace or resource: the API server is not what the configuration says.
                throw .rejected(status: 404, reason: reason)
            case .final(let error):
                throw error
            case .retryable(let reason):
                if Task.isCancelled { throw .cancelled }
                lastFailure = reason
                failures += 1
                mayExist = true
                let wait = retry.backoff(afterFailures: failures)
                guard clock.now + wait < deadline else {
                    throw giveUp(deadline: retry.deadline, attempts: attempts, lastFailure: lastFailure, token: token)
                }
                do { try await Task.sleep(for: wait) } catch { throw .cancelled }
            }
        }
    }

    /// Shortest timeout given to a call, so a late first attempt still gets a chance to be answered.
    static let minimumCallTimeout = Duration.milliseconds(100)

    /// `.deadlineExceeded`, logged.
    private func giveUp(
        deadline: Duration,
        attempts: Int,
        lastFailure: String,
        token: BootstrapToken
    ) -> KubernetesClientError {
        logger.info(
            "Gave up creating bootstrap-token Secret at the deadline",
            metadata: [
                "k8s.token.id": "\(token.id)", "k8s.attempts": "\(attempts)", "k8s.deadline": "\(deadline)",
                "k8s.reason": "\(lastFailure)",
            ]
        )
        return .deadlineExceeded(deadline: deadline, attempts: attempts, lastFailure: lastFailure)
    }

    /// Logs what one attempt's exchange meant; the reasons are sanitized, the token appears by id only.
    private func log(_ outcome: Outcome, token: BootstrapToken, attempt: Int) {
        var metadata: Logger.Metadata = ["k8s.token.id": "\(token.id)", "k8s.attempt": "\(attempt)"]
        switch outcome {
        case .success:
            logger.info("Created bootstrap-token Secret", metadata: metadata)
        case .conflict:
            logger.info("Bootstrap token id already taken, trying a new one", metadata: metadata)
        case .notFound(let reason):
            metadata["k8s.reason"] = "\(reason)"
            logger.info("API server has no kube-system Secrets resource", metadata: metadata)
        case .retryable(let reason):
            metadata["k8s.reason"] = "\(reason)"
            logger.info("Bootstrap-token Secret creation failed, will retry", metadata: metadata)
        case .final(let error):
            metadata["k8s.reason"] = "\(error)"
            logger.info("Bootstrap-token Secret creation refused", metadata: metadata)
        }
    }

    /// After a 409 for a token an earlier attempt may have written: `.success` when the stored Secret's
    /// token-secret is `token`'s, `.conflict` when it is another's, else what the read gave.
    private func readBack(_ token: BootstrapToken, bearer: String?, timeout: Duration) async -> Outcome {
        let (outcome, stored) = await exchange(
            .GET,
            path: "\(Self.secretsPath)/\(token.secretName)",
            body: nil,
            bearer: bearer,
            timeout: timeout,
            hiding: [token.secret] + (bearer.map { [$0] } ?? [])
        )
        // A Secret gone between the 409 and the read: try the create again after the backoff.
        if case .notFound = outcome { return .retryable("the Secret vanished between 409 and read-back") }
        guard outcome == .success else { return outcome }
        return Self.storedSecret(stored) == Array(token.secret.utf8) ? .success : .conflict
    }

    /// The decoded `data["token-secret"]` of a Secret's JSON, or nil.
    static func storedSecret(_ json: [UInt8]) -> [UInt8]? {
        struct StoredSecret: Decodable { var data: [String: String]? }
        guard let secret = try? JSONDecoder().decode(StoredSecret.self, from: Data(json)),
            let encoded = secret.data?["token-secret"], let decoded = Data(base64Encoded: encoded)
        else { return nil }
        return Array(decoded)
    }

    /// One HTTP exchange with the API server, classified, with the body of a 2xx answer.
    private func exchange(
        _ method: HTTPMethod,
        path: String,
        body: [UInt8]?,
        bearer: String?,
        timeout: Duration,
        hiding secrets: [String]
    ) async -> (Outcome, body: [UInt8]) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        request.headers.add(name: "Accept", value: "application/json")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        }
        do {
            let response = try await http.execute(request, timeout: Self.timeAmount(timeout))
            let bytes = Array(try await response.body.collect(upTo: Self.maximumBodyBytes).readableBytesView)
            let outcome = Self.classify(status: Int(response.status.code), body: bytes, hiding: secrets)
            return (outcome, outcome == .success ? bytes : [])
        } catch let error as HTTPClientError
            where [.deadlineExceeded, .readTimeout, .connectTimeout, .tlsHandshakeTimeout].contains(error)
        {
            return (.retryable("no answer within \(timeout)"), [])
        } catch NIOSSLError.handshakeFailed(let failure) {
            // A certificate refused by either side is a configuration problem; trying again cannot fix it.
            return (.final(.tlsHandshakeFailed(reason: Self.handshakeReason("\(failure)", hiding: secrets))), [])
        } catch {
            if Task.isCancelled { return (.final(.cancelled), []) }
            return (.retryable(KubernetesClientError.sanitize("connection failed: \(error)", hiding: secrets)), [])
        }
    }

    /// What an answer with `status` and `body` means; the reason is the Status object's, sanitized.
    static func classify(status: Int, body: [UInt8], hiding secrets: [String]) -> Outcome {
        switch status {
        case 200..<300: return .success
        case 409: return .conflict
        case 404: return .notFound(reason(body, status: status, secrets))
        case 401, 403: return .final(.unauthorized(status: status, reason: reason(body, status: status, secrets)))
        case 429, 500..<600: return .retryable("HTTP \(status): \(reason(body, status: status, secrets))")
        default: return .final(.rejected(status: status, reason: reason(body, status: status, secrets)))
        }
    }

    /// BoringSSL's reason codes in a handshake error (`CERTIFICATE_VERIFY_FAILED, BAD_SIGNATURE`), without its
    /// error numbers and source paths; the whole text, sanitized, when it names none.
    static func handshakeReason(_ text: String, hiding secrets: [String]) -> String {
        var reasons: [String] = []
        for match in text.matches(of: /error:[0-9A-Fa-f]+:[^:]*:[^:]*:([A-Z0-9_]+)/)
        where !reasons.contains(String(match.1)) {
            reasons.append(String(match.1))
        }
        return reasons.isEmpty
            ? KubernetesClientError.sanitize(text, hiding: secrets) : reasons.joined(separator: ", ")
    }

    /// `reason: message` of a Kubernetes Status object in `body`, sanitized; `HTTP <status>` when there is none.
    static func reason(_ body: [UInt8], status: Int, _ secrets: [String]) -> String {
        struct Status: Decodable {
            var reason: String?
            var message: String?
        }
        guard let decoded = try? JSONDecoder().decode(Status.self, from: Data(body)),
            decoded.reason != nil || decoded.message != nil
        else { return "HTTP \(status)" }
        let text = [decoded.reason, decoded.message].compactMap { $0 }.joined(separator: ": ")
        return KubernetesClientError.sanitize(text, hiding: secrets)
    }

    /// The bearer token, from the configuration or its file (trimmed), never empty; nil with a client certificate.
    private func readBearerToken() throws(KubernetesClientError) -> String? {
        switch configuration.credentials {
        case .clientCertificate:
            return nil
        case .bearerToken(let token):
            guard !token.isEmpty else { throw .invalidConfiguration(field: "credentials", problem: "empty token") }
            return token
        case .bearerTokenFile(let path):
            let contents: String
            do { contents = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw .credentialsUnreadable(path: path, problem: "cannot read the token file")
            }
            let token = contents.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw .credentialsUnreadable(path: path, problem: "empty token file") }
            guard token.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else {
                throw .credentialsUnreadable(path: path, problem: "token has characters outside printable ASCII")
            }
            return token
        }
    }

    /// `duration` in seconds.
    static func seconds(_ duration: Duration) -> TimeInterval {
        let (seconds, attoseconds) = duration.components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }

    /// `duration` as NIO's `TimeAmount`.
    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
