import CKeydShims
import Glibc

/// A raw file descriptor number; copying it does not duplicate the descriptor, so close it once.
public struct FileDescriptor: Hashable, Sendable, CustomStringConvertible {
    /// The descriptor number.
    public let rawValue: Int32

    /// Wraps a descriptor number this process owns.
    public init(rawValue: Int32) {
        precondition(rawValue >= 0, "negative file descriptor \(rawValue)")
        self.rawValue = rawValue
    }

    public var description: String { "fd \(rawValue)" }

    /// open(2) of `path` with `flags` (`O_CLOEXEC` and `O_NOCTTY` always added); the caller closes it.
    public static func open(path: String, flags: Int32, mode: mode_t = 0) throws -> FileDescriptor {
        let raw = try syscall("open", path) { Glibc.open(path, flags | O_CLOEXEC | O_NOCTTY, mode) }
        return FileDescriptor(rawValue: raw)
    }

    /// The outcome of one read.
    public enum ReadResult: Hashable, Sendable {
        /// This many bytes (at least 1) were read.
        case bytes(Int)
        /// A nonblocking descriptor has nothing to read now.
        case wouldBlock
        /// The peer closed its end (or the file ended).
        case eof
    }

    /// The outcome of one write.
    public enum WriteResult: Hashable, Sendable {
        /// This many bytes were written, possibly fewer than offered.
        case bytes(Int)
        /// A nonblocking descriptor cannot take any byte now.
        case wouldBlock
    }

    /// Reads at most `buffer.count` bytes (one `read(2)`).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> ReadResult {
        precondition(buffer.count > 0, "read into an empty buffer")
        let fd = rawValue
        guard
            let count = try nonBlockingSyscall(
                "read",
                description,
                { Glibc.read(fd, buffer.baseAddress, buffer.count) }
            )
        else {
            return .wouldBlock
        }
        return count == 0 ? .eof : .bytes(count)
    }

    /// Reads at most `buffer.count` bytes at `offset` (one `pread(2)`, repeated only on EINTR); 0 at the end.
    public func read(into buffer: UnsafeMutableRawBufferPointer, atOffset offset: Int) throws -> Int {
        let fd = rawValue
        return try syscall("pread", description) { Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// Writes at most `buffer.count` bytes with one `send(2)` and MSG_NOSIGNAL (`write(2)` if not a socket).
    public func write(_ buffer: UnsafeRawBufferPointer) throws -> WriteResult {
        if buffer.isEmpty { return .bytes(0) }
        let fd = rawValue
        while true {
            let result = Glibc.send(fd, buffer.baseAddress, buffer.count, keyd_msg_nosignal())
            if result >= 0 { return .bytes(result) }
            let err = Glibc.errno
            switch err {
            case EINTR:
                continue
            case EAGAIN, EWOULDBLOCK:
                return .wouldBlock
            case ENOTSOCK:
                guard
                    let written = try nonBlockingSyscall(
                        "write",
                        description,
                        { Glibc.write(fd, buffer.baseAddress, buffer.count) }
                    )
                else {
                    return .wouldBlock
                }
                return .bytes(written)
            default:
                preconditionAcceptable(err, call: "send", badDescriptorIsBug: true)
                throw SystemError.errno(err, call: "send", context: description)
            }
        }
    }

    /// Writes at most `bytes.count` bytes; see `write(_: UnsafeRawBufferPointer)`.
    public func write(_ bytes: [UInt8]) throws -> WriteResult {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Writes every byte, waiting with poll(2) whenever a nonblocking descriptor is full.
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < buffer.count {
            switch try write(UnsafeRawBufferPointer(rebasing: buffer[offset...])) {
            case .bytes(let count):
                offset += count
            case .wouldBlock:
                var fds = [pollfd(fd: rawValue, events: Poller.writable, revents: 0)]
                _ = try Poller.wait(&fds, timeoutMilliseconds: -1)
            }
        }
    }

    /// Writes every byte of `bytes`; see `writeAll(_: UnsafeRawBufferPointer)`.
    public func writeAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeAll($0) }
    }

    /// Closes the descriptor. EINTR counts as closed (Linux releases the number first).
    public func close() throws {
        let result = Glibc.close(rawValue)
        if result == 0 { return }
        let err = Glibc.errno
        if err == EINTR { return }
        precondition(err != EBADF, "close(\(rawValue)): descriptor was not open")
        throw SystemError.errno(err, call: "close", context: description)
    }

    /// Sets or clears O_NONBLOCK.
    public func setNonBlocking(enabled: Bool = true) throws {
        let fd = rawValue
        let flags = try syscall("fcntl(F_GETFL)", description) { fcntl(fd, F_GETFL) }
        let wanted = enabled ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted != flags {
            try syscall("fcntl(F_SETFL)", description) { fcntl(fd, F_SETFL, wanted) }
        }
    }

    /// Sets FD_CLOEXEC, so the descriptor does not leak into programs this process executes.
    public func setCloseOnExec() throws {
        let fd = rawValue
        let flags = try syscall("fcntl(F_GETFD)", description) { fcntl(fd, F_GETFD) }
        if flags & FD_CLOEXEC == 0 {
            try syscall("fcntl(F_SETFD)", description) { fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    /// Shuts down the sending direction of a socket; the peer reads end of file.
    public func shutdownWrite() throws {
        let fd = rawValue
        try syscall("shutdown", description) { shutdown(fd, Int32(SHUT_WR)) }
    }
}
