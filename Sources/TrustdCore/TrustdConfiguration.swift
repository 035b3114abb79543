import KeydCore
import KeydProtocol

/// trustd's configuration, read from a small `key = value` file in keyd's format
/// (``ConfigurationText``: `#` comment lines, every key at most once, errors name the line).
/// Errors are KeydCore's ``CoreError`` configuration codes, the same as keyd's file gives.
///
/// ```
/// # /etc/trustd/trustd.conf
/// keyd-socket = /run/keyd/keyd.sock
/// role = worker
/// node-name = worker-1
/// join-listen = 0.0.0.0:9090
/// bootstrap-listen = 0.0.0.0:9000
/// verification-grpc-listen = 0.0.0.0:30081
/// verification-http-listen = 0.0.0.0:8080
/// metrics-listen = 127.0.0.1:9100
/// join-endpoints = 10.0.0.2:30090, [fd00::2]:30090
/// join-endpoints-file = /run/trustd/endpoints
/// call-timeout-ms = 5000
/// join-deadline-seconds = 600
/// backoff-initial-ms = 250
/// backoff-max-ms = 30000
/// max-releases-in-flight = 16
/// release-queue-length = 256
/// source-rate-per-second = 10
/// source-burst = 20
/// kubernetes-api-server = https://127.0.0.1:6443
/// kubernetes-token-file = /var/run/secrets/kubernetes.io/serviceaccount/token
/// bootstrap-token-ttl-seconds = 3600
/// output-directory = /var/lib/asterism-trustd/join
/// constellation-compatibility = false
/// shutdown-grace-seconds = 30
/// join-service-policy-file = /etc/trustd/join-service-policy.json
/// api-server-advertise = 10.0.0.1:6443
/// kubernetes-ca-file = /etc/kubernetes/pki/ca.crt
/// kubeadm-certificate-key-file = /etc/trustd/certificate-key
/// kubernetes-version = v1.31.2
/// handshake-timeout-ms = 10000
/// kubernetes-components-file = /etc/trustd/components.json
/// components-install-root = /run/state/bin
/// component-max-bytes = 536870912
/// component-timeout-seconds = 600
/// kubeadm-path = /run/state/bin/kubeadm
/// kubeadm-handoff = false
/// kubeadm-timeout-seconds = 600
/// kubeadm-admin-kubeconfig = /etc/kubernetes/admin.conf
/// kms-listen = 0.0.0.0:9091
/// kms-socket = /run/trustd/kms.sock
/// kms-endpoints = 10.0.0.2:9091
/// ```
public struct TrustdConfiguration: Equatable, Sendable {
    /// keyd's socket for trustd, the only way trustd reaches keyd.
    public var keydSocket: String = "/run/keyd/keyd.sock"
    /// What this node is: `worker` or `control-plane` (only control planes serve JoinService).
    public var role: NodeRole = .worker
    /// This node's Kubernetes name; nil: the machine's host name, taken at start.
    public var nodeName: KubernetesNodeName?
    /// Where JoinService listens (control planes only): Constellation's JoinService port.
    public var joinListen = HostPort(host: "0.0.0.0", port: 9090, kind: .ipv4)
    /// Where a control plane serves the operator's Init and Recover (aTLS gRPC): Constellation's Init port.
    public var bootstrapListen = HostPort(host: "0.0.0.0", port: 9000, kind: .ipv4)
    /// Where VerificationService answers gRPC: Constellation's NodePort for it (its pod port 9090 is JoinService's).
    public var verificationGRPCListen = HostPort(host: "0.0.0.0", port: 30081, kind: .ipv4)
    /// Where VerificationService answers Constellation's HTTP form: Constellation's port.
    public var verificationHTTPListen = HostPort(host: "0.0.0.0", port: 8080, kind: .ipv4)
    /// Where Prometheus scrapes `/metrics`.
    public var metricsListen = HostPort(host: "127.0.0.1", port: 9100, kind: .ipv4)
    /// JoinService endpoints the join client tries, in order (at most ``maxJoinEndpoints``).
    public var joinEndpoints: [HostPort] = []
    /// A file listing more JoinService endpoints (written by the cloud's metadata agent); nil: none.
    public var joinEndpointsFile: String?
    /// Time one join call may take before the client gives up on it.
    public var callTimeoutMilliseconds: Int = 5000
    /// Time the whole join may take, every endpoint and retry included.
    public var joinDeadlineSeconds: Int = 600
    /// The first pause between join attempts; it doubles, with jitter, up to ``backoffMaxMilliseconds``.
    public var backoffInitialMilliseconds: Int = 250
    /// The longest pause between join attempts.
    public var backoffMaxMilliseconds: Int = 30_000
    /// Key releases JoinService runs through keyd at once.
    public var maxReleasesInFlight: Int = 16
    /// Requests waiting for a release slot; more are answered `RESOURCE_EXHAUSTED` with a retry hint.
    public var releaseQueueLength: Int = 256
    /// Requests per second one source address may make (token bucket, JoinService and VerificationService).
    public var sourceRatePerSecond: Int = 10
    /// Requests one source address may make at once after a pause.
    public var sourceBurst: Int = 20
    /// The Kubernetes API server bootstrap tokens are created on, always `https`.
    public var kubernetesAPIServer = HostPort(host: "127.0.0.1", port: 6443, kind: .ipv4)
    /// How trustd authenticates to the API server; nil: not configured (required on control planes).
    public var kubernetesCredentials: KubernetesCredentials?
    /// Lifetime of a bootstrap token created for a joining node.
    public var bootstrapTokenTTLSeconds: Int = 3600
    /// Directory the join client writes the kubelet certificate and kubeadm join material into.
    public var outputDirectory: String = "/var/lib/asterism-trustd/join"
    /// Whether JoinService answers Constellation's bootstrapper with plain keys inside aTLS.
    public var constellationCompatibility: Bool = false
    /// Time in-flight calls get to finish after SIGTERM.
    public var shutdownGraceSeconds: Int = 30
    /// The measurement policy (keyd's JSON form) the JoinService's own attestation must meet before the
    /// join client sends anything; required when the node joins.
    public var joinServicePolicyFile: String?
    /// The API server endpoint JoinService hands joining nodes; required for JoinService to serve.
    public var apiServerAdvertise: HostPort?
    /// The cluster CA certificate (PEM) whose key hash joining nodes pin; required for JoinService to serve.
    public var kubernetesCAFile: String?
    /// A file holding kubeadm's certificate key for control planes that join; nil: control planes cannot join.
    public var kubeadmCertificateKeyFile: String?
    /// The Kubernetes version JoinService tells joining nodes; empty: none.
    public var kubernetesVersion: String = ""
    /// Time an aTLS handshake may take on JoinService (evidence on both sides included) before the
    /// connection is closed.
    public var handshakeTimeoutMilliseconds: Int = 10_000
    /// The Kubernetes components to install at start (``ComponentList``'s JSON); nil: none.
    public var kubernetesComponentsFile: String?
    /// The directory every component's install path lies under.
    public var componentsInstallRoot: String = "/run/state/bin"
    /// The most bytes one component may download, and its archive extract to.
    public var componentMaxBytes: Int = 512 << 20
    /// Time one component's download may take.
    public var componentTimeoutSeconds: Int = 600
    /// The kubeadm program run after a join; nil: no kubeadm step (the log says so).
    public var kubeadmPath: String?
    /// Whether kubeadm runs as root from its own units (`asterism-kubeadm-join.service`,
    /// `asterism-kubeadm-init.path`) with the 0600 configuration trustd writes, instead of trustd running
    /// `kubeadm-path` itself (which needs root: the shipped trustd.service has no privilege).
    public var kubeadmHandoff: Bool = false
    /// Time one kubeadm run may take before it is killed.
    public var kubeadmTimeoutSeconds: Int = 600
    /// The admin kubeconfig `kubeadm init` writes, which Init answers the operator with.
    public var kubeadmAdminKubeconfig: String = "/etc/kubernetes/admin.conf"
    /// Where a control plane serves `kms.API/GetDataKey` to attested nodes (mutual aTLS, dataKey
    /// challenges, the key sealed to the caller's keyd); nil: not served.
    public var kmsListen: HostPort?
    /// The local Unix socket (mode 0600, made fresh at start) where this node's KMS plugin gets data keys
    /// in plaintext gRPC; nil: not served. Needs ``kmsEndpoints`` and ``joinServicePolicyFile``.
    public var kmsSocket: String?
    /// The control planes' `kms-listen` endpoints the local KMS socket asks, in order; their attestation
    /// must pass ``joinServicePolicyFile`` before anything is sent.
    public var kmsEndpoints: [HostPort] = []

