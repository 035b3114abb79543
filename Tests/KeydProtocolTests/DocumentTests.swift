import KeydCore
import KeydProtocol
import Testing

/// PROTOCOL.md is the contract: these tests read its tables at test time and hold the code to them.
@Suite("PROTOCOL.md agrees with the code")
struct DocumentTests {
    static let statusHeader = ["Code", "Name", "Closes the connection", "Meaning"]
    static let permissionHeader = ["Code", "Name", "Peers", "Phases", "Once", "Served by"]

    private func document() throws -> String {
        try #require(protocolDocument(), "PROTOCOL.md not found beside the sources")
    }

    @Test("the status table lists exactly StatusCode's cases, in order")
    func statusCodes() throws {
        let rows = markdownTable(in: try document(), header: Self.statusHeader)
        #expect(rows.count == StatusCode.allCases.count)
        for (row, status) in zip(rows, StatusCode.allCases) {
            #expect(row.count == Self.statusHeader.count, "row \(row)")
            #expect(UInt16(row[0]) == status.rawValue, "row \(row)")
            #expect(unquoted(row[1]) == status.description, "row \(row)")
            #expect(row[2] == "yes" || row[2] == "no", "row \(row)")
            #expect((row[2] == "yes") == status.closesConnection, "\(status): closes the connection")
        }
    }

    @Test("every documented status code decodes to the documented name")
    func statusCodesByValue() throws {
        for row in markdownTable(in: try document(), header: Self.statusHeader) {
            let code = try #require(UInt16(row[0]), "code \(row[0])")
            let status = try #require(StatusCode(rawValue: code), "code \(code) is documented but not in StatusCode")
            #expect(status.description == unquoted(row[1]))
        }
    }

    @Test("the permission table lists exactly RequestKind's cases, in order")
    func requestKinds() throws {
        let rows = markdownTable(in: try document(), header: Self.permissionHeader)
        #expect(rows.count == RequestKind.allCases.count)
        for (row, kind) in zip(rows, RequestKind.allCases) {
            #expect(row.count == Self.permissionHeader.count, "row \(row)")
            #expect(row[0].hasPrefix("0x") && UInt16(row[0].dropFirst(2), radix: 16) == kind.rawValue, "row \(row)")
            #expect(unquoted(row[1]) == kind.description, "row \(row)")
        }
    }

    @Test("every request kind has its own section", arguments: RequestKind.allCases)
    func requestSections(kind: RequestKind) throws {
        let hex = String(kind.rawValue, radix: 16)
        let code = "0x" + String(repeating: "0", count: 4 - hex.count) + hex
        let headings = try document().split(separator: "\n").filter { $0.hasPrefix("### ") }
        #expect(headings.contains { $0.contains("\(code) \(kind)") }, "no heading names \(code) \(kind)")
    }

