import Crypto
import KeydProtocol
import Testing

@testable import KeydCore

/// The audit line format, the keyed chain, its streaming scanner, the TPM anchor and the coalescer.
@Suite struct AuditLogTests {
    static let admin = AuditPeer(peerClass: .admin, uid: 0, gid: 0, pid: 812)
    static let trustd = AuditPeer(peerClass: .trustd, uid: 990, gid: 990, pid: 4242)
    static let keyd = AuditPeer(peerClass: .keyd, uid: 0, gid: 0, pid: 1)
    static let zeros = String(repeating: "0", count: 64)
    /// A keyed link with the key 00 01 … 1f and a made-up TPM name.
    static let keyed = (0..<32).map(UInt8.init).withUnsafeBytes {
        AuditLink.keyed(keyBytes: $0, keyName: [0x00, 0x0B] + [UInt8](repeating: 0xAB, count: 32))
    }

    /// A chain of `count` records (record 0 its genesis, counter base 100) under `link`, and its head.
    static func log(count: Int, link: AuditLink = keyed) -> (log: [UInt8], chain: AuditChain) {
        var chain = AuditChain(link: link)
        var log: [UInt8] = []
        for index in 0..<count {
            if index == 0 {
                log += chain.append(
                    event: .auditChain,
                    decision: .granted,
                    status: "ok",
                    peer: keyd,
                    detail: AuditChain.genesisDetail(link: link, counterBase: 100, reason: "first start"),
                    anchor: 101,
                    time: 1_795_614_641
                )
                continue
            }
            log += chain.append(
                event: index % 2 == 0 ? .request(.kekImport) : .request(.status),
                decision: index % 3 == 0 ? .refused : .granted,
                status: index % 3 == 0 ? "denied" : "ok",
                peer: index % 2 == 0 ? admin : trustd,
                detail: [("request", "\(index)"), ("disk.uuid", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")],
                // Each record its own commit group.
                anchor: 101 + UInt64(index),
                time: 1_795_614_641 + Int64(index)
            )
        }
        return (log, chain)
    }

    /// Scans `log` as keyd streams it, in chunks of `chunk` bytes.
    static func verify(
        _ log: [UInt8],
        link: AuditLink = keyed,
        expectedHead: (records: UInt64, mac: [UInt8])? = nil,
        chunk: Int = 4096
    ) -> AuditVerification {
        var scanner = AuditScanner(link: link, expectedHead: expectedHead)
        var splitter = AuditLineSplitter()
        var start = 0
        while start < log.count {
            let end = min(log.count, start + chunk)
            log[start..<end].withUnsafeBytes { splitter.feed($0) { scanner.consume($0) } }
            start = end
        }
        return scanner.result(tornBytes: splitter.pendingBytes)
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
        let record = AuditRecord(
            sequence: 0,
            time: 1_795_614_641,
            event: .request(.kekImport),
            decision: .granted,
            status: "ok",
            peer: Self.admin,
            detail: [("disk.uuid", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), ("reason", "first \"import\"")]
        )
        let content =
            #"{"seq":0,"time":"2026-11-25T13:50:41Z","event":"kek.import","decision":"granted","status":"ok","#
            + #""peer":{"class":"admin","uid":0,"gid":0,"pid":812},"#
            + #""detail":{"disk.uuid":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","reason":"first \"import\""},"#
            + #""prev":"\#(Self.zeros)""#
        // The MACs computed with Python's hashlib and hmac over `content`.
        let unkeyed = record.line(previousMAC: AuditChain.genesisMAC, link: .unkeyed)
        #expect(lowercaseHex(unkeyed.mac) == "cfdaba3f0867082ceba27e9acea7a4c3b6788fc8ea61fdcf6790d39eeadac6bb")
        #expect(Self.text(unkeyed.line) == content + #","mac":"\#(lowercaseHex(unkeyed.mac))"}"#)
        let keyed = record.line(previousMAC: AuditChain.genesisMAC, link: Self.keyed)
        #expect(lowercaseHex(keyed.mac) == "1eb454d8bc7232f0440cc927193dd76736d11e4577dff331bfd0458dbef4cb63")
        #expect(Self.text(keyed.line) == content + #","mac":"\#(lowercaseHex(keyed.mac))"}"#)
    }

    @Test func secondLineChainsToTheFirst() {
        var chain = AuditChain(link: Self.keyed)
        _ = chain.append(event: .request(.hello), decision: .granted, status: "ok", peer: Self.trustd, time: 0)
        let firstMAC = chain.headMAC
        let second = Self.text(
            chain.append(event: .request(.status), decision: .refused, status: "wrongPhase", peer: Self.trustd, time: 1)
        )
        #expect(second.hasPrefix(#"{"seq":1,"time":"1970-01-01T00:00:01Z","event":"status","decision":"refused""#))
        #expect(second.contains(#""peer":{"class":"trustd","uid":990,"gid":990,"pid":4242},"detail":{},"#))
        #expect(second.contains(#""prev":"\#(lowercaseHex(firstMAC))","mac":""#))
        #expect(second.hasSuffix(#""mac":"\#(lowercaseHex(chain.headMAC))"}"# + "\n"))
    }

    @Test func peerExtremes() {
        let peer = AuditPeer(peerClass: .stranger, uid: .max, gid: 0, pid: .min)
        let line = Self.text(
            AuditRecord(sequence: 7, time: 0, event: .keydStart, decision: .refused, status: "denied", peer: peer)
                .line(previousMAC: AuditChain.genesisMAC, link: .unkeyed).line
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
        let line = Self.text(record.line(previousMAC: AuditChain.genesisMAC, link: Self.keyed).line)
        #expect(line.contains(#""event":"keyd.start","decision":"granted","status":\#(expected),"#))
        #expect(line.contains(#""detail":{\#(expected):\#(expected)}"#))
    }

    @Test func lineHoldsNoControlCharacterAndEndsWithOneNewline() {
        let everyControl = String(String.UnicodeScalarView((0..<0x20).map { Unicode.Scalar(UInt8($0)) }))
        let (genesis, chain) = Self.log(count: 1)
        var next = chain
        let line = next.append(
            event: .keydStart,
            decision: .refused,
            status: "s\r",
            peer: Self.admin,
            detail: [("k\n", everyControl), ("v", "a\nb")],
            time: 0
        )
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(!line.dropLast().contains { $0 < 0x20 || $0 == 0x7F })
        let verification = Self.verify(genesis + line)
        #expect(verification.intact && verification.records == 2)
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
        let line = Self.text(record.line(previousMAC: AuditChain.genesisMAC, link: .unkeyed).line)
        #expect(line.contains(#""detail":{"k":"\#(expected)"}"#))
        #expect(expected.utf8.count <= AuditChain.maxDetailValueLength)
    }

    @Test func manyDetailsStayUnderTheLineLimit() {
        // 28 pairs of maximal values still fit in 8,192 bytes.
        let detail = (0..<28).map { ("k\($0)", String(repeating: "\u{1}", count: 1000)) }
        var (log, chain) = Self.log(count: 1)
        let line = chain.append(
            event: .keydStart,
            decision: .granted,
            status: "ok",
            peer: Self.admin,
            detail: detail,
            time: 0
        )
        #expect(line.count - 1 <= AuditChain.maxLineLength)
        log += line
        #expect(Self.verify(log).intact)
    }

    @Test func tooMuchDetailTraps() async {
        await #expect(processExitsWith: .failure) {
            let detail = (0..<40).map { ("k\($0)", String(repeating: "x", count: 300)) }
            var chain = AuditChain(link: .unkeyed)
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
        #expect(
            values.map(\.0) == [
                "none", "edited", "reorderedOrMissing", "truncated", "unparsable", "unreadable", "unverifiable",
            ]
        )
        #expect(values.map(\.1) == [0, 1, 2, 3, 4, 5, 6])
    }

    // MARK: Chain and verification

    @Test(arguments: [1, 2, 10, 100])
    func intactChainVerifies(count: Int) {
        let (log, chain) = Self.log(count: count)
        for chunk in [1, 7, 300, 1 << 20] {
            let verification = Self.verify(log, expectedHead: (chain.nextSequence, chain.headMAC), chunk: chunk)
            #expect(verification.intact, "chunk \(chunk)")
            #expect(verification.problem == .none)
            #expect(verification.records == UInt64(count))
            #expect(verification.firstBadRecord == UInt64(count))
            #expect(verification.headMAC == chain.headMAC)
            #expect(verification.explanation == "audit log intact: \(count) records")
        }
    }

    @Test func genesisIsReadBack() {
        var scanner = AuditScanner(link: Self.keyed)
        let (log, _) = Self.log(count: 3)
        for line in Self.lines(log) { scanner.consume(line[...]) }
        #expect(scanner.genesis == AuditGenesis(link: "hmac-sha256", keyName: Self.keyed.keyNameHex, counterBase: 100))
        #expect(scanner.result().intact)
    }

    @Test func anotherKeyOrNoKeyCannotCheckTheChain() {
        let (log, _) = Self.log(count: 5)
        let other = [UInt8](repeating: 7, count: 32).withUnsafeBytes {
            AuditLink.keyed(keyBytes: $0, keyName: [0, 11, 1])
        }
        let verification = Self.verify(log, link: other)
        #expect(!verification.intact && verification.problem == .edited && verification.firstBadRecord == 0)
        // An unkeyed chain is not accepted as a keyed one either (its genesis names its link).
        let (plain, _) = Self.log(count: 3, link: .unkeyed)
        #expect(Self.verify(plain, link: .unkeyed).intact)
        let asKeyed = Self.verify(plain)
        #expect(!asKeyed.intact && asKeyed.firstBadRecord == 0)
    }

    @Test func emptyLogHeadIsZeros() {
        let verification = Self.verify([])
        #expect(verification.intact)
        #expect(verification.headMAC == AuditChain.genesisMAC)
        #expect(AuditChain(link: .unkeyed).headMAC == [UInt8](repeating: 0, count: 32))
    }

    @Test func recordZeroMustBeAGenesis() {
        var chain = AuditChain(link: Self.keyed)
        let log = chain.append(event: .keydStart, decision: .granted, status: "ok", peer: Self.keyd, time: 0)
        let verification = Self.verify(log)
        #expect(verification.problem == .unparsable && verification.firstBadRecord == 0)
        #expect(verification.explanation == "record 0 is not a chain's genesis (audit.chain)")
    }

    @Test(arguments: [0, 1, 3, 5, 8])
    func oneEditedByteIsFoundAtItsRecord(record: Int) {
        var lines = Self.lines(Self.log(count: 10).log)
        // Change a byte of the detail: still a well-formed line, but its MAC no longer holds.
        let position = lines[record].count - 200
        lines[record][position] = lines[record][position] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        let verification = Self.verify(Self.join(lines))
        #expect(!verification.intact)
        #expect(verification.problem == .edited)
        #expect(verification.firstBadRecord == UInt64(record))
        #expect(verification.records == 10)
    }

    @Test func aRewrittenRecordWithAFreshMACNeedsTheKey() {
        // Without the key, an attacker recomputes SHA-256 "MACs": every keyed check fails at once.
        let (log, _) = Self.log(count: 4)
        var forged = AuditChain(link: .unkeyed)
        var forgedLog: [UInt8] = []
        for line in Self.lines(log).enumerated() {
            forgedLog += forged.append(
                event: line.offset == 0 ? .auditChain : .request(.kekImport),
                decision: .granted,
                status: "ok",
                peer: Self.admin,
                detail: line.offset == 0
                    ? AuditChain.genesisDetail(link: Self.keyed, counterBase: 100, reason: "x") : [],
                anchor: 101 + UInt64(line.offset),
                time: Int64(line.offset)
            )
        }
        let verification = Self.verify(forgedLog)
        #expect(verification.problem == .edited && verification.firstBadRecord == 0)
    }

    @Test func editedLastRecordIsFoundByItsOwnMAC() {
        let (log, chain) = Self.log(count: 5)
        var lines = Self.lines(log)
        lines[4][lines[4].count - 200] ^= 0x01
        // Each line carries its own MAC: an edit of the last line shows without the expected head.
        let verification = Self.verify(Self.join(lines))
        #expect(verification.problem == .edited && verification.firstBadRecord == 4)
        #expect(Self.verify(log, expectedHead: (chain.nextSequence, chain.headMAC)).intact)
    }

    @Test(arguments: [0, 4, 8])
    func swappedLinesAreReordered(record: Int) {
        var lines = Self.lines(Self.log(count: 10).log)
        lines.swapAt(record, record + 1)
        let verification = Self.verify(Self.join(lines))
        #expect(verification.problem == .reorderedOrMissing)
        #expect(verification.firstBadRecord == UInt64(record))
        #expect(verification.explanation == "record \(record) carries seq \(record + 1): records reordered or missing")
    }

    @Test(arguments: [0, 1, 5, 8])
    func deletedLineIsMissing(record: Int) {
        var lines = Self.lines(Self.log(count: 10).log)
        lines.remove(at: record)
        let verification = Self.verify(Self.join(lines))
        #expect(verification.problem == .reorderedOrMissing)
        #expect(verification.firstBadRecord == UInt64(record))
        #expect(verification.records == 9)
    }

    @Test func droppedLastLineIsTruncatedAgainstTheExpectedHead() {
        let (log, chain) = Self.log(count: 6)
        let shorter = Self.join(Array(Self.lines(log).dropLast()))
        // Cut at a line boundary, the chain alone still verifies: the TPM counter or the head tells.
        #expect(Self.verify(shorter).intact)
        let verification = Self.verify(shorter, expectedHead: (chain.nextSequence, chain.headMAC))
        #expect(verification.problem == .truncated)
        #expect(verification.records == 5)
        #expect(verification.firstBadRecord == 5)
        #expect(verification.explanation == "log holds 5 records, expected at least 6: truncated")
    }

    @Test(arguments: [1, 40, 200])
    func tornLastLineIsUnparsable(keptBytes: Int) {
        let lines = Self.lines(Self.log(count: 4).log)
        let torn = Self.join(Array(lines.prefix(3))) + lines[3].prefix(keptBytes)
        let verification = Self.verify(torn)
        #expect(verification.problem == .unparsable)
        #expect(verification.firstBadRecord == 3)
        #expect(verification.records == 3)
    }

    /// Lines that are not audit records, each placed as record 1 of 3.
    static let badLines: [String] = [
        "",
        "garbage",
        "{}",
        #"{"seq":1}"#,
        #"{"seq":01,"time":"x","prev":"\#(zeros)","mac":"\#(zeros)"}"#,  // leading zero
        #"{"seq":,"prev":"\#(zeros)","mac":"\#(zeros)"}"#,  // no digits
        #"{"seq":1x,"prev":"\#(zeros)","mac":"\#(zeros)"}"#,  // not a digit
        #"{"seq":99999999999999999999,"prev":"\#(zeros)","mac":"\#(zeros)"}"#,  // overflows u64
        #"{"seq":1,"prev":"\#(zeros.uppercased().dropLast())A","mac":"\#(zeros)"}"#,  // uppercase hex
        #"{"seq":1,"prev":"\#(zeros.dropLast())","mac":"\#(zeros)"}"#,  // 63 digits
        #"{"seq":1,"prev":"\#(zeros)"}"#,  // no mac
        #"{"seq":1,"prev":"\#(zeros)","mac":"\#(zeros)"} "#,  // trailing space
        #" {"seq":1,"prev":"\#(zeros)","mac":"\#(zeros)"}"#,  // leading space
        #"{"seq":1,"time":"\#u{0009}","prev":"\#(zeros)","mac":"\#(zeros)"}"#,  // raw tab
        #"{"seq":1,"detail":{},"prev":"\#(zeros)","mac":"\#(zeros)"}"# + "\r",  // CRLF line end
        // Over 8,192 bytes.
        #"{"seq":1,"detail":"\#(String(repeating: "x", count: 8200))","prev":"\#(zeros)","mac":"\#(zeros)"}"#,
    ]

    @Test(arguments: badLines)
    func unparsableLine(line: String) {
        var lines = Self.lines(Self.log(count: 3).log)
        lines[1] = Array(line.utf8)
        let verification = Self.verify(Self.join(lines))
        #expect(verification.problem == .unparsable)
        #expect(verification.firstBadRecord == 1)
        #expect(verification.records == 3)
        #expect(verification.explanation == "record 1 is not an audit line")
    }

    @Test func aLineWithoutNewlinesDoesNotGrowMemory() {
        var splitter = AuditLineSplitter()
        let chunk = [UInt8](repeating: 0x61, count: 1 << 20)
        var lines = 0
        for _ in 0..<16 { chunk.withUnsafeBytes { splitter.feed($0) { _ in lines += 1 } } }
        #expect(lines == 0 && splitter.pendingBytes == AuditChain.maxLineLength + 1)
        Array("\n".utf8).withUnsafeBytes { splitter.feed($0) { #expect($0.count == AuditChain.maxLineLength + 1) } }
    }

    @Test func unreadableResult() {
        let verification = AuditVerification.unreadable("open failed: EACCES")
        #expect(verification.problem == .unreadable)
        #expect(!verification.intact)
        #expect(verification.explanation == "audit log unreadable: open failed: EACCES")
    }

    @Test func appendingLeavesTheChainUntilCommitted() {
        let (_, chain) = Self.log(count: 1)
        let (_, next) = chain.appending(event: .keydStart, decision: .granted, status: "ok", peer: Self.admin, time: 0)
        #expect(chain.nextSequence == 1)
        #expect(next.nextSequence == 2 && next.headMAC != chain.headMAC)
    }

    // MARK: TPM anchor

    @Test(arguments: [
        (UInt64(105), UInt64(105), AuditAnchor.Verdict.consistent),
        (105, 104, .lastGroupUncounted),
        (105, 108, .groupsMissing(3)),
        (105, 101, .counterBehind(4)),
        (1, 0, .lastGroupUncounted),
        (UInt64.max, 0, .counterBehind(.max)),
    ])
    func anchorVerdicts(lastAnchor: UInt64, counter: UInt64, verdict: AuditAnchor.Verdict) {
        #expect(AuditAnchor.compare(lastAnchor: lastAnchor, counter: counter) == verdict)
    }

    /// A chain of genesis (anchor 101) and then groups of the given sizes, each anchored on its last line.
    static func grouped(_ sizes: [Int], anchors: [UInt64?]? = nil, counterBase: UInt64? = 100) -> [UInt8] {
        var chain = AuditChain(link: keyed)
        var log = chain.append(
            event: .auditChain,
            decision: .granted,
            status: "ok",
            peer: keyd,
            detail: AuditChain.genesisDetail(link: keyed, counterBase: counterBase, reason: "first start"),
            anchor: counterBase.map { $0 + 1 },
            time: 0
        )
        for (group, size) in sizes.enumerated() {
            for index in 0..<size {
                let anchor = anchors.map { $0[group] } ?? 102 + UInt64(group)
                log += chain.append(
                    event: .request(.keyRelease),
                    decision: .granted,
                    status: "ok",
                    peer: trustd,
                    anchor: index == size - 1 ? anchor : nil,
                    time: Int64(group)
                )
            }
        }
        return log
    }

    @Test func groupsAnchorTheirLastLine() {
        var scanner = AuditScanner(link: Self.keyed)
        for line in Self.lines(Self.grouped([3, 1, 16])) { scanner.consume(line[...]) }
        #expect(scanner.result().intact && scanner.records == 21)
        #expect(scanner.lastAnchor == 104 && scanner.uncommittedRecords == 0)
        let text = String(decoding: Self.lines(Self.grouped([2]))[2], as: UTF8.self)
        #expect(text.contains(#"},"anchor":102,"prev":""#))
    }

    @Test func linesAfterTheLastAnchorAreUncommitted() {
        // keyd stopped while writing a group: its lines before the anchor line reached the disk.
        let lines = Self.lines(Self.grouped([2, 5]))
        var scanner = AuditScanner(link: Self.keyed)
        for line in lines.prefix(5) { scanner.consume(line[...]) }
        #expect(scanner.result().intact && scanner.lastAnchor == 102 && scanner.uncommittedRecords == 2)
        // Cutting into a counted group removes its anchor line: the counter is then ahead of the last anchor.
        #expect(AuditAnchor.compare(lastAnchor: scanner.lastAnchor ?? 0, counter: 103) == .groupsMissing(1))
    }

    @Test(arguments: [
        ([UInt64?(102), 104], UInt64(4), "record 4 carries anchor 104, expected 103"),
        ([102, 102], 4, "record 4 carries anchor 102, expected 103"),
    ])
    func anchorsStepByOne(anchors: [UInt64?], record: UInt64, explanation: String) {
        let verification = Self.verify(Self.grouped([2, 2], anchors: anchors))
        #expect(verification.problem == .unverifiable && verification.firstBadRecord == record)
        #expect(verification.explanation == explanation)
    }

    @Test func aCountedGenesisCarriesItsAnchor() {
        var chain = AuditChain(link: Self.keyed)
        let log = chain.append(
            event: .auditChain,
            decision: .granted,
            status: "ok",
            peer: Self.keyd,
            detail: AuditChain.genesisDetail(link: Self.keyed, counterBase: 7, reason: "x"),
            time: 0
        )
        #expect(Self.verify(log).problem == .unparsable)
        #expect(Self.verify(Self.grouped([1], anchors: [9], counterBase: nil)).problem == .unverifiable)
    }

    @Test(arguments: [#","anchor":01"#, #","anchor":"#, #","anchr":5"#, #","anchor":18446744073709551616"#])
    func malformedAnchorsDoNotParse(anchor: String) {
        let line = Self.lines(Self.grouped([1]))[1]
        var text = String(decoding: line, as: UTF8.self)
        text = text.replacing(#","anchor":102"#, with: anchor)
        let parsed = Array(text.utf8).withUnsafeBytes { AuditScanner.parse($0) != nil }
        #expect(!parsed)
    }
}

/// What reaches the audit log: routine trustd requests counted, repeated refusals folded.
@Suite struct AuditCoalescerTests {
    static let second: UInt64 = 1_000_000_000
    static let trustd = AuditPeer(peerClass: .trustd, uid: 990, gid: 990, pid: 4242)
    static let admin = AuditPeer(peerClass: .admin, uid: 0, gid: 0, pid: 1)
    static let keyd = AuditPeer(peerClass: .keyd, uid: 0, gid: 0, pid: 2)

    static func note(
        _ kind: RequestKind,
        granted: Bool,
        status: StatusCode = .ok,
        peer: AuditPeer = trustd
    ) -> AuditNote {
        AuditNote(event: .request(kind), granted: granted, status: status, peer: peer, detail: [])
    }

    @Test func routineTrustdRequestsAreCountedAndSummarized() {
        var coalescer = AuditCoalescer(windowNanoseconds: 60 * Self.second, summaryNanoseconds: 600 * Self.second)
        for index in 0..<10_000 {
            let kind: RequestKind = index % 2 == 0 ? .diskInspect : .evidenceIssue
            #expect(coalescer.disposition(of: Self.note(kind, granted: true), now: UInt64(index)) == .counted)
        }
        #expect(coalescer.due(now: 599 * Self.second, keyd: Self.keyd).isEmpty)
        let due = coalescer.due(now: 600 * Self.second, keyd: Self.keyd)
        #expect(due.count == 1 && due[0].event == .auditSummary)
        #expect(due[0].detail.map(\.key) == ["evidence.issue", "disk.inspect", "seconds"])
        #expect(due[0].detail.map(\.value) == ["5000", "5000", "600"])
        #expect(coalescer.nextDeadline == nil)
    }

    @Test func keyDecisionsAndOtherPeersAreAlwaysWritten() {
        var coalescer = AuditCoalescer()
        for kind in [
            RequestKind.kekImport, .kekLock, .diskBind, .diskOpen, .keyRelease, .envelopeAccept, .initAccept,
            .policySet,
        ] {
            #expect(coalescer.disposition(of: Self.note(kind, granted: true), now: 0) == .write, "\(kind)")
        }
        #expect(coalescer.disposition(of: Self.note(.diskInspect, granted: true, peer: Self.admin), now: 0) == .write)
        #expect(
            coalescer.disposition(
                of: AuditNote(event: .keydStart, granted: true, status: .ok, peer: Self.keyd, detail: []),
                now: 0
            ) == .write
        )
    }

    @Test func repeatedRefusalsAreFoldedPerWindow() {
        var coalescer = AuditCoalescer(windowNanoseconds: 60 * Self.second, summaryNanoseconds: 600 * Self.second)
        let refusal = Self.note(.evidenceIssue, granted: false, status: .tpmFailure)
        #expect(coalescer.disposition(of: refusal, now: 0) == .write)
        for index in 1...999 { #expect(coalescer.disposition(of: refusal, now: UInt64(index)) == .suppressed) }
        // Another status, or another peer, is another refusal.
        #expect(
            coalescer.disposition(of: Self.note(.evidenceIssue, granted: false, status: .tpmUnavailable), now: 5)
                == .write
        )
        #expect(coalescer.nextDeadline == 60 * Self.second)
        let due = coalescer.due(now: 60 * Self.second, keyd: Self.keyd)
        #expect(due.count == 1 && due[0].event == .auditRepeated && due[0].status == .tpmFailure)
        #expect(due[0].detail.first { $0.key == "repeats" }?.value == "999")
        // After the window a refusal is written again; the admin's refusals are never folded.
        #expect(coalescer.disposition(of: refusal, now: 61 * Self.second) == .write)
        let admin = Self.note(.diskFormat, granted: false, status: .diskBusy, peer: Self.admin)
        #expect(
            coalescer.disposition(of: admin, now: 0) == .write && coalescer.disposition(of: admin, now: 1) == .write
        )
    }

    @Test func keyDecisionRefusalsFromTrustdAreNeverFolded() {
        var coalescer = AuditCoalescer()
        for kind in AuditCoalescer.keyDecisions {
            for index in 0..<100 {
                let refusal = Self.note(kind, granted: false, status: .evidenceRejected)
                #expect(coalescer.disposition(of: refusal, now: UInt64(index)) == .write, "\(kind)")
            }
        }
        #expect(coalescer.nextDeadline == nil)
    }

    @Test func flushHandsBackEverythingPending() {
        var coalescer = AuditCoalescer()
        _ = coalescer.disposition(of: Self.note(.diskInspect, granted: true), now: 0)
        _ = coalescer.disposition(of: Self.note(.status, granted: false, status: .denied), now: 0)
        _ = coalescer.disposition(of: Self.note(.status, granted: false, status: .denied), now: 1)
        let flushed = coalescer.flush(now: 2, keyd: Self.keyd)
        #expect(Set(flushed.map(\.event)) == [.auditRepeated, .auditSummary])
        #expect(coalescer.flush(now: 3, keyd: Self.keyd).isEmpty)
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