    /// The defaults.
    public init() {}

    /// `https://host:port` of ``kubernetesAPIServer``.
    public var kubernetesAPIServerURL: String { "https://\(kubernetesAPIServer)" }

    /// The largest configuration text accepted, in bytes.
    public static let maxTextLength = 65_536
    /// The most entries `join-endpoints` may list.
    public static let maxJoinEndpoints = 64
    /// Accepted ``callTimeoutMilliseconds``.
    public static let callTimeoutRange: ClosedRange<Int> = 100...600_000
    /// Accepted ``joinDeadlineSeconds``.
    public static let joinDeadlineRange: ClosedRange<Int> = 10...86_400
    /// Accepted ``backoffInitialMilliseconds`` and ``backoffMaxMilliseconds``.
    public static let backoffRange: ClosedRange<Int> = 10...600_000
    /// Accepted ``maxReleasesInFlight``.
    public static let releasesInFlightRange: ClosedRange<Int> = 1...4096
    /// Accepted ``releaseQueueLength`` (0: no queue, refuse at once).
    public static let releaseQueueRange: ClosedRange<Int> = 0...65_536
    /// Accepted ``sourceRatePerSecond`` and ``sourceBurst``.
    public static let sourceRateRange: ClosedRange<Int> = 1...100_000
    /// Accepted ``bootstrapTokenTTLSeconds``.
    public static let bootstrapTokenTTLRange: ClosedRange<Int> = 60...86_400
    /// Accepted ``handshakeTimeoutMilliseconds``.
    public static let handshakeTimeoutRange: ClosedRange<Int> = 1000...600_000
    /// Accepted ``shutdownGraceSeconds``.
    public static let shutdownGraceRange: ClosedRange<Int> = 1...3600
    /// Accepted ``componentMaxBytes``: 1 MiB to 4 GiB.
    public static let componentMaxBytesRange: ClosedRange<Int> = (1 << 20)...(4 << 30)
    /// Accepted ``componentTimeoutSeconds`` and ``kubeadmTimeoutSeconds``.
    public static let bootstrapTimeoutRange: ClosedRange<Int> = 10...7200

