import Crypto
import KeydProtocol

// keyd's audit log: one JSON object per line, each line carrying the SHA-256 of the line before it.
//
//     {"seq":0,"time":"2026-11-25T13:50:41Z","event":"kek.import","decision":"granted","status":"ok",
//      "peer":{"class":"admin","uid":0,"gid":0,"pid":812},"detail":{},"prev":"000…000"}
//
// (one line in the file). Fields come in exactly this order with no spaces, so a record has one
// encoding and its hash is well defined. Everything here is pure: keyd reads and appends the file.

/// Whether keyd did what was asked.
public enum AuditDecision: String, Sendable, Hashable, CaseIterable {
    case granted
    case refused
}

/// Who asked, as keyd classified the connection (`keyd` for keyd's own actions).
public enum AuditPeerClass: String, Sendable, Hashable, CaseIterable {
    case trustd
    case admin
    case stranger
    case keyd
}

/// The peer's class and `SO_PEERCRED` credentials.
public struct AuditPeer: Sendable, Hashable {
    public var peerClass: AuditPeerClass
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32

    /// Makes a peer entry.
    public init(peerClass: AuditPeerClass, uid: UInt32, gid: UInt32, pid: Int32) {
        self.peerClass = peerClass
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}

/// One audit record before it is chained: everything but `prev`.
///
/// - Important: Nothing secret goes into an audit record: no key, secret, salt, passphrase or
///   anything derived from them. `detail` is for names, UUIDs, paths, counts and reasons.
public struct AuditRecord: Sendable {
    /// Position in the log, from 0.
    public var sequence: UInt64
    /// Seconds since the epoch, written as RFC 3339 UTC.
    public var time: Int64
    /// What happened, from the closed list of audit events.
    public var event: AuditEvent
    /// Granted or refused.
    public var decision: AuditDecision
    /// The keyd status name answered, e.g. `ok`, `denied`.
    public var status: String
    /// Who asked.
    public var peer: AuditPeer
    /// Extra key/value text in the given order; long values are cut (see ``AuditChain/maxDetailValueLength``).
    public var detail: [(key: String, value: String)]

    /// Makes a record.
    public init(
        sequence: UInt64,
        time: Int64,
        event: AuditEvent,
        decision: AuditDecision,
        status: String,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = []
    ) {
        self.sequence = sequence
        self.time = time
        self.event = event
        self.decision = decision
        self.status = status
        self.peer = peer
        self.detail = detail
    }

