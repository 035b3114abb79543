import Foundation
import NIOSSL
import Yams

/// What the client takes from a kubeconfig (client-go's `Config`, `apiVersion: v1`): the current context's cluster
/// (server and CA) and user (a client certificate, a token or a token file).
///
/// Strict: a key outside kubeconfig's schema, a field this client cannot honour (`exec`, `auth-provider`,
/// impersonation, basic auth, `proxy-url`, `tls-server-name`, `insecure-skip-tls-verify: true`), a missing field or
/// an ambiguous one (data and file both given) is an error naming the field and its line. Errors and `description`
/// never show a value from the file other than entry names.
public struct Kubeconfig: Sendable, CustomStringConvertible {
    /// Bytes given inline (a `…-data` field, base64 in the file) or by a file path, made absolute against the
    /// kubeconfig's directory as kubectl does.
    public enum Source: Sendable, Equatable {
        /// The decoded bytes.
        case inline([UInt8])
        /// An absolute path, read when the credentials are built.
        case file(String)
    }

    /// A client key: parsed at once when inline, so its bytes do not outlive the parse; a path read later.
    public enum KeySource: Sendable, Equatable {
        /// The key from `client-key-data`.
        case inline(NIOSSLPrivateKey)
        /// An absolute path, read when the credentials are built.
        case file(String)
    }

    /// How the current context's user authenticates.
    public enum User: Sendable, Equatable {
        /// A client certificate (PEM, leaf first) and its PEM key: mutual TLS.
        case clientCertificate(certificate: Source, key: KeySource)
        /// A bearer token. Secret.
        case token(String)
        /// A bearer token file, read for each creation.
        case tokenFile(String)
    }

    /// Largest kubeconfig read.
    public static let maximumFileBytes = 1 << 20

    /// The API server's `https://host[:port]`.
    public var server: String
    /// The CA bundle the API server's certificate must chain to (PEM).
    public var certificateAuthority: Source
    /// The user's credentials.
    public var user: User

    /// Cluster, CA source and the kind of credentials; never the token or key.
    public var description: String {
        let credentials =
            switch user {
            case .clientCertificate: "client certificate"
            case .token: "token <redacted>"
            case .tokenFile(let path): "token file \(path)"
            }
        return "kubeconfig for \(server) with \(credentials)"
    }

    /// The kubeconfig at `path`; relative paths in it are resolved against its directory.
    public static func load(path: String) throws(KubernetesClientError) -> Kubeconfig {
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard data.count <= maximumFileBytes else {
                throw KubernetesClientError.credentialsUnreadable(
                    path: path,
                    problem: "kubeconfig of \(data.count) bytes exceeds limit \(maximumFileBytes)"
                )
            }
            guard let decoded = String(data: data, encoding: .utf8) else {
                throw KubernetesClientError.credentialsUnreadable(path: path, problem: "kubeconfig is not UTF-8")
            }
            text = decoded
        } catch let error as KubernetesClientError {
            throw error
        } catch {
            throw .credentialsUnreadable(path: path, problem: "cannot read the kubeconfig")
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try Kubeconfig(yaml: text, directory: directory)
    }

