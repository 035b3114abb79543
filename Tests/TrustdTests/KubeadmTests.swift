import FakeKubeadm
import Foundation
import Logging
import Synchronization
import Testing
import Trustd
import TrustdCore

/// Log lines kept in memory, to check what reached the log and what did not.
final class CapturedLog: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] { lines.withLock { $0 } }

    var logger: Logger {
        Logger(label: "test.kubeadm") { label in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: CapturedLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            let shown = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            log.lines.withLock { $0.append("\(event.level) \(event.message) \(shown)") }
        }
    }
}

/// A scratch output directory holding a join's files.
struct KubeadmScene {
    let directory: String
    let material: JoinFiles.Material

    init(controlPlane: Bool = false) throws {
        var template = Array("/tmp/trustd-kubeadm-XXXXXX".utf8CString)
        directory = String(cString: try #require(mkdtemp(&template)))
        material = JoinFiles.Material(
            apiServerEndpoint: "10.0.0.1:6443",
            token: "abcdef.0123456789abcdef",
            discoveryTokenCACertHash: "sha256:" + String(repeating: "5a", count: 32),
            certificateKey: controlPlane ? String(repeating: "c", count: 64) : nil,
            kubernetesVersion: "v1.31.2",
            nodeName: controlPlane ? "cp-2" : "worker-1",
            controlPlane: controlPlane
        )
        try JoinFiles(directory: directory).write(kubeletCertificatePEM: [], material: material)
    }

    var configuration: KubeadmJoinConfiguration {
        KubeadmJoinConfiguration(
            apiServerEndpoint: material.apiServerEndpoint,
            token: material.token,
            caCertHash: material.discoveryTokenCACertHash,
            nodeName: material.nodeName,
            certificateKey: material.certificateKey
        )
    }

    var fake: FakeKubeadmRunner { FakeKubeadmRunner(joinMaterialFile: directory + "/" + JoinFiles.joinMaterial) }

    /// An executable script standing in for kubeadm.
    func script(_ body: String) throws -> String {
        let path = directory + "/kubeadm"
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

@Suite struct KubeadmConfigurationTests {
    @Test(arguments: [false, true])
    func writtenConfigurationMeetsTheContract(controlPlane: Bool) async throws {
        let scene = try KubeadmScene(controlPlane: controlPlane)
        defer { scene.remove() }
        let file = try KubeadmConfigFile.write(scene.configuration, directory: scene.directory)
        #expect(file == scene.directory + "/kubeadm-join.yaml")
        let fake = scene.fake
        try await fake.join(scene.configuration, configFile: file)
        #expect(fake.calls == [.init(command: "join", configFile: file, join: scene.configuration)])
        let yaml = try String(contentsOfFile: file, encoding: .utf8)
        #expect(yaml.contains("kind: JoinConfiguration") && yaml.contains("apiVersion: kubeadm.k8s.io/v1beta3"))
        #expect(yaml.contains("certificateKey") == controlPlane)
    }

    @Test func fakeRefusesWhatKubeadmWould() async throws {
        let scene = try KubeadmScene()
        defer { scene.remove() }
        let fake = scene.fake
        // A token other than the join material's.
        var wrong = scene.configuration
        wrong.token = "zzzzzz.0123456789abcdef"
        let wrongFile = try KubeadmConfigFile.write(wrong, directory: scene.directory)
        let refused = await #expect(throws: FakeKubeadmError.self) { try await fake.join(wrong, configFile: wrongFile) }
        #expect(refused?.description == "kubeadm's JoinConfiguration is wrong: bootstrapToken.token")
        // A readable file (the token is a secret).
        let file = try KubeadmConfigFile.write(scene.configuration, directory: scene.directory)
        chmod(file, 0o644)
        let mode = await #expect(throws: FakeKubeadmError.self) {
            try await fake.join(scene.configuration, configFile: file)
        }
        #expect(mode?.description.contains("has mode 644, not 600") == true)
        // No file.
        unlink(file)
        await #expect(throws: FakeKubeadmError.self) { try await fake.join(scene.configuration, configFile: file) }
        // Told to fail once.
        let again = try KubeadmConfigFile.write(scene.configuration, directory: scene.directory)
        fake.failNext()
        await #expect(throws: FakeKubeadmError.self) { try await fake.join(scene.configuration, configFile: again) }
        try await fake.join(scene.configuration, configFile: again)
        #expect(fake.calls.count == 5)
    }
}

/// The real runner through swift-subprocess, with a small script as kubeadm.
@Suite struct SubprocessKubeadmRunnerTests {
    @Test func streamsOutputLinesAndSucceeds() async throws {
        let scene = try KubeadmScene()
        defer { scene.remove() }
        let long = String(repeating: "x", count: 5000)
        let program = try scene.script(
            """
            echo "args: $*"
            echo "[preflight] Running pre-flight checks"
            echo "warning on stderr" >&2
            echo "\(long)"
            printf 'no newline at the end'
            """
        )
        let log = CapturedLog()
        let runner = SubprocessKubeadmRunner(program: program, timeout: .seconds(60), logger: log.logger)
        let file = try KubeadmConfigFile.write(scene.configuration, directory: scene.directory)
        try await runner.join(scene.configuration, configFile: file)
        let lines = log.all
        #expect(
            lines.contains {
                $0.contains("kubeadm: args: join --config \(file)") && $0.contains("kubeadm.stream=stdout")
            }
        )
        #expect(lines.contains { $0.contains("kubeadm: [preflight] Running pre-flight checks") })
        #expect(lines.contains { $0.contains("kubeadm: warning on stderr") && $0.contains("kubeadm.stream=stderr") })
        #expect(lines.contains { $0.contains("kubeadm: " + String(repeating: "x", count: 4096) + " […]") })
        #expect(lines.contains { $0.contains("kubeadm: no newline at the end") })
        #expect(lines.contains { $0.contains("kubeadm completed") })
        #expect(!lines.contains { $0.contains(scene.material.token) }, "the token never reaches the log")
    }

    @Test func nonZeroExitIsAnError() async throws {
        let scene = try KubeadmScene()
        defer { scene.remove() }
        let program = try scene.script("echo 'error execution phase preflight' >&2\nexit 1")
        let log = CapturedLog()
        let runner = SubprocessKubeadmRunner(program: program, timeout: .seconds(60), logger: log.logger)
        let error = await #expect(throws: KubeadmError.self) {
            try await runner.join(scene.configuration, configFile: scene.directory + "/kubeadm-join.yaml")
        }
        #expect(error?.code == .failed)
        #expect(error?.description == "kubeadm join ended with exited(1)")
        #expect(log.all.contains { $0.contains("kubeadm: error execution phase preflight") })
    }

