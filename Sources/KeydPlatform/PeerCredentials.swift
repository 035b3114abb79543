import CKeydShims
import Glibc

/// The credentials the kernel recorded for the peer of a Unix socket when it connected (SO_PEERCRED).
public struct PeerCredentials: Hashable, Sendable, CustomStringConvertible {
    /// The peer's process ID.
    public var pid: Int32
    /// The peer's effective user ID.
    public var uid: UInt32
    /// The peer's effective group ID.
    public var gid: UInt32

    /// Credentials from known values (tests, stubs).
    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    public var description: String { "pid \(pid) uid \(uid) gid \(gid)" }

    /// Reads SO_PEERCRED from a connected Unix socket.
    public static func read(from fd: FileDescriptor) throws -> PeerCredentials {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        try syscall("getsockopt(SO_PEERCRED)", fd.description) { keyd_peer_credentials(fd.rawValue, &pid, &uid, &gid) }
        return PeerCredentials(pid: pid, uid: uid, gid: gid)
    }
}
