import FoundationEssentials
import KeydCore
import KeydProtocol
import Testing

@testable import TrustdCore

/// trustd's `key = value` configuration file.
@Suite struct TrustdConfigurationTests {
    /// The key list every unknown-key message names.
    static let knownKeys = TrustdConfiguration.keys.joined(separator: ", ")

    /// `host:port` of an IPv4 address, for expected values.
    static func ipv4(_ host: String, _ port: Int) -> HostPort { HostPort(host: host, port: port, kind: .ipv4) }

    @Test func documentedKeys() throws {
        // The README's "trustd configuration" table lists exactly the keys trustd accepts, in order.
        let root = String(#filePath.prefix(upTo: #filePath.firstRange(of: "/Tests/")!.lowerBound))
        let readme = try String(contentsOfFile: root + "/README.md", encoding: .utf8)
        let section = try #require(readme.firstRange(of: "## trustd configuration"))
        var documented: [String] = []
        for line in readme[section.upperBound...].split(separator: "\n") {
            if line.hasPrefix("## ") { break }
            guard line.hasPrefix("| `") else { continue }
            let cell = line.dropFirst(2).prefix { $0 != "|" }
            for name in cell.split(separator: ",") {
                let key: String = name.filter { $0 != "`" && $0 != " " }
                documented.append(key)
            }
        }
        #expect(documented == TrustdConfiguration.keys)
    }

    @Test func defaults() throws {
        let configuration = try TrustdConfiguration.parse("")
        #expect(configuration == TrustdConfiguration())
        #expect(configuration.keydSocket == "/run/keyd/keyd.sock")
        #expect(configuration.role == .worker)
        #expect(configuration.nodeName == nil)
        #expect(configuration.joinListen == Self.ipv4("0.0.0.0", 9090))
        #expect(configuration.bootstrapListen == Self.ipv4("0.0.0.0", 9000))
        #expect(configuration.verificationGRPCListen == Self.ipv4("0.0.0.0", 30081))
        #expect(configuration.verificationHTTPListen == Self.ipv4("0.0.0.0", 8080))
        #expect(configuration.metricsListen == Self.ipv4("127.0.0.1", 9100))
        #expect(configuration.joinEndpoints == [])
        #expect(configuration.joinEndpointsFile == nil)
        #expect(configuration.callTimeoutMilliseconds == 5000)
        #expect(configuration.joinDeadlineSeconds == 600)
        #expect(configuration.backoffInitialMilliseconds == 250)
        #expect(configuration.backoffMaxMilliseconds == 30_000)
        #expect(configuration.maxReleasesInFlight == 16)
        #expect(configuration.releaseQueueLength == 256)
        #expect(configuration.sourceRatePerSecond == 10)
        #expect(configuration.sourceBurst == 20)
        #expect(configuration.kubernetesAPIServerURL == "https://127.0.0.1:6443")
        #expect(configuration.kubernetesCredentials == nil)
        #expect(configuration.bootstrapTokenTTLSeconds == 3600)
        #expect(configuration.outputDirectory == "/var/lib/asterism-trustd/join")
        #expect(configuration.constellationCompatibility == false)
        #expect(configuration.shutdownGraceSeconds == 30)
        #expect(configuration.kubernetesComponentsFile == nil)
        #expect(configuration.componentsInstallRoot == "/run/state/bin")
        #expect(configuration.componentMaxBytes == 512 << 20)
        #expect(configuration.componentTimeoutSeconds == 600)
        #expect(configuration.kubeadmPath == nil)
        #expect(configuration.kubeadmHandoff == false)
        #expect(configuration.kubeadmTimeoutSeconds == 600)
        #expect(configuration.kubeadmAdminKubeconfig == "/etc/kubernetes/admin.conf")
        #expect(configuration.kmsListen == nil && configuration.kmsSocket == nil && configuration.kmsEndpoints == [])
    }

    @Test func fullFile() throws {
        let text = """
            # trustd configuration
            keyd-socket = /run/keyd/trustd.sock
            role = control-plane
              node-name=cp-0.cluster.example\t
            join-listen = [::]:9090
            \t# indented comment

            verification-grpc-listen = 10.0.0.1:30081
            verification-http-listen = [fd00::1]:8080
            metrics-listen = 127.0.0.1:9191
            join-endpoints = 10.0.0.2:30090, [fd00::2]:30090,cp-1.cluster.example:9090
            join-endpoints-file = /run/trustd/endpoints
            call-timeout-ms = 100
            join-deadline-seconds = 86400
            backoff-initial-ms = 10
            backoff-max-ms = 600000
            max-releases-in-flight = 4096
            release-queue-length = 0
            source-rate-per-second = 1
            source-burst = 100000
            kubernetes-api-server = https://[fd00::10]:6443/
            kubernetes-kubeconfig = /etc/trustd/kubeconfig
            bootstrap-token-ttl-seconds = 60
            output-directory = /run/trustd/join
            constellation-compatibility = true
            shutdown-grace-seconds = 3600
            """
        var expected = TrustdConfiguration()
        expected.keydSocket = "/run/keyd/trustd.sock"
        expected.role = .controlPlane
        expected.nodeName = try KubernetesNodeName(validating: "cp-0.cluster.example")
        expected.joinListen = HostPort(host: "::", port: 9090, kind: .ipv6)
        expected.verificationGRPCListen = Self.ipv4("10.0.0.1", 30081)
        expected.verificationHTTPListen = HostPort(host: "fd00::1", port: 8080, kind: .ipv6)
        expected.metricsListen = Self.ipv4("127.0.0.1", 9191)
        expected.joinEndpoints = [
            Self.ipv4("10.0.0.2", 30090), HostPort(host: "fd00::2", port: 30090, kind: .ipv6),
            HostPort(host: "cp-1.cluster.example", port: 9090, kind: .name),
        ]
        expected.joinEndpointsFile = "/run/trustd/endpoints"
        expected.callTimeoutMilliseconds = 100
        expected.joinDeadlineSeconds = 86400
        expected.backoffInitialMilliseconds = 10
        expected.backoffMaxMilliseconds = 600_000
        expected.maxReleasesInFlight = 4096
        expected.releaseQueueLength = 0
        expected.sourceRatePerSecond = 1
        expected.sourceBurst = 100_000
        expected.kubernetesAPIServer = HostPort(host: "fd00::10", port: 6443, kind: .ipv6)
        expected.kubernetesCredentials = .kubeconfig("/etc/trustd/kubeconfig")
        expected.bootstrapTokenTTLSeconds = 60
        expected.outputDirectory = "/run/trustd/join"
        expected.constellationCompatibility = true
        expected.shutdownGraceSeconds = 3600
        let configuration = try TrustdConfiguration.parse(text)
        #expect(configuration == expected)
        #expect(configuration.kubernetesAPIServerURL == "https://[fd00::10]:6443")
        #expect(
            configuration.joinEndpoints.map(\.description) == [
                "10.0.0.2:30090", "[fd00::2]:30090", "cp-1.cluster.example:9090",
            ]
        )
    }