    /// The record's line, without the newline, chained to the 32-byte `previousHash`.
    ///
    /// A line longer than ``AuditChain/maxLineLength`` is our bug (too much detail) and traps.
    public func line(previousHash: [UInt8]) -> [UInt8] {
        precondition(previousHash.count == 32, "previous hash of \(previousHash.count) bytes, expected 32")
        var out: [UInt8] = []
        out.reserveCapacity(384)
        out.append(contentsOf: #"{"seq":"#.utf8)
        out.append(contentsOf: String(sequence).utf8)
        out.append(contentsOf: #","time":""#.utf8)
        out.append(contentsOf: RFC3339.format(secondsSinceEpoch: time).utf8)
        out.append(contentsOf: #"","event":"#.utf8)
        AuditJSON.appendString(event.description, to: &out)
        out.append(contentsOf: #","decision":""#.utf8)
        out.append(contentsOf: decision.rawValue.utf8)
        out.append(contentsOf: #"","status":"#.utf8)
        AuditJSON.appendString(status, to: &out)
        out.append(contentsOf: #","peer":{"class":""#.utf8)
        out.append(contentsOf: peer.peerClass.rawValue.utf8)
        out.append(contentsOf: #"","uid":"#.utf8)
        out.append(contentsOf: String(peer.uid).utf8)
        out.append(contentsOf: #","gid":"#.utf8)
        out.append(contentsOf: String(peer.gid).utf8)
        out.append(contentsOf: #","pid":"#.utf8)
        out.append(contentsOf: String(peer.pid).utf8)
        out.append(contentsOf: #"},"detail":{"#.utf8)
        for (index, pair) in detail.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            AuditJSON.appendString(pair.key, to: &out)
            out.append(UInt8(ascii: ":"))
            AuditJSON.appendString(pair.value, to: &out, maxEscapedLength: AuditChain.maxDetailValueLength)
        }
        out.append(contentsOf: #"},"prev":""#.utf8)
        out.append(contentsOf: lowercaseHex(previousHash).utf8)
        out.append(contentsOf: #""}"#.utf8)
        precondition(
            out.count <= AuditChain.maxLineLength,
            "audit line of \(out.count) bytes exceeds limit \(AuditChain.maxLineLength)"
        )
        return out
    }
}

/// The head of the audit chain: the next sequence number and the hash of the last line.
public struct AuditChain: Sendable, Hashable {
    /// The longest line, without its newline (the `text<8192>` of `audit.read`).
    public static let maxLineLength = 8192
    /// The longest JSON-escaped detail value, quotes excluded; longer ones are cut and end in "…".
    public static let maxDetailValueLength = 256
    /// The `prev` of record 0.
    public static let genesisHash = [UInt8](repeating: 0, count: 32)

    /// The sequence number the next record gets (= records in the log).
    public private(set) var nextSequence: UInt64
    /// SHA-256 of the last line without its newline; zeros for an empty log.
    public private(set) var headHash: [UInt8]

    /// The chain of an empty log.
    public init() {
        nextSequence = 0
        headHash = Self.genesisHash
    }

    /// A chain continuing after `nextSequence` records whose last line hashes to `headHash`.
    public init(nextSequence: UInt64, headHash: [UInt8]) {
        precondition(headHash.count == 32, "head hash of \(headHash.count) bytes, expected 32")
        self.nextSequence = nextSequence
        self.headHash = headHash
    }

    /// The line to write (with its trailing newline) and the chain after it, leaving `self` as is,
    /// so that a failed write leaves the head where the file ends.
    /// - Important: Nothing secret may go into `status` or `detail`.
    public func appending(
        event: AuditEvent,
        decision: AuditDecision,
        status: String,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = [],
        time: Int64
    ) -> (line: [UInt8], next: AuditChain) {
        let record = AuditRecord(
            sequence: nextSequence,
            time: time,
            event: event,
            decision: decision,
            status: status,
            peer: peer,
            detail: detail
        )
        var line = record.line(previousHash: headHash)
        let next = AuditChain(nextSequence: nextSequence + 1, headHash: Array(SHA256.hash(data: line)))
        line.append(UInt8(ascii: "\n"))
        return (line, next)
    }

    /// Returns the line to write (with its trailing newline) and advances the head past it.
    /// - Important: Nothing secret may go into `status` or `detail`.
    public mutating func append(
        event: AuditEvent,
        decision: AuditDecision,
        status: String,
        peer: AuditPeer,
        detail: [(key: String, value: String)] = [],
        time: Int64
    ) -> [UInt8] {
        let (line, next) = appending(
            event: event,
            decision: decision,
            status: status,
            peer: peer,
            detail: detail,
            time: time
        )
        self = next
        return line
    }

    /// Rebuilds the head from an existing log and verifies it.
    ///
    /// The chain continues from the hash of the last complete line, valid or not, so a break stays
    /// visible where it happened; the sequence continues from the number of complete lines. A torn
    /// tail (bytes after the last newline) is not counted: keyd must cut the file to
    /// ``AuditVerification/completeByteCount`` or end the fragment with a newline before appending.
    public static func resume(from log: [UInt8]) -> (chain: AuditChain, verification: AuditVerification) {
        let scan = AuditVerifier.scan(log, expectedHead: nil)
        return (AuditChain(nextSequence: scan.lineCount, headHash: scan.lastLineHash), scan.verification)
    }
}

/// What is wrong with an audit log; raw values are the `problem` field of `audit.verify`.
public typealias AuditProblem = AuditProblemCode

/// The result of checking an audit log.
public struct AuditVerification: Sendable, Hashable {
    /// True when no problem was found.
    public var intact: Bool
    /// The number of complete (newline-terminated) lines in the log.
    public var records: UInt64
    /// The first record found bad; equals ``records`` when intact.
    public var firstBadRecord: UInt64
    /// What is wrong.
    public var problem: AuditProblem
    /// SHA-256 of the last good line (the one before ``firstBadRecord``); zeros when there is none.
    public var headHash: [UInt8]
    /// Bytes up to and including the last newline; anything after it is a torn write.
    public var completeByteCount: Int
    /// One sentence for an operator.
    public var explanation: String

    /// Makes a result; prefer ``AuditVerifier/verify(_:expectedHead:)``.
    public init(
        intact: Bool,
        records: UInt64,
        firstBadRecord: UInt64,
        problem: AuditProblem,
        headHash: [UInt8],
        completeByteCount: Int,
        explanation: String
    ) {
        self.intact = intact
        self.records = records
        self.firstBadRecord = firstBadRecord
        self.problem = problem
        self.headHash = headHash
        self.completeByteCount = completeByteCount
        self.explanation = explanation
    }

    /// The result for a log that could not be read; `reason` names the failure (e.g. the errno).
    public static func unreadable(_ reason: String) -> AuditVerification {
        AuditVerification(
            intact: false,
            records: 0,
            firstBadRecord: 0,
            problem: .unreadable,
            headHash: AuditChain.genesisHash,
            completeByteCount: 0,
            explanation: "audit log unreadable: \(reason)"
        )
    }
}

/// Checks an audit log's format, sequence and hash chain.
public enum AuditVerifier {
    /// Verifies `log` (the whole file) line by line and reports the first problem.
    ///
    /// `expectedHead`, when given, is a head recorded earlier (for example keyd's in-memory chain):
    /// the log must still hold at least `records` lines and line `records - 1` must hash to `hash`.
    /// Fewer lines is `truncated`; a different hash is `edited` at that line. Lines after the
    /// expected head are accepted here (the log may have grown); keyd compares ``AuditVerification/records``
    /// with its own count to catch lines it did not write.
    public static func verify(_ log: [UInt8], expectedHead: (records: UInt64, hash: [UInt8])?) -> AuditVerification {
        scan(log, expectedHead: expectedHead).verification
    }

    /// A verification plus what ``AuditChain/resume(from:)`` needs.
    struct Scan {
        var verification: AuditVerification
        var lineCount: UInt64
        var lastLineHash: [UInt8]
    }

    /// One found problem: its kind, the bad record, the hash before it and the sentence.
    private struct Finding {
        var problem: AuditProblem
        var record: UInt64
        var headHash: [UInt8]
        var explanation: String
    }

    static func scan(_ log: [UInt8], expectedHead: (records: UInt64, hash: [UInt8])?) -> Scan {
        var index: UInt64 = 0
        var previousHash = AuditChain.genesisHash  // hash of line index-1
        var olderHash = AuditChain.genesisHash  // hash of line index-2
        var chainFinding: Finding?
        var anchorHash: [UInt8]?  // hash of line expectedHead.records - 1
        var beforeAnchorHash = AuditChain.genesisHash  // hash of the line before it
        var start = log.startIndex
        var completeByteCount = 0

        while start < log.endIndex {
            guard let newline = log[start...].firstIndex(of: UInt8(ascii: "\n")) else {
                if chainFinding == nil {
                    chainFinding = Finding(
                        problem: .unparsable,
                        record: index,
                        headHash: previousHash,
                        explanation:
                            "record \(index) ends without a newline after \(log.endIndex - start) bytes: a torn write"
                    )
                }
                break
            }
            let line = log[start..<newline]
            let hash = Array(SHA256.hash(data: line))
            if chainFinding == nil {
                chainFinding = check(line, at: index, previousHash: previousHash, olderHash: olderHash)
            }
            if let expected = expectedHead, expected.records > 0, index == expected.records - 1 {
                anchorHash = hash
                beforeAnchorHash = previousHash
            }
            olderHash = previousHash
            previousHash = hash
            index += 1
            start = newline + 1
            completeByteCount = start - log.startIndex
        }

        var anchorFinding: Finding?
        if let expected = expectedHead, expected.records > 0 {
            if index < expected.records {
                anchorFinding = Finding(
                    problem: .truncated,
                    record: index,
                    headHash: previousHash,
                    explanation: "log holds \(index) records, expected at least \(expected.records): truncated"
                )
            } else if anchorHash != expected.hash {
                anchorFinding = Finding(
                    problem: .edited,
                    record: expected.records - 1,
                    headHash: beforeAnchorHash,
                    explanation: "record \(expected.records - 1) does not hash to the expected head: edited"
                )
            }
        }

        // Report whichever bad record comes first; on a tie the chain's own finding is more precise.
        let finding: Finding?
        switch (chainFinding, anchorFinding) {
        case let (chain?, anchor?): finding = anchor.record < chain.record ? anchor : chain
        case let (chain, anchor): finding = chain ?? anchor
        }

        let verification: AuditVerification
        if let finding {
            verification = AuditVerification(
                intact: false,
                records: index,
                firstBadRecord: finding.record,
                problem: finding.problem,
                headHash: finding.headHash,
                completeByteCount: completeByteCount,
                explanation: finding.explanation
            )
        } else {
            verification = AuditVerification(
                intact: true,
                records: index,
                firstBadRecord: index,
                problem: .none,
                headHash: previousHash,
                completeByteCount: completeByteCount,
                explanation: "audit log intact: \(index) records"
            )
        }
        return Scan(verification: verification, lineCount: index, lastLineHash: previousHash)
    }

    /// Checks line `index` against the format, its position and the previous line's hash.
    private static func check(
        _ line: ArraySlice<UInt8>,
        at index: UInt64,
        previousHash: [UInt8],
        olderHash: [UInt8]
    ) -> Finding? {
        guard let parsed = parse(line) else {
            return Finding(
                problem: .unparsable,
                record: index,
                headHash: previousHash,
                explanation: "record \(index) is not an audit line"
            )
        }
        guard parsed.sequence == index else {
            return Finding(
                problem: .reorderedOrMissing,
                record: index,
                headHash: previousHash,
                explanation: "record \(index) carries seq \(parsed.sequence): records reordered or missing"
            )
        }
        guard parsed.previousHex.elementsEqual(lowercaseHex(previousHash).utf8) else {
            // The previous line no longer hashes to what this line recorded: that line was edited
            // (or this line's prev was; the earlier record is the one to distrust).
            if index == 0 {
                return Finding(
                    problem: .edited,
                    record: 0,
                    headHash: AuditChain.genesisHash,
                    explanation: "record 0 has a prev other than zeros: edited"
                )
            }
            return Finding(
                problem: .edited,
                record: index - 1,
                headHash: olderHash,
                explanation: "record \(index - 1) no longer matches the prev of record \(index): edited"
            )
        }
        return nil
    }

    private static let linePrefix = Array(#"{"seq":"#.utf8)
    private static let lineSuffixStart = Array(#","prev":""#.utf8)
    private static let lineSuffixEnd = Array(#""}"#.utf8)

    /// Reads `seq` and the `prev` hex of a line: strict prefix, digits, strict suffix, nothing else.
    static func parse(_ line: ArraySlice<UInt8>) -> (sequence: UInt64, previousHex: ArraySlice<UInt8>)? {
        let suffixLength = lineSuffixStart.count + 64 + lineSuffixEnd.count
        guard line.count <= AuditChain.maxLineLength,
            line.count >= linePrefix.count + 2 + suffixLength,  // at least one digit and a comma
            line.starts(with: linePrefix),
            !line.contains(where: { $0 < 0x20 || $0 == 0x7F })  // the writer escapes every control
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
        guard digitCount > 0,
            digitCount == 1 || line[digitsStart] != UInt8(ascii: "0"),  // no leading zeros
            cursor < line.endIndex, line[cursor] == UInt8(ascii: ",")
        else { return nil }

        let suffixStart = line.endIndex - suffixLength
        guard suffixStart >= cursor,
            line[suffixStart...].starts(with: lineSuffixStart),
            line[(line.endIndex - lineSuffixEnd.count)...].elementsEqual(lineSuffixEnd)
        else { return nil }
        let hexStart = suffixStart + lineSuffixStart.count
        let hex = line[hexStart..<(hexStart + 64)]
        guard hex.allSatisfy(isLowercaseHexDigit) else { return nil }
        return (sequence, hex)
    }

    private static func decimalDigit(_ byte: UInt8) -> UInt8? {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) ? byte - UInt8(ascii: "0") : nil
    }

    private static func isLowercaseHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }
}

/// JSON string encoding for audit lines and keyd's other JSON reports.
public enum AuditJSON {
    /// `text` as a quoted JSON string literal, escaped as in audit lines.
    public static func quoted(_ text: String) -> String {
        var out: [UInt8] = []
        appendString(text, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `text` as a quoted JSON string. `"` and `\` are escaped, and so are C0 controls, DEL,
    /// C1 controls and U+2028/U+2029 (as `\u00XX`), so a line holds no raw control character and
    /// prints safely on a terminal; other non-ASCII text is passed through as UTF-8.
    ///
    /// With `maxEscapedLength`, a value whose escaped form is longer is cut at a character
    /// boundary and ends with "…", the whole escaped form staying within the limit.
    static func appendString(_ text: String, to out: inout [UInt8], maxEscapedLength: Int? = nil) {
        out.append(UInt8(ascii: "\""))
        let start = out.count
        var pieceEnds: [Int] = []  // where each escaped character ends, to cut on a boundary
        for scalar in text.unicodeScalars {
            appendEscaped(scalar, to: &out)
            pieceEnds.append(out.count)
            if let limit = maxEscapedLength, out.count - start > limit {
                let ellipsis = "\u{2026}".utf8
                // Keep the longest prefix of whole characters that leaves room for the ellipsis.
                var keep = start
                for end in pieceEnds where end - start + ellipsis.count <= limit {
                    keep = end
                }
                out.removeSubrange(keep...)
                out.append(contentsOf: ellipsis)
                break
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Appends one scalar, escaped as needed.
    static func appendEscaped(_ scalar: Unicode.Scalar, to out: inout [UInt8]) {
        switch scalar.value {
        case 0x22:
            out.append(contentsOf: #"\""#.utf8)
        case 0x5C:
            out.append(contentsOf: #"\\"#.utf8)
        case 0x00..<0x20, 0x7F...0x9F, 0x2028, 0x2029:
            out.append(contentsOf: #"\u"#.utf8)
            let value = scalar.value
            for shift in stride(from: 12, through: 0, by: -4) {
                out.append(hexDigits[Int((value >> UInt32(shift)) & 0xF)])
            }
        default:
            out.append(contentsOf: scalar.utf8)
        }
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

/// Lowercase hexadecimal of `bytes`, for hashes, names and PCR values (never for secrets).
public func lowercaseHex(_ bytes: some Sequence<UInt8>) -> String {
    var out: [UInt8] = []
    for byte in bytes {
        out.append(hexDigits[Int(byte >> 4)])
        out.append(hexDigits[Int(byte & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}
