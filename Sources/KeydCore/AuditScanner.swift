import Crypto
import KeydProtocol

/// What is wrong with an audit log; raw values are the `problem` field of `audit.verify`.
public typealias AuditProblem = AuditProblemCode

/// The result of checking an audit log.
public struct AuditVerification: Sendable, Hashable {
    /// True when no problem was found.
    public var intact: Bool
    /// The number of complete (newline-terminated) lines in the chain.
    public var records: UInt64
    /// The first record found bad; equals ``records`` when intact.
    public var firstBadRecord: UInt64
    /// What is wrong.
    public var problem: AuditProblem
    /// The MAC of the last good line (the one before ``firstBadRecord``); zeros when there is none.
    public var headMAC: [UInt8]
    /// One sentence for an operator.
    public var explanation: String

    /// Makes a result; prefer ``AuditScanner``.
    public init(
        intact: Bool,
        records: UInt64,
        firstBadRecord: UInt64,
        problem: AuditProblem,
        headMAC: [UInt8],
        explanation: String
    ) {
        self.intact = intact
        self.records = records
        self.firstBadRecord = firstBadRecord
        self.problem = problem
        self.headMAC = headMAC
        self.explanation = explanation
    }

    /// The result for a log that could not be read; `reason` names the failure (e.g. the errno).
    public static func unreadable(_ reason: String) -> AuditVerification {
        AuditVerification(
            intact: false,
            records: 0,
            firstBadRecord: 0,
            problem: .unreadable,
            headMAC: AuditChain.genesisMAC,
            explanation: "audit log unreadable: \(reason)"
        )
    }

    /// This result with `problem` found at `record` instead, unless an earlier record is already bad.
    public func reporting(_ problem: AuditProblem, at record: UInt64, _ explanation: String) -> AuditVerification {
        guard intact || record < firstBadRecord else { return self }
        var changed = self
        changed.intact = false
        changed.problem = problem
        changed.firstBadRecord = record
        changed.explanation = explanation
        return changed
    }
}

/// What a chain's genesis record (`audit.chain`, record 0) says.
public struct AuditGenesis: Sendable, Hashable {
    /// The link's name (`hmac-sha256`, `sha256`).
    public var link: String
    /// The audit key's TPM name in hex, or `none`.
    public var keyName: String
    /// The TPM counter's value before the genesis was written, or nil without a TPM.
    public var counterBase: UInt64?
}

/// Checks an audit chain line by line, as it streams from its files: each line's format, its
/// position (`seq`), its `prev` against the previous line's MAC and its own `mac` under the link.
/// Record 0 must be the chain's genesis. Pure: feed it complete lines (without the newline).
public struct AuditScanner: Sendable {
    /// How lines are authenticated.
    public let link: AuditLink
    /// A head recorded earlier (keyd's in-memory chain): the chain must still hold at least
    /// `records` lines and line `records - 1` must have `mac`.
    public let expectedHead: (records: UInt64, mac: [UInt8])?
    /// The lines seen so far.
    public private(set) var records: UInt64 = 0
    /// The MAC of the last line seen (zeros before the first).
    public private(set) var headMAC = AuditChain.genesisMAC
    /// The genesis record, once line 0 was read and parsed as one.
    public private(set) var genesis: AuditGenesis?
    /// The anchor of the last commit group seen (``AuditAnchor``), nil before one or in an unanchored chain.
    public private(set) var lastAnchor: UInt64?
    /// Lines after the last anchor line: a group keyd began to write and never counted.
    public private(set) var uncommittedRecords: UInt64 = 0
    private var olderMAC = AuditChain.genesisMAC
    private var finding: Finding?
    private var anchorMAC: [UInt8]?
    private var beforeAnchorMAC = AuditChain.genesisMAC

    /// One found problem: its kind, the bad record, the MAC before it and the sentence.
    private struct Finding: Sendable {
        var problem: AuditProblem
        var record: UInt64
        var headMAC: [UInt8]
        var explanation: String
    }

    /// Starts a scan of a chain authenticated by `link`.
    public init(link: AuditLink, expectedHead: (records: UInt64, mac: [UInt8])? = nil) {
        self.link = link
        self.expectedHead = expectedHead
    }

    /// Checks one complete line (without its newline).
    public mutating func consume(_ line: ArraySlice<UInt8>) {
        line.withUnsafeBytes { consume($0) }
    }

