// The shared harness (Spawn, runCommand, SoftwareTPM, BuiltProducts, TestVectors) is visible to this target.
@_exported import AsterismTestSupport
import Foundation
import KeydClient
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real keyd process on sockets in a fresh temporary directory, stopped when the test ends.
final class KeydHarness {
    let directory: String
    let stateDirectory: String
    let socketPath: String
    let adminSocketPath: String
    let logPath: String
    /// keyd's pid.
    let pid: pid_t
    private var exitStatus: Int32 = -1
    private var stopped = false

    /// Starts keyd with `configuration` lines (admin is mapped to the current euid unless given),
    /// with `environment` added to the test's own; in `reusing` (a directory a stopped keyd used, its
    /// state kept) when given, else in a fresh temporary directory.
    init(
        configuration: [String] = [],
        launcher: [String]? = nil,
        environment: [String: String] = [:],
        reusing: String? = nil
    ) throws {
        if let reusing {
            directory = reusing
        } else {
            var template = Array("/tmp/keyd-it-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw POSIXError(.EIO) }
            directory = String(cString: made)
        }
        chmod(directory, 0o755)
        stateDirectory = directory + "/state"
        socketPath = directory + "/keyd.sock"
        adminSocketPath = directory + "/admin.sock"
        logPath = directory + "/keyd.log"
        var lines = configuration
        if !lines.contains(where: { $0.hasPrefix("admin-uids") }) { lines.append("admin-uids = \(geteuid())") }
        try lines.joined(separator: "\n").appending("\n").write(
            toFile: directory + "/keyd.conf",
            atomically: true,
            encoding: .utf8
        )
        // Appended, so a keyd restarted in the same directory keeps its predecessor's log.
        let logFD = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(logFD) }
        let keydArguments = [
            "--state-dir", stateDirectory, "--socket", socketPath, "--admin-socket", adminSocketPath,
            "--config", directory + "/keyd.conf",
        ]
        let notification = try ReadinessNotification()
        var env = ProcessInfo.processInfo.environment.merging(environment) { _, added in added }
        env["NOTIFY_SOCKET"] = notification.address
        if let launcher {
            pid = try Spawn.start(
                launcher[0],
                Array(launcher.dropFirst()) + [BuiltProducts.keyd] + keydArguments,
                stdoutFD: logFD,
                stderrFD: logFD,
                environment: env
            )
        } else {
            pid = try Spawn.start(BuiltProducts.keyd, keydArguments, stdoutFD: logFD, stderrFD: logFD, environment: env)
        }
        // keyd says READY=1 (sd_notify) once its sockets are bound and it serves.
        let pid = self.pid
        guard notification.waitForReady(stillRunning: { Spawn.isRunning(pid) }) else {
            throw HarnessError("keyd did not come up; log:\n\(log)")
        }
    }

    deinit { stop() }

    /// keyd's combined stdout and stderr so far.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The audit log lines.
    var auditLines: [String] {
        ((try? String(contentsOfFile: stateDirectory + "/audit.log", encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }

    /// A connected, hello-negotiated admin client.
    func admin() throws -> KeydConnection { try KeydConnection(path: adminSocketPath) }

    /// Runs keydctl against this keyd's admin socket.
    @discardableResult
    func keydctl(_ arguments: [String], stdin: Data? = nil, asUser uid: UInt32? = nil) throws -> CommandResult {
        let full = ["--socket", adminSocketPath]
        if let uid {
            return try runCommand(
                "/usr/bin/setpriv",
                ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", BuiltProducts.keydctl] + arguments + full,
                stdin: stdin
            )
        }
        return try runCommand(BuiltProducts.keydctl, arguments + full, stdin: stdin)
    }

    /// Waits for keyd to exit on its own (it was killed, say) and keeps the directory for a successor;
    /// returns keyd's exit status (128 + signal when killed).
    @discardableResult
    func waitForExit() -> Int32 {
        guard !stopped else { return exitStatus }
        stopped = true
        exitStatus = Spawn.wait(pid)
        return exitStatus
    }

    /// Sends `signal`, waits, and keeps the directory for a successor; returns keyd's exit status.
    @discardableResult
    func waitForExit(afterSignal signal: Int32) -> Int32 {
        guard !stopped else { return exitStatus }
        kill(pid, signal)
        return waitForExit()
    }

    /// Sends SIGTERM and waits; returns keyd's exit status.
    @discardableResult
    func stop() -> Int32 {
        guard !stopped else { return exitStatus }
        stopped = true
        kill(pid, SIGTERM)
        exitStatus = Spawn.wait(pid)
        try? FileManager.default.removeItem(atPath: directory)
        return exitStatus
    }
}

/// Raises this test process's open-file limit to 4096 (or its hard limit), for tests that hold a
/// thousand connections or more (keyd raises its own).
func raiseOpenFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = max(limit.rlim_cur, min(limit.rlim_max, 4096))
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// A raw client socket for hostile tests: sends arbitrary bytes, reads whatever comes back. Sendable
/// unchecked: its only state is the descriptor, and a test reads each client from one thread.
final class RawClient: @unchecked Sendable {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8) + [0])
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            close(fd)
            throw HarnessError("connect \(path): errno \(errno)")
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until EOF (or timeout) and returns everything received.
    func readToEnd() -> [UInt8] {
        var all: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return all }
            all += buffer[0..<n]
        }
    }

    /// Reads until `count` answer frames arrived, or EOF or the 5 s receive timeout; returns those that did.
    func readAnswers(_ count: Int) -> [AnswerFrame] {
        var decoder = FrameDecoder(.answers, maxQueuedFrames: Int.max)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var frames: [AnswerFrame] = []
        while frames.count < count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            guard (try? decoder.append(Array(buffer[0..<n]))) != nil else { break }
            while let body = decoder.nextFrame() {
                if let frame = try? AnswerFrame.decode(body: body) { frames.append(frame) }
            }
        }
        return frames
    }

    /// Decodes every answer frame in `bytes`.
    static func answers(in bytes: [UInt8]) -> [AnswerFrame] {
        var decoder = FrameDecoder(.answers)
        try? decoder.append(bytes)
        var frames: [AnswerFrame] = []
        while let body = decoder.nextFrame() {
            if let frame = try? AnswerFrame.decode(body: body) { frames.append(frame) }
        }
        return frames
    }

    static func hello(sequence: UInt32 = 0) -> [UInt8] {
        RequestFrame(sequence: sequence, request: .hello(minVersion: 1, maxVersion: 1)).encodeFrame()
    }
}

/// Test traits for what a test needs.
extension Trait where Self == ConditionTrait {
    /// Needs root: switching uid, reading capabilities of a root process.
    static var needsRoot: Self { .enabled(if: geteuid() == 0, "needs root: other uids and capabilities") }
}
