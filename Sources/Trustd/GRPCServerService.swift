import GRPCCore
import ServiceLifecycle

/// A gRPC server as a swift-service-lifecycle service: `run` serves until graceful shutdown, which stops
/// accepting connections and lets in-flight RPCs finish (the group's shutdown deadline bounds them).
public struct GRPCServerService<Transport: ServerTransport>: Service, CustomStringConvertible {
    /// The server.
    public let server: GRPCServer<Transport>
    /// Its name in the log.
    public let name: String

    public init(server: GRPCServer<Transport>, name: String) {
        self.server = server
        self.name = name
    }

    public var description: String { name }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

extension ServiceGroupConfiguration.ServiceConfiguration {
    /// A gRPC server of `services` on `transport`, named `name` in the log, as a member of the group.
    static func grpc<Transport: ServerTransport>(
        _ transport: Transport,
        _ services: [any RegistrableRPCService],
        name: String
    ) -> Self {
        .init(service: GRPCServerService(server: GRPCServer(transport: transport, services: services), name: name))
    }
}