    /// Checks one complete line (without its newline), read in place.
    public mutating func consume(_ line: UnsafeRawBufferPointer) {
        let index = records
        let mac: [UInt8]
        let parsed = Self.parse(line)
        if let parsed {
            mac = parsed.mac
            if finding == nil { finding = check(line, parsed, at: index) }
        } else {
            // An unparsable line has no MAC: its hash stands in, so the next line's prev cannot match it.
            mac = Array(SHA256.hash(data: line))
            if finding == nil {
                finding = Finding(
                    problem: .unparsable,
                    record: index,
                    headMAC: headMAC,
                    explanation: "record \(index) is not an audit line"
                )
            }
        }
        if let anchor = parsed?.anchor {
            lastAnchor = anchor
            uncommittedRecords = 0
        } else {
            uncommittedRecords += 1
        }
        if let expected = expectedHead, expected.records > 0, index == expected.records - 1 {
            anchorMAC = mac
            beforeAnchorMAC = headMAC
        }
        olderMAC = headMAC
        headMAC = mac
        records += 1
    }

    /// The verdict after the last line; `tornBytes` counts bytes after the last newline (a torn write).
    public func result(tornBytes: Int = 0) -> AuditVerification {
        var found = finding
        if tornBytes > 0, found == nil {
            found = Finding(
                problem: .unparsable,
                record: records,
                headMAC: headMAC,
                explanation: "record \(records) ends without a newline after \(tornBytes) bytes: a torn write"
            )
        }
        if let expected = expectedHead, expected.records > 0 {
            var anchored: Finding?
            if records < expected.records {
                anchored = Finding(
                    problem: .truncated,
                    record: records,
                    headMAC: headMAC,
                    explanation: "log holds \(records) records, expected at least \(expected.records): truncated"
                )
            } else if anchorMAC != expected.mac {
                anchored = Finding(
                    problem: .edited,
                    record: expected.records - 1,
                    headMAC: beforeAnchorMAC,
                    explanation: "record \(expected.records - 1) does not have the expected head MAC: edited"
                )
            }
            // Whichever bad record comes first; on a tie the chain's own finding is more precise.
            if let anchored, found.map({ anchored.record < $0.record }) ?? true { found = anchored }
        }
        guard let found else {
            return AuditVerification(
                intact: true,
                records: records,
                firstBadRecord: records,
                problem: .none,
                headMAC: headMAC,
                explanation: "audit log intact: \(records) records"
            )
        }
        return AuditVerification(
            intact: false,
            records: records,
            firstBadRecord: found.record,
            problem: found.problem,
            headMAC: found.headMAC,
            explanation: found.explanation
        )
    }

    /// Checks a parsed line against its position, the previous MAC and its own MAC.
    private mutating func check(_ line: UnsafeRawBufferPointer, _ parsed: ParsedLine, at index: UInt64) -> Finding? {
        guard parsed.sequence == index else {
            return Finding(
                problem: .reorderedOrMissing,
                record: index,
                headMAC: headMAC,
                explanation: "record \(index) carries seq \(parsed.sequence): records reordered or missing"
            )
        }
        guard parsed.previous == headMAC else {
            // The previous line is not the one this line was chained to: that line was edited or
            // replaced (or this line's prev was; the earlier record is the one to distrust).
            if index == 0 {
                return Finding(
                    problem: .edited,
                    record: 0,
                    headMAC: AuditChain.genesisMAC,
                    explanation: "record 0 has a prev other than zeros: edited"
                )
            }
            return Finding(
                problem: .edited,
                record: index - 1,
                headMAC: olderMAC,
                explanation: "record \(index - 1) is not the record that record \(index) was chained to: edited"
            )
        }
        guard link.mac(UnsafeRawBufferPointer(rebasing: line[..<parsed.macStart])) == parsed.mac else {
            return Finding(
                problem: .edited,
                record: index,
                headMAC: headMAC,
                explanation: "record \(index) does not carry its \(link.name) MAC: edited, or written under another key"
            )
        }
        if index == 0 {
            guard let genesis = Self.genesis(line) else {
                return Finding(
                    problem: .unparsable,
                    record: 0,
                    headMAC: AuditChain.genesisMAC,
                    explanation: "record 0 is not a chain's genesis (audit.chain)"
                )
            }
            self.genesis = genesis
            guard genesis.link == link.name, genesis.keyName == link.keyNameHex else {
                return Finding(
                    problem: .unverifiable,
                    record: 0,
                    headMAC: AuditChain.genesisMAC,
                    explanation:
                        "the chain was written under \(genesis.link) key \(genesis.keyName), not keyd's present key"
                )
            }
        }
        return checkAnchor(parsed.anchor, at: index)
    }

