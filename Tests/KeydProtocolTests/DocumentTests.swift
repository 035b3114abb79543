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

    @Test("the limits table matches Limits")
    func limits() throws {
        let rows = markdownTable(in: try document(), header: ["Limit", "Value"])
        let values = Dictionary(uniqueKeysWithValues: rows.map { (unquoted($0[0]), $0[1]) })
        #expect(values["maxFrameLength"] == "65,536 bytes of body" && Limits.maxFrameLength == 65_536)
        #expect(values["minRequestBody / minAnswerBody"] == "\(Limits.minRequestBody) / \(Limits.minAnswerBody) bytes")
        #expect(values["audit record"] == "8,192 bytes" && Limits.maxAuditRecord == 8192)
    }
}
