import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real trustd process with `configuration` lines in a fresh temporary directory, waited for until it
/// says READY=1, stopped (SIGTERM) when the test ends.
/// Unchecked: the test uses it from one task at a time; only the pid and paths are shared.
final class TrustdHarness: @unchecked Sendable {
    let directory: String
    let logPath: String
    let pid: pid_t
    private var exitStatus: Int32 = -1
    private var stopped = false

    init(configuration: [String]) throws {
        var template = Array("/tmp/trustd-it-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
        directory = String(cString: made)
        logPath = directory + "/trustd.log"
        try (configuration.joined(separator: "\n") + "\n").write(
            toFile: directory + "/trustd.conf",
            atomically: true,
            encoding: .utf8
        )
        let logFD = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(logFD) }
        let notification = try ReadinessNotification()
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notification.address
        pid = try Spawn.start(
            BuiltProducts.trustd,
            ["--config", directory + "/trustd.conf", "--log-level", "debug"],
            stdoutFD: logFD,
            stderrFD: logFD,
            environment: environment
        )
        let pid = self.pid
        guard notification.waitForReady(seconds: 300, stillRunning: { Spawn.isRunning(pid) }) else {
            let log = self.log
            stop()
            throw HarnessError("trustd did not become ready; log:\n\(log)")
        }
    }

    deinit { stop() }

    /// trustd's log so far.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Sends SIGTERM, waits, removes the directory; returns the exit status.
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
