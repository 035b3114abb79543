import KeydProtocol

/// Which of keyd's two listening sockets a connection arrived on.
public enum ListenerRole: String, Sendable, CaseIterable {
    /// `/run/keyd/keyd.sock`, for trustd.
    case trustd = "keyd"
    /// `/run/keyd/admin.sock`, for keydctl.
    case admin = "admin"
}

/// Maps a connection's socket and `SO_PEERCRED` identity to a peer class, once per connection.
///
/// - Important: the only uid/gid comparison in keyd; everything downstream sees a `PeerClass`.
public struct PeerClassifier: Sendable, Hashable {
    /// uids accepted as trustd on the trustd socket.
    public let trustdUIDs: Set<UInt32>
    /// gids accepted as trustd on the trustd socket.
    public let trustdGIDs: Set<UInt32>
    /// uids accepted as admin on the admin socket.
    public let adminUIDs: Set<UInt32>
    /// gids accepted as admin on the admin socket.
    public let adminGIDs: Set<UInt32>

    /// Creates a classifier from configured lists.
    public init(trustdUIDs: [UInt32], trustdGIDs: [UInt32], adminUIDs: [UInt32], adminGIDs: [UInt32]) {
        self.trustdUIDs = Set(trustdUIDs)
        self.trustdGIDs = Set(trustdGIDs)
        self.adminUIDs = Set(adminUIDs)
        self.adminGIDs = Set(adminGIDs)
    }

    /// The class of a peer with `uid`/`gid` on `listener`; `stranger` when nothing matches.
    public func classify(listener: ListenerRole, uid: UInt32, gid: UInt32) -> PeerClass {
        switch listener {
        case .trustd:
            return trustdUIDs.contains(uid) || trustdGIDs.contains(gid) ? .trustd : .stranger
        case .admin:
            return adminUIDs.contains(uid) || adminGIDs.contains(gid) ? .admin : .stranger
        }
    }
}
