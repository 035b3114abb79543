import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Child processes through posix_spawn and waitpid on their own pid, for every test target.
///
/// Foundation's `Process` learns of exits through SIGCHLD handling that Swift Testing's
/// exit-test support interferes with (a finished child stays a zombie and the test hangs), so
/// the integration tests spawn and reap their children themselves.
public enum Spawn {
    /// Starts `path` with `arguments`; stdin from `/dev/null` unless `stdinFD` is given,
    /// stdout and stderr to the given descriptors. Every other descriptor is closed in the child.
    public static func start(
        _ path: String,
        _ arguments: [String],
        stdinFD: Int32? = nil,
        stdoutFD: Int32,
        stderrFD: Int32,
        environment: [String: String]? = nil
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdinFD {
            posix_spawn_file_actions_adddup2(&actions, stdinFD, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stdoutFD, 1)
        posix_spawn_file_actions_adddup2(&actions, stderrFD, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for variable in env { free(variable) } }
        // Swift Testing's threads block signals, and a spawned child inherits the mask: swtpm would then
        // ignore SIGTERM. Start every child with an empty mask and default dispositions.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, env)
        guard result == 0 else { throw HarnessError("posix_spawn \(path): errno \(result)") }
        return pid
    }

    /// Waits for `pid` and returns its exit status (128 + signal when killed).
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        if status & 0x7F == 0 { return (status >> 8) & 0xFF }
        return 128 + (status & 0x7F)
    }

    /// Whether `pid` has not exited yet (without reaping it).
    public static func isRunning(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info._sifields._sigchld.si_pid == 0
    }

    /// Runs a command to completion, feeding `stdin` and capturing both outputs.
    public static func run(
        _ path: String,
        _ arguments: [String],
        stdin: Data? = nil,
        environment: [String: String]? = nil
    ) throws -> CommandResult {
        var inPipe: [Int32] = [0, 0]
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        for index in 0..<3 {
            var pair: [Int32] = [0, 0]
            guard pipe(&pair) == 0 else { throw HarnessError("pipe: errno \(errno)") }
            _ = fcntl(pair[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(pair[1], F_SETFD, FD_CLOEXEC)
            switch index {
            case 0: inPipe = pair
            case 1: outPipe = pair
            default: errPipe = pair
            }
        }
        let pid = try Spawn.start(
            path,
            arguments,
            stdinFD: inPipe[0],
            stdoutFD: outPipe[1],
            stderrFD: errPipe[1],
            environment: environment
        )
        close(inPipe[0])
        close(outPipe[1])
        close(errPipe[1])
        if let stdin {
            stdin.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(inPipe[1], raw.baseAddress! + offset, raw.count - offset)
                    if n <= 0 { break }
                    offset += n
                }
            }
        }
        close(inPipe[1])
        var out: [UInt8] = []
        var err: [UInt8] = []
        var fds = [
            pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0),
            pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0),
        ]
        var buffer = [UInt8](repeating: 0, count: 4096)
        while fds.contains(where: { $0.fd >= 0 }) {
            guard poll(&fds, nfds_t(fds.count), 180_000) > 0 else { break }
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress, $0.count) }
                if n <= 0 {
                    close(fds[index].fd)
                    fds[index].fd = -1
                } else if index == 0 {
                    out += buffer[0..<n]
                } else {
                    err += buffer[0..<n]
                }
            }
        }
        for entry in fds where entry.fd >= 0 { close(entry.fd) }
        let status = wait(pid)
        return CommandResult(
            status: status,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self)
        )
    }
}

extension Spawn {
    /// Runs a command to completion like the blocking `run`, on a thread of its own (see ``onThread(_:)``).
    public static func run(
        _ path: String,
        _ arguments: [String],
        stdin: Data? = nil,
        environment: [String: String]? = nil
    ) async throws -> CommandResult {
        try await onThread { try run(path, arguments, stdin: stdin, environment: environment) }
    }
}

/// Runs `body` on a thread of its own and awaits it.
///
/// Swift concurrency has one cooperative thread per core (two on CI): a test that blocks one of them in
/// `waitpid`, `poll` or a blocking socket for a minute stalls every other test's tasks, timers included,
/// and the in-process services they run.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// Output of a finished command.
public struct CommandResult: Sendable {
    /// Exit status (128 + signal when killed).
    public let status: Int32
    /// Standard output, decoded as UTF-8.
    public let stdout: String
    /// Standard error, decoded as UTF-8.
    public let stderr: String

    /// Makes a result.
    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Runs a command to completion and captures its output.
@discardableResult
public func runCommand(_ path: String, _ arguments: [String], stdin: Data? = nil) throws -> CommandResult {
    try Spawn.run(path, arguments, stdin: stdin)
}

/// Runs a command to completion off Swift concurrency's cooperative threads.
@discardableResult
public func runCommand(_ path: String, _ arguments: [String], stdin: Data? = nil) async throws -> CommandResult {
    try await Spawn.run(path, arguments, stdin: stdin)
}

/// A test set-up failure with its reason.
public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
