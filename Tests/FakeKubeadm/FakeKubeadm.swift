import FoundationEssentials
import Synchronization
import TrustdCore
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// Why the fake refused a call: the contract the real kubeadm would hold trustd to, broken.
public struct FakeKubeadmError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A FAKE kubeadm (no Kubernetes runs here) that holds each call to the real one's contract and records
/// it: the config file exists, is a regular file of mode 0600, parses (Yams) as kubeadm's
/// `JoinConfiguration` whose endpoint, token, CA hash, node name and certificate key are the ones in the
/// join client's `kubeadm-join.json` (read independently, not through trustd's types) and in the value
/// passed. It can be told to fail the next calls.
public final class FakeKubeadmRunner: KubeadmRunner, Sendable {
    /// One call.
    public struct Call: Sendable, Equatable {
        public let command: String
        public let configFile: String
        public let join: KubeadmJoinConfiguration?

        public init(command: String, configFile: String, join: KubeadmJoinConfiguration?) {
            self.command = command
            self.configFile = configFile
            self.join = join
        }
    }

    /// The join material file's fields the fake checks against (kubeadm-join.json).
    private struct Material: Decodable {
        var apiServerEndpoint: String
        var token: String
        var discoveryTokenCACertHash: String
        var certificateKey: String?
        var nodeName: String
        var controlPlane: Bool
    }

    private struct State {
        var calls: [Call] = []
        var failures = 0
    }

    /// `kubeadm-join.json`'s path.
    public let joinMaterialFile: String
    private let state = Mutex(State())

    public init(joinMaterialFile: String) { self.joinMaterialFile = joinMaterialFile }

    /// The calls so far, refused ones included.
    public var calls: [Call] { state.withLock { $0.calls } }

    /// Fails the next `count` calls (after checking and recording them), as kubeadm exiting 1 would.
    public func failNext(_ count: Int = 1) { state.withLock { $0.failures += count } }

    public func join(_ configuration: KubeadmJoinConfiguration, configFile: String) async throws {
        state.withLock { $0.calls.append(Call(command: "join", configFile: configFile, join: configuration)) }
        let document = try Self.document(configFile)
        let material = try JSONDecoder().decode(Material.self, from: Data(try Self.read(joinMaterialFile)))
        try Self.expect(document["apiVersion"] as? String == "kubeadm.k8s.io/v1beta3", "apiVersion")
        try Self.expect(document["kind"] as? String == "JoinConfiguration", "kind")
        let discovery = document["discovery"] as? [String: Any]
        let token = discovery?["bootstrapToken"] as? [String: Any]
        try Self.expect(token?["apiServerEndpoint"] as? String == material.apiServerEndpoint, "apiServerEndpoint")
        try Self.expect(token?["token"] as? String == material.token, "bootstrapToken.token")
        try Self.expect(token?["caCertHashes"] as? [String] == [material.discoveryTokenCACertHash], "caCertHashes")
        try Self.expect(token?["unsafeSkipCAVerification"] as? Bool != true, "CA verification is not skipped")
        try Self.expect(
            discovery?["tlsBootstrapToken"] as? String ?? material.token == material.token,
            "tlsBootstrapToken"
        )
        let registration = document["nodeRegistration"] as? [String: Any]
        try Self.expect(registration?["name"] as? String == material.nodeName, "nodeRegistration.name")
        let controlPlane = document["controlPlane"] as? [String: Any]
        if material.controlPlane {
            try Self.expect(controlPlane?["certificateKey"] as? String == material.certificateKey, "certificateKey")
        } else {
            try Self.expect(controlPlane == nil, "a worker has no controlPlane section")
        }
        try Self.expect(
            configuration.apiServerEndpoint == material.apiServerEndpoint && configuration.token == material.token
                && configuration.caCertHash == material.discoveryTokenCACertHash
                && configuration.nodeName == material.nodeName,
            "the configuration value matches the file"
        )
        try failIfTold()
    }

    public func initialize(_ configuration: KubeadmInitConfiguration, configFile: String) async throws {
        state.withLock { $0.calls.append(Call(command: "init", configFile: configFile, join: nil)) }
        let document = try Self.document(configFile)
        try Self.expect(document["kind"] as? String == "InitConfiguration", "kind")
        try failIfTold()
    }

    private func failIfTold() throws {
        let fail = state.withLock { state in
            defer { state.failures = max(0, state.failures - 1) }
            return state.failures > 0
        }
        if fail { throw FakeKubeadmError("kubeadm failed (injected)") }
    }

    /// The config file checked as kubeadm's loader would meet it, parsed.
    private static func document(_ path: String) throws -> [String: Any] {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw FakeKubeadmError("config file \(path) does not exist") }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw FakeKubeadmError("config file \(path) is not a regular file")
        }
        guard info.st_mode & 0o7777 == 0o600 else {
            throw FakeKubeadmError("config file \(path) has mode \(String(info.st_mode & 0o7777, radix: 8)), not 600")
        }
        let text = String(decoding: try read(path), as: UTF8.self)
        guard let document = try Yams.load(yaml: text) as? [String: Any] else {
            throw FakeKubeadmError("config file \(path) is not a YAML mapping")
        }
        return document
    }

    private static func read(_ path: String) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else { throw FakeKubeadmError("cannot open \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count == 0 { return bytes }
            bytes += buffer[..<count]
        }
    }

    private static func expect(_ condition: Bool, _ what: String) throws {
        guard condition else { throw FakeKubeadmError("kubeadm's JoinConfiguration is wrong: \(what)") }
    }
}