    /// An anchored chain's genesis carries `counterBase + 1` and every later anchor the one before plus
    /// one (keyd counts each group once); an unanchored chain carries none.
    private func checkAnchor(_ anchor: UInt64?, at index: UInt64) -> Finding? {
        guard let anchor else {
            guard index == 0, genesis?.counterBase != nil else { return nil }
            return Finding(
                problem: .unparsable,
                record: 0,
                headMAC: AuditChain.genesisMAC,
                explanation: "record 0 names a TPM counter but carries no anchor"
            )
        }
        let expected: UInt64?
        if index == 0 {
            expected = genesis?.counterBase.map { $0 &+ 1 }
        } else {
            expected = genesis?.counterBase == nil ? nil : (lastAnchor ?? 0) &+ 1
        }
        guard expected != anchor else { return nil }
        return Finding(
            problem: .unverifiable,
            record: index,
            headMAC: headMAC,
            explanation: expected.map { "record \(index) carries anchor \(anchor), expected \($0)" }
                ?? "record \(index) carries an anchor in a chain without a TPM counter"
        )
    }

    /// The fields of one line keyd checks.
    struct ParsedLine {
        var sequence: UInt64
        var previous: [UInt8]
        var mac: [UInt8]
        /// Where `,"mac":"` starts: the MAC covers the line before it.
        var macStart: Int
        /// The commit group's anchor, on a group's last line.
        var anchor: UInt64?
    }