    /// Every key a file may set, in the order they are documented; each has its parser in
    /// ``apply(_:to:)``, an exhaustive switch.
    enum Key: String, CaseIterable {
        case keydSocket = "keyd-socket"
        case role = "role"
        case nodeName = "node-name"
        case joinListen = "join-listen"
        case bootstrapListen = "bootstrap-listen"
        case verificationGRPCListen = "verification-grpc-listen"
        case verificationHTTPListen = "verification-http-listen"
        case metricsListen = "metrics-listen"
        case joinEndpoints = "join-endpoints"
        case joinEndpointsFile = "join-endpoints-file"
        case callTimeout = "call-timeout-ms"
        case joinDeadline = "join-deadline-seconds"
        case backoffInitial = "backoff-initial-ms"
        case backoffMax = "backoff-max-ms"
        case maxReleasesInFlight = "max-releases-in-flight"
        case releaseQueueLength = "release-queue-length"
        case sourceRatePerSecond = "source-rate-per-second"
        case sourceBurst = "source-burst"
        case kubernetesAPIServer = "kubernetes-api-server"
        case kubernetesTokenFile = "kubernetes-token-file"
        case kubernetesKubeconfig = "kubernetes-kubeconfig"
        case bootstrapTokenTTL = "bootstrap-token-ttl-seconds"
        case outputDirectory = "output-directory"
        case constellationCompatibility = "constellation-compatibility"
        case shutdownGrace = "shutdown-grace-seconds"
        case joinServicePolicyFile = "join-service-policy-file"
        case apiServerAdvertise = "api-server-advertise"
        case kubernetesCAFile = "kubernetes-ca-file"
        case kubeadmCertificateKeyFile = "kubeadm-certificate-key-file"
        case kubernetesVersion = "kubernetes-version"
        case handshakeTimeout = "handshake-timeout-ms"
        case kubernetesComponentsFile = "kubernetes-components-file"
        case componentsInstallRoot = "components-install-root"
        case componentMaxBytes = "component-max-bytes"
        case componentTimeout = "component-timeout-seconds"
        case kubeadmPath = "kubeadm-path"
        case kubeadmHandoff = "kubeadm-handoff"
        case kubeadmTimeout = "kubeadm-timeout-seconds"
        case kubeadmAdminKubeconfig = "kubeadm-admin-kubeconfig"
        case kmsListen = "kms-listen"
        case kmsSocket = "kms-socket"
        case kmsEndpoints = "kms-endpoints"

