import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// Prometheus' scrape endpoint: `GET /metrics` answers the registry of ``TrustdMetrics`` in the text
/// exposition format; any other path is 404, another method 405. Bounded like every trustd HTTP listener.
public final class MetricsHTTPServer: Service, Sendable {
    /// The content type of the text exposition format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private let server: BoundedHTTPServer

    private init(server: BoundedHTTPServer) { self.server = server }

    /// Binds `host:port` (port 0: any) and serves `metrics`.
    public static func bind(
        host: String,
        port: Int,
        metrics: TrustdMetrics,
        limits: HTTPListenerLimits = HTTPListenerLimits(maxConnections: 16),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> MetricsHTTPServer {
        let server = try await BoundedHTTPServer.bind(
            host: host,
            port: port,
            limits: limits,
            connections: metrics.openConnections(listener: "metrics"),
            group: group
        ) { head, _ in
            answer(head, metrics: metrics)
        }
        return MetricsHTTPServer(server: server)
    }

    /// The bound address.
    public var localAddress: SocketAddress? { server.localAddress }

    /// Serves until graceful shutdown or cancellation.
    public func run() async throws { await server.run() }

    /// Stops accepting connections.
    public func close() async { await server.close() }

    /// The answer to one request.
    static func answer(_ head: HTTPRequestHead, metrics: TrustdMetrics) -> HTTPAnswer {
        let path = head.uri.prefix { $0 != "?" }
        guard path == "/metrics" else { return .text(.notFound, "not found") }
        guard head.method == .GET else {
            return .text(.methodNotAllowed, "method not allowed", headers: [("Allow", "GET")])
        }
        return HTTPAnswer(status: .ok, headers: [("Content-Type", contentType)], body: metrics.exposition())
    }
}
