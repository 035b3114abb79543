import Foundation
import KubernetesClient
import NIOSSL
import Testing

@testable import FakeKubernetesAPI

/// Kubeconfig parsing (strict, secrets kept out of errors) and the client configured from one against the fake.
@Suite("Kubeconfig")
struct KubeconfigTests {
    /// The token a kubeconfig of these tests may carry.
    static let kubeconfigToken = "kubeconfig-token-0123456789"

    /// A kubeadm-style admin.conf for `server`: the CA and a client certificate inline. Line numbers matter to the
    /// error table: `server` is line 6, `users[admin].user` line 17, its fields lines 18 and 19.
    static func adminConf(server: String, pki: TestPKI, identity: TestPKI.ClientIdentity) -> String {
        """
        apiVersion: v1
        kind: Config
        clusters:
        - name: fake
          cluster:
            server: \(server)
            certificate-authority-data: \(base64(pki.caPEM))
        contexts:
        - name: admin@fake
          context:
            cluster: fake
            user: admin
        current-context: admin@fake
        preferences: {}
        users:
        - name: admin
          user:
            client-certificate-data: \(base64(identity.certificatePEM))
            client-key-data: \(base64(identity.keyPEM))

        """
    }

    /// `text` base64-encoded.
    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    /// A new directory under the temporary directory.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kubeconfig-\(UUID())")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test("a kubeadm admin.conf: client certificate inline, creation over mutual TLS without a bearer token")
    func adminConfClientCertificate() async throws {
        try await withFakeAPIServer { server, pki in
            let identity = try pki.clientIdentity(commonName: "kubernetes-admin")
            let kubeconfig = try Kubeconfig(
                yaml: Self.adminConf(server: server.url, pki: pki, identity: identity),
                directory: "/"
            )
            #expect(kubeconfig.server == server.url)
            #expect(
                kubeconfig.user
                    == .clientCertificate(
                        certificate: .inline(Array(identity.certificatePEM.utf8)),
                        key: .inline(try NIOSSLPrivateKey(bytes: Array(identity.keyPEM.utf8), format: .pem))
                    )
            )
            #expect(!String(describing: kubeconfig).contains(Self.base64(identity.keyPEM)))
            let client = try BootstrapTokenClient(configuration: try .init(kubeconfig: kubeconfig, retry: patientRetry))
            let token = try await client.createToken()
            try await client.shutdown()
            #expect(server.credentials == ["x509 CN=kubernetes-admin,O=system:masters"])
            #expect(server.secrets[token.secretName]?["token-secret"] == token.secret)
        }
    }

    @Test("files named relative to the kubeconfig's directory are read from there; a token file authenticates")
    func relativeFiles() async throws {
        try await withFakeAPIServer { server, pki in
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            try FileManager.default.createDirectory(
                at: directory.appendingPathComponent("pki"),
                withIntermediateDirectories: true
            )
            try pki.caPEM.write(to: directory.appendingPathComponent("pki/ca.crt"), atomically: true, encoding: .utf8)
            try (fakeBearerToken + "\n").write(
                to: directory.appendingPathComponent("token"),
                atomically: true,
                encoding: .utf8
            )
            let yaml = """
                apiVersion: v1
                kind: Config
                clusters:
                - name: fake
                  cluster: {server: "\(server.url)", certificate-authority: pki/ca.crt}
                contexts:
                - name: sa
                  context: {cluster: fake, user: trustd, namespace: kube-system}
                current-context: sa
                users:
                - name: trustd
                  user: {tokenFile: token}
                """
            let path = directory.appendingPathComponent("config").path
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            let kubeconfig = try Kubeconfig.load(path: path)
            #expect(kubeconfig.certificateAuthority == .file(directory.appendingPathComponent("pki/ca.crt").path))
            #expect(kubeconfig.user == .tokenFile(directory.appendingPathComponent("token").path))
            let client = try BootstrapTokenClient(configuration: try .init(kubeconfig: kubeconfig, retry: patientRetry))
            let token = try await client.createToken()
            try await client.shutdown()
            #expect(server.credentials == ["bearer"])
            #expect(server.secrets[token.secretName] != nil)
        }
    }

    @Test("a token user: the token is the bearer, and the description hides it")
    func tokenUser() throws {
        let pki = try TestPKI()
        let yaml = Self.adminConf(server: "https://10.0.0.1:6443", pki: pki, identity: try pki.clientIdentity())
            .replacing(
                #/ {4}client-certificate-data: .*\n {4}client-key-data: .*\n/#,
                with: "    token: \(Self.kubeconfigToken)\n"
            )
        let kubeconfig = try Kubeconfig(yaml: yaml, directory: "/")
        #expect(kubeconfig.user == .token(Self.kubeconfigToken))
        #expect(!String(describing: kubeconfig).contains(Self.kubeconfigToken))
    }

    /// A change to the admin.conf and the error it must give.
    struct Violation: Sendable, CustomStringConvertible {
        var description: String
        var field: String
        var line: Int?
        var problem: String
        var edit: @Sendable (String) -> String

        /// The admin.conf with `old` replaced by `new`.
        init(_ description: String, field: String, line: Int?, problem: String, replacing old: String, with new: String)
        {
            self.description = description
            self.field = field
            self.line = line
            self.problem = problem
            edit = { $0.replacingOccurrences(of: old, with: new) }
        }

        /// The admin.conf changed by `edit`.
        init(
            _ description: String,
            field: String,
            line: Int?,
            problem: String,
            edit: @escaping @Sendable (String) -> String
        ) {
            self.description = description
            self.field = field
            self.line = line
            self.problem = problem
            self.edit = edit
        }

        /// The admin.conf with `line` (a regular expression over one line) removed.
        init(_ description: String, field: String, line: Int?, problem: String, removing pattern: String) {
            self.description = description
            self.field = field
            self.line = line
            self.problem = problem
            edit = { text in
                text.split(separator: "\n", omittingEmptySubsequences: false)
                    .filter { $0.wholeMatch(of: try! Regex(pattern)) == nil }.joined(separator: "\n")
            }
        }
    }

    static let violations: [Violation] = [
        Violation(
            "an unknown top-level key",
            field: "colour",
            line: 14,
            problem: "unknown field",
            replacing: "preferences: {}",
            with: "colour: blue"
        ),
        Violation(
            "an exec credential plugin",
            field: "users[admin].user.exec",
            line: 18,
            problem: "not supported by this client",
            replacing: "  user:\n",
            with: "  user:\n    exec: {command: aws}\n"
        ),
        Violation(
            "a misspelt user field",
            field: "users[admin].user.client-key-date",
            line: 19,
            problem: "unknown field",
            replacing: "client-key-data:",
            with: "client-key-date:"
        ),
        Violation(
            "insecure-skip-tls-verify: true",
            field: "clusters[fake].cluster.insecure-skip-tls-verify",
            line: 7,
            problem: "refused: the API server's certificate is checked",
            replacing: "    certificate-authority-data:",
            with: "    insecure-skip-tls-verify: true\n    certificate-authority-data:"
        ),
        Violation(
            "tls-server-name",
            field: "clusters[fake].cluster.tls-server-name",
            line: 7,
            problem: "not supported by this client",
            replacing: "    certificate-authority-data:",
            with: "    tls-server-name: kubernetes\n    certificate-authority-data:"
        ),
        Violation(
            "no server",
            field: "clusters[fake].cluster.server",
            line: 6,
            problem: "required",
            removing: "    server: .*"
        ),
        Violation(
            "a plain-HTTP server",
            field: "clusters[fake].cluster.server",
            line: 6,
            problem: "must be an https:// URL",
            replacing: "server: https://",
            with: "server: http://"
        ),
        Violation(
            "no CA",
            field: "clusters[fake].cluster.certificate-authority-data",
            line: 6,
            problem: "required (or certificate-authority)",
            removing: "    certificate-authority-data: .*"
        ),
        Violation(
            "CA both inline and as a file",
            field: "clusters[fake].cluster.certificate-authority-data",
            line: 8,
            problem: "given with certificate-authority; give one",
            replacing: "    certificate-authority-data:",
            with: "    certificate-authority: /etc/kubernetes/pki/ca.crt\n    certificate-authority-data:"
        ),
        Violation(
            "current-context naming no context",
            field: "contexts",
            line: 9,
            problem: "no entry named \"other\"",
            replacing: "current-context: admin@fake",
            with: "current-context: other"
        ),
        Violation(
            "no current-context",
            field: "current-context",
            line: 1,
            problem: "required",
            removing: "current-context: .*"
        ),
        Violation(
            "a client certificate without its key",
            field: "users[admin].user.client-key-data",
            line: 18,
            problem: "required with a client certificate (or client-key)",
            removing: "    client-key-data: .*"
        ),
        Violation(
            "a client key that is not base64",
            field: "users[admin].user.client-key-data",
            line: 19,
            problem: "not base64",
            edit: { $0.replacing(#/client-key-data: .*/#, with: "client-key-data: 'not base64 ***'") }
        ),
        Violation(
            "a client certificate and a token",
            field: "users[admin].user",
            line: 18,
            problem: "more than one of client certificate, token and tokenFile; give one",
            replacing: "  user:\n",
            with: "  user:\n    token: \(kubeconfigToken)\n"
        ),
        Violation(
            "a user named twice",
            field: "users[1].name",
            line: 18,
            problem: "\"admin\" given twice in users",
            replacing: "users:\n- name: admin\n",
            with: "users:\n- name: admin\n  user: {token: x}\n- name: admin\n"
        ),
        Violation(
            "kind Pod",
            field: "kind",
            line: 2,
            problem: "must be Config",
            replacing: "kind: Config",
            with: "kind: Pod"
        ),
        Violation(
            "not YAML",
            field: "(document)",
            line: 4,
            problem: "not valid YAML",
            replacing: "clusters:\n",
            with: "clusters: [\n"
        ),
    ]

    @Test("each schema violation is an error naming the field and line, with no secret in it", arguments: violations)
    func violation(_ violation: Violation) throws {
        let pki = try TestPKI()
        let identity = try pki.clientIdentity()
        let yaml = violation.edit(Self.adminConf(server: "https://10.0.0.1:6443", pki: pki, identity: identity))
        let error = #expect(throws: KubernetesClientError.self) { try Kubeconfig(yaml: yaml, directory: "/") }
        guard case .invalidKubeconfig(let field, let line, let problem) = error else {
            Issue.record("expected invalidKubeconfig, got \(String(describing: error))")
            return
        }
        #expect(field == violation.field)
        #expect(problem == violation.problem)
        if let expected = violation.line { #expect(line == expected) }
        let text = String(describing: error)
        #expect(!text.contains(Self.base64(identity.keyPEM).prefix(40)))
        #expect(!text.contains(Self.kubeconfigToken))
        #expect(!text.contains("not base64 ***"))
    }

    @Test("client-key-data that is base64 but not a PEM key is refused at parse time, naming field and line only")
    func keyNotPEM() throws {
        let pki = try TestPKI()
        let identity = try pki.clientIdentity()
        let garbage = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1icm9rZW4=\n-----END PRIVATE KEY-----\n"
        let yaml = Self.adminConf(server: "https://10.0.0.1:6443", pki: pki, identity: identity)
            .replacingOccurrences(of: Self.base64(identity.keyPEM), with: Self.base64(garbage))
        let error = #expect(throws: KubernetesClientError.self) { try Kubeconfig(yaml: yaml, directory: "/") }
        #expect(
            error
                == .invalidKubeconfig(
                    field: "users[admin].user.client-key-data",
                    line: 19,
                    problem: "not a PEM private key"
                )
        )
        #expect(!String(describing: error).contains("c2VjcmV0"))
    }

    @Test("a missing kubeconfig or named file is credentialsUnreadable with its path")
    func missingFiles() throws {
        #expect(
            throws: KubernetesClientError.credentialsUnreadable(
                path: "/nonexistent/config",
                problem: "cannot read the kubeconfig"
            )
        ) {
            try Kubeconfig.load(path: "/nonexistent/config")
        }
        let pki = try TestPKI()
        let yaml = Self.adminConf(server: "https://10.0.0.1:6443", pki: pki, identity: try pki.clientIdentity())
            .replacing(/certificate-authority-data: .*/, with: "certificate-authority: missing/ca.crt")
        let kubeconfig = try Kubeconfig(yaml: yaml, directory: "/nonexistent")
        #expect(
            throws: KubernetesClientError.credentialsUnreadable(
                path: "/nonexistent/missing/ca.crt",
                problem: "cannot read the file the kubeconfig names"
            )
        ) { try kubeconfig.trustRoots() }
    }
}
