// The shared harness (Spawn, SoftwareTPM, HarnessError) is visible to every file of this target.
@_exported import AsterismTestSupport
import Foundation
import Testing

/// Files under ../shared/testdata, found relative to the package root.
enum TestData {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.deletingLastPathComponent().appendingPathComponent("shared/testdata").path
    }()

    static var available: Bool { FileManager.default.fileExists(atPath: root) }

    static func path(_ relative: String) -> String { root + "/" + relative }

    static func bytes(_ relative: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path(relative)) else { throw HarnessError("cannot read \(path(relative))") }
        return Array(data)
    }

    static func text(_ relative: String) throws -> String { String(decoding: try bytes(relative), as: UTF8.self) }

    /// Every event log in tpm-eventlogs.
    static var eventLogs: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path("tpm-eventlogs"))) ?? [])
            .filter { $0.hasSuffix("eventlog") }.sorted()
    }
}

extension Trait where Self == ConditionTrait {
    /// Needs ../shared/testdata.
    static var needsTestData: Self { .enabled(if: TestData.available, "needs ../shared/testdata beside the package") }
    /// Needs swtpm and tpm2-tools to make real quotes.
    static var needsSwtpm: Self {
        .enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/swtpm") && FileManager.default.fileExists(atPath: "/usr/bin/tpm2_quote"),
                 "needs swtpm and tpm2-tools (/usr/bin/swtpm, /usr/bin/tpm2_quote)")
    }
}