    /// One accepted line and what it sets, for every key.
    struct Setting: Sendable, CustomTestStringConvertible {
        let text: String
        let check: @Sendable (TrustdConfiguration) -> Bool
        var testDescription: String { text }
    }

    static let settings: [Setting] = [
        Setting(text: "keyd-socket = /tmp/k.sock") { $0.keydSocket == "/tmp/k.sock" },
        Setting(text: "role = worker") { $0.role == .worker },
        Setting(text: "role = control-plane") { $0.role == .controlPlane },
        Setting(text: "node-name = w-1") { $0.nodeName?.text == "w-1" },
        Setting(text: "join-listen = 127.0.0.1:1") { $0.joinListen == ipv4("127.0.0.1", 1) },
        Setting(text: "bootstrap-listen = 127.0.0.1:2") { $0.bootstrapListen == ipv4("127.0.0.1", 2) },
        Setting(text: "verification-grpc-listen = [::1]:65535") {
            $0.verificationGRPCListen == HostPort(host: "::1", port: 65535, kind: .ipv6)
        },
        Setting(text: "verification-http-listen = 0.0.0.0:80") { $0.verificationHTTPListen == ipv4("0.0.0.0", 80) },
        Setting(text: "metrics-listen = [::]:9100\njoin-listen = 10.0.0.1:9090") {
            $0.metricsListen == HostPort(host: "::", port: 9100, kind: .ipv6)
        },
        Setting(text: "join-endpoints =") { $0.joinEndpoints == [] },
        Setting(text: "join-endpoints = a:1") { $0.joinEndpoints == [HostPort(host: "a", port: 1, kind: .name)] },
        Setting(text: "join-endpoints = " + Array(repeating: "10.0.0.1:30090", count: 64).joined(separator: ",")) {
            $0.joinEndpoints.count == 64
        },
        Setting(text: "join-endpoints-file = /e") { $0.joinEndpointsFile == "/e" },
        Setting(text: "call-timeout-ms = 600000\njoin-deadline-seconds = 600") {
            $0.callTimeoutMilliseconds == 600_000
        },
        Setting(text: "join-deadline-seconds = 10") { $0.joinDeadlineSeconds == 10 },
        Setting(text: "backoff-initial-ms = 30000") { $0.backoffInitialMilliseconds == 30_000 },
        Setting(text: "backoff-max-ms = 250") { $0.backoffMaxMilliseconds == 250 },
        Setting(text: "max-releases-in-flight = 1") { $0.maxReleasesInFlight == 1 },
        Setting(text: "release-queue-length = 65536") { $0.releaseQueueLength == 65536 },
        Setting(text: "source-rate-per-second = 100000") { $0.sourceRatePerSecond == 100_000 },
        Setting(text: "source-burst = 1") { $0.sourceBurst == 1 },
        Setting(text: "kubernetes-api-server = https://api.cluster.example") {
            $0.kubernetesAPIServerURL == "https://api.cluster.example:443"
        },
        Setting(text: "kubernetes-api-server = https://[fd00::1]") {
            $0.kubernetesAPIServer == HostPort(host: "fd00::1", port: 443, kind: .ipv6)
        },
        Setting(text: "kubernetes-token-file = /var/run/secrets/kubernetes.io/serviceaccount/token") {
            $0.kubernetesCredentials == .serviceAccountTokenFile("/var/run/secrets/kubernetes.io/serviceaccount/token")
        },
        Setting(text: "kubernetes-kubeconfig = /etc/trustd/kubeconfig") {
            $0.kubernetesCredentials == .kubeconfig("/etc/trustd/kubeconfig")
        },
        Setting(text: "bootstrap-token-ttl-seconds = 86400") { $0.bootstrapTokenTTLSeconds == 86400 },
        Setting(text: "output-directory = /o") { $0.outputDirectory == "/o" },
        Setting(text: "constellation-compatibility = false") { $0.constellationCompatibility == false },
        Setting(text: "constellation-compatibility = true") { $0.constellationCompatibility == true },
        Setting(text: "shutdown-grace-seconds = 1") { $0.shutdownGraceSeconds == 1 },
        Setting(text: "join-service-policy-file = /etc/trustd/p.json") {
            $0.joinServicePolicyFile == "/etc/trustd/p.json"
        },
        Setting(text: "api-server-advertise = api.example.com:6443") {
            $0.apiServerAdvertise == HostPort(host: "api.example.com", port: 6443, kind: .name)
        },
        Setting(text: "kubernetes-ca-file = /etc/kubernetes/pki/ca.crt") {
            $0.kubernetesCAFile == "/etc/kubernetes/pki/ca.crt"
        },
        Setting(text: "kubeadm-certificate-key-file = /k") { $0.kubeadmCertificateKeyFile == "/k" },
        Setting(text: "kubernetes-version = v1.31.2") { $0.kubernetesVersion == "v1.31.2" },
        Setting(text: "handshake-timeout-ms = 1000") { $0.handshakeTimeoutMilliseconds == 1000 },
        Setting(text: "kubernetes-components-file = /etc/trustd/components.json") {
            $0.kubernetesComponentsFile == "/etc/trustd/components.json"
        },
        Setting(text: "components-install-root = /opt/bin") { $0.componentsInstallRoot == "/opt/bin" },
        Setting(text: "component-max-bytes = 1048576") { $0.componentMaxBytes == 1 << 20 },
        Setting(text: "component-max-bytes = 4294967296") { $0.componentMaxBytes == 4 << 30 },
        Setting(text: "component-timeout-seconds = 10") { $0.componentTimeoutSeconds == 10 },
        Setting(text: "kubeadm-path = /run/state/bin/kubeadm") { $0.kubeadmPath == "/run/state/bin/kubeadm" },
        Setting(text: "kubeadm-timeout-seconds = 7200") { $0.kubeadmTimeoutSeconds == 7200 },
        Setting(text: "kubeadm-handoff = true") { $0.kubeadmHandoff },
        Setting(text: "kubeadm-admin-kubeconfig = /tmp/admin.conf") { $0.kubeadmAdminKubeconfig == "/tmp/admin.conf" },
        Setting(text: "kms-listen = 0.0.0.0:9091") { $0.kmsListen == TrustdConfigurationTests.ipv4("0.0.0.0", 9091) },
        Setting(text: "kms-socket = /run/trustd/kms.sock") { $0.kmsSocket == "/run/trustd/kms.sock" },
        Setting(text: "kms-endpoints = 10.0.0.2:9000, 10.0.0.3:9000") {
            $0.kmsEndpoints == [
                TrustdConfigurationTests.ipv4("10.0.0.2", 9000), TrustdConfigurationTests.ipv4("10.0.0.3", 9000),
            ]
        },
    ]

