import ArgumentParser
import Foundation
import KeydClient
import KeydProtocol
import KeydctlCLI
import Testing

/// Collects the lines a command writes.
final class Output {
    var lines: [String] = []
    func write(_ line: String) { lines.append(line) }
    var text: String { lines.joined(separator: "\n") }
}

struct ExitStatusTests {
    @Test(arguments: [StatusCode.denied, .wrongPhase, .rateLimited, .kekAbsent, .internal, .unsupported])
    func refusalExitsOne(status: StatusCode) {
        #expect(ExitStatus.code(for: KeydClientError.refused(status, request: .kekImport)) == 1)
    }

    @Test func unreachableExitsTwo() {
        let error = KeydClientError.unreachable(path: "/run/keyd/admin.sock", errno: ENOENT)
        #expect(error.isUnreachable)
        #expect(ExitStatus.code(for: error) == 2)
    }

    @Test func brokenConnectionExitsTwo() {
        #expect(ExitStatus.code(for: KeydClientError.closed()) == 2)
        #expect(ExitStatus.code(for: KeydClientError.io("recv", errno: EIO)) == 2)
        #expect(ExitStatus.code(for: KeydClientError.violation("bad frame")) == 2)
    }

    @Test func badInputExitsThree() {
        #expect(ExitStatus.code(for: KeydctlError.missingMember("key")) == 3)
        #expect(ExitStatus.code(for: KeydctlError.fileTooLarge(limit: 4096)) == 3)
        #expect(ExitStatus.code(for: KeydClientError.invalidArgument("master secret is 8 bytes")) == 3)
    }

    @Test func auditNotIntactExitsOne() {
        let answer = AuditVerifyAnswer(
            intact: false,
            records: 9,
            firstBadRecord: 4,
            problem: .edited,
            headHash: [UInt8](repeating: 0, count: 32)
        )
        #expect(ExitStatus.code(for: KeydctlError.auditNotIntact(answer)) == 1)
    }

    @Test func usageErrorExitsSixtyFour() {
        #expect(ExitStatus.code(for: ValidationError("bad")) == 64)
        #expect(ExitStatus.usage == 64)
    }

    @Test func unreachableSocketEndsTheCommandWithTwo() throws {
        var command = try Keydctl.parseAsRoot(["status", "--socket", "/nonexistent/keydctl-test/admin.sock"])
        #expect(throws: ExitCode(2)) { try command.run() }
    }

    @Test func badSecretFileEndsWithThreeBeforeConnecting() throws {
        // The socket does not exist either: exit 3, not 2, proves the file is checked first.
        var command = try Keydctl.parseAsRoot([
            "kek", "import", "--socket", "/nonexistent/keydctl-test/admin.sock", "--file",
            "/nonexistent/keydctl-test/secret.json",
        ])
        #expect(throws: ExitCode(3)) { try command.run() }
    }
}

struct ParsingTests {
    @Test(arguments: [
        ["kek", "import", "--key", "AAAAAAAAAAAAAAAAAAAAAA=="],
        ["kek", "import", "--file", "x.json", "--key", "AAAA"],
        ["kek", "import", "--file", "x.json", "AAAAAAAAAAAAAAAAAAAAAA=="],
        ["kek", "import", "AAAAAAAAAAAAAAAAAAAAAA=="],
        ["kek", "import", "--secret", "AAAA"],
        ["kek", "import", "--salt", "AAAA", "--file", "x.json"],
    ])
    func secretOnTheCommandLineIsImpossible(arguments: [String]) {
        #expect(throws: (any Error).self) { try Keydctl.parseAsRoot(arguments) }
    }

    @Test func kekImportNeedsAFile() {
        #expect(throws: (any Error).self) { try Keydctl.parseAsRoot(["kek", "import"]) }
        #expect(throws: Never.self) { try Keydctl.parseAsRoot(["kek", "import", "--file", "-"]) }
    }

    @Test func socketComesFromFlagThenEnvironmentThenDefault() throws {
        let flagged = try SocketOptions.parse(["--socket", "/tmp/a.sock"])
        #expect(flagged.path(environment: ["KEYD_ADMIN_SOCKET": "/tmp/env.sock"]) == "/tmp/a.sock")
        let bare = try SocketOptions.parse([])
        #expect(bare.path(environment: ["KEYD_ADMIN_SOCKET": "/tmp/env.sock"]) == "/tmp/env.sock")
        #expect(bare.path(environment: [:]) == "/run/keyd/admin.sock")
        #expect(bare.path(environment: ["KEYD_ADMIN_SOCKET": ""]) == "/run/keyd/admin.sock")
    }

