import Glibc
import KeydProtocol

/// systemd socket activation (sd_listen_fds(3)): which descriptors the service manager passed, by name.
public enum SocketActivation {
    /// The first passed descriptor (SD_LISTEN_FDS_START).
    public static let firstDescriptor: Int32 = 3
    /// Most descriptors accepted; keyd expects two (keyd.sock, admin.sock).
    public static let maxDescriptors = 16
    /// The name of a descriptor when LISTEN_FDNAMES is absent or the entry is empty.
    public static let defaultName = "unknown"
    /// The variables this protocol uses.
    public static let variables = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]

    /// Maps each passed descriptor's name to its number, from LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES.
    ///
    /// With neither LISTEN_PID nor LISTEN_FDS set the process was not socket-activated and the
    /// result is empty. Anything inconsistent throws: a LISTEN_PID for another process, a count
    /// that is not a number in 0...maxDescriptors, a name list of another length, duplicate names.
    public static func parse(environment: [String: String], currentPID: Int32) throws -> [String: Int32] {
        let pidText = environment["LISTEN_PID"]
        let countText = environment["LISTEN_FDS"]
        if pidText == nil && countText == nil {
            if environment["LISTEN_FDNAMES"] != nil {
                throw SystemError.invalidEnvironment(
                    variable: "LISTEN_FDNAMES",
                    "set without LISTEN_PID and LISTEN_FDS"
                )
            }
            return [:]
        }
        guard let pidText else {
            throw SystemError.invalidEnvironment(variable: "LISTEN_PID", "missing while LISTEN_FDS is set")
        }
        guard let countText else {
            throw SystemError.invalidEnvironment(variable: "LISTEN_FDS", "missing while LISTEN_PID is set")
        }
        guard let pid = parseDecimal(pidText), pid > 0, pid <= Int(Int32.max) else {
            throw SystemError.invalidEnvironment(
                variable: "LISTEN_PID",
                "\(quotedForMessage(pidText)) is not a process ID"
            )
        }
        guard pid == Int(currentPID) else {
            throw SystemError.invalidEnvironment(variable: "LISTEN_PID", "\(pid) is not this process \(currentPID)")
        }
        guard let count = parseDecimal(countText) else {
            throw SystemError.invalidEnvironment(
                variable: "LISTEN_FDS",
                "\(quotedForMessage(countText)) is not a count"
            )
        }
        guard count <= maxDescriptors else {
            throw SystemError.invalidEnvironment(
                variable: "LISTEN_FDS",
                "count \(count) exceeds limit \(maxDescriptors)"
            )
        }
        var names = [String](repeating: defaultName, count: count)
        if let namesText = environment["LISTEN_FDNAMES"] {
            let given = namesText.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            // An empty LISTEN_FDNAMES with no descriptors is one empty field, not a mismatch.
            if !(count == 0 && namesText.isEmpty) {
                guard given.count == count else {
                    throw SystemError.invalidEnvironment(
                        variable: "LISTEN_FDNAMES",
                        "\(given.count) names for \(count) descriptors"
                    )
                }
                for (index, name) in given.enumerated() where !name.isEmpty {
                    names[index] = name
                }
            }
        }
        var result: [String: Int32] = [:]
        for (index, name) in names.enumerated() {
            let fd = firstDescriptor + Int32(index)
            if result.updateValue(fd, forKey: name) != nil {
                throw SystemError.invalidEnvironment(
                    variable: "LISTEN_FDNAMES",
                    "name \(quotedForMessage(name)) appears twice"
                )
            }
        }
        return result
    }

    /// The three LISTEN_* variables of this process, for `parse(environment:currentPID:)`.
    public static func processEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        for name in variables {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return environment
    }

    /// Throws unless `fd` is a listening Unix stream socket (SO_TYPE, SO_ACCEPTCONN, getsockname).
    public static func validateListeningUnixSocket(fd: Int32) throws {
        // The descriptor number comes from the environment, so EBADF is a refusal here, not a bug.
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try syscall("getsockopt(SO_TYPE)", "fd \(fd)", badDescriptorIsBug: false) {
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length)
        }
        guard type == streamType else {
            throw SystemError.notListeningUnixSocket(fd: fd, "socket type \(type) is not SOCK_STREAM")
        }
        var accepting: Int32 = 0
        length = socklen_t(MemoryLayout<Int32>.size)
        try syscall("getsockopt(SO_ACCEPTCONN)", "fd \(fd)", badDescriptorIsBug: false) {
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length)
        }
        guard accepting == 1 else {
            throw SystemError.notListeningUnixSocket(fd: fd, "socket is not listening")
        }
        var address = sockaddr_storage()
        var addressLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                _ = try syscall("getsockname", "fd \(fd)", badDescriptorIsBug: false) {
                    getsockname(fd, socketAddress, &addressLength)
                }
            }
        }
        guard Int32(address.ss_family) == AF_UNIX else {
            throw SystemError.notListeningUnixSocket(fd: fd, "address family \(address.ss_family) is not AF_UNIX")
        }
    }

    /// Removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES so that child processes do not inherit them.
    ///
    /// - Important: setenv/unsetenv are not thread-safe; call this from the main thread at start-up.
    public static func unsetEnvironment() {
        for name in variables { unsetenv(name) }
    }
}

/// A non-negative decimal number without sign or spaces, or nil (also on overflow).
internal func parseDecimal(_ text: String) -> Int? {
    guard !text.isEmpty, text.utf8.count <= 18 else { return nil }
    var value = 0
    for byte in text.utf8 {
        guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
        value = value * 10 + Int(byte - UInt8(ascii: "0"))
    }
    return value
}