    private static let linePrefix = Array(#"{"seq":"#.utf8)
    private static let previousField = Array(#","prev":""#.utf8)
    private static let macField = Array(#"","mac":""#.utf8)
    private static let anchorField = Array(#","anchor":"#.utf8)
    private static let lineEnd = Array(#""}"#.utf8)
    /// `,"prev":"<64 hex>","mac":"<64 hex>"}`.
    private static let suffixLength = previousField.count + 64 + macField.count + 64 + lineEnd.count

    /// Reads `seq`, `prev` and `mac` of a line: strict prefix, digits, strict suffix, no control byte.
    static func parse(_ line: UnsafeRawBufferPointer) -> ParsedLine? {
        guard line.count <= AuditChain.maxLineLength,
            // At least one digit and a comma between the prefix and the suffix.
            line.count >= linePrefix.count + 2 + suffixLength,
            line.starts(with: linePrefix),
            // The writer escapes every control character.
            !line.contains(where: { $0 < 0x20 || $0 == 0x7F })
        else { return nil }
        var cursor = line.startIndex + linePrefix.count
        var sequence: UInt64 = 0
        let digitsStart = cursor
        while cursor < line.endIndex, let digit = decimalDigit(line[cursor]) {
            let (times10, overflowA) = sequence.multipliedReportingOverflow(by: 10)
            let (sum, overflowB) = times10.addingReportingOverflow(UInt64(digit))
            guard !overflowA, !overflowB else { return nil }
            sequence = sum
            cursor += 1
        }
        let digitCount = cursor - digitsStart
        // No leading zeros.
        guard digitCount > 0, digitCount == 1 || line[digitsStart] != UInt8(ascii: "0"),
            cursor < line.endIndex, line[cursor] == UInt8(ascii: ",")
        else { return nil }
        let suffixStart = line.endIndex - suffixLength
        let macStart = suffixStart + previousField.count + 64
        guard suffixStart >= cursor,
            line[suffixStart...].starts(with: previousField),
            line[macStart...].starts(with: macField),
            line[(line.endIndex - lineEnd.count)...].elementsEqual(lineEnd),
            let previous = hexBytes(line[(suffixStart + previousField.count)..<macStart]),
            let mac = hexBytes(line[(macStart + macField.count)..<(line.endIndex - lineEnd.count)])
        else { return nil }
        // An anchor is the digits right before the suffix, after `,"anchor":` (the detail object ends in `}`).
        var anchor: UInt64?
        var digitsEnd = suffixStart
        while digitsEnd > cursor, decimalDigit(line[digitsEnd - 1]) != nil { digitsEnd -= 1 }
        if digitsEnd < suffixStart {
            let digits = line[digitsEnd..<suffixStart]
            guard digitsEnd - anchorField.count >= cursor,
                line[(digitsEnd - anchorField.count)..<digitsEnd].elementsEqual(anchorField),
                digits.count <= 20, digits.count == 1 || digits.first != UInt8(ascii: "0"),
                let value = UInt64(String(decoding: digits, as: UTF8.self))
            else { return nil }
            anchor = value
        }
        // The record's fields end with the detail object.
        let fieldsEnd = anchor == nil ? suffixStart : digitsEnd - anchorField.count
        guard fieldsEnd > cursor, line[fieldsEnd - 1] == UInt8(ascii: "}") else { return nil }
        // The MAC covers the line up to and including prev's closing quote.
        return ParsedLine(sequence: sequence, previous: previous, mac: mac, macStart: macStart + 1, anchor: anchor)
    }

    private static let genesisEvent = Array(#""event":"audit.chain","#.utf8)
    private static let genesisDetail = Array(#""detail":{"link":""#.utf8)

    /// The genesis fields of line 0, written in a fixed order by ``AuditChain/genesisDetail(link:counterBase:reason:)``.
    static func genesis(_ line: UnsafeRawBufferPointer) -> AuditGenesis? {
        guard line.firstRange(of: genesisEvent) != nil, let detail = line.firstRange(of: genesisDetail) else {
            return nil
        }
        var cursor = detail.upperBound
        func field(_ closingAndNext: String) -> String? {
            let marker = Array(closingAndNext.utf8)
            guard let end = line[cursor...].firstRange(of: marker) else { return nil }
            defer { cursor = end.upperBound }
            return String(decoding: line[cursor..<end.lowerBound], as: UTF8.self)
        }
        guard let link = field(#"","key":""#), let key = field(#"","counter":""#), let counter = field(#"","#) else {
            return nil
        }
        if counter == "none" { return AuditGenesis(link: link, keyName: key, counterBase: nil) }
        guard let base = UInt64(counter) else { return nil }
        return AuditGenesis(link: link, keyName: key, counterBase: base)
    }

    private static func decimalDigit(_ byte: UInt8) -> UInt8? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? byte - UInt8(ascii: "0") : nil
    }

    /// 32 bytes from 64 lowercase hex digits, or nil.
    private static func hexBytes(_ hex: Slice<UnsafeRawBufferPointer>) -> [UInt8]? {
        guard hex.count == 64 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        var index = hex.startIndex
        for position in 0..<32 {
            guard let high = hexValue(hex[index]), let low = hexValue(hex[index + 1]) else { return nil }
            bytes[position] = high << 4 | low
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}

/// Splits a byte stream into lines for an ``AuditScanner`` (or any line consumer), whatever the chunk
/// boundaries; a line longer than ``AuditChain/maxLineLength`` is passed on cut (and then fails to parse).
public struct AuditLineSplitter: Sendable {
    private var partial: [UInt8] = []
    private var overlong = false
    /// Bytes after the last newline so far.
    public var pendingBytes: Int { partial.count }

    public init() {}

    /// Feeds `chunk`, handing every completed line to `body` (in place when it lies within the chunk).
    public mutating func feed(_ chunk: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        var start = 0
        while start < chunk.count {
            guard let newline = chunk[start...].firstIndex(of: UInt8(ascii: "\n")) else {
                append(chunk[start...])
                return
            }
            if partial.isEmpty && !overlong {
                body(UnsafeRawBufferPointer(rebasing: chunk[start..<newline]))
            } else {
                append(chunk[start..<newline])
                partial.withUnsafeBytes { body($0) }
                partial.removeAll(keepingCapacity: true)
                overlong = false
            }
            start = newline + 1
        }
    }

    /// Keeps at most one byte past the longest line, so a line without newlines cannot grow memory.
    private mutating func append(_ bytes: Slice<UnsafeRawBufferPointer>) {
        let room = AuditChain.maxLineLength + 1 - partial.count
        if bytes.count > room { overlong = true }
        partial.append(contentsOf: bytes.prefix(max(0, room)))
    }
}
