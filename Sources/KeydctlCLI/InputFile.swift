#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private let systemRead = Glibc.read
#else
private let systemRead = Darwin.read
#endif

/// Reads from `fd` until `buffer` is full or the input ends; returns the bytes read.
///
/// A failed read throws `failure(errno)`; EINTR is retried.
func readFully(
    _ fd: Int32,
    into buffer: UnsafeMutableRawBufferPointer,
    failure: (Int32) -> KeydctlError
) throws(KeydctlError) -> Int {
    var used = 0
    while used < buffer.count {
        let n = systemRead(fd, buffer.baseAddress! + used, buffer.count - used)
        if n < 0 {
            if errno == EINTR { continue }
            throw failure(errno)
        }
        if n == 0 { break }
        used += n
    }
    return used
}

/// A file that is not secret (a signed policy, an operator key), read with a bound.
enum InputFile {
    /// The bytes of the regular file at `path` (`-` is standard input), at most `limit`; `what` names the
    /// file in errors ("signed policy file").
    ///
    /// A file that is not regular (a FIFO, a device, a directory) is refused without reading, and so is
    /// one whose size is over `limit`; a file that grows while read is refused after `limit` + 1 bytes.
    static func read(path: String, what: String, limit: Int) throws(KeydctlError) -> [UInt8] {
        let fd: Int32
        if path == "-" {
            fd = STDIN_FILENO
        } else {
            // O_NONBLOCK: opening a FIFO without a writer returns at once, so fstat can refuse it.
            fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
            guard fd >= 0 else { throw .cannotOpen(what, path: path, errno: errno) }
        }
        defer { if fd != STDIN_FILENO { _ = close(fd) } }
        if fd != STDIN_FILENO {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw .cannotRead(what, path: path, errno: errno) }
            guard info.st_mode & S_IFMT == S_IFREG else { throw .notRegularFile(what, path: path) }
            guard info.st_size <= limit else {
                throw .fileTooLarge(what, path: path, size: Int(info.st_size), limit: limit)
            }
        }
        // One byte more than the limit tells an oversized input from one of exactly the limit.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: limit + 1, alignment: 1)
        defer { buffer.deallocate() }
        let count = try readFully(fd, into: buffer) { (error) in .cannotRead(what, path: path, errno: error) }
        guard count <= limit else { throw .fileTooLarge(what, path: path, size: nil, limit: limit) }
        guard count > 0 else { throw .fileEmpty(what, path: path) }
        return Array(buffer[0..<count])
    }
}
