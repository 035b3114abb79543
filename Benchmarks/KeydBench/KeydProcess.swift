import BenchSupport
import KeydClient
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// A keyd started by hand in a scratch directory, stopped with SIGTERM.
final class KeydProcess {
    /// keyd's process id.
    let pid: pid_t
    /// The admin socket (the bench's euid is mapped to admin).
    let adminSocket: String
    /// keyd's stderr and stdout.
    let logPath: String
    private var exited = false

    private init(pid: pid_t, adminSocket: String, logPath: String) {
        self.pid = pid
        self.adminSocket = adminSocket
        self.logPath = logPath
    }

    /// Writes a config mapping this euid to admin, spawns keyd with its sockets in `directory`.
    static func start(binary: String, directory: String) throws(BenchError) -> KeydProcess {
        let config = directory + "/keyd.conf"
        try writeTextFile(config, "admin-uids = \(geteuid())\n")
        let state = directory + "/state"
        let socket = directory + "/keyd.sock"
        let admin = directory + "/admin.sock"
        let log = directory + "/keyd.log"
        let arguments = [binary, "--state-dir", state, "--socket", socket, "--admin-socket", admin, "--config", config]
        let pid = try spawn(binary, arguments, stdoutPath: log, searchPath: false)
        return KeydProcess(pid: pid, adminSocket: admin, logPath: log)
    }

    /// Waits until the admin socket answers `hello` as admin, or keyd exits, or `timeoutMilliseconds` pass.
    func waitUntilReady(timeoutMilliseconds: Int = 10_000) throws(BenchError) {
        let deadline = monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        var lastError = "not tried"
        while monotonicNanoseconds() < deadline {
            if let status = reapIfExited() {
                throw .keydFailed("keyd exited during start-up (\(status))")
            }
            if access(adminSocket, F_OK) == 0 {
                do {
                    let probe = try KeydConnection(path: adminSocket, timeoutMilliseconds: 2_000)
                    defer { probe.close() }
                    guard probe.hello.peerClass == .admin else {
                        throw BenchError.keydFailed(
                            "keyd classified the bench as \(probe.hello.peerClass), expected admin"
                        )
                    }
                    return
                } catch let error as BenchError {
                    throw error
                } catch {
                    lastError = "\(error)"
                }
            }
            usleep(10_000)
        }
        throw .keydFailed("admin socket \(adminSocket) not ready after \(timeoutMilliseconds) ms (\(lastError))")
    }

    /// SIGTERM, then waits up to `graceMilliseconds` before SIGKILL; returns how keyd ended.
    @discardableResult
    func stop(graceMilliseconds: Int = 5_000) -> String {
        if exited { return "already exited" }
        kill(pid, SIGTERM)
        let deadline = monotonicNanoseconds() + UInt64(graceMilliseconds) * 1_000_000
        while monotonicNanoseconds() < deadline {
            if let status = reapIfExited() { return status }
            usleep(5_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        exited = true
        return "did not stop within \(graceMilliseconds) ms of SIGTERM; killed"
    }

    /// Reaps keyd if it exited; returns a description of its end, nil while running.
    func reapIfExited() -> String? {
        if exited { return "already exited" }
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        guard result == pid else { return nil }
        exited = true
        return describeWaitStatus(status)
    }

    /// The last `lines` lines of keyd's log.
    func logTail(lines: Int = 20) -> String {
        guard let text = try? readTextFile(logPath) else { return "(no log)" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// "exit 0", "exit 1", "signal 9"… for a waitpid status.
func describeWaitStatus(_ status: Int32) -> String {
    let signal = status & 0x7F
    if signal == 0 { return "exit \((status >> 8) & 0xFF)" }
    return "signal \(signal)"
}

/// posix_spawn with stdin from /dev/null, stdout and stderr appended to `stdoutPath`, and a minimal
/// environment (no LISTEN_FDS or NOTIFY_SOCKET leaks into keyd). Call `markInheritedDescriptorsCloseOnExec` first.
func spawn(_ program: String, _ arguments: [String], stdoutPath: String, searchPath: Bool) throws(BenchError) -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)

    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = [
        strdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), nil,
    ]
    defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
    }
    var pid: pid_t = 0
    let result =
        searchPath
        ? posix_spawnp(&pid, program, &actions, nil, argv, envp)
        : posix_spawn(&pid, program, &actions, nil, argv, envp)
    guard result == 0 else { throw .system("posix_spawn", program, errno: result) }
    return pid
}

/// Sets FD_CLOEXEC on every descriptor above stderr, so what the bench inherited (from a shell or CI
/// runner) does not reach keyd. Glibc's closefrom file action is not visible to Swift.
func markInheritedDescriptorsCloseOnExec() {
    guard let dir = opendir("/proc/self/fd") else { return }
    var descriptors: [Int32] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if let fd = Int32(name), fd > 2 { descriptors.append(fd) }
    }
    closedir(dir)
    for fd in descriptors { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
}

/// Runs `program` to completion and returns its combined output, or nil if it could not run.
func captureOutput(_ program: String, _ arguments: [String], scratchFile: String) -> String? {
    guard let pid = try? spawn(program, [program] + arguments, stdoutPath: scratchFile, searchPath: true) else {
        return nil
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    defer { unlink(scratchFile) }
    return try? readTextFile(scratchFile)
}

/// A private directory under /tmp, removed with everything in it.
struct ScratchDirectory {
    /// Absolute path.
    let path: String

    /// Creates `/tmp/keyd-bench.XXXXXX` (mode 0700).
    static func create() throws(BenchError) -> ScratchDirectory {
        var template = Array("/tmp/keyd-bench.XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw .system("mkdtemp", "/tmp/keyd-bench.XXXXXX", errno: errno) }
        return ScratchDirectory(path: template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    }

    /// Removes the directory tree (no symlinks are followed).
    func remove() { removeTree(path) }
}

/// Recursive removal of files, sockets and directories below `path`, then `path` itself.
private func removeTree(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    if (info.st_mode & S_IFMT) == S_IFDIR {
        if let dir = opendir(path) {
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for name in names { removeTree(path + "/" + name) }
        }
        rmdir(path)
    } else {
        unlink(path)
    }
}
