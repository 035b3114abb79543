import FoundationEssentials
import KeydProtocol
import Testing

@testable import KeydCore

/// The audit log's event names are a contract: PROTOCOL.md lists exactly the names keyd writes.
@Suite struct AuditEventTests {
    /// The event names of PROTOCOL.md's "Audit log" table, with the request row expanded to every request name.
    static func documentedNames() throws -> [String] {
        let path =
            String(#filePath.prefix(upTo: #filePath.range(of: "/Tests/")!.lowerBound))
            + "/Sources/KeydProtocol/PROTOCOL.md"
        let document = try String(contentsOfFile: path, encoding: .utf8)
        let section = try #require(
            document.components(separatedBy: "## Audit log").dropFirst().first?
                .components(separatedBy: "\n## ").first
        )
        var names: [String] = []
        for line in section.split(separator: "\n") where line.hasPrefix("| `") {
            let name = String(line.dropFirst(3).prefix { $0 != "`" })
            names += name == "<request name>" ? RequestKind.allCases.map(\.description) : [name]
        }
        return names
    }

    @Test func protocolDocumentListsExactlyTheEventNames() throws {
        #expect(try Self.documentedNames() == AuditEvent.allCases.map(\.description))
    }

    @Test func namesAreUnique() {
        #expect(Set(AuditEvent.allCases.map(\.description)).count == AuditEvent.allCases.count)
    }
}
