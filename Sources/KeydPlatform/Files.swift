import Glibc

/// A file opened for appending only (O_APPEND), for logs such as keyd's audit chain.
public struct AppendOnlyFile: Sendable {
    /// The open descriptor.
    public let fd: FileDescriptor
    /// The path it was opened at.
    public let path: String

    private init(fd: FileDescriptor, path: String) {
        self.fd = fd
        self.path = path
    }

    /// Opens or creates `path` (never following a symlink in the last component) for appending.
    public static func open(path: String, mode: mode_t) throws -> AppendOnlyFile {
        let raw = try syscall("open", path) {
            Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode)
        }
        return AppendOnlyFile(fd: FileDescriptor(rawValue: raw), path: path)
    }

    /// Appends every byte (looping over short writes).
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        try writeFully(fd: fd.rawValue, bytes, context: path)
    }

    /// Appends every byte of `bytes`.
    public func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append($0) }
    }

    /// fsync(2): the appended bytes are on stable storage when this returns.
    public func sync() throws {
        let raw = fd.rawValue
        try syscall("fsync", path) { fsync(raw) }
    }

    /// Closes the file.
    public func close() throws {
        try fd.close()
    }
}

/// Reads the whole file at `path`, refusing one larger than `limit` bytes.
///
/// The limit is checked on the size from fstat and again while reading, so files whose size the
/// kernel does not report (/proc) or that grow during the read are refused too.
public func readWholeFile(path: String, limit: Int) throws -> [UInt8] {
    precondition(limit >= 0, "negative limit")
    let raw = try syscall("open", path) { open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) }
    defer { _ = close(raw) }
    var info = stat()
    try syscall("fstat", path) { fstat(raw, &info) }
    if Int(info.st_size) > limit {
        throw SystemError.fileTooLarge(path: path, size: Int(info.st_size), limit: limit)
    }
    // Room for one byte past the limit, to notice a file that is longer than it said.
    var bytes = [UInt8](repeating: 0, count: min(limit, max(Int(info.st_size), 4096)) + 1)
    var filled = 0
    while true {
        if filled == bytes.count {
            if filled > limit { throw SystemError.fileTooLarge(path: path, size: filled, limit: limit) }
            bytes.append(contentsOf: repeatElement(0, count: min(bytes.count, limit + 1 - bytes.count)))
        }
        let count = try bytes.withUnsafeMutableBytes { buffer in
            try syscall("read", path) { read(raw, buffer.baseAddress! + filled, buffer.count - filled) }
        }
        if count == 0 { break }
        filled += count
        if filled > limit { throw SystemError.fileTooLarge(path: path, size: filled, limit: limit) }
    }
    bytes.removeSubrange(filled...)
    return bytes
}

/// Replaces `path` with `bytes` so that a reader sees the old file or the new one, never a mix.
///
/// Writes a temporary file in the same directory with `mode`, fsyncs it, renames it over
/// `path`, and fsyncs the directory.
public func writeFileAtomically(path: String, bytes: [UInt8], mode: mode_t) throws {
    let (directory, base) = splitPath(path)
    var suffix = [UInt8](repeating: 0, count: 8)
    try suffix.withUnsafeMutableBytes { try SecureRandom.fill($0) }
    let hex = suffix.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    let temporary = (directory == "/" ? "/" : directory + "/") + ".\(base).tmp-\(hex)"
    let raw = try syscall("open", temporary) {
        open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
    }
    do {
        defer { _ = close(raw) }
        // The umask may have narrowed the mode; set exactly what was asked.
        try syscall("fchmod", temporary) { fchmod(raw, mode) }
        try bytes.withUnsafeBytes { try writeFully(fd: raw, $0, context: temporary) }
        try syscall("fsync", temporary) { fsync(raw) }
    } catch {
        _ = unlink(temporary)
        throw error
    }
    do {
        try syscall("rename", "\(temporary) -> \(path)") { rename(temporary, path) }
    } catch {
        _ = unlink(temporary)
        throw error
    }
    try fsyncDirectory(path: directory)
}

/// Creates the directory `path` with `mode` if it is missing; returns true if it created it.
///
/// An existing directory is left as it is; an existing non-directory (or a symlink) throws.
@discardableResult
public func makeDirectory(path: String, mode: mode_t) throws -> Bool {
    if mkdir(path, mode) == 0 {
        // mkdir applies the umask; set exactly what was asked.
        try syscall("chmod", path) { chmod(path, mode) }
        return true
    }
    let err = Glibc.errno
    guard err == EEXIST else {
        preconditionAcceptable(err, call: "mkdir", badDescriptorIsBug: true)
        throw SystemError.errno(err, call: "mkdir", context: path)
    }
    var info = stat()
    try syscall("lstat", path) { lstat(path, &info) }
    let type = info.st_mode & S_IFMT
    guard type == S_IFDIR else {
        throw SystemError.refusedExistingFile(call: "mkdir", path: path, found: fileTypeName(type))
    }
    return false
}

/// fsync(2) on a directory, so that a rename or a new entry in it survives a crash.
public func fsyncDirectory(path: String) throws {
    let raw = try syscall("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    defer { _ = close(raw) }
    try syscall("fsync", path) { fsync(raw) }
}

/// Writes every byte to a blocking descriptor.
internal func writeFully(fd: Int32, _ bytes: UnsafeRawBufferPointer, context: String) throws {
    var offset = 0
    while offset < bytes.count {
        let count = try syscall("write", context) { write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
        offset += count
    }
}

/// Splits "/a/b/c" into ("/a/b", "c"); a bare name lives in ".".
internal func splitPath(_ path: String) -> (directory: String, base: String) {
    let trimmed = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    guard let slash = trimmed.lastIndex(of: "/") else { return (".", trimmed) }
    let directory = String(trimmed[..<slash])
    let base = String(trimmed[trimmed.index(after: slash)...])
    return (directory.isEmpty ? "/" : directory, base)
}
