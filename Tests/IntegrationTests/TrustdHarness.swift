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
    /// The loopback ports of its VerificationService (gRPC, HTTP) and /metrics, picked free per process.
    let verificationGRPCPort = freeLoopbackPort()
    let verificationHTTPPort = freeLoopbackPort()
    let metricsPort = freeLoopbackPort()
    /// Init and Recover (control planes), unless the configuration names its own `bootstrap-listen`.
    let bootstrapPort = freeLoopbackPort()
    private var exitStatus: Int32 = -1
    private var stopped = false

    init(configuration: [String]) throws {
        var template = Array("/tmp/trustd-it-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
        directory = String(cString: made)
        logPath = directory + "/trustd.log"
        let listeners =
            [
                "verification-grpc-listen = 127.0.0.1:\(verificationGRPCPort)",
                "verification-http-listen = 127.0.0.1:\(verificationHTTPPort)",
                "metrics-listen = 127.0.0.1:\(metricsPort)",
            ]
            + (configuration.contains { $0.hasPrefix("bootstrap-listen") }
                ? []
                : [
                    "bootstrap-listen = 127.0.0.1:\(bootstrapPort)"
                ])
        try ((listeners + configuration).joined(separator: "\n") + "\n").write(
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

    /// One HTTP GET of `path` on 127.0.0.1:`port`: status line and body (a plain socket; the listener
    /// closes after one answer).
    static func get(port: Int, path: String) throws -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw HarnessError("connect 127.0.0.1:\(port): errno \(errno)") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        let text = String(decoding: answer, as: UTF8.self)
        let status = text.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }

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