        /// Sets what `field`'s value says.
        func apply(_ field: ConfigurationField, to configuration: inout TrustdConfiguration) throws(CoreError) {
            switch self {
            case .keydSocket: configuration.keydSocket = try field.absolutePath()
            case .role:
                configuration.role = try field.oneOf(["control-plane", "worker"]) == "worker" ? .worker : .controlPlane
            case .nodeName: configuration.nodeName = try field.nodeName()
            case .joinListen: configuration.joinListen = try field.listenAddress()
            case .bootstrapListen: configuration.bootstrapListen = try field.listenAddress()
            case .verificationGRPCListen: configuration.verificationGRPCListen = try field.listenAddress()
            case .verificationHTTPListen: configuration.verificationHTTPListen = try field.listenAddress()
            case .metricsListen: configuration.metricsListen = try field.listenAddress()
            case .joinEndpoints: configuration.joinEndpoints = try field.endpointList()
            case .joinEndpointsFile: configuration.joinEndpointsFile = try field.absolutePath()
            case .callTimeout: configuration.callTimeoutMilliseconds = try field.integer(in: callTimeoutRange)
            case .joinDeadline: configuration.joinDeadlineSeconds = try field.integer(in: joinDeadlineRange)
            case .backoffInitial: configuration.backoffInitialMilliseconds = try field.integer(in: backoffRange)
            case .backoffMax: configuration.backoffMaxMilliseconds = try field.integer(in: backoffRange)
            case .maxReleasesInFlight: configuration.maxReleasesInFlight = try field.integer(in: releasesInFlightRange)
            case .releaseQueueLength: configuration.releaseQueueLength = try field.integer(in: releaseQueueRange)
            case .sourceRatePerSecond: configuration.sourceRatePerSecond = try field.integer(in: sourceRateRange)
            case .sourceBurst: configuration.sourceBurst = try field.integer(in: sourceRateRange)
            case .kubernetesAPIServer: configuration.kubernetesAPIServer = try field.httpsServer()
            case .kubernetesTokenFile:
                configuration.kubernetesCredentials = .serviceAccountTokenFile(try field.absolutePath())
            case .kubernetesKubeconfig: configuration.kubernetesCredentials = .kubeconfig(try field.absolutePath())
            case .bootstrapTokenTTL:
                configuration.bootstrapTokenTTLSeconds = try field.integer(in: bootstrapTokenTTLRange)
            case .outputDirectory: configuration.outputDirectory = try field.directory()
            case .constellationCompatibility: configuration.constellationCompatibility = try field.boolean()
            case .shutdownGrace: configuration.shutdownGraceSeconds = try field.integer(in: shutdownGraceRange)
            case .joinServicePolicyFile: configuration.joinServicePolicyFile = try field.absolutePath()
            case .apiServerAdvertise: configuration.apiServerAdvertise = try field.endpoint()
            case .kubernetesCAFile: configuration.kubernetesCAFile = try field.absolutePath()
            case .kubeadmCertificateKeyFile: configuration.kubeadmCertificateKeyFile = try field.absolutePath()
            case .kubernetesVersion: configuration.kubernetesVersion = try field.kubernetesVersion()
            case .handshakeTimeout:
                configuration.handshakeTimeoutMilliseconds = try field.integer(in: handshakeTimeoutRange)
            case .kubernetesComponentsFile: configuration.kubernetesComponentsFile = try field.absolutePath()
            case .componentsInstallRoot: configuration.componentsInstallRoot = try field.directory()
            case .componentMaxBytes: configuration.componentMaxBytes = try field.integer(in: componentMaxBytesRange)
            case .componentTimeout:
                configuration.componentTimeoutSeconds = try field.integer(in: bootstrapTimeoutRange)
            case .kubeadmPath: configuration.kubeadmPath = try field.absolutePath()
            case .kubeadmHandoff: configuration.kubeadmHandoff = try field.boolean()
            case .kubeadmTimeout: configuration.kubeadmTimeoutSeconds = try field.integer(in: bootstrapTimeoutRange)
            case .kubeadmAdminKubeconfig: configuration.kubeadmAdminKubeconfig = try field.absolutePath()
            case .kmsListen: configuration.kmsListen = try field.listenAddress()
            case .kmsSocket: configuration.kmsSocket = try field.absolutePath()
            case .kmsEndpoints: configuration.kmsEndpoints = try field.endpointList()
            }
        }
    }

