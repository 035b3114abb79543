import CKeydShims
import Glibc

/// A state-disk device opened once: a block device, or a regular file holding an image. Every
/// later step (the lock, libcryptsetup) works on this open descriptor, never on the path again.
///
/// - Important: The path comes from a request or from the configuration and may lead anywhere (a
///   FIFO, a directory, a character device, a symlink swapped in between two calls). It is resolved
///   once with `O_PATH`, which opens nothing (a FIFO cannot block, a device driver sees no open),
///   and `fstat` must then say block device or regular file; only then is the file reopened,
///   `O_RDONLY | O_NONBLOCK`, through that descriptor. libcryptsetup is handed ``pinnedPath``
///   (`/proc/self/fd/N`), which reopens this very file, so no check-then-use race remains.
public final class DiskDevice {
    /// What the device is.
    public enum Kind: Hashable, Sendable {
        /// A block device: keyd keeps its BSD lock for a whole request.
        case blockDevice
        /// A regular file holding an image: libcryptsetup locks it itself.
        case imageFile
    }

    /// The path as named, for messages and records only.
    public let path: String
    /// Block device or image file.
    public let kind: Kind
    /// The device number and inode of the opened file.
    public let identity: FileIdentity
    /// The open file, read-only and nonblocking.
    fileprivate let descriptor: FileDescriptor

    /// Opens `path` as described above. A FIFO, socket, directory or character device is
    /// ``SystemError/Code/unexpectedFileType`` and nothing but an `O_PATH` lookup touched it; a
    /// failed lookup or open throws its errno.
    public init(path: String) throws {
        let located = try syscall("open(O_PATH)", path) { open(path, keyd_o_path() | O_CLOEXEC) }
        defer { _ = Glibc.close(located) }
        let type = try Self.fileType(located, path: path)
        guard type == S_IFBLK || type == S_IFREG else {
            throw SystemError.unexpectedFileType(
                call: "open",
                path: path,
                found: fileTypeName(type),
                expected: "block device or regular file"
            )
        }
        let raw = try syscall("open", path) {
            open("/proc/self/fd/\(located)", O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        }
        descriptor = FileDescriptor(rawValue: raw)
        var info = stat()
        do {
            try syscall("fstat", path) { fstat(raw, &info) }
        } catch {
            _ = Glibc.close(raw)
            throw error
        }
        let reopened = info.st_mode & S_IFMT
        guard reopened == type else {
            _ = Glibc.close(raw)
            throw SystemError.unexpectedFileType(
                call: "open",
                path: path,
                found: fileTypeName(reopened),
                expected: fileTypeName(type)
            )
        }
        self.path = path
        kind = type == S_IFBLK ? .blockDevice : .imageFile
        identity = FileIdentity(info)
    }

    deinit {
        _ = Glibc.close(descriptor.rawValue)
    }

    /// `/proc/self/fd/N`: a path that reopens exactly this file, for libcryptsetup, which takes paths
    /// only. Valid while this value lives.
    public var pinnedPath: String { "/proc/self/fd/\(descriptor.rawValue)" }

    private static func fileType(_ raw: Int32, path: String) throws -> mode_t {
        var info = stat()
        try syscall("fstat", path) { fstat(raw, &info) }
        return info.st_mode & S_IFMT
    }
}

/// The device number and inode of a file: what tells two names of one file apart from two files.
public struct FileIdentity: Hashable, Sendable {
    /// `st_dev`.
    public let device: UInt64
    /// `st_ino`.
    public let inode: UInt64

    /// The identity in `info`.
    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

/// A BSD lock (`flock(2)`) on an open ``DiskDevice``, held while keyd reads, changes or activates
/// the state disk; released when the value ends.
///
/// This is the convention udev and systemd follow for whole-disk devices ("Locking Block Device
/// Access"): a process that holds `LOCK_EX` owns the device, and others back off. A device that
/// another process has locked is `EBUSY` at once; keyd never waits for it.
///
/// - Important: On a regular file (an image), libcryptsetup itself takes `flock(LOCK_EX)` on the
///   file for every metadata change, so holding this lock across a libcryptsetup call deadlocks the
///   caller. Use it there as a probe: take it, then release it before calling libcryptsetup.
public struct DeviceLock: ~Copyable {
    /// The locked device (kept alive, so its descriptor stays open while locked).
    private let device: DiskDevice

    /// Takes `LOCK_EX | LOCK_NB` on `device` (`LOCK_SH` when not `exclusive`, for reading);
    /// `EBUSY` when another process holds a conflicting lock.
    public init(_ device: DiskDevice, exclusive: Bool = true) throws {
        let raw = device.descriptor.rawValue
        while flock(raw, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let err = Glibc.errno
            if err == EINTR { continue }
            if err == EWOULDBLOCK {
                // Another process holds the device: the same errno libcryptsetup gives for a device in use.
                throw SystemError.errno(
                    EBUSY,
                    call: exclusive ? "flock(LOCK_EX)" : "flock(LOCK_SH)",
                    context: device.path
                )
            }
            throw SystemError.errno(err, call: "flock", context: device.path)
        }
        self.device = device
    }

    /// Releases the lock now (ends the value).
    public consuming func release() {}

    deinit {
        _ = flock(device.descriptor.rawValue, LOCK_UN)
    }
}