    /// The kubeconfig in `yaml`; relative paths in it are resolved against `directory`.
    public init(yaml: String, directory: String) throws(KubernetesClientError) {
        let root: Node?
        do { root = try Yams.compose(yaml: yaml) } catch {
            // Yams' message quotes the offending text, which may be a secret: only its position is kept.
            let line = (error as? YamlError).flatMap(Self.line(of:))
            throw .invalidKubeconfig(field: "(document)", line: line, problem: "not valid YAML")
        }
        guard let root else { throw .invalidKubeconfig(field: "(document)", line: nil, problem: "empty") }
        let top = try KubeconfigMapping(root, field: "(document)")
        try top.allowOnly(
            ["apiVersion", "kind", "clusters", "contexts", "users", "current-context", "preferences", "extensions"]
        )
        if let apiVersion = try top.string("apiVersion"), apiVersion != "v1" {
            throw top.error("apiVersion", problem: "must be v1")
        }
        if let kind = try top.string("kind"), kind != "Config" {
            throw top.error("kind", problem: "must be Config")
        }
        guard let current = try top.string("current-context") else {
            throw top.error("current-context", problem: "required")
        }
        let context = try top.namedEntry("contexts", name: current, body: "context")
        try context.allowOnly(["cluster", "user", "namespace", "extensions"])
        guard let clusterName = try context.string("cluster") else {
            throw context.error("cluster", problem: "required")
        }
        guard let userName = try context.string("user") else { throw context.error("user", problem: "required") }

        let cluster = try top.namedEntry("clusters", name: clusterName, body: "cluster")
        try cluster.allowOnly(
            [
                "server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                "disable-compression", "extensions",
            ],
            unsupported: ["tls-server-name", "proxy-url"]
        )
        guard let server = try cluster.string("server") else { throw cluster.error("server", problem: "required") }
        // The bearer token or client certificate goes only over TLS; the client checks the rest of the URL.
        guard server.lowercased().hasPrefix("https://") else {
            throw cluster.error("server", problem: "must be an https:// URL")
        }
        if try cluster.bool("insecure-skip-tls-verify") == true {
            throw cluster.error("insecure-skip-tls-verify", problem: "refused: the API server's certificate is checked")
        }
        _ = try cluster.bool("disable-compression")
        guard
            let authority = try cluster.source(
                data: "certificate-authority-data",
                file: "certificate-authority",
                directory: directory
            )
        else {
            throw cluster.error("certificate-authority-data", problem: "required (or certificate-authority)")
        }

        let user = try top.namedEntry("users", name: userName, body: "user")
        try user.allowOnly(
            [
                "client-certificate", "client-certificate-data", "client-key", "client-key-data", "token",
                "tokenFile", "extensions",
            ],
            unsupported: [
                "exec", "auth-provider", "username", "password", "as", "as-uid", "as-groups", "as-user-extra",
            ]
        )
        let certificate = try user.source(
            data: "client-certificate-data",
            file: "client-certificate",
            directory: directory
        )
        let key = try user.keySource(directory: directory)
        let token = try user.string("token")
        let tokenFile = try user.string("tokenFile")
        switch (certificate, key, token, tokenFile) {
        case (let certificate?, let key?, nil, nil):
            self.user = .clientCertificate(certificate: certificate, key: key)
        case (nil, nil, let token?, nil):
            guard token.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else {
                throw user.error("token", problem: "has characters outside printable ASCII")
            }
            self.user = .token(token)
        case (nil, nil, nil, let tokenFile?):
            self.user = .tokenFile(Self.absolute(tokenFile, directory: directory))
        case (nil, nil, nil, nil):
            throw user.error(nil, problem: "no credentials (client-certificate-data, token or tokenFile)")
        case (_?, nil, _, _):
            throw user.error("client-key-data", problem: "required with a client certificate (or client-key)")
        case (nil, _?, _, _):
            throw user.error("client-certificate-data", problem: "required with a client key (or client-certificate)")
        default:
            throw user.error(nil, problem: "more than one of client certificate, token and tokenFile; give one")
        }
        self.server = server
        certificateAuthority = authority
    }

    /// The CA certificates, read and parsed.
    public func trustRoots() throws(KubernetesClientError) -> [NIOSSLCertificate] {
        let bytes = try Self.read(certificateAuthority)
        guard let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes), !certificates.isEmpty else {
            throw .invalidKubeconfig(
                field: "certificate-authority-data",
                line: nil,
                problem: "not a PEM certificate bundle"
            )
        }
        return certificates
    }

    /// The user's credentials for the client, files read and PEM parsed.
    public func credentials() throws(KubernetesClientError) -> BootstrapTokenClient.Credentials {
        switch user {
        case .token(let token):
            return .bearerToken(token)
        case .tokenFile(let path):
            return .bearerTokenFile(path)
        case .clientCertificate(let certificateSource, let keySource):
            guard let chain = try? NIOSSLCertificate.fromPEMBytes(try Self.read(certificateSource)), !chain.isEmpty
            else {
                throw .invalidKubeconfig(field: "client-certificate-data", line: nil, problem: "not a PEM certificate")
            }
            switch keySource {
            case .inline(let key):
                return .clientCertificate(chain: chain, key: key)
            case .file(let path):
                // NIOSSL's error for a bad key carries no key bytes, but none of it is kept.
                guard let key = try? NIOSSLPrivateKey(bytes: try Self.read(.file(path)), format: .pem) else {
                    throw .invalidKubeconfig(
                        field: "client-key",
                        line: nil,
                        problem: "\(path) is not a PEM private key"
                    )
                }
                return .clientCertificate(chain: chain, key: key)
            }
        }
    }

    /// The bytes of `source`.
    static func read(_ source: Source) throws(KubernetesClientError) -> [UInt8] {
        switch source {
        case .inline(let bytes):
            return bytes
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw .credentialsUnreadable(path: path, problem: "cannot read the file the kubeconfig names")
            }
            return Array(data)
        }
    }

    /// `path`, absolute against `directory` when relative.
    static func absolute(_ path: String, directory: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: directory).appendingPathComponent(path).path
    }

    /// The line a Yams error points at, if any.
    private static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }
}

/// A YAML mapping of a kubeconfig, with its field path for errors; keys are unique strings.
struct KubeconfigMapping {
    /// The field path, `users[admin].user`.
    let field: String
    /// The mapping's line.
    let line: Int?
    private let values: [String: Node]