    @Test(arguments: settings)
    func everyKeyParses(setting: Setting) throws {
        #expect(setting.check(try TrustdConfiguration.parse(setting.text)))
    }

    @Test func everyKeyHasASetting() {
        // Each documented key appears in at least one accepted line above.
        let covered = Set(Self.settings.flatMap { $0.text.split(separator: "\n").map { $0.prefix { $0 != " " } } })
        #expect(TrustdConfiguration.keys.filter { !covered.contains(Substring($0)) } == [])
    }

    @Test func crlfLineEndsAndTrailingNewline() throws {
        let configuration = try TrustdConfiguration.parse("role = control-plane\r\nsource-burst = 7\r\n")
        #expect(configuration.role == .controlPlane)
        #expect(configuration.sourceBurst == 7)
    }

    @Test func sizeLimit() throws {
        let padding = "# " + String(repeating: "x", count: TrustdConfiguration.maxTextLength - 3) + "\n"
        #expect(padding.utf8.count == TrustdConfiguration.maxTextLength)
        #expect(try TrustdConfiguration.parse(padding) == TrustdConfiguration())
        let error = #expect(throws: CoreError.self) { try TrustdConfiguration.parse(padding + "\n") }
        #expect(error?.code == .configurationTooLarge)
        #expect(error?.message == "configuration is 65537 bytes, exceeds limit 65536")
    }

