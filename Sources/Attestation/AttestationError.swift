/// The one error type of Attestation: a failure code, a message naming the value and the limit, and
/// where it was thrown.
///
/// Errors are for evidence that cannot be read at all (malformed bytes, bad JSON, unusable keys).
/// Evidence that reads but fails a policy is not an error: it is a ``PolicyResult`` with outcome
/// `failed`, which names the policy and the values involved.
/// Two errors are equal when their codes are equal, whatever their messages.
public struct AttestationError: Error, Hashable, CustomStringConvertible, Sendable {
    /// The kind of failure; errors compare equal by code alone.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String

        init(_ name: String) { self.name = name }

        public var description: String { name }

        /// Fewer bytes than the structure needs.
        public static let truncated = Code("truncated")
        /// Bytes left over after a structure that must be read to its end.
        public static let trailingBytes = Code("trailingBytes")
        /// A length field above its limit.
        public static let lengthExceeded = Code("lengthExceeded")
        /// An algorithm, curve, scheme or type this module does not accept.
        public static let unsupported = Code("unsupported")
        /// A well-formed field whose value is not allowed.
        public static let invalidValue = Code("invalidValue")
        /// A key or signature the crypto library refused.
        public static let invalidKey = Code("invalidKey")
        /// A certificate that does not parse or lacks what it must carry.
        public static let invalidCertificate = Code("invalidCertificate")
        /// A JSON document that does not decode.
        public static let invalidJSON = Code("invalidJSON")
        /// Event log structure that cannot be read.
        public static let invalidEventLog = Code("invalidEventLog")
    }

    /// What failed.
    public let code: Code
    private let reason: String
    private let file: String
    private let line: UInt

    init(code: Code, reason: String, file: String, line: UInt) {
        self.code = code
        self.reason = reason
        self.file = file
        self.line = line
    }

    /// The message alone, without the code or the source location.
    public var message: String { reason }

    public var description: String { "AttestationError.\(code): \(reason) (\(file):\(line))" }

    public static func == (lhs: AttestationError, rhs: AttestationError) -> Bool { lhs.code == rhs.code }

    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}

extension AttestationError {
    /// `what` needs `needed` more bytes but only `available` remain.
    static func truncated(
        _ what: String,
        needed: Int,
        available: Int,
        file: String = #fileID,
        line: UInt = #line
    ) -> Self {
        Self(code: .truncated, reason: "\(what): needs \(needed) bytes, \(available) remain", file: file, line: line)
    }

    /// `count` bytes follow the end of `what`.
    static func trailingBytes(_ what: String, count: Int, file: String = #fileID, line: UInt = #line) -> Self {
        Self(code: .trailingBytes, reason: "\(what): \(count) trailing bytes", file: file, line: line)
    }

    /// A length field of `what` is `length`, above `limit`.
    static func lengthExceeded(
        _ what: String,
        length: Int,
        limit: Int,
        file: String = #fileID,
        line: UInt = #line
    ) -> Self {
        Self(code: .lengthExceeded, reason: "\(what) length \(length) exceeds limit \(limit)", file: file, line: line)
    }

    /// `what` has value `value`, which is not supported.
    static func unsupported(_ what: String, _ value: String, file: String = #fileID, line: UInt = #line) -> Self {
        Self(code: .unsupported, reason: "\(what) \(value) is not supported", file: file, line: line)
    }

    /// `what` is well-formed but `detail` says why its value is refused.
    static func invalidValue(_ what: String, _ detail: String, file: String = #fileID, line: UInt = #line) -> Self {
        Self(code: .invalidValue, reason: "\(what): \(detail)", file: file, line: line)
    }

    /// The crypto library refused `what`.
    static func invalidKey(_ what: String, _ detail: String, file: String = #fileID, line: UInt = #line) -> Self {
        Self(code: .invalidKey, reason: "\(what): \(detail)", file: file, line: line)
    }

    /// A certificate that does not parse or lacks a required part.
    static func invalidCertificate(_ what: String, _ detail: String, file: String = #fileID, line: UInt = #line) -> Self
    {
        Self(code: .invalidCertificate, reason: "\(what): \(detail)", file: file, line: line)
    }

    /// A JSON document that does not decode.
    static func invalidJSON(_ what: String, _ detail: String, file: String = #fileID, line: UInt = #line) -> Self {
        Self(code: .invalidJSON, reason: "\(what): \(detail)", file: file, line: line)
    }

    /// An event log that cannot be read at `offset`.
    static func invalidEventLog(_ detail: String, offset: Int, file: String = #fileID, line: UInt = #line) -> Self {
        Self(code: .invalidEventLog, reason: "event log at byte \(offset): \(detail)", file: file, line: line)
    }
}
