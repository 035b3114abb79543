import CKeydShims
import Glibc

/// Process-wide hardening for keyd, each step verified where the kernel lets us read it back.
public enum ProcessHardening {
    /// PR_SET_NO_NEW_PRIVS: no execve from here on can gain privileges; read back to confirm.
    public static func setNoNewPrivileges() throws {
        try syscall("prctl(PR_SET_NO_NEW_PRIVS)") { keyd_prctl_no_new_privs() }
        let value = try syscall("prctl(PR_GET_NO_NEW_PRIVS)") { keyd_prctl_get_no_new_privs() }
        guard value == 1 else {
            throw SystemError.verificationFailed(
                call: "setNoNewPrivileges",
                "PR_GET_NO_NEW_PRIVS is \(value), wanted 1"
            )
        }
    }

    /// PR_SET_DUMPABLE 0: no core dumps, and other processes of the same user cannot ptrace us.
    public static func setNotDumpable() throws {
        try syscall("prctl(PR_SET_DUMPABLE)") { keyd_prctl_set_dumpable(0) }
        let value = try syscall("prctl(PR_GET_DUMPABLE)") { keyd_prctl_get_dumpable() }
        guard value == 0 else {
            throw SystemError.verificationFailed(call: "setNotDumpable", "PR_GET_DUMPABLE is \(value), wanted 0")
        }
    }

    /// Whether PR_SET_NO_NEW_PRIVS is in force.
    public static func noNewPrivileges() throws -> Bool {
        try syscall("prctl(PR_GET_NO_NEW_PRIVS)") { keyd_prctl_get_no_new_privs() } == 1
    }

    /// Whether the process is dumpable (PR_GET_DUMPABLE is not 0).
    public static func isDumpable() throws -> Bool {
        try syscall("prctl(PR_GET_DUMPABLE)") { keyd_prctl_get_dumpable() } != 0
    }

    /// mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT): pages are locked as they are touched, so
    /// keys never reach swap. Needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK.
    public static func lockMemoryOnFault() throws {
        try syscall("mlockall(MCL_ONFAULT)") { keyd_mlockall_onfault() }
    }

    /// Ignores SIGPIPE process-wide, so a write to a closed pipe fails with EPIPE instead of killing keyd.
    public static func ignoreSIGPIPE() throws {
        try syscall("sigaction(SIGPIPE)") { keyd_ignore_signal(SIGPIPE) }
    }

    /// The RLIMIT_NOFILE soft and hard limits.
    public static func openFileLimit() throws -> (soft: UInt64, hard: UInt64) {
        var soft: UInt64 = 0
        var hard: UInt64 = 0
        try syscall("getrlimit(RLIMIT_NOFILE)") { keyd_get_nofile_limit(&soft, &hard) }
        return (soft, hard)
    }

    /// Raises the RLIMIT_NOFILE soft limit to min(`wanted`, hard) (never lowers it); returns the new soft limit.
    @discardableResult
    public static func raiseOpenFileLimit(to wanted: UInt64) throws -> UInt64 {
        let (soft, hard) = try openFileLimit()
        let target = min(wanted, hard)
        if target <= soft { return soft }
        try syscall("setrlimit(RLIMIT_NOFILE)", "\(target)") { keyd_set_nofile_soft_limit(target) }
        return target
    }
}

extension ProcessHardening {
    /// Closes every inherited descriptor above stderr except `keeping` (socket-activated fds).
    ///
    /// Run once at start, before keyd opens anything itself, so no stray pipe or file from the
    /// parent stays open in the privileged process.
    public static func closeInheritedDescriptors(keeping: Set<Int32>) throws {
        guard let directory = opendir("/proc/self/fd") else {
            throw SystemError.errno(Glibc.errno, call: "opendir", context: "/proc/self/fd")
        }
        var found: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if let fd = Int32(name), fd > 2, fd != dirfd(directory), !keeping.contains(fd) { found.append(fd) }
        }
        closedir(directory)
        for fd in found { _ = Glibc.close(fd) }
    }
}
