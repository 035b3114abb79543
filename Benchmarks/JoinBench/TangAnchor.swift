import AsterismTestSupport
import BenchSupport
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The rejoin figure's anchor: `clevis decrypt` of a Tang-bound secret against Debian's `tangd` on a
/// loopback port, in the same run. tangd answers one request on stdin/stdout per invocation (socket
/// activation), so socat accepts and runs one tangd per connection, as systemd's tangd.socket does.
enum TangAnchor {
    static let tangd = "/usr/libexec/tangd"
    static let keygen = "/usr/libexec/tangd-keygen"
    static let clevis = "/usr/bin/clevis"
    static let socat = "/usr/bin/socat"

    /// Milliseconds of `runs` timed `clevis decrypt` runs (each a new process: clevis's shell scripts,
    /// jose, curl to tangd), after one untimed warm-up; throws why when tang or clevis cannot run.
    static func decryptLatencies(runs: Int, directory: String) throws -> [Double] {
        for tool in [tangd, keygen, clevis, socat] where access(tool, X_OK) != 0 {
            throw BenchFailure("\(tool) is missing (Debian packages tang, clevis, socat: scripts/install-deps)")
        }
        let keys = directory + "/tang-keys"
        guard mkdir(keys, 0o700) == 0 else { throw BenchFailure("mkdir \(keys): errno \(errno)") }
        let generated = try Spawn.run(keygen, [keys])
        guard generated.status == 0 else { throw BenchFailure("tangd-keygen: \(generated.stderr)") }
        let port = try freeLoopbackPort()
        let log = open(directory + "/tangd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(log) }
        let server = try Spawn.start(
            socat,
            ["TCP-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork", "EXEC:\(tangd) \(keys)"],
            stdoutFD: log,
            stderrFD: log
        )
        defer {
            kill(server, SIGTERM)
            _ = Spawn.wait(server)
        }
        try waitUntilListening(port: port, pid: server)
        let secret = Data(
            (0..<32).map { _ in UInt8.random(in: 0...255) }.map { String(format: "%02x", $0) }.joined().utf8
        )
        let bound = try Spawn.run(
            clevis,
            ["encrypt", "tang", "{\"url\":\"http://127.0.0.1:\(port)\"}", "-y"],
            stdin: secret
        )
        guard bound.status == 0, !bound.stdout.isEmpty else {
            throw BenchFailure("clevis encrypt tang: status \(bound.status): \(bound.stderr)")
        }
        let jwe = Data(bound.stdout.utf8)
        var latencies: [Double] = []
        for run in 0...runs {
            let began = monotonicNanoseconds()
            let decrypted = try Spawn.run(clevis, ["decrypt"], stdin: jwe)
            let elapsed = elapsedMilliseconds(since: began)
            guard decrypted.status == 0, Data(decrypted.stdout.utf8) == secret else {
                throw BenchFailure("clevis decrypt: status \(decrypted.status): \(decrypted.stderr)")
            }
            if run > 0 { latencies.append(elapsed) }
        }
        return latencies
    }

    /// A loopback port nothing listened on a moment ago (bound to port 0, read, closed).
    static func freeLoopbackPort() throws -> Int {
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(probe) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, length) }
        }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe, $0, &length) }
        }
        guard bound == 0, named == 0 else { throw BenchFailure("no free loopback port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits (up to 10 s) until `port` accepts a connection while `pid` runs.
    static func waitUntilListening(port: Int, pid: pid_t) throws {
        let began = monotonicNanoseconds()
        while elapsedSeconds(from: began, to: monotonicNanoseconds()) < 10 {
            guard Spawn.isRunning(pid) else { throw BenchFailure("socat exited; see tangd.log") }
            let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = loopback(port: port)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(probe, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            close(probe)
            if connected == 0 { return }
            usleep(10_000)
        }
        throw BenchFailure("tangd (socat) did not listen on 127.0.0.1:\(port) within 10 s")
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }
}
