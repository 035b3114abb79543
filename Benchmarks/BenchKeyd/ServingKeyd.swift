import AsterismTestSupport
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A release keyd for a benchmark: `binary` on the bench's swtpm, trustd and admin mapped to the bench's
/// euid, its state, sockets and log in `directory`; what the benches that drive keyd share.
public final class ServingKeyd {
    public let pid: pid_t
    public let directory: String
    public var trustdSocket: String { directory + "/keyd.sock" }
    public var adminSocket: String { directory + "/admin.sock" }
    public var stateDirectory: String { directory + "/state" }
    private var running = true

    /// Starts `binary` and waits for its READY=1.
    public init(binary: String, directory: String, tcti: String) throws {
        self.directory = directory
        let config = directory + "/keyd.conf"
        let lines = ["admin-uids = \(geteuid())", "trustd-uids = \(geteuid())", "tpm-tcti = \(tcti)"]
        try (lines.joined(separator: "\n") + "\n").write(toFile: config, atomically: true, encoding: .utf8)
        let notification = try ReadinessNotification()
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notification.address
        let log = open(directory + "/keyd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(log) }
        pid = try Spawn.start(
            binary,
            [
                "--state-dir", directory + "/state", "--socket", directory + "/keyd.sock", "--admin-socket",
                directory + "/admin.sock", "--config", config,
            ],
            stdoutFD: log,
            stderrFD: log,
            environment: environment
        )
        let pid = pid
        guard notification.waitForReady(seconds: 120, stillRunning: { Spawn.isRunning(pid) }) else {
            throw HarnessError("keyd did not start; see \(directory)/keyd.log")
        }
    }

    /// SIGTERM, then its exit status.
    public func stop() -> Int32 {
        guard running else { return 0 }
        running = false
        kill(pid, SIGTERM)
        return Spawn.wait(pid)
    }

    /// `VmRSS` and `VmHWM` of /proc/<pid>/status, in KiB.
    public var memory: (rss: Int, peak: Int) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func kibibytes(_ name: String) -> Int {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
        }
        return (kibibytes("VmRSS"), kibibytes("VmHWM"))
    }

    /// Seconds keyd's (single) thread ran on a CPU and waited on a run queue for one so far
    /// (/proc/<pid>/schedstat); the rest of its time it was off CPU: in fsync, at the TPM, or idle in poll.
    public var schedule: (onCPU: Double, runQueue: Double) {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/schedstat", encoding: .utf8)) ?? ""
        let fields = text.split(separator: " ").compactMap {
            Double($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard fields.count >= 2 else { return (.nan, .nan) }
        return (fields[0] / 1e9, fields[1] / 1e9)
    }
}
