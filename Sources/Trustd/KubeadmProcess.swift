import Logging
import Subprocess
import TrustdCore
import Yams

#if canImport(Glibc)
import Glibc
#endif

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Why kubeadm did not complete. Never carries kubeadm's configuration (it holds the bootstrap token).
public struct KubeadmError: Error, Hashable, CustomStringConvertible, Sendable {
    public enum Code: Hashable, Sendable {
        /// The program could not be started.
        case launch
        /// It exited non-zero or was killed by a signal.
        case failed
        /// It ran past its timeout and was killed.
        case timeout
        /// Its configuration file could not be written.
        case configuration
    }

    public let code: Code
    public let description: String

    init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }

    public static func == (lhs: KubeadmError, rhs: KubeadmError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}

/// kubeadm's configuration files: `JoinConfiguration` (`kubeadm.k8s.io/v1beta3`) rendered as YAML by
/// Yams, written 0600 (it holds the bootstrap token) with ``JoinFiles``' atomic replace.
public enum KubeadmConfigFile {
    /// The join configuration's file name in the output directory.
    public static let joinName = "kubeadm-join.yaml"

    /// kubeadm's YAML for `configuration`.
    public static func yaml(_ configuration: KubeadmJoinConfiguration) throws(KubeadmError) -> String {
        var bootstrapToken: [String: Any] = [
            "apiServerEndpoint": configuration.apiServerEndpoint, "token": configuration.token,
            "caCertHashes": [configuration.caCertHash],
        ]
        bootstrapToken["unsafeSkipCAVerification"] = false
        var document: [String: Any] = [
            "apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "JoinConfiguration",
            "discovery": ["bootstrapToken": bootstrapToken, "tlsBootstrapToken": configuration.token],
            "nodeRegistration": ["name": configuration.nodeName],
        ]
        if let key = configuration.certificateKey { document["controlPlane"] = ["certificateKey": key] }
        do {
            return try Yams.dump(object: document, sortKeys: true)
        } catch {
            throw KubeadmError(.configuration, "cannot render kubeadm's JoinConfiguration: \(error)")
        }
    }

    /// The init configuration's file name in the output directory.
    public static let initName = "kubeadm-init.yaml"

    /// kubeadm's YAML for `configuration`: an `InitConfiguration` (the node's name) and a
    /// `ClusterConfiguration` (version, control-plane endpoint, the API server's extra SANs).
    public static func yaml(_ configuration: KubeadmInitConfiguration) throws(KubeadmError) -> String {
        var cluster: [String: Any] = [
            "apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
            "controlPlaneEndpoint": configuration.advertiseEndpoint,
        ]
        if !configuration.kubernetesVersion.isEmpty { cluster["kubernetesVersion"] = configuration.kubernetesVersion }
        if !configuration.certificateSANs.isEmpty { cluster["apiServer"] = ["certSANs": configuration.certificateSANs] }
        let initialization: [String: Any] = [
            "apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "InitConfiguration",
            "nodeRegistration": ["name": configuration.nodeName],
        ]
        do {
            return try Yams.dump(object: initialization, sortKeys: true) + "---\n"
                + Yams.dump(object: cluster, sortKeys: true)
        } catch {
            throw KubeadmError(.configuration, "cannot render kubeadm's InitConfiguration: \(error)")
        }
    }

    /// Writes `configuration` to `<directory>/kubeadm-join.yaml`, mode 0600; its path.
    public static func write(
        _ configuration: KubeadmJoinConfiguration,
        directory: String
    ) throws(KubeadmError) -> String {
        try write(Array(try yaml(configuration).utf8), named: joinName, directory: directory)
    }

    /// Writes `configuration` to `<directory>/kubeadm-init.yaml`, mode 0600; its path.
    public static func write(
        _ configuration: KubeadmInitConfiguration,
        directory: String
    ) throws(KubeadmError) -> String {
        try write(Array(try yaml(configuration).utf8), named: initName, directory: directory)
    }