    /// One refused file: its text, the error's code and its exact message.
    struct Refusal: Sendable, CustomTestStringConvertible {
        let text: String
        let code: CoreError.Code
        let message: String
        var testDescription: String { message }
    }

    /// A refused value of `key`.
    static func bad(_ key: String, _ value: String, _ expected: String) -> Refusal {
        Refusal(
            text: "\(key) = \(value)",
            code: .configurationBadNumber,
            message: "configuration line 1: '\(key)' value '\(value)' is not \(expected)"
        )
    }

    /// A value of `key` outside `limit`.
    static func outside(_ key: String, _ value: String, _ limit: String) -> Refusal {
        Refusal(
            text: "\(key) = \(value)",
            code: .configurationOutOfRange,
            message: "configuration line 1: '\(key)' value \(value) is outside \(limit)"
        )
    }

    static let listen = "an IP address and port such as 0.0.0.0:9090 or [::]:9090"
    static let endpoints = "a comma-separated list of host:port such as 10.0.0.2:30090, [fd00::2]:30090"
    static let https = "an https URL such as https://10.0.0.1:6443"
    static let directory = "an absolute directory path without '.', '..' or '//', not '/'"

    static let refusals: [Refusal] = [
        Refusal(
            text: "role = worker\nnonsense",
            code: .configurationMissingEquals,
            message: "configuration line 2: expected 'key = value', found no '='"
        ),
        Refusal(
            text: "# comment\n\nkeyd_socket = /run/keyd/keyd.sock",
            code: .configurationUnknownKey,
            message: "configuration line 3: unknown key 'keyd_socket'; known keys: " + knownKeys
        ),
        Refusal(
            text: "trustd-uids = 990",
            code: .configurationUnknownKey,
            message: "configuration line 1: unknown key 'trustd-uids'; known keys: " + knownKeys
        ),
        Refusal(
            text: "role = worker\nsource-burst = 5\r\nrole = control-plane",
            code: .configurationDuplicateKey,
            message: "configuration line 3: key 'role' already set on line 1"
        ),
        bad("keyd-socket", "run/keyd/keyd.sock", "an absolute path"),
        bad("kubernetes-version", "1.31.2", "a version such as v1.31.2"),
        bad("kubernetes-version", "v1..2", "a version such as v1.31.2"),
        bad("kubernetes-version", "v1.2.3.4", "a version such as v1.31.2"),
        bad("api-server-advertise", "10.0.0.1", "host:port such as 10.0.0.1:6443 or api.example.com:6443"),
        bad("join-service-policy-file", "policy.json", "an absolute path"),
        bad("role", "master", "control-plane or worker"),
        bad("role", "", "control-plane or worker"),
        bad("node-name", "Worker_1", "a node name (a lowercase DNS-1123 subdomain of at most 253 bytes)"),
        bad("node-name", "", "a node name (a lowercase DNS-1123 subdomain of at most 253 bytes)"),
        bad("join-listen", "0.0.0.0", listen),
        bad("join-listen", "::1:9090", listen),
        bad("join-listen", "localhost:9090", listen),
        bad("join-listen", "0.0.0.0:90a", listen),
        bad("join-listen", "0.0.0.0:+90", listen),
        bad("verification-grpc-listen", "[::1]", listen),
        bad("verification-grpc-listen", "[::1]9090", listen),
        bad("verification-http-listen", "[10.0.0.1]:8080", listen),
        bad("metrics-listen", "010.0.0.1:9100", listen),
        outside("join-listen", "0.0.0.0:0", "port 1…65535"),
        outside("metrics-listen", "[::1]:65536", "port 1…65535"),
        bad("join-endpoints", "10.0.0.2:30090,,10.0.0.3:30090", endpoints).withValue(""),
        bad("join-endpoints", "10.0.0.256:30090", endpoints),
        bad("join-endpoints", "fd00::2:30090", endpoints),
        bad("join-endpoints", "-cp.example:9090", endpoints),
        bad("join-endpoints", "cp..example:9090", endpoints),
        bad("join-endpoints", "cp_1.example:9090", endpoints),
        bad("join-endpoints", "10.0.0.2:30090, 10.0.0.3", endpoints).withValue("10.0.0.3"),
        outside("join-endpoints", "cp.example:99999", "port 1…65535"),
        Refusal(
            text: "join-endpoints = " + Array(repeating: "10.0.0.1:30090", count: 65).joined(separator: ","),
            code: .configurationOutOfRange,
            message:
                "configuration line 1: 'join-endpoints' value 10.0.0.1:30090,10.0.0.1:… is outside 0…64 entries"
        ),
        bad("join-endpoints-file", "endpoints", "an absolute path"),
        bad("call-timeout-ms", "5s", "a decimal number"),
        outside("call-timeout-ms", "99", "100…600000"),
        outside("call-timeout-ms", "600001", "100…600000"),
        outside("join-deadline-seconds", "9", "10…86400"),
        outside("join-deadline-seconds", "86401", "10…86400"),
        outside("backoff-initial-ms", "9", "10…600000"),
        outside("backoff-max-ms", "600001", "10…600000"),
        outside("max-releases-in-flight", "0", "1…4096"),
        outside("max-releases-in-flight", "4097", "1…4096"),
        bad("release-queue-length", "-1", "a decimal number"),
        outside("release-queue-length", "65537", "0…65536"),
        outside("source-rate-per-second", "0", "1…100000"),
        outside("source-burst", "100001", "1…100000"),
        outside("source-burst", "99999999999999999999999", "1…100000"),
        bad("kubernetes-api-server", "http://10.0.0.1:6443", https),
        bad("kubernetes-api-server", "10.0.0.1:6443", https),
        bad("kubernetes-api-server", "https://", https),
        bad("kubernetes-api-server", "https://10.0.0.1:6443/api", https),
        bad("kubernetes-api-server", "https://admin@10.0.0.1:6443", https),
        bad("kubernetes-api-server", "https://10.0.0.1:6443?x=1", https),
        bad("kubernetes-api-server", "https://fd00::1:6443", https),
        outside("kubernetes-api-server", "https://10.0.0.1:0", "port 1…65535"),
        bad("kubernetes-token-file", "token", "an absolute path"),
        bad("kubernetes-kubeconfig", "~/.kube/config", "an absolute path"),
        outside("bootstrap-token-ttl-seconds", "59", "60…86400"),
        outside("bootstrap-token-ttl-seconds", "86401", "60…86400"),
        bad("output-directory", "/", directory),
        bad("output-directory", "/var/lib/../etc", directory),
        bad("output-directory", "/var//lib", directory),
        bad("output-directory", "/var/lib/./join", directory),
        bad("output-directory", "/var/lib/join/", directory),
        bad("output-directory", "join", "an absolute path"),
        bad("constellation-compatibility", "yes", "true or false"),
        bad("constellation-compatibility", "TRUE", "true or false"),
        outside("shutdown-grace-seconds", "0", "1…3600"),
        outside("shutdown-grace-seconds", "3601", "1…3600"),
        bad("kubernetes-components-file", "components.json", "an absolute path"),
        bad("components-install-root", "/run/state/../bin", directory),
        bad("components-install-root", "/", directory),
        outside("component-max-bytes", "1048575", "1048576…4294967296"),
        outside("component-max-bytes", "4294967297", "1048576…4294967296"),
        outside("component-timeout-seconds", "9", "10…7200"),
        bad("kubeadm-path", "kubeadm", "an absolute path"),
        outside("kubeadm-timeout-seconds", "7201", "10…7200"),
        Refusal(
            text: "kubeadm-handoff = true\nkubeadm-path = /run/state/bin/kubeadm",
            code: .configurationConflict,
            message: "configuration line 2: 'kubeadm-path' conflicts with 'kubeadm-handoff' on line 1: "
                + "kubeadm runs either from trustd (kubeadm-path) or from its own units (kubeadm-handoff)"
        ),
        Refusal(
            text: "kubernetes-token-file = /t\n# both\nkubernetes-kubeconfig = /k",
            code: .configurationConflict,
            message: "configuration line 3: 'kubernetes-kubeconfig' conflicts with 'kubernetes-token-file' on line 1: "
                + "set one Kubernetes credential"
        ),
        Refusal(
            text: "backoff-initial-ms = 60000",
            code: .configurationConflict,
            message: "configuration line 1: 'backoff-initial-ms' conflicts with the default of 'backoff-max-ms': "
                + "the initial backoff 60000 ms exceeds the maximum 30000 ms"
        ),
        Refusal(
            text: "backoff-max-ms = 100\nbackoff-initial-ms = 200",
            code: .configurationConflict,
            message: "configuration line 2: 'backoff-initial-ms' conflicts with 'backoff-max-ms' on line 1: "
                + "the initial backoff 200 ms exceeds the maximum 100 ms"
        ),
        Refusal(
            text: "call-timeout-ms = 20000\njoin-deadline-seconds = 10",
            code: .configurationConflict,
            message: "configuration line 2: 'join-deadline-seconds' conflicts with 'call-timeout-ms' on line 1: "
                + "the call timeout 20000 ms exceeds the join deadline 10 s"
        ),
        Refusal(
            text: "metrics-listen = 127.0.0.1:9090",
            code: .configurationConflict,
            message: "configuration line 1: 'metrics-listen' conflicts with the default of 'join-listen': "
                + "0.0.0.0:9090 and 127.0.0.1:9090 are the same socket"
        ),
        Refusal(
            text: "verification-http-listen = [::]:9100",
            code: .configurationConflict,
            message: "configuration line 1: 'verification-http-listen' conflicts with the default of 'metrics-listen': "
                + "[::]:9100 and 127.0.0.1:9100 are the same socket"
        ),
        Refusal(
            text: "join-listen = 10.0.0.1:7000\nverification-grpc-listen = 10.0.0.1:7000",
            code: .configurationConflict,
            message: "configuration line 2: 'verification-grpc-listen' conflicts with 'join-listen' on line 1: "
                + "10.0.0.1:7000 and 10.0.0.1:7000 are the same socket"
        ),
    ]

