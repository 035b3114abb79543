import AsterismTestSupport
import Foundation
import KeydClient
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The serving keyd under test: the release binary on the bench's swtpm, trustd and admin mapped to the
/// bench's euid, its state, sockets and log in `directory`.
final class ServingKeyd {
    let pid: pid_t
    let directory: String
    var trustdSocket: String { directory + "/keyd.sock" }
    var adminSocket: String { directory + "/admin.sock" }
    var stateDirectory: String { directory + "/state" }
    private var running = true

    /// Starts `binary` and waits for its READY=1.
    init(binary: String, directory: String, tcti: String) throws {
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

    /// `status` on a new admin connection (a connection held through a long mode would be closed idle).
    func status() throws -> StatusAnswer {
        let admin = try KeydConnection(path: adminSocket)
        defer { admin.close() }
        return try admin.status()
    }

    /// SIGTERM, then its exit status.
    func stop() -> Int32 {
        guard running else { return 0 }
        running = false
        kill(pid, SIGTERM)
        return Spawn.wait(pid)
    }

    /// `VmRSS` and `VmHWM` of /proc/<pid>/status, in KiB.
    var memory: (rss: Int, peak: Int) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func kibibytes(_ name: String) -> Int {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
        }
        return (kibibytes("VmRSS"), kibibytes("VmHWM"))
    }

    /// Seconds keyd's (single) thread ran on a CPU and waited on a run queue for one so far
    /// (/proc/<pid>/schedstat); the rest of its time it was off CPU: in fsync, at the TPM, or idle in poll.
    var schedule: (onCPU: Double, runQueue: Double) {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/schedstat", encoding: .utf8)) ?? ""
        let fields = text.split(separator: " ").compactMap {
            Double($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard fields.count >= 2 else { return (.nan, .nan) }
        return (fields[0] / 1e9, fields[1] / 1e9)
    }

    /// `key.release` records and commit groups (lines carrying an `anchor`: one write, one fsync and one
    /// TPM count each) in the audit log's segments so far.
    func auditTally() -> (releases: Int, commits: Int) {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: stateDirectory)) ?? []).filter {
            $0 == "audit.log" || $0.hasPrefix("audit.log.")
        }
        var tally = (releases: 0, commits: 0)
        for name in names {
            guard let data = FileManager.default.contents(atPath: stateDirectory + "/" + name) else { continue }
            for line in data.split(separator: UInt8(ascii: "\n")) {
                let text = String(decoding: line, as: UTF8.self)
                if text.contains(#""event":"key.release""#) { tally.releases += 1 }
                if text.contains(#","anchor":"#) { tally.commits += 1 }
            }
        }
        return tally
    }
}

/// The bench process's own CPU seconds (user and system).
func benchCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}
