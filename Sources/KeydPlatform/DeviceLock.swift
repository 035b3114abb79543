import Glibc

/// An exclusive BSD lock (`flock(2)`) on a block device or image file, held while keyd changes or
/// activates the state disk; released when the value ends.
///
/// This is the convention udev and systemd follow for whole-disk devices ("Locking Block Device
/// Access"): a process that holds `LOCK_EX` owns the device, and others back off. A device that
/// another process has locked is `EBUSY` at once; keyd never waits for it.
///
/// - Important: On a regular file (an image), libcryptsetup itself takes `flock(LOCK_EX)` on the
///   file for every metadata change, so holding this lock across a libcryptsetup call deadlocks the
///   caller. Use it there as a probe: take it, then release it before calling libcryptsetup.
public struct DeviceLock: ~Copyable {
    /// The locked descriptor.
    private let descriptor: FileDescriptor
    /// Whether the locked path is a block device (not a regular file).
    public let isBlockDevice: Bool

    /// Opens `path` read-only and takes `LOCK_EX | LOCK_NB` (`LOCK_SH` when not `exclusive`, for
    /// reading); `EBUSY` when another process holds a conflicting lock.
    public init(path: String, exclusive: Bool = true) throws {
        let raw = try syscall("open", path) { open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY) }
        while flock(raw, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let err = Glibc.errno
            if err == EINTR { continue }
            _ = Glibc.close(raw)
            if err == EWOULDBLOCK {
                // Another process holds the device: the same errno libcryptsetup gives for a device in use.
                throw SystemError.errno(EBUSY, call: exclusive ? "flock(LOCK_EX)" : "flock(LOCK_SH)", context: path)
            }
            throw SystemError.errno(err, call: "flock", context: path)
        }
        var status = stat()
        isBlockDevice = fstat(raw, &status) == 0 && (status.st_mode & S_IFMT) == S_IFBLK
        descriptor = FileDescriptor(rawValue: raw)
    }

    /// Releases the lock now (ends the value).
    public consuming func release() {}

    deinit {
        // Closing the last descriptor of the open file description releases the lock.
        _ = Glibc.close(descriptor.rawValue)
    }
}