    @Test(arguments: [
        ["--socket", "/tmp/k.sock", "status"],
        ["status", "--socket", "/tmp/k.sock"],
        ["--socket", "/tmp/k.sock", "audit", "show", "--limit", "3"],
        ["audit", "verify", "--socket", "/tmp/k.sock", "--json"],
        ["kek", "lock", "--socket", "/tmp/k.sock"],
    ])
    func socketIsAcceptedBeforeAndAfterTheSubcommand(arguments: [String]) throws {
        let command = try Keydctl.parseAsRoot(arguments)
        let mirror = Mirror(reflecting: command)
        let options = try #require(
            mirror.children.first { $0.label == "_socket" }?.value as? OptionGroup<SocketOptions>
        )
        #expect(options.wrappedValue.path(environment: [:]) == "/tmp/k.sock")
    }

    @Test func tooLongSocketPathIsAUsageError() {
        let error = #expect(throws: (any Error).self) {
            try Keydctl.parseAsRoot(["status", "--socket", "/" + String(repeating: "s", count: 200)])
        }
        #expect(error.map { Keydctl.exitCode(for: $0).rawValue } == 64)
    }

    @Test func zeroLimitIsAUsageError() {
        let error = #expect(throws: (any Error).self) { try Keydctl.parseAsRoot(["audit", "show", "--limit", "0"]) }
        #expect(error.map { Keydctl.exitCode(for: $0).rawValue } == 64)
    }
}

struct ActionTests {
    @Test func statusPrintsAlignedLines() throws {
        let keyd = StubKeyd()
        let out = Output()
        try AdminActions.status(keyd, json: false, write: out.write)
        let lines = out.text.split(separator: "\n").map(String.init)
        #expect(lines.count == 16)
        // Every value starts in the same column.
        let columns = Set(
            lines.map { line in
                let colon = line.firstIndex(of: ":")!
                return line.distance(
                    from: line.startIndex,
                    to: line[line.index(after: colon)...].firstIndex { $0 != " " }!
                )
            }
        )
        #expect(columns.count == 1)
        #expect(lines.contains { $0.hasPrefix("kek:") && $0.hasSuffix(" held") })
        #expect(lines.contains { $0.hasPrefix("uptime:") && $0.hasSuffix(" 1d 2h 3m 4s (93784 s)") })
        #expect(lines.contains { $0.hasPrefix("audit head:") && $0.hasSuffix(" " + Report.hex(Array(0..<32))) })
        #expect(lines.contains { $0.hasPrefix("operator key:") && $0.hasSuffix(" none pinned") })
        #expect(lines.contains { $0.hasPrefix("policy version:") && $0.hasSuffix(" none (keyd releases no keys)") })
        #expect(lines.contains { $0.hasPrefix("policy sha256:") && $0.hasSuffix(" none") })
    }

