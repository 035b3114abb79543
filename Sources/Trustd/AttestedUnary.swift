import GRPCCore
import GRPCProtobuf
import SwiftProtobuf

extension GRPCClient {
    /// A unary call over an aTLS connection whose client attests in the handshake: the one request is made
    /// by `makeRequest` only once the request stream opens, after the handshake bound this node's evidence
    /// (a plain unary call would make it before), and the one answer is read back.
    public func attestedUnary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ method: MethodDescriptor,
        options: CallOptions,
        makeRequest: @escaping @Sendable () throws -> Request
    ) async throws -> Response {
        try await bidirectionalStreaming(
            request: StreamingClientRequest(of: Request.self) { writer in try await writer.write(try makeRequest()) },
            descriptor: method,
            serializer: ProtobufSerializer<Request>(),
            deserializer: ProtobufDeserializer<Response>(),
            options: options
        ) { response in
            var first: Response?
            for try await message in response.messages where first == nil { first = message }
            guard let first else { throw RPCError(code: .internalError, message: "the service sent no answer") }
            return first
        }
    }
}