    @Test func timeoutKillsIt() async throws {
        let scene = try KubeadmScene()
        defer { scene.remove() }
        // A child of the script holds the pipes: the whole process group must go.
        let pidFile = scene.directory + "/sleep.pid"
        let program = try scene.script("echo started\nsleep 600 &\necho $! > \(pidFile)\nwait")
        let runner = SubprocessKubeadmRunner(
            program: program,
            timeout: .milliseconds(500),
            logger: CapturedLog().logger
        )
        let start = ContinuousClock.now
        let error = await #expect(throws: KubeadmError.self) {
            try await runner.join(scene.configuration, configFile: scene.directory + "/kubeadm-join.yaml")
        }
        #expect(error?.code == .timeout)
        #expect(error?.description.contains("ran past") == true)
        // Waiting for `sleep 600` would take ten minutes; the bound is loose because a loaded CI
        // run can stall the test's tasks, and the real check is that the grandchild is gone.
        #expect(ContinuousClock.now - start < .seconds(300))
        let pidText = try String(contentsOfFile: pidFile, encoding: .utf8)
        let sleepPID = try #require(Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)))
        // SIGTERM reached the whole group; the child exits a moment after the runner returns.
        let deadline = ContinuousClock.now + .seconds(30)
        while Self.isRunning(sleepPID) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!Self.isRunning(sleepPID), "the script's child was killed with its process group")
    }

    /// Whether `pid` is a process that has not exited (a zombie nobody reaped yet counts as exited).
    static func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].prefix(1)
        return state != "Z" && state != "X"
    }

    @Test func missingProgramIsALaunchError() async throws {
        let scene = try KubeadmScene()
        defer { scene.remove() }
        let runner = SubprocessKubeadmRunner(
            program: "/nonexistent/kubeadm",
            timeout: .seconds(5),
            logger: CapturedLog().logger
        )
        let error = await #expect(throws: KubeadmError.self) {
            try await runner.join(scene.configuration, configFile: "/nonexistent/c.yaml")
        }
        #expect(error?.code == .launch)
    }
}
