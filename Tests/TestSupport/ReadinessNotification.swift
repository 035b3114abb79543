#if canImport(Glibc)
import Glibc
#endif

/// A service manager's notification socket for one child (sd_notify(3)): the child finds it in
/// `NOTIFY_SOCKET` and says `READY=1` once it serves, so a test waits for that event instead of
/// probing the child's sockets in a loop.
public final class ReadinessNotification {
    /// The abstract socket name, as `NOTIFY_SOCKET` gives it (`@…`).
    public let address: String
    private let fd: Int32

    /// Binds a fresh abstract datagram socket.
    public init() throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: errno \(errno)") }
        let name = "asterism-test-notify-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        address = "@" + name
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        // An abstract name starts with a NUL byte in sun_path.
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { path in
            path[0] = 0
            for (index, byte) in bytes.enumerated() { path[index + 1] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            close(fd)
            throw HarnessError("bind \(address): errno \(errno)")
        }
    }

    deinit { close(fd) }

    /// Waits up to `seconds` for a datagram holding `READY=1`; false when `stillRunning` says the
    /// child ended first, or on timeout. Every other datagram (STATUS=…) is skipped.
    public func waitForReady(seconds: Int = 10, stillRunning: () -> Bool) -> Bool {
        let deadline = DispatchlessClock.nowMilliseconds() + seconds * 1000
        var buffer = [UInt8](repeating: 0, count: 4096)
        while DispatchlessClock.nowMilliseconds() < deadline {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            // A short slice, so a child that dies without a word is noticed.
            if poll(&fds, 1, 200) == 1 {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if count > 0,
                    String(decoding: buffer[..<count], as: UTF8.self).split(separator: "\n").contains("READY=1")
                {
                    return true
                }
            } else if !stillRunning() {
                return false
            }
        }
        return false
    }
}

/// Monotonic milliseconds without Foundation or Dispatch.
enum DispatchlessClock {
    static func nowMilliseconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return now.tv_sec * 1000 + now.tv_nsec / 1_000_000
    }
}
