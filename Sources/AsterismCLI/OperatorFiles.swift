import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The operator's files: the private key (owner-only, never replaced), policies and signed policies.
/// Errors are ``CLIInput/InputError`` (exit 2) naming the path, the errno or the limit.
enum OperatorFiles {
    /// Largest private key file read: a PKCS#8 PEM P-256 key is about 240 bytes.
    static let maximumKeyFileLength = 4096

    /// Creates `path` with `mode` and writes `bytes`, synced. An existing file (or link) is never written
    /// through; with `replacing` it is unlinked first and a new file created in its place.
    static func create(_ path: String, _ bytes: [UInt8], mode: mode_t, replacing: Bool = false) throws {
        if replacing, unlink(path) != 0, errno != ENOENT {
            throw CLIInput.InputError(description: "cannot replace \(path): errno \(errno)")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            let error = errno
            throw CLIInput.InputError(
                description: error == EEXIST
                    ? "\(path) exists; it is not overwritten" : "cannot create \(path): errno \(error)"
            )
        }
        defer { close(fd) }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw CLIInput.InputError(description: "cannot write \(path): errno \(errno)") }
            written += n
        }
        // The umask may have narrowed the mode; the key's 0600 is exactly what is asked, never wider.
        guard fchmod(fd, mode) == 0, fsync(fd) == 0 else {
            throw CLIInput.InputError(description: "cannot sync \(path): errno \(errno)")
        }
    }

    /// The bytes of the regular file at `path`, at most `limit`; `what` names it in errors. With `ownerOnly`,
    /// a file group or others may read or write is refused, as ssh refuses such a private key.
    static func contents(of path: String, what: String, limit: Int, ownerOnly: Bool = false) throws -> [UInt8] {
        // O_NONBLOCK: a FIFO without a writer opens at once, so fstat can refuse it.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else { throw CLIInput.InputError(description: "cannot open \(what) \(path): errno \(errno)") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw CLIInput.InputError(description: "cannot read \(what) \(path): errno \(errno)")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw CLIInput.InputError(description: "\(what) \(path) is not a regular file")
        }
        if ownerOnly, info.st_mode & 0o077 != 0 {
            throw CLIInput.InputError(
                description:
                    "\(what) \(path) has mode 0\(String(info.st_mode & 0o777, radix: 8)): group or others may access it (chmod 600 \(path))"
            )
        }
        guard info.st_size <= limit else {
            throw CLIInput.InputError(description: "\(what) \(path) of \(info.st_size) bytes exceeds limit \(limit)")
        }
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes[count...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw CLIInput.InputError(description: "cannot read \(what) \(path): errno \(errno)") }
            if n == 0 { break }
            count += n
        }
        guard count <= limit else {
            throw CLIInput.InputError(description: "\(what) \(path) grew beyond limit \(limit) while read")
        }
        return Array(bytes[0..<count])
    }

    /// The operator's private signing key: a PEM P-256 key (PKCS#8 `PRIVATE KEY` or SEC 1 `EC PRIVATE KEY`)
    /// in a file only its owner may access.
    static func signingKey(_ path: String) throws -> P256.Signing.PrivateKey {
        var bytes = try contents(of: path, what: "operator key", limit: maximumKeyFileLength, ownerOnly: true)
        defer { for index in bytes.indices { bytes[index] = 0 } }
        guard let key = try? P256.Signing.PrivateKey(pemRepresentation: String(decoding: bytes, as: UTF8.self))
        else {
            throw CLIInput.InputError(description: "operator key \(path) is not a PEM ECDSA P-256 private key")
        }
        return key
    }
}
