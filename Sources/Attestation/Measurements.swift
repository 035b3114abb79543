import FoundationEssentials

/// Expected PCR values in Constellation's JSON form:
/// `{"<index>": {"expected": "<hex of 32 or 48 bytes>", "warnOnly": bool}}` or `{"<index>": "<hex>"}`
/// (a bare hex string is enforced). PCRs not listed are ignored.
public struct Measurements: Hashable, Sendable {
    /// One expected PCR value.
    public struct Expected: Hashable, Sendable {
        public let value: [UInt8]
        /// A mismatch is reported as a warning instead of failing validation.
        public let warnOnly: Bool

        public init(value: [UInt8], warnOnly: Bool = false) {
            self.value = value
            self.warnOnly = warnOnly
        }
    }

    /// Expected values by PCR index.
    public let entries: [Int: Expected]

    public init(_ entries: [Int: Expected]) { self.entries = entries }

    /// Parses the JSON form; indices 0…23, values of 32 or 48 bytes.
    public init(json: some Collection<UInt8>) throws(AttestationError) {
        let object: [String: Entry]
        do {
            object = try JSONDecoder().decode([String: Entry].self, from: Data(json))
        } catch {
            throw .invalidJSON("measurements", "\(error)")
        }
        var entries: [Int: Expected] = [:]
        for (key, entry) in object {
            guard let index = Int(key), (0...23).contains(index), String(index) == key else {
                throw .invalidValue("measurements", "key \"\(key)\" is not a PCR index 0…23")
            }
            guard let value = bytes(fromHex: entry.expected), value.count == 32 || value.count == 48 else {
                throw .invalidValue("measurements[\(key)].expected", "not hex of 32 or 48 bytes")
            }
            entries[index] = Expected(value: value, warnOnly: entry.warnOnly)
        }
        self.entries = entries
    }

    /// One JSON value: a bare hex string or an object.
    private struct Entry: Decodable {
        let expected: String
        let warnOnly: Bool

        enum CodingKeys: String, CodingKey { case expected, warnOnly }

        init(from decoder: any Decoder) throws {
            if let single = try? decoder.singleValueContainer(), let text = try? single.decode(String.self) {
                expected = text
                warnOnly = false
                return
            }
            let container = try decoder.container(keyedBy: CodingKeys.self)
            expected = try container.decode(String.self, forKey: .expected)
            warnOnly = try container.decodeIfPresent(Bool.self, forKey: .warnOnly) ?? false
        }
    }

    /// The comparison of one listed index.
    public struct IndexResult: Hashable, Sendable {
        public let index: Int
        public let expected: [UInt8]
        /// The reported value; nil when the evidence has none for this index.
        public let actual: [UInt8]?
        public let enforced: Bool
        public var matches: Bool { actual == expected }
    }

    /// Compares `actual` PCR values with every listed index, ascending.
    public func compare(_ actual: [Int: [UInt8]]) -> [IndexResult] {
        entries.keys.sorted().map { index in
            let entry = entries[index]!
            return IndexResult(index: index, expected: entry.value, actual: actual[index], enforced: !entry.warnOnly)
        }
    }

    /// The comparison as policy results named `measurements.pcr[<index>]`.
    public func results(for actual: [Int: [UInt8]]) -> [PolicyResult] {
        compare(actual).map { item in
            let policy = "measurements.pcr[\(item.index)]"
            var values = [
                ("pcr", String(item.index)), ("expected", hexString(item.expected)),
                ("actual", item.actual.map { hexString($0) } ?? "missing"),
                ("enforced", item.enforced ? "true" : "false"),
            ]
            if item.matches { return .passed(policy, "PCR \(item.index) matches", values) }
            let what =
                item.actual == nil
                ? "PCR \(item.index) is missing from the evidence" : "PCR \(item.index) differs from the expected value"
            if item.enforced { return .failed(policy, what, values) }
            values.removeLast()
            values.append(("enforced", "false"))
            return .warned(policy, what + " (warn only)", values)
        }
    }
}