    @Test(arguments: refusals)
    func refused(refusal: Refusal) {
        let error = #expect(throws: CoreError.self) { try TrustdConfiguration.parse(refusal.text) }
        #expect(error?.code == refusal.code)
        #expect(error?.message == refusal.message)
    }

    @Test func listenersOnDistinctAddressesOfOnePort() throws {
        // One port on two specific addresses is two sockets; only a wildcard overlaps every address.
        let configuration = try TrustdConfiguration.parse(
            "join-listen = 10.0.0.1:9100\nverification-grpc-listen = [fd00::1]:9100"
        )
        #expect(configuration.joinListen.port == configuration.metricsListen.port)
    }

    @Test func hostPortRoundTrips() {
        for text in ["10.0.0.1:1", "[fd00::1]:65535", "[::]:9090", "node-1.example:30090", "a:1"] {
            #expect((try? HostPort.parse(text, allowingNames: true).get())?.description == text)
        }
        #expect((try? HostPort.parse("node-1:1", allowingNames: false).get()) == nil)
        #expect(HostPort.parse("[::ffff:10.0.0.1]:1", allowingNames: false).map(\.kind) == .success(.ipv6))
        #expect(HostPort.parse("1.2.3:1", allowingNames: true).map(\.kind) == .failure(.malformed))
        #expect(HostPort.parse("10.0.0.1:70000", allowingNames: true).map(\.kind) == .failure(.portOutOfRange))
    }
}

extension TrustdConfigurationTests.Refusal {
    /// The same refusal quoting `value`, the list item at fault, instead of the whole value.
    func withValue(_ value: String) -> Self {
        let key = text.prefix { $0 != " " }
        let expected = message[message.firstRange(of: "' is not ")!.upperBound...]
        return Self(
            text: text,
            code: code,
            message: "configuration line 1: '\(key)' value '\(value)' is not \(expected)"
        )
    }
}
