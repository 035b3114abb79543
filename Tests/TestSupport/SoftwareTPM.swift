import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A `swtpm` started for one test on a free loopback port pair, its state in a temporary directory
/// that survives `stop()` so the same TPM can be started again (a "reboot" keeps persistent keys).
///
/// swtpm serves one TCP client at a time: while keyd holds its connection, tpm2-tools must wait,
/// so tests stop keyd before they use the tools on the same TPM.
public final class SoftwareTPM {
    /// The state directory (`--tpmstate dir=`).
    public let stateDirectory: String
    /// The server port; the control port is the next one.
    public private(set) var port: UInt16 = 0
    private var pid: pid_t = 0
    private var logFD: Int32 = -1

    /// Makes a fresh TPM and starts it.
    public init() throws {
        var template = Array("/tmp/swtpm-it-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
        stateDirectory = String(cString: made)
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: stateDirectory)
    }

    /// The TCTI string for keyd (`--tcti`) and tpm2-tools (`TPM2TOOLS_TCTI`).
    public var tcti: String { "swtpm:host=127.0.0.1,port=\(port)" }

    /// Starts swtpm (again) on a free port pair, with the TPM powered on and started up.
    ///
    /// The pair is below Linux's ephemeral range (32768-), which the suite's own outgoing loopback
    /// connections fill, and both ports are first bound here without `SO_REUSEADDR`: swtpm sets no
    /// such option either, so a port a closed connection left in TIME_WAIT fails it (seen on a loaded
    /// CI run: twenty random picks in 20000-60000 all "Address already in use").
    public func start() throws {
        precondition(pid == 0, "swtpm already running")
        logFD = open(stateDirectory + "/swtpm.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(logFD) }
        var tried: [UInt16] = []
        for _ in 0..<100 {
            let candidate = UInt16.random(in: 20_000...32_766) & ~1
            guard Self.bindable(port: candidate), Self.bindable(port: candidate + 1) else {
                usleep(5_000)
                continue
            }
            tried.append(candidate)
            let child = try Spawn.start(
                "/usr/bin/swtpm",
                [
                    "socket", "--tpm2", "--server", "type=tcp,port=\(candidate),bindaddr=127.0.0.1",
                    "--ctrl", "type=tcp,port=\(candidate + 1),bindaddr=127.0.0.1", "--tpmstate",
                    "dir=\(stateDirectory)",
                    "--flags", "not-need-init,startup-clear",
                ],
                stdoutFD: logFD,
                stderrFD: logFD
            )
            for _ in 0..<300 {
                if Self.accepts(port: candidate) {
                    port = candidate
                    pid = child
                    return
                }
                guard Spawn.isRunning(child) else { break }
                usleep(10_000)
            }
            kill(child, SIGKILL)
            _ = Spawn.wait(child)
            if tried.count == 20 { break }
        }
        throw HarnessError(
            "swtpm did not start (ports tried: \(tried)); log:\n\((try? String(contentsOfFile: stateDirectory + "/swtpm.log", encoding: .utf8)) ?? "")"
        )
    }

    /// Stops swtpm (its state stays for a later `start()`). swtpm finishes serving a connected
    /// client before it honours SIGTERM, so after 3 s it gets SIGKILL.
    public func stop() {
        guard pid != 0 else { return }
        kill(pid, SIGTERM)
        for _ in 0..<300 where Spawn.isRunning(pid) { usleep(10_000) }
        if Spawn.isRunning(pid) { kill(pid, SIGKILL) }
        _ = Spawn.wait(pid)
        pid = 0
    }

    /// Runs a tpm2-tools command against this TPM.
    public func tool(_ name: String, _ arguments: [String]) throws -> CommandResult {
        var environment = ProcessInfo.processInfo.environment
        environment["TPM2TOOLS_TCTI"] = tcti
        return try Spawn.run("/usr/bin/" + name, arguments, environment: environment)
    }

    /// Runs a tpm2-tools command that must succeed; its standard output.
    @discardableResult
    public func run(_ name: String, _ arguments: [String]) throws -> String {
        let result = try tool(name, arguments)
        guard result.status == 0 else {
            throw HarnessError("\(name) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    /// Whether 127.0.0.1:`port` can be bound now (no listener, connection or TIME_WAIT holds it).
    private static func bindable(port: UInt16) -> Bool {
        withLoopbackSocket(port: port) { fd, address, length in bind(fd, address, length) == 0 }
    }

    /// Whether a TCP connection to 127.0.0.1:`port` succeeds.
    private static func accepts(port: UInt16) -> Bool {
        withLoopbackSocket(port: port) { fd, address, length in connect(fd, address, length) == 0 }
    }

    /// Runs `body` with a new TCP socket (closed after) and the address 127.0.0.1:`port`.
    private static func withLoopbackSocket(
        port: UInt16,
        _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Bool
    ) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }
}
