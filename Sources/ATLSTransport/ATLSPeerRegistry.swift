import ATLS
import NIOCore
import Synchronization

/// The attested identities of a mutual aTLS server's open connections, keyed by the peer address in
/// gRPC's spelling (`ipv4:127.0.0.1:4711`, `ipv6:[::1]:4711`), so request handlers can ask for the
/// identity behind `ServerContext.remotePeer`.
public final class ATLSPeerRegistry: Sendable {
    private let connections = Mutex<[String: ATLSConnection]>([:])

    public init() {}

    /// The identity the connection from `peer` proved, or nil when there is none (unknown peer,
    /// handshake not finished, or a one-way server).
    public func identity(forPeer peer: String) -> ATLSPeerIdentity? {
        connections.withLock { $0[peer] }?.peer
    }

    /// The connection from `peer` (its challenge and claim on a deferred-check server), or nil.
    public func connection(forPeer peer: String) -> ATLSConnection? { connections.withLock { $0[peer] } }

    /// The number of connections registered.
    public var count: Int { connections.withLock { $0.count } }

    func insert(_ key: String, connection: ATLSConnection) { connections.withLock { $0[key] = connection } }

    func remove(_ key: String, connection: ATLSConnection) {
        connections.withLock { if $0[key] === connection { $0[key] = nil } }
    }

    /// A peer's address without its port (`127.0.0.1`, `::1`), the unit of per-source limits.
    public static func sourceAddress(of address: SocketAddress?) -> String {
        switch address {
        case .v4(let v4)?: v4.host
        case .v6(let v6)?: v6.host
        case .unixDomainSocket?: "unix"
        case nil: "unknown"
        }
    }

    /// gRPC's spelling of a peer address.
    static func key(for address: SocketAddress?) -> String {
        switch address {
        case .v4(let v4)?: "ipv4:\(v4.host):\(address?.port ?? 0)"
        case .v6(let v6)?: "ipv6:[\(v6.host)]:\(address?.port ?? 0)"
        case .unixDomainSocket?: "unix:\(address?.pathname ?? "")"
        case nil: "unknown"
        }
    }
}
