import CKeydShims
import Glibc

/// Room in `sockaddr_un.sun_path` for a path and its terminating NUL.
internal let unixPathCapacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)

/// Builds a `sockaddr_un` for `path` and calls `body` with it; "@name" is the abstract name "\0name".
internal func withUnixAddress<R>(
    path: String,
    call: String,
    _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R
) throws -> R {
    var bytes = Array(path.utf8)
    let abstract = bytes.first == UInt8(ascii: "@")
    if abstract { bytes[0] = 0 }
    // A filesystem path needs its NUL inside sun_path; an abstract name uses the exact length.
    let limit = abstract ? unixPathCapacity : unixPathCapacity - 1
    guard !bytes.isEmpty, bytes.count <= limit else {
        throw SystemError.pathTooLong(call: call, path: path, length: bytes.count, limit: limit)
    }
    guard abstract || !bytes.contains(0) else {
        throw SystemError.errno(EINVAL, call: call, context: path)
    }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
    }
    let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
    let length = socklen_t(pathOffset + bytes.count + (abstract ? 0 : 1))
    return try withUnsafePointer(to: &address) { pointer in
        try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
    }
}

/// SOCK_STREAM as the Int32 socket(2) takes.
internal let streamType = Int32(SOCK_STREAM.rawValue)
/// SOCK_DGRAM as the Int32 socket(2) takes.
internal let datagramType = Int32(SOCK_DGRAM.rawValue)

/// Unix stream socket helpers for clients and tests.
public enum UnixSocket {
    /// Connects a blocking, close-on-exec stream socket to the socket file at `path`.
    public static func connect(path: String) throws -> FileDescriptor {
        let fd = try syscall("socket", path) { socket(AF_UNIX, streamType | keyd_sock_cloexec(), 0) }
        let descriptor = FileDescriptor(rawValue: fd)
        do {
            try withUnixAddress(path: path, call: "connect") { address, length in
                // connect(2) is not restarted after EINTR: the connection continues in the background.
                if Glibc.connect(fd, address, length) == 0 { return }
                let err = Glibc.errno
                if err == EINTR || err == EINPROGRESS {
                    var fds = [pollfd(fd: fd, events: Poller.writable, revents: 0)]
                    while try Poller.wait(&fds, timeoutMilliseconds: -1) == 0 {}
                    try checkSocketError(fd: fd, call: "connect", context: path)
                    return
                }
                preconditionAcceptable(err, call: "connect", badDescriptorIsBug: true)
                throw SystemError.errno(err, call: "connect", context: path)
            }
        } catch {
            try? descriptor.close()
            throw error
        }
        return descriptor
    }

    /// A connected pair of close-on-exec Unix stream sockets.
    public static func socketPair(nonBlocking: Bool = false) throws -> (FileDescriptor, FileDescriptor) {
        var fds: [Int32] = [-1, -1]
        let type = streamType | keyd_sock_cloexec() | (nonBlocking ? keyd_sock_nonblock() : 0)
        try fds.withUnsafeMutableBufferPointer { buffer in
            _ = try syscall("socketpair") { socketpair(AF_UNIX, type, 0, buffer.baseAddress) }
        }
        return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
    }

    /// Throws the pending SO_ERROR of a socket, if any.
    internal static func checkSocketError(fd: Int32, call: String, context: String) throws {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try syscall("getsockopt(SO_ERROR)", context) { getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) }
        if value != 0 { throw SystemError.errno(value, call: call, context: context) }
    }
}

/// A listening, nonblocking, close-on-exec Unix stream socket.
public struct UnixListener: Sendable {
    /// The listening descriptor; poll it for `Poller.readable`.
    public let fd: FileDescriptor
    /// The socket file this listener bound, or nil for an adopted (socket-activated) descriptor.
    public let path: String?

    private init(fd: FileDescriptor, path: String?) {
        self.fd = fd
        self.path = path
    }

