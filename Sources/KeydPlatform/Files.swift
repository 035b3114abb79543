import Glibc

/// A file whose writes all append (O_APPEND), for logs such as keyd's audit chain; closed when
/// the last reference goes. Opened by ``StateDirectory/openLog(_:mode:)``.
public final class AppendOnlyFile {
    /// The open descriptor.
    public let fd: FileDescriptor
    /// The path it was opened at.
    public let path: String

    init(fd: FileDescriptor, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Appends every byte (looping over short writes).
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        try writeFully(fd: fd.rawValue, bytes, context: path)
    }

    /// Appends every byte of `bytes`.
    public func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append($0) }
    }

    /// The whole file, refusing more than `limit` bytes; needs a file opened for reading too
    /// (``StateDirectory/openLog(_:mode:)``).
    public func readAll(limit: Int) throws -> [UInt8] {
        let raw = fd.rawValue
        try syscall("lseek", path) { lseek(raw, 0, SEEK_SET) }
        return try KeydPlatform.readAll(fd, limit: limit, context: path)
    }

    /// Streams the whole file to `body` in chunks of at most `chunkSize` bytes (no size limit).
    public func stream(chunkSize: Int = 1 << 20, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try streamAll(fd, chunkSize: chunkSize, context: path, body)
    }

    /// The file's size in bytes.
    public func size() throws -> Int {
        var info = stat()
        let raw = fd.rawValue
        try syscall("fstat", path) { fstat(raw, &info) }
        return Int(info.st_size)
    }

    /// Cuts the file to `length` bytes (ftruncate(2) through this descriptor).
    public func truncate(to length: Int) throws {
        let raw = fd.rawValue
        try syscall("ftruncate", path) { ftruncate(raw, off_t(length)) }
    }

    /// fsync(2): the appended bytes are on stable storage when this returns.
    public func sync() throws {
        let raw = fd.rawValue
        try syscall("fsync", path) { fsync(raw) }
    }

    deinit {
        try? fd.close()
    }
}

/// Reads the whole file at `path`, refusing one larger than `limit` bytes; nil when it does not
/// exist. Blocks on a FIFO: use it for configuration paths only, and ``StateDirectory`` for state.
public func readWholeFileIfPresent(path: String, limit: Int) throws -> [UInt8]? {
    let raw: Int32
    do {
        raw = try syscall("open", path) { open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) }
    } catch let error as SystemError where error.code == .errno(ENOENT) {
        return nil
    }
    let file = FileDescriptor(rawValue: raw)
    defer { try? file.close() }
    return try readAll(file, limit: limit, context: path)
}

/// Reads the whole file at `path`, refusing one larger than `limit` bytes.
public func readWholeFile(path: String, limit: Int) throws -> [UInt8] {
    guard let bytes = try readWholeFileIfPresent(path: path, limit: limit) else {
        throw SystemError.errno(ENOENT, call: "open", context: path)
    }
    return bytes
}

/// Writes every byte to a blocking descriptor.
internal func writeFully(fd: Int32, _ bytes: UnsafeRawBufferPointer, context: String) throws {
    var offset = 0
    while offset < bytes.count {
        let count = try syscall("write", context) { write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
        offset += count
    }
}