    /// The keys a file may set, in the order they are documented.
    public static let keys = Key.allCases.map(\.rawValue)

    /// Parses a configuration file; unset keys keep their defaults.
    /// - Throws: ``CoreError`` naming the line, the key and the limit: the text is over 64 KiB, a line
    ///   has no `=`, a key is unknown or repeated, a value is malformed or out of range, or two lines
    ///   conflict (both credentials, initial backoff over the maximum, a call timeout over the join
    ///   deadline, two listeners on one port).
    public static func parse(_ text: String) throws(CoreError) -> TrustdConfiguration {
        var configuration = TrustdConfiguration()
        var lines: [Key: ConfigurationField] = [:]
        try ConfigurationText.read(text, keys: Key.self, maxLength: maxTextLength) { (key, field) throws(CoreError) in
            try key.apply(field, to: &configuration)
            lines[key] = field
        }
        try configuration.checkConflicts(lines)
        return configuration
    }

    /// Refuses values that are each valid but not together; the error names the later line.
    private func checkConflicts(_ lines: [Key: ConfigurationField]) throws(CoreError) {
        /// Throws when `condition` holds for the pair `first`, `second`, at least one of them set.
        func refuse(_ first: Key, _ second: Key, if condition: Bool, rule: String) throws(CoreError) {
            guard condition else { return }
            let a = lines[first]
            let b = lines[second]
            // The later line is the one reported; a key left at its default is named as such.
            let (reported, other) =
                (b?.lineNumber ?? 0) > (a?.lineNumber ?? 0) ? (b, (first, a)) : (a, (second, b))
            guard let reported else { preconditionFailure("defaults conflict: \(first) and \(second)") }
            throw reported.conflict(with: other.0.rawValue, onLine: other.1?.lineNumber, rule: rule)
        }
        try refuse(
            .kubeadmPath,
            .kubeadmHandoff,
            if: kubeadmPath != nil && kubeadmHandoff,
            rule: "kubeadm runs either from trustd (kubeadm-path) or from its own units (kubeadm-handoff)"
        )
        try refuse(
            .kubernetesTokenFile,
            .kubernetesKubeconfig,
            if: lines[.kubernetesTokenFile] != nil && lines[.kubernetesKubeconfig] != nil,
            rule: "set one Kubernetes credential"
        )
        try refuse(
            .backoffInitial,
            .backoffMax,
            if: backoffInitialMilliseconds > backoffMaxMilliseconds,
            rule:
                "the initial backoff \(backoffInitialMilliseconds) ms exceeds the maximum \(backoffMaxMilliseconds) ms"
        )
        try refuse(
            .callTimeout,
            .joinDeadline,
            if: callTimeoutMilliseconds > joinDeadlineSeconds * 1000,
            rule: "the call timeout \(callTimeoutMilliseconds) ms exceeds the join deadline \(joinDeadlineSeconds) s"
        )
        let listeners: [(Key, HostPort)] =
            [
                (.joinListen, joinListen), (.bootstrapListen, bootstrapListen),
                (.verificationGRPCListen, verificationGRPCListen),
                (.verificationHTTPListen, verificationHTTPListen), (.metricsListen, metricsListen),
            ] + (kmsListen.map { [(.kmsListen, $0)] } ?? [])
        for (index, (firstKey, first)) in listeners.enumerated() {
            for (secondKey, second) in listeners[(index + 1)...] {
                try refuse(
                    firstKey,
                    secondKey,
                    if: first.overlaps(second),
                    rule: "\(first) and \(second) are the same socket"
                )
            }
        }
    }
}