    @Test("phases and peer classes carry the documented numbers")
    func phasesAndPeers() throws {
        let text = try document()
        for phase in Phase.allCases { #expect(text.contains("`\(phase)` (\(phase.rawValue)"), "phase \(phase)") }
        #expect(text.contains("`peerClass u8` (1 trustd, 2 admin)"))
        #expect(PeerClass.trustd.rawValue == 1 && PeerClass.admin.rawValue == 2)
    }

    @Test("the retired status code 13 is said to be retired and decodes to no status")
    func retiredStatus() throws {
        #expect(StatusCode(rawValue: 13) == nil)
        #expect(try document().contains("Code 13 (`kekPresent`) is retired"))
    }

    /// The fixed limits, by their name in the table: the numbers their value cell holds, in order.
    static let fixedLimits: [String: [Int]] = [
        "maxFrameLength": [Limits.maxFrameLength],
        "maxAnswerFrameLength": [Limits.maxAnswerFrameLength],
        "minRequestBody / minAnswerBody": [Limits.minRequestBody, Limits.minAnswerBody],
        "requests decoded ahead": [ServingLimits.readAhead],
        "unsent answers": [ServingLimits.unsentAnswers],
        "answers held for the audit commit": [ServingLimits.heldAnswers, ServingLimits.heldAnswerBytes / 1024],
        "audit commit window": [ServingLimits.auditCommitWindowMilliseconds, ServingLimits.auditGroupRecords],
        "trustd work per turn": [ServingLimits.turnMilliseconds],
        "audit record": [Limits.maxAuditRecord],
    ]

    /// keyd's defaults for the configurable limits, by configuration key.
    static let configuredLimits: [String: Int] = {
        let defaults = KeydConfiguration()
        return [
            "frame-timeout-ms": defaults.frameTimeoutMilliseconds,
            "hello-timeout-ms": defaults.helloTimeoutMilliseconds,
            "idle-timeout-ms": defaults.idleTimeoutMilliseconds,
            "max-connections": defaults.maxConnections,
            "max-connections-per-uid": defaults.maxConnectionsPerUID,
            "max-admin-connections": defaults.maxAdminConnections,
            "evidence-per-second": defaults.evidencePerSecond,
            "evidence-burst": defaults.evidenceBurst,
            "evidence-per-second-per-connection": defaults.evidencePerSecondPerConnection,
            "evidence-burst-per-connection": defaults.evidenceBurstPerConnection,
        ]
    }()

    @Test("the limits table matches Limits, ServingLimits and keyd's configuration defaults")
    func limits() throws {
        let rows = markdownTable(in: try document(), header: ["Limit", "Value", "Configuration key"])
        var fixedSeen: Set<String> = []
        var configuredSeen: Set<String> = []
        for row in rows {
            try #require(row.count == 3, "row \(row)")
            let name = unquoted(row[0])
            let key = unquoted(row[2])
            if key == "–" {
                let expected = try #require(Self.fixedLimits[name], "no fixed limit named \(name)")
                #expect(numbers(in: row[1]) == expected, "\(name): \(row[1])")
                fixedSeen.insert(name)
            } else {
                #expect(KeydConfiguration.keys.contains(key), "\(key) is not a configuration key")
                let expected = try #require(Self.configuredLimits[key], "no default known for \(key)")
                #expect(numbers(in: row[1]).first == expected, "\(key): \(row[1]), default \(expected)")
                configuredSeen.insert(key)
            }
        }
        #expect(fixedSeen == Set(Self.fixedLimits.keys))
        #expect(configuredSeen == Set(Self.configuredLimits.keys))
    }

    @Test("README's configuration table gives keyd's default of every configurable limit")
    func readmeConfiguration() throws {
        let text = String(decoding: try #require(readFile(sourceRoot() + "/README.md")), as: UTF8.self)
        let rows = markdownTable(in: text, header: ["Key", "Default", "Meaning"])
        var documented: [String: String] = [:]
        for row in rows {
            // "`a`, `b` | 1, 2": one default per key when the counts agree, else one for all.
            let keys = row[0].split(separator: ",").map { unquoted(String($0)).trimmingSpaces() }
            let values = row[1].split(separator: ",").map { String($0).trimmingSpaces() }
            for (index, key) in keys.enumerated() {
                documented[key] = values.count == keys.count ? values[index] : row[1]
            }
        }
        for (key, value) in Self.configuredLimits {
            #expect(documented[key].map { numbers(in: unquoted($0)) } == [value], "README default of \(key)")
        }
    }
}

/// Every decimal number in `cell`, in order; a comma between digits groups thousands ("65,536" is one).
func numbers(in cell: String) -> [Int] {
    var result: [Int] = []
    var digits = ""
    let characters = Array(cell)
    for (index, character) in characters.enumerated() {
        if character.isASCII, character.isNumber {
            digits.append(character)
        } else if character == ",", !digits.isEmpty, index + 1 < characters.count, characters[index + 1].isNumber {
            continue
        } else if !digits.isEmpty {
            result.append(Int(digits)!)
            digits = ""
        }
    }
    if !digits.isEmpty { result.append(Int(digits)!) }
    return result
}
