#if canImport(Glibc)
import Glibc
#endif

/// Fills a `sockaddr_un` for `path`; throws if the path does not fit.
private func unixAddress(_ path: String) throws(BenchError) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard bytes.count < capacity else {
        throw .usage("socket path length \(bytes.count) exceeds limit \(capacity - 1): \(path)")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return address
}

/// A blocking stream socket bound to `path` and listening.
func listenUnix(path: String) throws(BenchError) -> Int32 {
    var address = try unixAddress(path)
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw .system("socket", path, errno: errno) }
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0, listen(fd, 4) == 0 else {
        let saved = errno
        close(fd)
        throw .system("bind/listen", path, errno: saved)
    }
    return fd
}

/// A blocking stream socket connected to `path`, with 10 s send and receive timeouts.
func connectUnix(path: String) throws(BenchError) -> Int32 {
    var address = try unixAddress(path)
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw .system("socket", path, errno: errno) }
    // A hung peer fails the run after 10 s instead of blocking it forever.
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard connected == 0 else {
        let saved = errno
        close(fd)
        throw .system("connect", path, errno: saved)
    }
    return fd
}

/// Writes all `count` bytes; returns false on error or a closed peer.
@inline(__always)
func writeAll(_ fd: Int32, _ base: UnsafeRawPointer, _ count: Int) -> Bool {
    var done = 0
    while done < count {
        let n = send(fd, base + done, count - done, Int32(MSG_NOSIGNAL))
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        done += n
    }
    return true
}

/// Reads exactly `count` bytes; returns false on error or EOF before the end.
@inline(__always)
func readExactly(_ fd: Int32, _ base: UnsafeMutableRawPointer, _ count: Int) -> Bool {
    var done = 0
    while done < count {
        let n = recv(fd, base + done, count - done, 0)
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        if n == 0 { return false }
        done += n
    }
    return true
}
