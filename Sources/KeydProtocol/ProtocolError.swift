/// A violation of the wire format: the peer sent bytes that are not a valid frame or payload.
///
/// Every error maps to the status keyd answers with before it closes the connection.
public struct ProtocolError: Error, Hashable, CustomStringConvertible, Sendable {
    private enum Code: Hashable, Sendable {
        case frameLength
        case truncated
        case trailingBytes
        case unknownKind
        case fieldLength
        case badEnum
        case badText
        case badValue
    }

    private let code: Code
    /// What was wrong, naming the value and the limit; never contains payload bytes.
    public let detail: String

    private init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { detail }

    /// The status keyd answers with for this violation.
    public var status: StatusCode {
        switch code {
        case .frameLength: return .frameLength
        case .unknownKind: return .unknownRequest
        case .truncated, .trailingBytes, .fieldLength, .badEnum, .badText, .badValue: return .malformed
        }
    }

    /// The length prefix is outside the allowed range.
    public static func frameLength(_ length: Int, minimum: Int, maximum: Int) -> ProtocolError {
        if length > maximum {
            return ProtocolError(.frameLength, "frame length \(length) exceeds limit \(maximum)")
        }
        return ProtocolError(.frameLength, "frame length \(length) is below minimum \(minimum)")
    }

    /// A field needed more bytes than remained.
    public static func truncated(field: String, needed: Int, remaining: Int) -> ProtocolError {
        ProtocolError(.truncated, "\(field): needs \(needed) bytes, \(remaining) remain")
    }

    /// Bytes were left after the last field.
    public static func trailingBytes(_ count: Int, after kind: String) -> ProtocolError {
        ProtocolError(.trailingBytes, "\(kind): \(count) trailing bytes after the last field")
    }

    /// The request kind is not in the table.
    public static func unknownKind(_ raw: UInt16) -> ProtocolError {
        ProtocolError(.unknownKind, "unknown request kind 0x\(String(raw, radix: 16))")
    }

    /// A length-prefixed field is longer or shorter than its bounds.
    public static func fieldLength(field: String, length: Int, bounds: ClosedRange<Int>) -> ProtocolError {
        ProtocolError(
            .fieldLength,
            "\(field): length \(length) outside \(bounds.lowerBound)...\(bounds.upperBound)"
        )
    }

    /// An enumerated field has a value outside its closed list.
    public static func badEnum(field: String, value: Int) -> ProtocolError {
        ProtocolError(.badEnum, "\(field): value \(value) is not in the closed list")
    }

    /// A text field is not UTF-8 or contains NUL or control characters.
    public static func badText(field: String) -> ProtocolError {
        ProtocolError(.badText, "\(field): not UTF-8 text without control characters")
    }

    /// A decoded value breaks a rule of its field.
    public static func badValue(field: String, _ rule: String) -> ProtocolError {
        ProtocolError(.badValue, "\(field): \(rule)")
    }

    public static func == (lhs: ProtocolError, rhs: ProtocolError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}
