import Glibc
import KeydPlatform

/// A fresh directory under /tmp (short, so socket paths fit sun_path), removed with its files afterwards.
func withTemporaryDirectory<R>(_ body: (String) throws -> R) throws -> R {
    var template = Array("/tmp/keyd-test-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { buffer -> String? in
        guard let result = mkdtemp(buffer.baseAddress!) else { return nil }
        return String(cString: result)
    }
    guard let path else { throw SystemError.errno(errno, call: "mkdtemp") }
    defer { removeTree(path) }
    return try body(path)
}

/// Removes a directory and the plain entries in it (tests create no nested trees deeper than one level).
func removeTree(_ path: String) {
    if let directory = opendir(path) {
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            let child = path + "/" + name
            if unlink(child) != 0 { removeTree(child) }
        }
        closedir(directory)
    }
    rmdir(path)
}

/// The file type and permission bits of `path` (lstat).
func fileMode(_ path: String) -> (type: mode_t, permissions: mode_t)? {
    var info = stat()
    guard lstat(path, &info) == 0 else { return nil }
    return (info.st_mode & S_IFMT, info.st_mode & 0o7777)
}

/// Reads whatever one read returns, as bytes, or nil for wouldBlock/eof.
func readSome(_ fd: FileDescriptor, max: Int = 4096) throws -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: max)
    let result = try buffer.withUnsafeMutableBytes { try fd.read(into: $0) }
    guard case .bytes(let count) = result else { return nil }
    return Array(buffer[..<count])
}

/// Waits up to `milliseconds` for `fd` to become readable.
func waitReadable(_ fd: FileDescriptor, milliseconds: Int32 = 5000) throws -> Bool {
    var fds = [pollfd(fd: fd.rawValue, events: Poller.readable, revents: 0)]
    return try Poller.wait(&fds, timeoutMilliseconds: milliseconds) == 1
}
