import AsterismProto
import FoundationEssentials
import GRPCCore
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// Constellation's HTTP form of VerificationService: `GET /?nonce=<base64url with padding>` answers
/// `200 {"data":"<standard base64 of the document>"}` (Constellation binding). One request per
/// connection, bounded in size and time (``HTTPListenerLimits``), behind the service's admission gate.
public final class VerificationHTTPServer: Service, Sendable {
    private let server: BoundedHTTPServer

    private init(server: BoundedHTTPServer) { self.server = server }

    /// Binds `host:port` (port 0: any) and serves `service`.
    public static func bind(
        host: String,
        port: Int,
        service: VerificationService,
        metrics: TrustdMetrics,
        limits: HTTPListenerLimits = HTTPListenerLimits(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> VerificationHTTPServer {
        let server = try await BoundedHTTPServer.bind(
            host: host,
            port: port,
            limits: limits,
            connections: metrics.openConnections(listener: "verification-http"),
            group: group
        ) { head, peer in
            await answer(head, peer: peer, service: service)
        }
        return VerificationHTTPServer(server: server)
    }

    /// The bound address.
    public var localAddress: SocketAddress? { server.localAddress }

    /// Serves until graceful shutdown or cancellation.
    public func run() async throws { await server.run() }

    /// Stops accepting connections.
    public func close() async { await server.close() }

    /// The answer to one request.
    static func answer(_ head: HTTPRequestHead, peer: SocketAddress?, service: VerificationService) async -> HTTPAnswer
    {
        let nonce: [UInt8]
        switch parse(method: head.method, uri: head.uri) {
        case .success(let value): nonce = value
        case .failure(let refusal): return refusal.answer
        }
        do {
            let evidence = try await service.attest(
                nonce: nonce,
                binding: .constellation,
                peer: peer.map { "\($0)" } ?? "unknown",
                source: AdmissionSource.key(peer),
                transport: .http
            )
            return try document(evidence.document)
        } catch let error as RPCError {
            return answer(for: error)
        } catch {
            return .text(.internalServerError, "internal error")
        }
    }

    /// Why a request was refused before any evidence was asked for.
    struct RequestRefusal: Error, Equatable {
        /// The HTTP status.
        var status: HTTPResponseStatus
        /// The short text sent back.
        var message: String

        var answer: HTTPAnswer {
            .text(status, message, headers: status == .methodNotAllowed ? [("Allow", "GET")] : [])
        }
    }

    /// The longest `nonce` parameter read: 32 bytes are 44 base64 characters.
    static let maxNonceText = 64

    /// The nonce of `GET /?nonce=…`, or why the request is refused (404 for another path, 405 for
    /// another method, 400 for a missing, repeated, non-base64url or wrong-size nonce).
    static func parse(method: HTTPMethod, uri: String) -> Result<[UInt8], RequestRefusal> {
        guard let components = URLComponents(string: uri) else {
            return .failure(RequestRefusal(status: .badRequest, message: "malformed request target"))
        }
        guard components.path == "/" else { return .failure(RequestRefusal(status: .notFound, message: "not found")) }
        guard method == .GET else {
            return .failure(RequestRefusal(status: .methodNotAllowed, message: "method not allowed"))
        }
        let values = (components.queryItems ?? []).filter { $0.name == "nonce" }.map { $0.value ?? "" }
        guard values.count == 1, let text = values.first, !text.isEmpty else {
            return .failure(RequestRefusal(status: .badRequest, message: "nonce parameter is required exactly once"))
        }
        guard let nonce = decodeBase64URL(text) else {
            return .failure(RequestRefusal(status: .badRequest, message: "nonce is not base64url with padding"))
        }
        guard nonce.count == VerificationService.nonceLength else {
            return .failure(
                RequestRefusal(status: .badRequest, message: "nonce must be \(VerificationService.nonceLength) bytes")
            )
        }
        return .success(nonce)
    }

    /// Base64url with padding (Go's `base64.URLEncoding`): only `A–Z a–z 0–9 - _`, `=` padding to a
    /// multiple of 4; nil otherwise or beyond ``maxNonceText`` characters.
    static func decodeBase64URL(_ text: String) -> [UInt8]? {
        guard text.utf8.count <= maxNonceText, text.utf8.count % 4 == 0 else { return nil }
        let body = text.utf8.prefix { $0 != UInt8(ascii: "=") }
        let padding = text.utf8.count - body.count
        guard padding <= 2, text.utf8.suffix(padding).allSatisfy({ $0 == UInt8(ascii: "=") }) else { return nil }
        var standard: [UInt8] = []
        standard.reserveCapacity(text.utf8.count)
        for byte in body {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                standard.append(byte)
            case UInt8(ascii: "-"): standard.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): standard.append(UInt8(ascii: "/"))
            default: return nil
            }
        }
        standard += [UInt8](repeating: UInt8(ascii: "="), count: padding)
        return Data(base64Encoded: Data(standard)).map { Array($0) }
    }

    /// The JSON body of Constellation's answer.
    private struct AttestationBody: Encodable {
        var data: String
    }

    /// `200 {"data":"<standard base64>"}` with a newline, as Go's `json.Encoder` writes it.
    static func document(_ document: [UInt8]) throws -> HTTPAnswer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let json = try encoder.encode(AttestationBody(data: Data(document).base64EncodedString()))
        return HTTPAnswer(status: .ok, headers: [("Content-Type", "application/json")], body: Array(json) + [0x0A])
    }

    /// The HTTP status of the service's sanitized gRPC error.
    static func answer(for error: RPCError) -> HTTPAnswer {
        switch error.code {
        case .invalidArgument:
            return .text(.badRequest, error.message)
        case .resourceExhausted:
            var headers: [(String, String)] = []
            if let milliseconds = AdmissionGate.retryAfterMilliseconds(of: error) {
                headers.append(("Retry-After", String((milliseconds + 999) / 1000)))
                headers.append((AdmissionGate.retryAfterKey, String(milliseconds)))
            }
            return .text(.tooManyRequests, AdmissionGate.refusalMessage, headers: headers)
        default:
            return .text(.serviceUnavailable, "attestation unavailable")
        }
    }
}