/// How trustd authenticates to the Kubernetes API server.
public enum KubernetesCredentials: Hashable, Sendable {
    /// A file holding a service-account token.
    case serviceAccountTokenFile(String)
    /// A kubeconfig whose current context names a client certificate and key.
    case kubeconfig(String)
}

/// The value kinds only trustd's configuration has.
extension ConfigurationField {
    /// A Kubernetes node name, validated as keyd validates the names it binds into join evidence.
    fileprivate func nodeName() throws(CoreError) -> KubernetesNodeName {
        do {
            return try KubernetesNodeName(validating: value)
        } catch {
            throw invalid(expected: "a node name (a lowercase DNS-1123 subdomain of at most 253 bytes)")
        }
    }

    /// An IP address and port to listen on, IPv6 in brackets.
    fileprivate func listenAddress() throws(CoreError) -> HostPort {
        try hostPort(allowingNames: false, expected: "an IP address and port such as 0.0.0.0:9090 or [::]:9090")
    }

    /// One `host:port`, the host an IP address or a DNS name.
    fileprivate func endpoint() throws(CoreError) -> HostPort {
        try hostPort(allowingNames: true, expected: "host:port such as 10.0.0.1:6443 or api.example.com:6443")
    }

    /// A Kubernetes version: `v` and up to three dot-separated numbers (`v1.31.2`), at most 32 characters.
    fileprivate func kubernetesVersion() throws(CoreError) -> String {
        let parts = value.dropFirst().split(separator: ".", omittingEmptySubsequences: false)
        guard value.hasPrefix("v"), value.count <= 32, (1...3).contains(parts.count),
            parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) })
        else { throw invalid(expected: "a version such as v1.31.2") }
        return value
    }

    /// Comma-separated `host:port` entries, at most ``TrustdConfiguration/maxJoinEndpoints``; empty text is none.
    fileprivate func endpointList() throws(CoreError) -> [HostPort] {
        let entries = items()
        guard entries.count <= TrustdConfiguration.maxJoinEndpoints else {
            throw outOfRange(limit: "0…\(TrustdConfiguration.maxJoinEndpoints) entries")
        }
        var endpoints: [HostPort] = []
        for entry in entries {
            endpoints.append(
                try entry.hostPort(
                    allowingNames: true,
                    expected: "a comma-separated list of host:port such as 10.0.0.2:30090, [fd00::2]:30090"
                )
            )
        }
        return endpoints
    }

    /// `https://host[:port]` with an optional final `/`; the port defaults to 443. No user, path,
    /// query or fragment.
    fileprivate func httpsServer() throws(CoreError) -> HostPort {
        let expected = "an https URL such as https://10.0.0.1:6443"
        guard value.hasPrefix("https://") else { throw invalid(expected: expected) }
        var authority = value.dropFirst("https://".count)
        if authority.hasSuffix("/") { authority = authority.dropLast() }
        guard !authority.contains(where: { "/?#@".contains($0) }) else { throw invalid(expected: expected) }
        let hasPort = authority.hasPrefix("[") ? !authority.hasSuffix("]") : authority.contains(":")
        let text = hasPort ? String(authority) : "\(authority):443"
        return try ConfigurationField(key: key, value: text, lineNumber: lineNumber)
            .hostPort(allowingNames: true, expected: expected, reporting: value)
    }

    /// An absolute directory path other than `/`, without `.` or `..` components or empty ones.
    fileprivate func directory() throws(CoreError) -> String {
        let path = try absolutePath()
        let components = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        guard path != "/", !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            throw invalid(expected: "an absolute directory path without '.', '..' or '//', not '/'")
        }
        return path
    }

    /// The value as ``HostPort``; errors say `expected` and quote `reporting` (default: the value).
    private func hostPort(
        allowingNames: Bool,
        expected: String,
        reporting shown: String? = nil
    ) throws(CoreError) -> HostPort {
        let shownField = ConfigurationField(key: key, value: shown ?? value, lineNumber: lineNumber)
        switch HostPort.parse(value, allowingNames: allowingNames) {
        case .success(let hostPort): return hostPort
        case .failure(.malformed): throw shownField.invalid(expected: expected)
        case .failure(.portOutOfRange):
            let range = HostPort.portRange
            throw shownField.outOfRange(limit: "port \(range.lowerBound)…\(range.upperBound)")
        }
    }
}
