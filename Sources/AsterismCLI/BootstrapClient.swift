import ATLS
import ATLSTransport
import AsterismProto
import FoundationEssentials
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOPosix

/// Why an Init or Recover call did not succeed.
public struct BootstrapCallError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// The node's gRPC status, when it answered with one.
    public let code: RPCError.Code?

    init(_ description: String, code: RPCError.Code? = nil) {
        self.description = description
        self.code = code
    }
}

/// The operator's side of a control plane's Init, Recover and policy push: one-way aTLS (the node attests, `verifier`
/// checks it before any request byte is sent), one call per connection, bounded by `timeout`.
public struct BootstrapClient: Sendable {
    /// The node's `bootstrap-listen` address.
    public let host: String
    public let port: Int
    /// Checks the node's attested certificate.
    public let verifier: ATLSVerifier
    /// One call's limit, handshake included.
    public let timeout: Duration

    public init(host: String, port: Int, verifier: ATLSVerifier, timeout: Duration = .seconds(120)) {
        self.host = host
        self.port = port
        self.verifier = verifier
        self.timeout = timeout
    }

    /// `init.API/Init`: streams the node's log lines to `onLog`, answers its success message.
    public func initialize(
        _ request: Init_InitRequest,
        threadPool: NIOThreadPool,
        onLog: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws -> Init_InitSuccessResponse {
        try await withClient(threadPool: threadPool) { grpc in
            try await Init_API.Client(wrapping: grpc).`init`(
                request: ClientRequest(message: request),
                options: options
            ) { response in
                for try await message in response.messages {
                    switch message.kind {
                    case .log(let log)?: onLog(String(decoding: log.log, as: UTF8.self))
                    case .initSuccess(let success)?: return success
                    case .initFailure(let failure)?: throw BootstrapCallError("the node failed: \(failure.error)")
                    case nil: continue
                    }
                }
                throw BootstrapCallError("the node ended the init stream without an outcome")
            }
        }
    }

    /// `recoverproto.API/Recover`.
    public func recover(
        _ request: Recoverproto_RecoverMessage,
        threadPool: NIOThreadPool
    ) async throws -> Recoverproto_RecoverResponse {
        try await withClient(threadPool: threadPool) { grpc in
            try await Recoverproto_API.Client(wrapping: grpc).recover(request, options: options)
        }
    }

    /// `policy.API/Push`: keyd's policy version and digest once it accepted `signedPolicy`.
    public func push(signedPolicy: [UInt8], threadPool: NIOThreadPool) async throws -> Policy_PushResponse {
        var message = Policy_PushRequest()
        message.signedPolicy = Data(signedPolicy)
        let request = message
        return try await withClient(threadPool: threadPool) { grpc in
            try await Policy_API.Client(wrapping: grpc).push(request, options: options)
        }
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        options.waitForReady = false
        return options
    }

    /// Runs `body` with a gRPC client on a fresh aTLS connection; RPC errors become ``BootstrapCallError``.
    private func withClient<T: Sendable>(
        threadPool: NIOThreadPool,
        _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        let client = ATLSClient(configuration: .init(verifier: verifier), threadPool: threadPool)
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.connection.maxIdleTime = nil
        config.backoff = .init(initial: timeout, max: timeout, multiplier: 1, jitter: 0)
        let target: any ResolvableTarget =
            if host.contains(":") {
                .ipv6(address: host, port: port)
            } else if host.allSatisfy({ $0.isNumber || $0 == "." }) {
                .ipv4(address: host, port: port)
            } else {
                .dns(host: host, port: port)
            }
        do {
            return try await withGRPCClient(transport: try client.grpcTransport(target: target, config: config)) {
                try await body($0)
            }
        } catch let error as RPCError {
            throw BootstrapCallError("\(error.code): \(error.message)", code: error.code)
        }
    }
}
