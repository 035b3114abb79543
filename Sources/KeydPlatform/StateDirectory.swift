import Glibc
import KeydProtocol

/// keyd's state directory (or a subdirectory of it), opened once; every file in it is opened,
/// read, replaced and removed relative to that descriptor, never by a path.
///
/// - Important: The host writes every byte of the disk before the state disk is open, so nothing
///   here follows a symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), opens a FIFO or device
///   (`O_NONBLOCK`, then `fstat` must say regular file), or accepts a name that is not one plain
///   path component. A refused entry is an error naming the entry and what was found.
public final class StateDirectory {
    /// The path it was opened at, for messages only.
    public let path: String
    /// The open directory.
    private let descriptor: FileDescriptor

    /// Opens the directory at `path`, creating it with `mode` when missing. A symlink, or anything
    /// but a directory, is refused.
    public convenience init(path: String, creatingWith mode: mode_t) throws {
        if mkdir(path, mode) == 0 {
            // mkdir applies the umask; set exactly what was asked.
            try syscall("chmod", path) { chmod(path, mode) }
        } else if Glibc.errno != EEXIST {
            let err = Glibc.errno
            throw SystemError.errno(err, call: "mkdir", context: path)
        }
        let raw = try syscall("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        self.init(descriptor: FileDescriptor(rawValue: raw), path: path)
    }

    private init(descriptor: FileDescriptor, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    deinit {
        try? descriptor.close()
    }

    /// The subdirectory `name`, or nil when there is none; a symlink or a file there is refused.
    public func existingSubdirectory(_ name: String) throws -> StateDirectory? {
        try Self.checkName(name, in: path)
        guard try contains(name) else { return nil }
        return try openSubdirectory(name)
    }

    /// The subdirectory `name`, created with `mode` when missing; a symlink or a file there is refused.
    public func subdirectory(_ name: String, creatingWith mode: mode_t) throws -> StateDirectory {
        try Self.checkName(name, in: path)
        let dir = descriptor.rawValue
        let context = describe(name)
        if mkdirat(dir, name, mode) == 0 {
            let created = try openSubdirectory(name)
            // mkdirat applies the umask; set exactly what was asked.
            let raw = created.descriptor.rawValue
            try syscall("fchmod", context) { fchmod(raw, mode) }
            return created
        }
        let err = Glibc.errno
        guard err == EEXIST else { throw SystemError.errno(err, call: "mkdirat", context: context) }
        return try openSubdirectory(name)
    }

    /// Opens the existing subdirectory `name` without following a symlink.
    private func openSubdirectory(_ name: String) throws -> StateDirectory {
        let dir = descriptor.rawValue
        let context = describe(name)
        let raw: Int32
        do {
            raw = try syscall("openat", context) { openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        } catch let error as SystemError where error.code == .errno(ELOOP) || error.code == .errno(ENOTDIR) {
            throw SystemError.unexpectedFileType(
                call: "openat",
                path: context,
                found: try entryType(name) ?? "nothing",
                expected: "directory"
            )
        }
        return StateDirectory(descriptor: FileDescriptor(rawValue: raw), path: context)
    }

    /// The contents of the regular file `name`, or nil when there is no entry of that name. Refuses
    /// a file larger than `limit` bytes, a symlink, a FIFO, a device or a directory.
    public func read(_ name: String, limit: Int) throws -> [UInt8]? {
        guard let file = try openRegular(name, flags: O_RDONLY) else { return nil }
        defer { try? file.close() }
        return try readAll(file, limit: limit, context: describe(name))
    }

    /// Streams the regular file `name` to `body` in chunks of at most `chunkSize` bytes; false when
    /// there is no entry of that name. Refuses what ``read(_:limit:)`` refuses, but no size limit applies.
    public func stream(
        _ name: String,
        chunkSize: Int = 1 << 20,
        _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws -> Bool {
        guard let file = try openRegular(name, flags: O_RDONLY) else { return false }
        defer { try? file.close() }
        try streamAll(file, chunkSize: chunkSize, context: describe(name), body)
        return true
    }

    /// Renames the entry `name`, whatever its type, to `newName` without following it: an entry the
    /// host put where a state file belongs is moved aside, never opened.
    public func moveAside(_ name: String, to newName: String) throws {
        try Self.checkName(name, in: path)
        try Self.checkName(newName, in: path)
        let dir = descriptor.rawValue
        try syscall("renameat", "\(describe(name)) -> \(newName)") { renameat(dir, name, dir, newName) }
        try sync()
    }

    /// Opens the regular file `name` for appending and reading, creating it with `mode` when missing.
    public func openLog(_ name: String, mode: mode_t) throws -> AppendOnlyFile {
        guard let file = try openRegular(name, flags: O_RDWR | O_APPEND | O_CREAT, mode: mode) else {
            preconditionFailure("O_CREAT gave no file")
        }
        return AppendOnlyFile(fd: file, path: describe(name))
    }

    /// Replaces `name` with `bytes` so that a reader sees the old file or the new one: a new
    /// temporary file (`O_EXCL`), fsync, rename over `name`, fsync of this directory.
    public func writeAtomically(_ name: String, bytes: [UInt8], mode: mode_t) throws {
        try Self.checkName(name, in: path)
        let temporary = ".\(name).tmp-\(try randomSuffix())"
        let dir = descriptor.rawValue
        let raw = try syscall("openat", describe(temporary)) {
            openat(dir, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        }
        do {
            defer { _ = Glibc.close(raw) }
            // The umask may have narrowed the mode; set exactly what was asked.
            try syscall("fchmod", describe(temporary)) { fchmod(raw, mode) }
            try bytes.withUnsafeBytes { try writeFully(fd: raw, $0, context: describe(temporary)) }
            try syscall("fsync", describe(temporary)) { fsync(raw) }
            try syscall("renameat", describe(name)) { renameat(dir, temporary, dir, name) }
        } catch {
            _ = unlinkat(dir, temporary, 0)
            throw error
        }
        try sync()
    }

    /// Removes the file `name`; false when there was none. A directory is refused.
    @discardableResult
    public func remove(_ name: String) throws -> Bool {
        try Self.checkName(name, in: path)
        let dir = descriptor.rawValue
        do {
            try syscall("unlinkat", describe(name)) { unlinkat(dir, name, 0) }
            return true
        } catch let error as SystemError where error.code == .errno(ENOENT) {
            return false
        }
    }

    /// Renames `name` to `newName` within this directory (replacing a file of that name).
    public func rename(_ name: String, to newName: String) throws {
        try Self.checkName(name, in: path)
        try Self.checkName(newName, in: path)
        let dir = descriptor.rawValue
        try syscall("renameat", "\(describe(name)) -> \(newName)") { renameat(dir, name, dir, newName) }
    }

    /// Whether an entry `name` exists (of any type; a symlink is not followed).
    public func contains(_ name: String) throws -> Bool {
        try entryType(name) != nil
    }

    /// The names of the entries, without `.` and `..`.
    public func entries() throws -> [String] {
        let copy = try syscall("dup", path) { dup(descriptor.rawValue) }
        guard let stream = fdopendir(copy) else {
            let err = Glibc.errno
            _ = Glibc.close(copy)
            throw SystemError.errno(err, call: "fdopendir", context: path)
        }
        defer { closedir(stream) }
        // The duplicate shares the read position with this directory's descriptor: start over.
        rewinddir(stream)
        var names: [String] = []
        while true {
            Glibc.errno = 0
            guard let entry = readdir(stream) else {
                let err = Glibc.errno
                if err == 0 { break }
                if err == EINTR { continue }
                throw SystemError.errno(err, call: "readdir", context: path)
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Lends `body` a path that names `name` through this directory's open descriptor
    /// (`/proc/self/fd/N/name`), for libraries that take only paths (libcryptsetup's header backup):
    /// a symlink swapped in for a directory of the path cannot redirect it. The path is valid only
    /// inside `body`, while this directory is kept open.
    public func withPinnedPath<R>(_ name: String, _ body: (String) throws -> R) throws -> R {
        try Self.checkName(name, in: path)
        return try withExtendedLifetime(self) { try body("/proc/self/fd/\(descriptor.rawValue)/\(name)") }
    }

    /// Whether one of this directory's entries (not followed when a symlink) is the file `identity`.
    public func holds(_ identity: FileIdentity) throws -> Bool {
        let dir = descriptor.rawValue
        for name in try entries() {
            var info = stat()
            guard fstatat(dir, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if FileIdentity(info) == identity { return true }
        }
        return false
    }

    /// fsync of the directory, so that a rename or a new entry in it survives a crash.
    public func sync() throws {
        let raw = descriptor.rawValue
        try syscall("fsync", path) { fsync(raw) }
    }

    // MARK: Helpers

    /// `path/name`, for messages.
    private func describe(_ name: String) -> String { path + "/" + name }

    /// Opens `name` with `flags` plus `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` and requires a regular
    /// file; nil when the entry does not exist (and `flags` does not create it).
    private func openRegular(_ name: String, flags: Int32, mode: mode_t = 0) throws -> FileDescriptor? {
        try Self.checkName(name, in: path)
        let dir = descriptor.rawValue
        let context = describe(name)
        let raw: Int32
        do {
            // O_NONBLOCK: opening a FIFO must not wait for a writer.
            raw = try syscall("openat", context) {
                openat(dir, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, mode)
            }
        } catch let error as SystemError {
            switch error.code {
            case .errno(ENOENT): return nil
            case .errno(ELOOP), .errno(EISDIR), .errno(ENXIO):
                throw SystemError.unexpectedFileType(
                    call: "openat",
                    path: context,
                    found: try entryType(name) ?? "nothing",
                    expected: "regular file"
                )
            default: throw error
            }
        }
        let file = FileDescriptor(rawValue: raw)
        var info = stat()
        do {
            try syscall("fstat", context) { fstat(raw, &info) }
            let type = info.st_mode & S_IFMT
            guard type == S_IFREG else {
                throw SystemError.unexpectedFileType(
                    call: "openat",
                    path: context,
                    found: fileTypeName(type),
                    expected: "regular file"
                )
            }
            // Reads block as for any regular file from here on.
            try file.setNonBlocking(enabled: false)
        } catch {
            try? file.close()
            throw error
        }
        return file
    }

    /// The type of the entry `name` without following a symlink, or nil when there is none.
    private func entryType(_ name: String) throws -> String? {
        var info = stat()
        let dir = descriptor.rawValue
        do {
            try syscall("fstatat", describe(name)) { fstatat(dir, name, &info, AT_SYMLINK_NOFOLLOW) }
        } catch let error as SystemError where error.code == .errno(ENOENT) {
            return nil
        }
        return fileTypeName(info.st_mode & S_IFMT)
    }

    /// Refuses a name that is not one plain path component (empty, `.`, `..`, a `/` or a NUL in it).
    private static func checkName(_ name: String, in directory: String) throws {
        guard !name.isEmpty, name != ".", name != "..", !name.utf8.contains(UInt8(ascii: "/")), !name.utf8.contains(0),
            name.utf8.count <= 255
        else {
            throw SystemError.invalidFileName(name, in: directory)
        }
    }

    /// 16 random hex digits for a temporary name.
    private func randomSuffix() throws -> String {
        var suffix = [UInt8](repeating: 0, count: 8)
        try suffix.withUnsafeMutableBytes { try SecureRandom.fill($0) }
        return suffix.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

/// Reads `file` from offset 0 to its end in chunks of at most `chunkSize` bytes, handing each to `body`.
internal func streamAll(
    _ file: FileDescriptor,
    chunkSize: Int,
    context: String,
    _ body: (UnsafeRawBufferPointer) throws -> Void
) throws {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
    defer { buffer.deallocate() }
    var offset = 0
    while true {
        let count = try file.read(into: buffer, atOffset: offset)
        if count == 0 { return }
        try body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        offset += count
    }
}

/// Reads `file` from its current offset to its end, refusing more than `limit` bytes.
///
/// The limit is checked on the size from fstat and again while reading, so files whose size the
/// kernel does not report (/proc) or that grow during the read are refused too.
internal func readAll(_ file: FileDescriptor, limit: Int, context: String) throws -> [UInt8] {
    precondition(limit >= 0, "negative limit")
    let raw = file.rawValue
    var info = stat()
    try syscall("fstat", context) { fstat(raw, &info) }
    if Int(info.st_size) > limit {
        throw SystemError.fileTooLarge(path: context, size: Int(info.st_size), limit: limit)
    }
    // Room for one byte past the limit, to notice a file that is longer than it said.
    var bytes = [UInt8](repeating: 0, count: min(limit, max(Int(info.st_size), 4096)) + 1)
    var filled = 0
    while true {
        if filled == bytes.count {
            if filled > limit { throw SystemError.fileTooLarge(path: context, size: filled, limit: limit) }
            bytes.append(contentsOf: repeatElement(0, count: min(bytes.count, limit + 1 - bytes.count)))
        }
        let count = try bytes.withUnsafeMutableBytes { buffer in
            try syscall("read", context) { Glibc.read(raw, buffer.baseAddress! + filled, buffer.count - filled) }
        }
        if count == 0 { break }
        filled += count
        if filled > limit { throw SystemError.fileTooLarge(path: context, size: filled, limit: limit) }
    }
    bytes.removeSubrange(filled...)
    return bytes
}