    @Test func statusShowsThePolicyInForce() throws {
        let keyd = StubKeyd()
        keyd.statusAnswer.policyVersion = 4
        keyd.statusAnswer.policyDigest = [UInt8](repeating: 0xC3, count: 32)
        keyd.statusAnswer.operatorKeyPinned = true
        let out = Output()
        try AdminActions.status(keyd, json: false, write: out.write)
        #expect(out.lines[0].contains("\noperator key:          pinned (keydctl policy show)\n"))
        #expect(out.lines[0].contains("\npolicy version:        4\n"))
        #expect(out.lines[0].contains("\npolicy sha256:         " + String(repeating: "c3", count: 32) + "\n"))
        let json = Output()
        try AdminActions.status(keyd, json: true, write: json.write)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.text.utf8)) as? [String: Any])
        #expect(object["operatorKeyPinned"] as? Bool == true)
        #expect((object["policyVersion"] as? NSNumber)?.intValue == 4)
        #expect(object["policyDigest"] as? String == String(repeating: "c3", count: 32))
    }

    @Test func statusJSONHasStableCamelCaseKeys() throws {
        let keyd = StubKeyd()
        keyd.statusAnswer.phase = .locked
        keyd.statusAnswer.keydVersion = "0.1\"\n"
        let out = Output()
        try AdminActions.status(keyd, json: true, write: out.write)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "phase", "kek", "peerClass", "uptimeSeconds", "requestsServed", "connections", "auditRecords",
                "auditHead", "auditIntactAtStart", "keydVersion", "protocolVersion", "sealedKEK", "tpmAvailable",
                "operatorKeyPinned", "policyVersion", "policyDigest",
            ]
        )
        #expect(object["operatorKeyPinned"] as? Bool == false)
        #expect((object["policyVersion"] as? NSNumber)?.intValue == 0)
        #expect(object["policyDigest"] is NSNull)
        #expect(object["kek"] as? String == "locked")
        #expect(object["phase"] as? String == "locked")
        #expect(object["keydVersion"] as? String == "0.1\"\n")
        #expect(object["auditHead"] as? String == "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
        #expect((object["uptimeSeconds"] as? NSNumber)?.intValue == 93_784)
    }

    @Test func auditShowPagesUntilTheEnd() throws {
        let keyd = StubKeyd()
        keyd.records = StubKeyd.auditLines(1200)
        let out = Output()
        try AdminActions.auditShow(keyd, from: 0, limit: nil, json: false, write: out.write)
        #expect(keyd.reads.map(\.first) == [0, 512, 1024])
        #expect(keyd.reads.map(\.max) == [512, 512, 512])
        #expect(out.lines.count == 1 + 1200)
        #expect(out.lines[0].hasPrefix("SEQ "))
        #expect(out.lines[1].hasPrefix("0     2026-11-25T13:50:41Z  kek.import"))
        #expect(out.lines[1].hasSuffix("admin     disk=vda reason=r0"))
    }

    @Test func auditShowFollowsShortPagesAndStopsAtTheLimit() throws {
        let keyd = StubKeyd()
        keyd.records = StubKeyd.auditLines(100)
        keyd.pageCapacity = 7
        let out = Output()
        try AdminActions.auditShow(keyd, from: 10, limit: 20, json: false, write: out.write)
        #expect(keyd.reads.map(\.first) == [10, 17, 24])
        #expect(keyd.reads.map(\.max) == [20, 13, 6])
        #expect(out.lines.count == 1 + 20)
        #expect(out.lines.last?.hasPrefix("29 ") == true)
    }

    @Test func auditShowPastTheEndPrintsOnlyTheHeader() throws {
        let keyd = StubKeyd()
        keyd.records = StubKeyd.auditLines(5)
        let out = Output()
        try AdminActions.auditShow(keyd, from: 9, limit: nil, json: false, write: out.write)
        #expect(keyd.reads.count == 1)
        #expect(out.lines.count == 1)
    }

    @Test(arguments: [0, 1, 600])
    func auditShowJSONIsAnArrayOfTheRawRecords(count: Int) throws {
        let keyd = StubKeyd()
        keyd.records = StubKeyd.auditLines(count)
        let out = Output()
        try AdminActions.auditShow(keyd, from: 0, limit: nil, json: true, write: out.write)
        let array = try #require(try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [[String: Any]])
        #expect(array.count == count)
        let body = Array(out.lines.dropFirst().dropLast())
        #expect(body.dropLast().allSatisfy { $0.hasSuffix(",") })
        #expect(body.map { $0.hasSuffix(",") ? String($0.dropLast()) : $0 } == keyd.records)
    }

    @Test func auditRowShowsAMangledLineRawButHarmless() {
        let row = Report.auditRow("not json \u{1B}[2J", index: 7, seqWidth: 3)
        #expect(row.hasPrefix("7    (not an audit record) not json "))
        #expect(!row.contains("\u{1B}"))
    }

    @Test func auditVerifyIntactSucceeds() throws {
        let keyd = StubKeyd()
        let out = Output()
        try AdminActions.auditVerify(keyd, json: false, write: out.write)
        #expect(out.text.contains("intact:"))
        #expect(out.text.contains("first bad record: none"))
    }

    @Test func auditVerifyBrokenPrintsTheReportAndThrows() throws {
        let keyd = StubKeyd()
        keyd.verifyAnswer = AuditVerifyAnswer(
            intact: false,
            records: 9,
            firstBadRecord: 4,
            problem: .edited,
            headHash: [UInt8](repeating: 0xAB, count: 32)
        )
        let out = Output()
        let error = #expect(throws: KeydctlError.self) {
            try AdminActions.auditVerify(keyd, json: true, write: out.write)
        }
        #expect(error?.exitCode == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.text.utf8)) as? [String: Any])
        #expect(object["intact"] as? Bool == false)
        #expect((object["firstBadRecord"] as? NSNumber)?.intValue == 4)
        #expect(object["problem"] as? String == "edited")
        #expect(object["headHash"] as? String == String(repeating: "ab", count: 32))
        #expect((object["explanation"] as? String)?.contains("record 4") == true)
    }

    @Test func importHandsKeydTheDecodedBytes() throws {
        let keyd = StubKeyd()
        let key = [UInt8](repeating: 0x11, count: 32)
        let salt = [UInt8](repeating: 0x22, count: 32)
        let text = #"{"key":"\#(Data(key).base64EncodedString())","salt":"\#(Data(salt).base64EncodedString())"}"#
        let secret = try parseSecret(text)
        try AdminActions.importKEK(keyd, secret)
        #expect(keyd.imported?.key == key)
        #expect(keyd.imported?.salt == salt)
    }

    @Test func refusalPassesThrough() {
        let keyd = StubKeyd()
        keyd.failure = .refused(.wrongPhase, request: .status)
        #expect(throws: KeydClientError.refused(.wrongPhase, request: .status)) {
            try AdminActions.status(keyd, json: false, write: { _ in })
        }
    }
}
