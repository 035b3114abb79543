/// The `key = value` file format of keyd's and trustd's configurations, and the conversions of
/// values both use; each configuration keeps its own keys and its own value kinds.
///
/// One setting per line (`\n` or `\r\n`); blank lines and lines starting with `#` are ignored;
/// spaces, tabs and carriage returns around keys and values are trimmed. Comments take a whole
/// line: `#` after a value is part of the value. Every key at most once.
public enum ConfigurationText {
    /// Calls `apply` with each line of `text` that sets a key, in file order, so the first bad line
    /// is the one reported.
    /// - Throws: ``CoreError`` naming the line: the text is over `maxLength` bytes, a line has no `=`,
    ///   a key is not one of `Key`'s raw values or is set twice; or what `apply` throws.
    public static func read<Key: RawRepresentable & CaseIterable>(
        _ text: String,
        keys: Key.Type,
        maxLength: Int,
        apply: (Key, ConfigurationField) throws(CoreError) -> Void
    ) throws(CoreError) where Key.RawValue == String {
        let byteCount = text.utf8.count
        guard byteCount <= maxLength else {
            throw .configurationTooLarge(byteCount: byteCount, limit: maxLength)
        }
        var firstSeen: [String: Int] = [:]
        var lineNumber = 0
        // "\r\n" is one Character, so split on both spellings of a line end.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let line = trimmed(rawLine)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let equals = line.firstIndex(of: "=") else {
                throw .configurationMissingEquals(lineNumber: lineNumber)
            }
            let name = String(trimmed(line[..<equals]))
            let value = String(trimmed(line[line.index(after: equals)...]))
            guard let key = Key(rawValue: name) else {
                throw .configurationUnknownKey(lineNumber: lineNumber, key: name, known: Key.allCases.map(\.rawValue))
            }
            if let first = firstSeen[name] {
                throw .configurationDuplicateKey(lineNumber: lineNumber, key: name, firstLineNumber: first)
            }
            firstSeen[name] = lineNumber
            try apply(key, ConfigurationField(key: name, value: value, lineNumber: lineNumber))
        }
    }
}

/// One `key = value` line being converted; every failure names its line and key.
public struct ConfigurationField: Sendable {
    /// The key as written.
    public var key: String
    /// The value, trimmed.
    public var value: String
    /// The line, counted from 1.
    public var lineNumber: Int

    /// A field of `key` on `lineNumber`.
    public init(key: String, value: String, lineNumber: Int) {
        self.key = key
        self.value = value
        self.lineNumber = lineNumber
    }

    /// The comma-separated items of the value, each trimmed, as fields of the same key and line;
    /// empty text is no item, and an empty item stays (for the caller to refuse).
    public func items() -> [ConfigurationField] {
        if value.isEmpty { return [] }
        return value.split(separator: ",", omittingEmptySubsequences: false).map {
            ConfigurationField(key: key, value: String(trimmed($0)), lineNumber: lineNumber)
        }
    }

    /// The error for a value that is not `expected` (for example "a decimal number").
    public func invalid(expected: String) -> CoreError {
        .configurationBadNumber(lineNumber: lineNumber, key: key, value: value, expected: expected)
    }

    /// The error for a value outside `limit`, already rendered (for example "1…65535").
    public func outOfRange(limit: String) -> CoreError {
        .configurationOutOfRange(lineNumber: lineNumber, key: key, value: value, limit: limit)
    }

    /// The error for this line set beside `otherKey` (on `otherLineNumber`, or its default when nil),
    /// which `rule` forbids.
    public func conflict(with otherKey: String, onLine otherLineNumber: Int?, rule: String) -> CoreError {
        .configurationConflict(
            lineNumber: lineNumber,
            key: key,
            otherKey: otherKey,
            otherLineNumber: otherLineNumber,
            rule: rule
        )
    }

    /// A decimal integer inside `range`.
    public func integer(in range: ClosedRange<Int>) throws(CoreError) -> Int {
        guard let number = decimal(Substring(value)) else { throw invalid(expected: "a decimal number") }
        guard number <= UInt64(range.upperBound), range.contains(Int(number)) else {
            throw outOfRange(limit: "\(range.lowerBound)…\(range.upperBound)")
        }
        return Int(number)
    }

    /// Exactly `true` or `false`.
    public func boolean() throws(CoreError) -> Bool {
        switch value {
        case "true": return true
        case "false": return false
        default: throw invalid(expected: "true or false")
        }
    }

    /// One of `choices`, exactly.
    public func oneOf(_ choices: [String]) throws(CoreError) -> String {
        guard choices.contains(value) else { throw invalid(expected: choices.joined(separator: " or ")) }
        return value
    }

    /// An absolute path without NUL, at most 4096 bytes.
    public func absolutePath() throws(CoreError) -> String {
        guard value.hasPrefix("/"), value.utf8.count <= 4096, !value.utf8.contains(0) else {
            throw invalid(expected: "an absolute path")
        }
        return value
    }
}

/// `text` without leading and trailing spaces, tabs and carriage returns.
func trimmed(_ text: Substring) -> Substring {
    let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
    guard let first = text.firstIndex(where: { !isBlank($0) }),
        let last = text.lastIndex(where: { !isBlank($0) })
    else { return text[text.endIndex...] }
    return text[first...last]
}

/// A run of decimal digits as a number, saturating at `UInt64.max` (so it reads as out of
/// range rather than malformed); nil for anything else.
func decimal(_ text: Substring) -> UInt64? {
    let digits = text.utf8
    guard !digits.isEmpty, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
        return nil
    }
    var number: UInt64 = 0
    for digit in digits {
        let (times10, overflowA) = number.multipliedReportingOverflow(by: 10)
        let (sum, overflowB) = times10.addingReportingOverflow(UInt64(digit - UInt8(ascii: "0")))
        if overflowA || overflowB { return .max }
        number = sum
    }
    return number
}
