import KeydProtocol

/// The one error type of KeydCore: a failure code, a message naming the value and the limit, and
/// where it was thrown.
///
/// Two errors are equal when their codes are equal, whatever their messages, so tests and callers
/// compare against any instance of a factory. To add a failure from another file of this module,
/// declare a `static let` on ``CoreError/Code`` and a factory in an extension of `CoreError`.
/// - Important: Messages never contain key material; lengths and positions only.
public struct CoreError: Error, Hashable, CustomStringConvertible, Sendable {
    /// The kind of failure; errors compare equal by code alone.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String

        /// Makes a code; `name` must be unique within KeydCore.
        init(_ name: String) {
            self.name = name
        }

        public var description: String { name }
    }

    /// What failed.
    public let code: Code
    private let reason: String
    private let file: String
    private let line: UInt

    /// Makes an error; use the named factories instead of calling this directly.
    init(code: Code, reason: String, file: String, line: UInt) {
        self.code = code
        self.reason = reason
        self.file = file
        self.line = line
    }

    /// The message alone, without the code or the source location.
    public var message: String { reason }

    public var description: String {
        "CoreError.\(code): \(reason) (\(file):\(line))"
    }

    public static func == (lhs: CoreError, rhs: CoreError) -> Bool {
        lhs.code == rhs.code
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
    }
}

// MARK: - Key custody

extension CoreError.Code {
    /// A secret is shorter or longer than its type allows.
    public static let secretLength = CoreError.Code("secretLength")
    /// A disk UUID is not a lowercase 8-4-4-4-12 hexadecimal UUID.
    public static let invalidDiskUUID = CoreError.Code("invalidDiskUUID")
}

extension CoreError {
    /// A secret's length is outside `limit`; `what` names the secret, never its bytes.
    static func secretLength(
        _ what: String,
        length: Int,
        limit: ClosedRange<Int>,
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        let bound =
            length < limit.lowerBound ? "is under minimum \(limit.lowerBound)" : "exceeds limit \(limit.upperBound)"
        return CoreError(
            code: .secretLength,
            reason: "\(what) length \(length) \(bound)",
            file: file,
            line: line
        )
    }

    /// A disk UUID that is not lowercase 8-4-4-4-12 hex; UUIDs are not secret, so it is quoted.
    static func invalidDiskUUID(_ uuid: String, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(
            code: .invalidDiskUUID,
            reason: "disk UUID \(quotedForMessage(uuid)) is not a lowercase 8-4-4-4-12 hexadecimal UUID",
            file: file,
            line: line
        )
    }
}

// MARK: - Configuration

extension CoreError.Code {
    /// The configuration text is larger than its limit.
    public static let configurationTooLarge = CoreError.Code("configurationTooLarge")
    /// A configuration line is neither blank, a comment nor `key = value`.
    public static let configurationMissingEquals = CoreError.Code("configurationMissingEquals")
    /// A configuration key is not one the file's reader knows.
    public static let configurationUnknownKey = CoreError.Code("configurationUnknownKey")
    /// A configuration key appears twice.
    public static let configurationDuplicateKey = CoreError.Code("configurationDuplicateKey")
    /// A configuration value is not a number of the expected form.
    public static let configurationBadNumber = CoreError.Code("configurationBadNumber")
    /// A configuration number is outside the key's range.
    public static let configurationOutOfRange = CoreError.Code("configurationOutOfRange")
    /// Two configuration lines are each valid but cannot hold together.
    public static let configurationConflict = CoreError.Code("configurationConflict")
}

extension CoreError {
    /// The whole configuration text is over `limit` bytes.
    static func configurationTooLarge(
        byteCount: Int,
        limit: Int,
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        CoreError(
            code: .configurationTooLarge,
            reason: "configuration is \(byteCount) bytes, exceeds limit \(limit)",
            file: file,
            line: line
        )
    }

    /// Line `lineNumber` (1-based) holds no `=`.
    static func configurationMissingEquals(lineNumber: Int, file: String = #fileID, line: UInt = #line) -> CoreError {
        CoreError(
            code: .configurationMissingEquals,
            reason: "configuration line \(lineNumber): expected 'key = value', found no '='",
            file: file,
            line: line
        )
    }

    /// Line `lineNumber` names a key that the file's reader does not know.
    static func configurationUnknownKey(
        lineNumber: Int,
        key: String,
        known: [String],
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        CoreError(
            code: .configurationUnknownKey,
            reason:
                "configuration line \(lineNumber): unknown key \(quotedForMessage(key)); known keys: \(known.joined(separator: ", "))",
            file: file,
            line: line
        )
    }

    /// Line `lineNumber` repeats a key first set on `firstLineNumber`.
    static func configurationDuplicateKey(
        lineNumber: Int,
        key: String,
        firstLineNumber: Int,
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        CoreError(
            code: .configurationDuplicateKey,
            reason: "configuration line \(lineNumber): key '\(key)' already set on line \(firstLineNumber)",
            file: file,
            line: line
        )
    }

    /// Line `lineNumber` gives `value` where `key` expects `expected` (for example "a decimal number").
    static func configurationBadNumber(
        lineNumber: Int,
        key: String,
        value: String,
        expected: String,
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        CoreError(
            code: .configurationBadNumber,
            reason: "configuration line \(lineNumber): '\(key)' value \(quotedForMessage(value)) is not \(expected)",
            file: file,
            line: line
        )
    }

    /// Line `lineNumber` gives `key` the number `value`, outside `limit` (already rendered, e.g. "1…65536").
    static func configurationOutOfRange(
        lineNumber: Int,
        key: String,
        value: String,
        limit: String,
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        CoreError(
            code: .configurationOutOfRange,
            reason:
                "configuration line \(lineNumber): '\(key)' value \(value.count > 24 ? value.prefix(24) + "…" : value) is outside \(limit)",
            file: file,
            line: line
        )
    }

    /// Line `lineNumber` sets `key`, which `rule` forbids beside `otherKey` of line `otherLineNumber`.
    static func configurationConflict(
        lineNumber: Int,
        key: String,
        otherKey: String,
        otherLineNumber: Int?,
        rule: String,
        file: String = #fileID,
        line: UInt = #line
    ) -> CoreError {
        let other = otherLineNumber.map { "'\(otherKey)' on line \($0)" } ?? "the default of '\(otherKey)'"
        return CoreError(
            code: .configurationConflict,
            reason: "configuration line \(lineNumber): '\(key)' conflicts with \(other): \(rule)",
            file: file,
            line: line
        )
    }
}