    /// `node` as a mapping with string keys and no key twice.
    init(_ node: Node, field: String) throws(KubernetesClientError) {
        guard case .mapping(let mapping) = node else {
            throw .invalidKubeconfig(field: field, line: node.mark?.line, problem: "must be a mapping")
        }
        var values: [String: Node] = [:]
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else {
                throw .invalidKubeconfig(field: field, line: key.mark?.line, problem: "keys must be strings")
            }
            guard values.updateValue(value, forKey: scalar.string) == nil else {
                throw .invalidKubeconfig(field: Self.join(field, scalar.string), line: key.mark?.line, problem: "twice")
            }
        }
        self.field = field
        line = node.mark?.line
        self.values = values
    }

    /// Throws for a key outside `allowed` and `unsupported`, or in `unsupported`.
    func allowOnly(_ allowed: Set<String>, unsupported: Set<String> = []) throws(KubernetesClientError) {
        for key in values.keys.sorted() where !allowed.contains(key) {
            throw error(key, problem: unsupported.contains(key) ? "not supported by this client" : "unknown field")
        }
    }

    /// The string at `key`, nil when absent or null; an error when not a scalar or empty.
    func string(_ key: String) throws(KubernetesClientError) -> String? {
        guard let node = values[key], node.tag != .init(.null) else { return nil }
        guard case .scalar(let scalar) = node else { throw error(key, problem: "must be a string") }
        guard !scalar.string.isEmpty else { throw error(key, problem: "empty") }
        return scalar.string
    }

    /// The boolean at `key`, nil when absent.
    func bool(_ key: String) throws(KubernetesClientError) -> Bool? {
        guard let node = values[key] else { return nil }
        guard let value = node.bool else { throw error(key, problem: "must be true or false") }
        return value
    }

    /// Inline base64 bytes at `data` or a path at `file`, nil when neither is given; both is an error.
    func source(data: String, file: String, directory: String) throws(KubernetesClientError) -> Kubeconfig.Source? {
        switch (try string(data), try string(file)) {
        case (nil, nil):
            return nil
        case (let encoded?, nil):
            guard let bytes = Data(base64Encoded: encoded) else { throw error(data, problem: "not base64") }
            return .inline(Array(bytes))
        case (nil, let path?):
            return .file(Kubeconfig.absolute(path, directory: directory))
        case (_?, _?):
            throw error(data, problem: "given with \(file); give one")
        }
    }

    /// The client key: `client-key-data` parsed as a PEM key, or the `client-key` path; nil when neither is given.
    func keySource(directory: String) throws(KubernetesClientError) -> Kubeconfig.KeySource? {
        switch try source(data: "client-key-data", file: "client-key", directory: directory) {
        case nil:
            return nil
        case .file(let path):
            return .file(path)
        case .inline(let bytes):
            guard let key = try? NIOSSLPrivateKey(bytes: bytes, format: .pem) else {
                throw error("client-key-data", problem: "not a PEM private key")
            }
            return .inline(key)
        }
    }

    /// The `body` mapping of the entry named `name` in the list at `list` (`clusters`, `contexts`, `users`).
    func namedEntry(_ list: String, name: String, body: String) throws(KubernetesClientError) -> KubeconfigMapping {
        guard let node = values[list] else { throw error(list, problem: "no entry named \"\(name)\"") }
        guard case .sequence(let entries) = node else { throw error(list, problem: "must be a list") }
        var found: KubeconfigMapping?
        var names: Set<String> = []
        for (index, entry) in entries.enumerated() {
            let item = try KubeconfigMapping(entry, field: "\(Self.join(field, list))[\(index)]")
            try item.allowOnly(["name", body])
            guard let entryName = try item.string("name") else { throw item.error("name", problem: "required") }
            guard names.insert(entryName).inserted else {
                throw item.error("name", problem: "\"\(entryName)\" given twice in \(list)")
            }
            guard entryName == name else { continue }
            let entryField = "\(Self.join(field, list))[\(entryName)]"
            guard let bodyNode = item.values[body] else {
                throw .invalidKubeconfig(field: "\(entryField).\(body)", line: item.line, problem: "required")
            }
            found = try KubeconfigMapping(bodyNode, field: "\(entryField).\(body)")
        }
        guard let found else { throw error(list, problem: "no entry named \"\(name)\"") }
        return found
    }

    /// An error for `key` of this mapping (the mapping itself when nil), at the key's value's line.
    func error(_ key: String?, problem: String) -> KubernetesClientError {
        let line = key.flatMap { values[$0]?.mark?.line } ?? line
        return .invalidKubeconfig(field: key.map { Self.join(field, $0) } ?? field, line: line, problem: problem)
    }

    /// `key` under `field`; the document's own keys stand alone.
    private static func join(_ field: String, _ key: String) -> String {
        field == "(document)" ? key : "\(field).\(key)"
    }
}

extension BootstrapTokenClient.Configuration {
    /// A configuration from `kubeconfig`'s current context: its server, CA and credentials, files read now (a token
    /// file is read again for each creation).
    public init(
        kubeconfig: Kubeconfig,
        tokenLifetime: Duration = .seconds(24 * 3600),
        extraGroups: String = BootstrapTokenSecret.defaultExtraGroups,
        retry: RetryPolicy = RetryPolicy()
    ) throws(KubernetesClientError) {
        self.init(
            apiServer: kubeconfig.server,
            credentials: try kubeconfig.credentials(),
            trustRoots: try kubeconfig.trustRoots(),
            tokenLifetime: tokenLifetime,
            extraGroups: extraGroups,
            retry: retry
        )
    }
}