    /// Writes `bytes` to `<directory>/<name>`, mode 0600, atomically; its path.
    static func write(_ bytes: [UInt8], named name: String, directory: String) throws(KubeadmError) -> String {
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dirFD >= 0 else { throw KubeadmError(.configuration, "cannot open \(directory): \(errnoText())") }
        defer { close(dirFD) }
        do throws(JoinClientError) {
            try JoinFiles.replace(name, in: dirFD, with: bytes, mode: 0o600)
        } catch {
            throw KubeadmError(.configuration, "cannot write \(directory)/\(name): \(error)")
        }
        return directory + "/" + name
    }
}

/// The real kubeadm: `<program> join --config FILE` (or `init`) through swift-subprocess, arguments
/// fixed, standard output and error streamed line by line to the log (lines cut at
/// ``maxLineLength``), the exit status checked, killed (its whole process group) past `timeout`.
public struct SubprocessKubeadmRunner: KubeadmRunner {
    /// The longest line logged.
    public static let maxLineLength = 4096

    public let program: String
    public let timeout: Duration
    public let logger: Logger

    public init(program: String, timeout: Duration, logger: Logger) {
        self.program = program
        self.timeout = timeout
        self.logger = logger
    }

    public func join(_ configuration: KubeadmJoinConfiguration, configFile: String) async throws {
        try await run(["join", "--config", configFile])
    }

    public func initialize(_ configuration: KubeadmInitConfiguration, configFile: String) async throws {
        try await run(["init", "--config", configFile])
    }

    /// Runs the program with `arguments` under the timeout.
    func run(_ arguments: [String]) async throws(KubeadmError) {
        let command = arguments.first ?? ""
        logger.info("Running kubeadm", metadata: ["kubeadm.program": "\(program)", "kubeadm.command": "\(command)"])
        let outcome: Result<TerminationStatus?, any Error> = await withTaskGroup(
            of: Result<TerminationStatus?, any Error>.self
        ) {
            group in
            group.addTask {
                do { return .success(try await self.launch(arguments)) } catch { return .failure(error) }
            }
            group.addTask {
                // Cancelled when kubeadm ends first, and then never the first result.
                do {
                    try await Task.sleep(for: self.timeout)
                    return .success(nil)
                } catch {
                    return .failure(error)
                }
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        let status: TerminationStatus
        switch outcome {
        case .success(let terminated?): status = terminated
        case .success(nil):
            logger.error("kubeadm timed out", metadata: ["kubeadm.timeout": "\(timeout)"])
            throw KubeadmError(.timeout, "kubeadm \(command) ran past \(timeout) and was killed")
        case .failure(let error):
            throw KubeadmError(.launch, "cannot run \(program): \(error)")
        }
        guard case .exited(0) = status else {
            logger.error("kubeadm failed", metadata: ["kubeadm.status": "\(status)"])
            throw KubeadmError(.failed, "kubeadm \(command) ended with \(status)")
        }
        logger.info("kubeadm completed", metadata: ["kubeadm.command": "\(command)"])
    }

    /// Starts the program in its own process group and logs its output until it ends.
    private func launch(_ arguments: [String]) async throws -> TerminationStatus {
        var options = PlatformOptions()
        options.processGroupID = 0
        options.teardownSequence = [
            .send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: .seconds(5))
        ]
        let log = logger
        let result = try await Subprocess.run(
            .path(FilePath(program)),
            arguments: Arguments(arguments),
            environment: .inherit,
            platformOptions: options,
            input: .none,
            output: .sequence,
            error: .sequence
        ) { execution in
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await Self.stream(execution.standardOutput, name: "stdout", to: log) }
                group.addTask { await Self.stream(execution.standardError, name: "stderr", to: log) }
            }
        }
        return result.terminationStatus
    }

    /// Logs each line of `output`.
    private static func stream(_ output: SubprocessOutputSequence, name: String, to logger: Logger) async {
        var splitter = BoundedLineSplitter(maxLength: maxLineLength)
        do {
            for try await buffer in output {
                let bytes = buffer.withUnsafeBytes { Array($0) }
                for line in splitter.feed(bytes) {
                    logger.info("kubeadm: \(line)", metadata: ["kubeadm.stream": "\(name)"])
                }
            }
        } catch {
            logger.warning("kubeadm output unreadable", metadata: ["kubeadm.stream": "\(name)", "error": "\(error)"])
        }
        if let last = splitter.finish() { logger.info("kubeadm: \(last)", metadata: ["kubeadm.stream": "\(name)"]) }
    }
}
