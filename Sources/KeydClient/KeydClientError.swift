import KeydProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a call to keyd failed: unreachable, misbehaving, or refused with a status.
public struct KeydClientError: Error, Hashable, CustomStringConvertible, Sendable {
    private enum Code: Hashable, Sendable {
        case unreachable
        case io
        case closed
        case violation
        case refused(StatusCode)
        case invalidArgument
    }

    private let code: Code
    /// Human-readable text; never contains secrets.
    public let description: String

    private init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }

    /// The status keyd refused with, if it answered at all.
    public var refusal: StatusCode? {
        if case .refused(let status) = code { return status }
        return nil
    }

    /// Whether keyd could not be reached at all.
    public var isUnreachable: Bool { code == .unreachable }

    /// Connecting to the socket failed.
    public static func unreachable(path: String, errno: Int32) -> KeydClientError {
        KeydClientError(
            .unreachable,
            "cannot connect to keyd at \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        )
    }

    /// A read or write on the connection failed.
    public static func io(_ call: String, errno: Int32) -> KeydClientError {
        KeydClientError(.io, "\(call) on keyd connection: \(String(cString: strerror(errno))) (errno \(errno))")
    }

    /// keyd closed the connection before answering.
    public static func closed() -> KeydClientError {
        KeydClientError(.closed, "keyd closed the connection before answering")
    }

    /// keyd's answer broke the wire format.
    public static func violation(_ detail: String) -> KeydClientError {
        KeydClientError(.violation, "keyd answer breaks the protocol: \(detail)")
    }

    /// keyd answered with a status other than ok.
    public static func refused(_ status: StatusCode, request: RequestKind) -> KeydClientError {
        KeydClientError(.refused(status), "keyd refused \(request): \(status) (\(status.explanation))")
    }

    /// The caller passed a value the protocol cannot carry.
    public static func invalidArgument(_ detail: String) -> KeydClientError {
        KeydClientError(.invalidArgument, detail)
    }

    public static func == (lhs: KeydClientError, rhs: KeydClientError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}
