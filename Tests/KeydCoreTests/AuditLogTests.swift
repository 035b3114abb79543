import Testing

@testable import KeydCore

/// The audit line format, the hash chain and its verifier.
@Suite struct AuditLogTests {
    static let admin = AuditPeer(peerClass: .admin, uid: 0, gid: 0, pid: 812)
    static let trustd = AuditPeer(peerClass: .trustd, uid: 990, gid: 990, pid: 4242)
    static let zeros = String(repeating: "0", count: 64)

    /// A log of `count` records and the chain after them.
    static func log(count: Int) -> (log: [UInt8], chain: AuditChain) {
        var chain = AuditChain()
        var log: [UInt8] = []
        for index in 0..<count {
            log += chain.append(
                event: index % 2 == 0 ? .request(.kekImport) : .request(.status),
                decision: index % 3 == 0 ? .refused : .granted,
                status: index % 3 == 0 ? "denied" : "ok",
                peer: index % 2 == 0 ? admin : trustd,
                detail: [("request", "\(index)"), ("disk.uuid", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")],
                time: 1_795_614_641 + Int64(index)
            )
        }
        return (log, chain)
    }

    /// The log's lines without their newlines.
    static func lines(_ log: [UInt8]) -> [[UInt8]] {
        log.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast().map(Array.init)
    }

    /// Lines joined back into a log, each with its newline.
    static func join(_ lines: [[UInt8]]) -> [UInt8] {
        lines.flatMap { $0 + [UInt8(ascii: "\n")] }
    }

    static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    // MARK: Format

    @Test func goldenLine() {
        var chain = AuditChain()
        let line = chain.append(
            event: .request(.kekImport),
            decision: .granted,
            status: "ok",
            peer: Self.admin,
            detail: [("disk.uuid", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), ("reason", "first \"import\"")],
            time: 1_795_614_641
        )
        let expected =
            #"{"seq":0,"time":"2026-11-25T13:50:41Z","event":"kek.import","decision":"granted","status":"ok","#
            + #""peer":{"class":"admin","uid":0,"gid":0,"pid":812},"#
            + #""detail":{"disk.uuid":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","reason":"first \"import\""},"#
            + #""prev":"\#(Self.zeros)"}"# + "\n"
        #expect(Self.text(line) == expected)
        #expect(chain.nextSequence == 1)
        // SHA-256 of the line without its newline, computed with Python's hashlib.
        #expect(lowercaseHex(chain.headHash) == "378b31baa44ad218b5d79294b5870ce13e7e5d9e926b1c5f675d36116542a9fe")
    }

    @Test func secondLineChainsToTheFirst() {
        var chain = AuditChain()
        _ = chain.append(event: .request(.hello), decision: .granted, status: "ok", peer: Self.trustd, time: 0)
        let firstHead = chain.headHash
        let second = Self.text(
            chain.append(event: .request(.status), decision: .refused, status: "wrongPhase", peer: Self.trustd, time: 1)
        )
        #expect(second.hasPrefix(#"{"seq":1,"time":"1970-01-01T00:00:01Z","event":"status","decision":"refused""#))
        #expect(second.contains(#""peer":{"class":"trustd","uid":990,"gid":990,"pid":4242},"detail":{},"#))
        #expect(second.hasSuffix(#""prev":"\#(lowercaseHex(firstHead))"}"# + "\n"))
    }

    @Test func peerExtremes() {
        let peer = AuditPeer(peerClass: .stranger, uid: .max, gid: 0, pid: .min)
        let line = Self.text(
            AuditRecord(sequence: 7, time: 0, event: .keydStart, decision: .refused, status: "denied", peer: peer)
                .line(previousHash: AuditChain.genesisHash)
        )
        #expect(line.contains(#""peer":{"class":"stranger","uid":4294967295,"gid":0,"pid":-2147483648}"#))
    }

    /// (input, JSON string literal as written)
    static let escapes: [(String, String)] = [
        ("plain", #""plain""#),
        ("", #""""#),
        ("say \"hi\"", #""say \"hi\"""#),
        (#"back\slash"#, #""back\\slash""#),
        ("line\nbreak", #""line\u000abreak""#),
        ("cr\rtab\t", #""cr\u000dtab\u0009""#),
        ("\u{0}\u{1}\u{1F}", #""\u0000\u0001\u001f""#),
        ("del\u{7F}", #""del\u007f""#),
        ("c1\u{85}\u{9B}", #""c1\u0085\u009b""#),
        ("ls\u{2028}ps\u{2029}", #""ls\u2028ps\u2029""#),
        ("é ü 日本 😀", #""é ü 日本 😀""#),
        ("/dev/disk/by-uuid/x", #""/dev/disk/by-uuid/x""#),
        ("\u{1B}[31mred", #""\u001b[31mred""#),
    ]

    @Test(arguments: escapes)
    func escaping(input: String, expected: String) {
        var out: [UInt8] = []
        AuditJSON.appendString(input, to: &out)
        #expect(Self.text(out) == expected)
    }

    @Test(arguments: escapes)
    func escapingInEveryField(input: String, expected: String) {
        let record = AuditRecord(
            sequence: 0,
            time: 0,
            event: .keydStart,
            decision: .granted,
            status: input,
            peer: Self.admin,
            detail: [(input, input)]
        )
        let line = Self.text(record.line(previousHash: AuditChain.genesisHash))
        #expect(line.contains(#""event":"keyd.start","decision":"granted","status":\#(expected),"#))
        #expect(line.contains(#""detail":{\#(expected):\#(expected)}"#))
    }

    @Test func lineHoldsNoControlCharacterAndEndsWithOneNewline() {
        let everyControl = String(String.UnicodeScalarView((0..<0x20).map { Unicode.Scalar(UInt8($0)) }))
        var chain = AuditChain()
        let line = chain.append(
            event: .keydStart,
            decision: .refused,
            status: "s\r",
            peer: Self.admin,
            detail: [("k\n", everyControl), ("v", "a\nb")],
            time: 0
        )
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(!line.dropLast().contains { $0 < 0x20 || $0 == 0x7F })
        let verification = AuditVerifier.verify(line, expectedHead: nil)
        #expect(verification.intact)
        #expect(verification.records == 1)
    }

    /// (value, escaped body expected inside the quotes)
    static let truncations: [(String, String)] = [
        (String(repeating: "a", count: 256), String(repeating: "a", count: 256)),
        (String(repeating: "a", count: 257), String(repeating: "a", count: 253) + "…"),
        (String(repeating: "a", count: 10_000), String(repeating: "a", count: 253) + "…"),
        // Each \u0001 is 6 escaped bytes: 42 of them (252 bytes) and the ellipsis fit.
        (String(repeating: "\u{1}", count: 100), String(repeating: #"\u0001"#, count: 42) + "…"),
        // "é" is 2 bytes: 126 of them (252 bytes) and the ellipsis; never half a character.
        (String(repeating: "é", count: 200), String(repeating: "é", count: 126) + "…"),
        // Quotes escape to 2 bytes: 126 of them and the ellipsis.
        (String(repeating: "\"", count: 200), String(repeating: #"\""#, count: 126) + "…"),
        ("😀" + String(repeating: "b", count: 300), "😀" + String(repeating: "b", count: 249) + "…"),
    ]

    @Test(arguments: truncations)
    func longDetailValuesAreCut(value: String, expected: String) {
        let record = AuditRecord(
            sequence: 0,
            time: 0,
            event: .keydStart,
            decision: .granted,
            status: "ok",
            peer: Self.admin,
            detail: [("k", value)]
        )
        let line = Self.text(record.line(previousHash: AuditChain.genesisHash))
        #expect(line.contains(#""detail":{"k":"\#(expected)"}"#))
        #expect(expected.utf8.count <= AuditChain.maxDetailValueLength)
    }

    @Test func manyDetailsStayUnderTheLineLimit() {
        // 28 pairs of maximal values still fit in 8,192 bytes.
        let detail = (0..<28).map { ("k\($0)", String(repeating: "\u{1}", count: 1000)) }
        var chain = AuditChain()
        let line = chain.append(
            event: .keydStart,
            decision: .granted,
            status: "ok",
            peer: Self.admin,
            detail: detail,
            time: 0
        )
        #expect(line.count - 1 <= AuditChain.maxLineLength)
        #expect(AuditVerifier.verify(line, expectedHead: nil).intact)
    }

    @Test func tooMuchDetailTraps() async {
        await #expect(processExitsWith: .failure) {
            let detail = (0..<40).map { ("k\($0)", String(repeating: "x", count: 300)) }
            var chain = AuditChain()
            _ = chain.append(
                event: .keydStart,
                decision: .granted,
                status: "ok",
                peer: AuditPeer(peerClass: .keyd, uid: 0, gid: 0, pid: 1),
                detail: detail,
                time: 0
            )
        }
    }

    @Test func problemRawValuesMatchTheProtocol() {
        let values = AuditProblem.allCases.map { ("\($0)", $0.rawValue) }
        #expect(values.map(\.0) == ["none", "edited", "reorderedOrMissing", "truncated", "unparsable", "unreadable"])
        #expect(values.map(\.1) == [0, 1, 2, 3, 4, 5])
    }

    // MARK: Chain and verification

    @Test(arguments: [0, 1, 2, 10, 100])
    func intactChainVerifies(count: Int) {
        let (log, chain) = Self.log(count: count)
        let verification = AuditVerifier.verify(log, expectedHead: (chain.nextSequence, chain.headHash))
        #expect(verification.intact)
        #expect(verification.problem == .none)
        #expect(verification.records == UInt64(count))
        #expect(verification.firstBadRecord == UInt64(count))
        #expect(verification.headHash == chain.headHash)
        #expect(verification.completeByteCount == log.count)
        #expect(verification.explanation == "audit log intact: \(count) records")
    }

    @Test func emptyLogHeadIsZeros() {
        let verification = AuditVerifier.verify([], expectedHead: nil)
        #expect(verification.intact)
        #expect(verification.headHash == AuditChain.genesisHash)
        #expect(AuditChain().headHash == [UInt8](repeating: 0, count: 32))
    }

    @Test(arguments: [0, 1, 3, 5, 8])
    func oneEditedByteIsFoundAtItsRecord(record: Int) {
        var lines = Self.lines(Self.log(count: 10).log)
        // Change a digit of the disk UUID in the detail: still a well-formed line.
        let position = Self.text(lines[record]).utf8.count - 80
        lines[record][position] = lines[record][position] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        let verification = AuditVerifier.verify(Self.join(lines), expectedHead: nil)
        #expect(!verification.intact)
        #expect(verification.problem == .edited)
        #expect(verification.firstBadRecord == UInt64(record))
        #expect(verification.records == 10)
        #expect(
            verification.headHash == (record == 0 ? AuditChain.genesisHash : Self.verifiedHead(lines, count: record))
        )
    }

    /// The head after the first `count` lines, as an intact prefix.
    static func verifiedHead(_ lines: [[UInt8]], count: Int) -> [UInt8] {
        AuditVerifier.verify(join(Array(lines.prefix(count))), expectedHead: nil).headHash
    }

    @Test func editedLastRecordNeedsTheExpectedHead() {
        let (log, chain) = Self.log(count: 5)
        var lines = Self.lines(log)
        lines[4][lines[4].count - 80] ^= 0x01
        let edited = Self.join(lines)
        // Nothing follows the last record, so only the head held elsewhere reveals the edit.
        #expect(AuditVerifier.verify(edited, expectedHead: nil).intact)
        let verification = AuditVerifier.verify(edited, expectedHead: (chain.nextSequence, chain.headHash))
        #expect(verification.problem == .edited)
        #expect(verification.firstBadRecord == 4)
        #expect(verification.headHash == Self.verifiedHead(lines, count: 4))
    }

    @Test func editedPrevOfRecordZero() {
        var lines = Self.lines(Self.log(count: 3).log)
        // The first hex digit of `prev` sits 66 bytes before the end: `…"prev":"` + 64 + `"}`.
        lines[0][lines[0].count - 66] = UInt8(ascii: "1")
        let verification = AuditVerifier.verify(Self.join(lines), expectedHead: nil)
        #expect(verification.problem == .edited)
        #expect(verification.firstBadRecord == 0)
    }

    @Test(arguments: [0, 4, 8])
    func swappedLinesAreReordered(record: Int) {
        var lines = Self.lines(Self.log(count: 10).log)
        lines.swapAt(record, record + 1)
        let verification = AuditVerifier.verify(Self.join(lines), expectedHead: nil)
        #expect(verification.problem == .reorderedOrMissing)
        #expect(verification.firstBadRecord == UInt64(record))
        #expect(verification.explanation == "record \(record) carries seq \(record + 1): records reordered or missing")
    }

    @Test(arguments: [0, 1, 5, 8])
    func deletedLineIsMissing(record: Int) {
        var lines = Self.lines(Self.log(count: 10).log)
        lines.remove(at: record)
        let verification = AuditVerifier.verify(Self.join(lines), expectedHead: nil)
        #expect(verification.problem == .reorderedOrMissing)
        #expect(verification.firstBadRecord == UInt64(record))
        #expect(verification.records == 9)
    }

    @Test func droppedLastLineIsTruncatedAgainstTheExpectedHead() {
        let (log, chain) = Self.log(count: 6)
        let lines = Self.lines(log)
        let shorter = Self.join(Array(lines.dropLast()))
        #expect(AuditVerifier.verify(shorter, expectedHead: nil).intact)
        let verification = AuditVerifier.verify(shorter, expectedHead: (chain.nextSequence, chain.headHash))
        #expect(verification.problem == .truncated)
        #expect(verification.records == 5)
        #expect(verification.firstBadRecord == 5)
        #expect(verification.explanation == "log holds 5 records, expected at least 6: truncated")
        #expect(AuditVerifier.verify([], expectedHead: (chain.nextSequence, chain.headHash)).problem == .truncated)
    }

    @Test func logThatGrewPastTheExpectedHeadIsIntact() {
        let (log, _) = Self.log(count: 8)
        let lines = Self.lines(log)
        let earlier = AuditVerifier.verify(Self.join(Array(lines.prefix(5))), expectedHead: nil)
        let verification = AuditVerifier.verify(log, expectedHead: (earlier.records, earlier.headHash))
        #expect(verification.intact)
        #expect(verification.records == 8)
    }

    @Test func rewrittenHistoryDiffersFromTheExpectedHead() {
        let (log, chain) = Self.log(count: 4)
        // A whole new, self-consistent chain of the same length.
        var forged = AuditChain()
        var forgedLog: [UInt8] = []
        for index in 0..<4 {
            forgedLog += forged.append(
                event: .request(.kekImport),
                decision: .granted,
                status: "ok",
                peer: Self.admin,
                time: Int64(index)
            )
        }
        #expect(AuditVerifier.verify(forgedLog, expectedHead: nil).intact)
        let verification = AuditVerifier.verify(forgedLog, expectedHead: (chain.nextSequence, chain.headHash))
        #expect(verification.problem == .edited)
        #expect(verification.firstBadRecord == 3)
        #expect(AuditVerifier.verify(log, expectedHead: (chain.nextSequence, chain.headHash)).intact)
    }

    @Test(arguments: [1, 40, 200])
    func tornLastLineIsUnparsable(keptBytes: Int) {
        let (log, _) = Self.log(count: 4)
        let lines = Self.lines(log)
        let torn = Self.join(Array(lines.prefix(3))) + lines[3].prefix(keptBytes)
        let verification = AuditVerifier.verify(torn, expectedHead: nil)
        #expect(verification.problem == .unparsable)
        #expect(verification.firstBadRecord == 3)
        #expect(verification.records == 3)
        #expect(verification.completeByteCount == Self.join(Array(lines.prefix(3))).count)
        #expect(verification.headHash == Self.verifiedHead(lines, count: 3))
    }

    @Test func completeLineWithoutNewlineIsTorn() {
        let (log, _) = Self.log(count: 2)
        let verification = AuditVerifier.verify(Array(log.dropLast()), expectedHead: nil)
        #expect(verification.problem == .unparsable)
        #expect(verification.firstBadRecord == 1)
    }

    /// Lines that are not audit records, each placed as record 1 of 3.
    static let badLines: [String] = [
        "",
        "garbage",
        "{}",
        #"{"seq":1}"#,
        #"{"seq":01,"time":"x","prev":"\#(zeros)"}"#,  // leading zero
        #"{"seq":,"prev":"\#(zeros)"}"#,  // no digits
        #"{"seq":1x,"prev":"\#(zeros)"}"#,  // not a digit
        #"{"seq":99999999999999999999,"prev":"\#(zeros)"}"#,  // overflows u64
        #"{"seq":1,"prev":"\#(zeros.uppercased().dropLast())A"}"#,  // uppercase hex
        #"{"seq":1,"prev":"\#(zeros.dropLast())"}"#,  // 63 digits
        #"{"seq":1,"prev":"\#(zeros)"} "#,  // trailing space
        #" {"seq":1,"prev":"\#(zeros)"}"#,  // leading space
        #"{"seq":1,"time":"\#u{0009}","prev":"\#(zeros)"}"#,  // raw tab
        #"{"seq": 1,"prev":"\#(zeros)"}"#,  // space after colon
        #"{"seq":1,"detail":{},"prev":"\#(zeros)"}"# + "\r",  // CRLF line end
        #"{"seq":1,"detail":"\#(String(repeating: "x", count: 8200))","prev":"\#(zeros)"}"#,  // over 8,192 bytes
    ]

    @Test(arguments: badLines)
    func unparsableLine(line: String) {
        var lines = Self.lines(Self.log(count: 3).log)
        lines[1] = Array(line.utf8)
        let verification = AuditVerifier.verify(Self.join(lines), expectedHead: nil)
        #expect(verification.problem == .unparsable)
        #expect(verification.firstBadRecord == 1)
        #expect(verification.records == 3)
        #expect(verification.explanation == "record 1 is not an audit line")
    }

    @Test func minimalWellFormedLineParses() {
        let line = Array(#"{"seq":18446744073709551615,"prev":"\#(Self.zeros)"}"#.utf8)
        let parsed = AuditVerifier.parse(line[...])
        #expect(parsed?.sequence == .max)
    }

    @Test func unreadableResult() {
        let verification = AuditVerification.unreadable("open failed: EACCES")
        #expect(verification.problem == .unreadable)
        #expect(verification.problem.rawValue == 5)
        #expect(!verification.intact)
        #expect(verification.explanation == "audit log unreadable: open failed: EACCES")
    }

    // MARK: Resume

    @Test(arguments: [0, 1, 7])
    func resumeContinuesAnIntactLog(count: Int) {
        let (log, chain) = Self.log(count: count)
        var (resumed, verification) = AuditChain.resume(from: log)
        #expect(verification.intact)
        #expect(resumed == chain)
        var original = chain
        let next = resumed.append(event: .keydStart, decision: .granted, status: "ok", peer: Self.admin, time: 99)
        #expect(
            next == original.append(event: .keydStart, decision: .granted, status: "ok", peer: Self.admin, time: 99)
        )
        #expect(AuditVerifier.verify(log + next, expectedHead: (resumed.nextSequence, resumed.headHash)).intact)
    }

    @Test func resumeAfterABreakKeepsTheBreakVisible() {
        var lines = Self.lines(Self.log(count: 6).log)
        lines.remove(at: 2)
        let broken = Self.join(lines)
        var (resumed, verification) = AuditChain.resume(from: broken)
        #expect(verification.problem == .reorderedOrMissing)
        #expect(verification.firstBadRecord == 2)
        #expect(resumed.nextSequence == 5)
        // The chain continues from the last line as it is, so new records verify against it
        // and the break is still reported where it happened.
        let appended =
            broken + resumed.append(event: .keydStart, decision: .granted, status: "ok", peer: Self.admin, time: 0)
        let after = AuditVerifier.verify(appended, expectedHead: nil)
        #expect(after.problem == .reorderedOrMissing)
        #expect(after.firstBadRecord == 2)
        #expect(after.records == 6)
        let tail = Self.lines(appended).suffix(2)
        let lastTwo = AuditVerifier.verify(Self.join(Array(tail)), expectedHead: nil)
        #expect(lastTwo.problem == .reorderedOrMissing)  // seq 4 at index 0: tail alone is not a log
    }

    @Test func resumeIgnoresATornTail() {
        let (log, chain) = Self.log(count: 3)
        let (resumed, verification) = AuditChain.resume(from: log + Array(#"{"seq":3,"ti"#.utf8))
        #expect(resumed == chain)
        #expect(verification.problem == .unparsable)
        #expect(verification.completeByteCount == log.count)
    }

    @Test func appendingLeavesTheChainUntilCommitted() {
        let chain = AuditChain()
        let (line, next) = chain.appending(
            event: .keydStart,
            decision: .granted,
            status: "ok",
            peer: Self.admin,
            time: 0
        )
        #expect(chain == AuditChain())
        #expect(next.nextSequence == 1)
        #expect(AuditVerifier.verify(line, expectedHead: (next.nextSequence, next.headHash)).intact)
    }
}

/// RFC 3339 formatting (Howard Hinnant's civil-from-days).
@Suite struct RFC3339Tests {
    /// (seconds since the epoch, expected text); checked against Python's datetime.
    static let cases: [(Int64, String)] = [
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (1_709_164_800, "2024-02-29T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (951_868_800, "2000-03-01T00:00:00Z"),
        (2_147_483_647, "2038-01-19T03:14:07Z"),
        (2_147_483_648, "2038-01-19T03:14:08Z"),
        (1_795_614_641, "2026-11-25T13:50:41Z"),
        (4_107_542_400, "2100-03-01T00:00:00Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
        (-62_167_219_200, "0000-01-01T00:00:00Z"),
        (-2_208_988_800, "1900-01-01T00:00:00Z"),
    ]

    @Test(arguments: cases)
    func format(seconds: Int64, expected: String) {
        #expect(RFC3339.format(secondsSinceEpoch: seconds) == expected)
    }

    @Test func everyDayOfFourHundredYearsIsConsecutive() {
        // Walk 1600-03-01 … 2400-02-29 a day at a time: each date follows the one before it.
        var previous = RFC3339.format(secondsSinceEpoch: -11_670_912_000 - 86_400)
        #expect(previous == "1600-02-29T00:00:00Z")
        let daysInMonth = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        for day in 0..<(146_097 * 2) {
            let text = RFC3339.format(secondsSinceEpoch: -11_670_912_000 + Int64(day) * 86_400)
            let parts = (Int(text.prefix(4))!, Int(text.dropFirst(5).prefix(2))!, Int(text.dropFirst(8).prefix(2))!)
            let last = (
                Int(previous.prefix(4))!, Int(previous.dropFirst(5).prefix(2))!, Int(previous.dropFirst(8).prefix(2))!
            )
            let leap = last.0 % 4 == 0 && (last.0 % 100 != 0 || last.0 % 400 == 0)
            let length = last.1 == 2 && leap ? 29 : daysInMonth[last.1 - 1]
            let expected =
                last.2 < length
                ? (last.0, last.1, last.2 + 1) : last.1 < 12 ? (last.0, last.1 + 1, 1) : (last.0 + 1, 1, 1)
            if parts != expected {
                Issue.record("\(text) does not follow \(previous)")
                return
            }
            previous = text
        }
        #expect(previous == "2400-02-29T00:00:00Z")
    }

    @Test func outsideFourDigitYearsTraps() async {
        await #expect(processExitsWith: .failure) {
            _ = RFC3339.format(secondsSinceEpoch: 253_402_300_800)
        }
    }
}