    /// Binds and listens on `path` with file mode `mode`.
    ///
    /// A leftover socket file with no listener behind it is replaced; a live listener fails with
    /// EADDRINUSE, and anything that is not a socket (a regular file, a directory, a symlink) is
    /// refused and left in place.
    public static func bind(path: String, mode: mode_t, backlog: Int32 = 128) throws -> UnixListener {
        try removeStaleSocket(path: path)
        let raw = try syscall("socket", path) {
            socket(AF_UNIX, streamType | keyd_sock_cloexec() | keyd_sock_nonblock(), 0)
        }
        let fd = FileDescriptor(rawValue: raw)
        do {
            // fchmod before bind: the socket file is created with at most this mode (less the
            // umask), so it is never wider than asked; chmod afterwards undoes the umask.
            try syscall("fchmod", path) { fchmod(raw, mode) }
            try withUnixAddress(path: path, call: "bind") { address, length in
                _ = try syscall("bind", path) { Glibc.bind(raw, address, length) }
            }
            do {
                try syscall("chmod", path) { chmod(path, mode) }
                try syscall("listen", path) { listen(raw, backlog) }
            } catch {
                _ = unlink(path)
                throw error
            }
        } catch {
            try? fd.close()
            throw error
        }
        return UnixListener(fd: fd, path: path)
    }

    /// Takes over a listening descriptor (from socket activation): sets O_NONBLOCK and FD_CLOEXEC.
    public static func adopt(_ fd: FileDescriptor) throws -> UnixListener {
        try fd.setNonBlocking()
        try fd.setCloseOnExec()
        return UnixListener(fd: fd, path: nil)
    }

    /// Accepts one connection (nonblocking, close-on-exec), or nil when none is waiting.
    ///
    /// EMFILE/ENFILE and other resource errors are thrown; the caller logs them and keeps serving.
    public func accept() throws -> FileDescriptor? {
        let raw = fd.rawValue
        while true {
            let result = keyd_accept_cloexec_nonblock(raw)
            if result >= 0 { return FileDescriptor(rawValue: result) }
            let err = Glibc.errno
            switch err {
            case EINTR:
                continue
            case EAGAIN, EWOULDBLOCK, ECONNABORTED:
                // An aborted connection is gone; poll reports the listener again if more wait.
                return nil
            default:
                preconditionAcceptable(err, call: "accept4", badDescriptorIsBug: true)
                throw SystemError.errno(err, call: "accept4", context: path ?? fd.description)
            }
        }
    }

    /// Closes the listener, and removes its socket file when `unlinkingPath` is true.
    public func close(unlinkingPath: Bool) throws {
        if unlinkingPath, let path {
            _ = unlink(path)
        }
        try fd.close()
    }

    /// Removes a socket file at `path` that no process listens on; refuses any other file type.
    private static func removeStaleSocket(path: String) throws {
        var info = stat()
        if lstat(path, &info) != 0 {
            let err = Glibc.errno
            if err == ENOENT { return }
            throw SystemError.errno(err, call: "lstat", context: path)
        }
        let type = info.st_mode & S_IFMT
        guard type == S_IFSOCK else {
            throw SystemError.refusedExistingFile(call: "bind", path: path, found: fileTypeName(type))
        }
        if try isListening(path: path) {
            throw SystemError.errno(EADDRINUSE, call: "bind", context: path)
        }
        if unlink(path) != 0 {
            let err = Glibc.errno
            if err != ENOENT { throw SystemError.errno(err, call: "unlink", context: path) }
        }
    }

    /// Whether a process accepts connections on the socket file at `path` (a nonblocking probe).
    private static func isListening(path: String) throws -> Bool {
        let raw = try syscall("socket", path) {
            socket(AF_UNIX, streamType | keyd_sock_cloexec() | keyd_sock_nonblock(), 0)
        }
        defer { _ = Glibc.close(raw) }
        return try withUnixAddress(path: path, call: "connect") { address, length in
            if Glibc.connect(raw, address, length) == 0 { return true }
            switch Glibc.errno {
            case ECONNREFUSED, ENOENT: return false
            // EAGAIN: the listener's backlog is full, so it is alive.
            default: return true
            }
        }
    }
}

/// A name for the file type bits of `st_mode`, for messages.
internal func fileTypeName(_ type: mode_t) -> String {
    switch type {
    case S_IFREG: return "regular file"
    case S_IFDIR: return "directory"
    case S_IFLNK: return "symbolic link"
    case S_IFSOCK: return "socket"
    case S_IFIFO: return "FIFO"
    case S_IFCHR: return "character device"
    case S_IFBLK: return "block device"
    default: return "file of type \(type)"
    }
}
