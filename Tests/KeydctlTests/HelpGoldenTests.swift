import ArgumentParser
import AsterismTestSupport
import Foundation
import KeydctlCLI
import Testing

/// `--help` of every command, rendered in process at 100 columns, against Golden/<name>.txt.
///
/// Regenerate after an intended change: `UPDATE_GOLDEN=1 swift test --filter KeydctlTests.HelpGoldenTests`.
struct HelpGoldenTests {
    static let commands: [(name: String, command: any ParsableCommand.Type)] = [
        ("keydctl", Keydctl.self),
        ("status", Status.self),
        ("audit", Audit.self),
        ("audit-show", AuditShow.self),
        ("audit-verify", AuditVerify.self),
        ("kek", Kek.self),
        ("kek-import", KekImport.self),
        ("kek-lock", KekLock.self),
        ("disk", Disk.self),
        ("disk-inspect", DiskInspect.self),
        ("disk-format", DiskFormat.self),
        ("disk-bind", DiskBind.self),
        ("disk-open", DiskOpen.self),
        ("disk-close", DiskClose.self),
        ("disk-reset", DiskReset.self),
        ("tpm", TPM.self),
        ("tpm-status", TPMStatus.self),
        ("tpm-evidence", TPMEvidence.self),
        ("policy", Policy.self),
        ("policy-show", PolicyShow.self),
        ("policy-set", PolicySet.self),
        ("policy-pin-operator-key", PolicyPinOperatorKey.self),
    ]

    /// Golden/ of this target.
    static var golden: GoldenFiles {
        GoldenFiles(
            bundle: .module,
            source: URL(filePath: #filePath).deletingLastPathComponent().appending(path: "Golden")
        )
    }

    @Test(arguments: commands.map(\.name))
    func helpMatchesGolden(name: String) throws {
        let command = try #require(Self.commands.first { $0.name == name }).command
        let help = Keydctl.helpMessage(for: command, columns: 100) + "\n"
        #expect(help == (try Self.golden.text(name, updatingTo: help)))
    }

    @Test func rootHelpDocumentsEveryExitStatus() {
        let help = Keydctl.helpMessage(for: Keydctl.self, columns: 100)
        for status in [
            "0   success", "1   keyd refused", "2   keyd unreachable", "3   unreadable or invalid input file",
            "64  usage error",
        ] {
            #expect(help.contains(status), "root help lacks exit status line \(status)")
        }
    }
}
