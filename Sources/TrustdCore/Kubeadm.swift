/// What `kubeadm join` needs: the API server, the bootstrap token, the cluster CA's key hash, the node's
/// name and, for a control plane, the certificate key. Rendered as kubeadm's `JoinConfiguration`
/// (`kubeadm.k8s.io/v1beta3`) into a 0600 file the runner passes as `--config`.
public struct KubeadmJoinConfiguration: Hashable, Sendable {
    /// `host:port` of the API server.
    public var apiServerEndpoint: String
    /// `<id>.<secret>`; a secret, never logged.
    public var token: String
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo.
    public var caCertHash: String
    public var nodeName: String
    /// Set for a control plane (kubeadm's `controlPlane.certificateKey`), nil for a worker.
    public var certificateKey: String?

    public init(
        apiServerEndpoint: String,
        token: String,
        caCertHash: String,
        nodeName: String,
        certificateKey: String? = nil
    ) {
        self.apiServerEndpoint = apiServerEndpoint
        self.token = token
        self.caCertHash = caCertHash
        self.nodeName = nodeName
        self.certificateKey = certificateKey
    }
}

/// What `kubeadm init` needs on the first control plane (for the Init service; declared, not run yet).
public struct KubeadmInitConfiguration: Hashable, Sendable {
    public var nodeName: String
    public var kubernetesVersion: String
    /// `host:port` the API server advertises.
    public var advertiseEndpoint: String
    /// Extra names and addresses in the API server's certificate.
    public var certificateSANs: [String]

    public init(nodeName: String, kubernetesVersion: String, advertiseEndpoint: String, certificateSANs: [String]) {
        self.nodeName = nodeName
        self.kubernetesVersion = kubernetesVersion
        self.advertiseEndpoint = advertiseEndpoint
        self.certificateSANs = certificateSANs
    }
}

/// kubeadm, an external program: each call gets its configuration both as a value and as the 0600 file
/// holding it rendered, and returns once kubeadm exited 0 (or throws).
public protocol KubeadmRunner: Sendable {
    /// `kubeadm join --config <configFile>`.
    func join(_ configuration: KubeadmJoinConfiguration, configFile: String) async throws
    /// `kubeadm init --config <configFile>`.
    func initialize(_ configuration: KubeadmInitConfiguration, configFile: String) async throws
}

/// Splits a program's output into lines for the log: `\n` ends a line (a `\r` before it is dropped), a
/// line longer than `maxLength` bytes is cut there and marked, invalid UTF-8 is repaired. Pure.
public struct BoundedLineSplitter: Sendable {
    /// The mark after a cut line.
    public static let truncationMark = " […]"

    private let maxLength: Int
    private var current: [UInt8] = []
    private var truncated = false

    public init(maxLength: Int) {
        precondition(maxLength > 0, "a line holds at least one byte")
        self.maxLength = maxLength
    }

    /// The lines `bytes` completes.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == 0x0A {
                lines.append(take())
            } else if current.count < maxLength {
                current.append(byte)
            } else {
                truncated = true
            }
        }
        return lines
    }

    /// The last line when the output did not end in a newline.
    public mutating func finish() -> String? { current.isEmpty && !truncated ? nil : take() }

    private mutating func take() -> String {
        if current.last == 0x0D { current.removeLast() }
        let line = String(decoding: current, as: UTF8.self) + (truncated ? Self.truncationMark : "")
        current = []
        truncated = false
        return line
    }
}
