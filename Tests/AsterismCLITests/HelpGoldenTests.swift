import ArgumentParser
import AsterismTestSupport
import Foundation
import Testing

@testable import AsterismCLI

/// `--help` of every asterism command, rendered in process at 100 columns, against Golden/<name>.txt.
///
/// Regenerate after an intended change: `UPDATE_GOLDEN=1 swift test --filter AsterismCLITests.HelpGoldenTests`.
struct HelpGoldenTests {
    /// Every command, named by its path below `asterism` joined with "-" (`asterism` is the root).
    static let commands: [(name: String, command: any ParsableCommand.Type)] = [
        ("asterism", Asterism.self),
        ("init", InitCommand.self),
        ("verify", ClusterVerifyCommand.self),
        ("recover", RecoverCommand.self),
        ("keygen", Keygen.self),
        ("policy", PolicyCommand.self),
        ("policy-sign", PolicySign.self),
        ("policy-verify", PolicyVerify.self),
        ("policy-show", PolicyShow.self),
        ("policy-from-evidence", PolicyFromEvidence.self),
        ("policy-push", PolicyPush.self),
        ("attestation", AttestationCommand.self),
        ("attestation-verify", VerifyCommand.self),
        ("attestation-verify-snp", VerifySNP.self),
        ("attestation-verify-tpm", VerifyTPM.self),
        ("attestation-verify-constellation", VerifyConstellation.self),
        ("atls", ATLSCommand.self),
        ("atls-probe", ATLSProbe.self),
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
        let help = Asterism.helpMessage(for: command, columns: 100) + "\n"
        #expect(help == (try Self.golden.text(name, updatingTo: help)))
    }

    @Test func everyCommandHasAGolden() {
        func names(_ command: any ParsableCommand.Type, path: [String]) -> [String] {
            let name = (path.isEmpty ? ["asterism"] : path).joined(separator: "-")
            return [name]
                + command.configuration.subcommands.flatMap {
                    names($0, path: path + [$0.configuration.commandName ?? "\($0)"])
                }
        }
        #expect(names(Asterism.self, path: []).sorted() == Self.commands.map(\.name).sorted())
    }

    @Test func shellCompletionCoversTheLifecycleCommands() {
        for shell in [CompletionShell.bash, .zsh, .fish] {
            let script = Asterism.completionScript(for: shell)
            for command in ["init", "verify", "recover", "keygen", "policy"] {
                #expect(script.contains(command), "\(shell) completion lacks \(command)")
            }
        }
    }

    @Test func rootHelpDocumentsEveryExitStatus() {
        let help = Asterism.helpMessage(for: Asterism.self, columns: 100)
        for (status, meaning) in [
            (Asterism.ExitStatus.valid, "valid"), (Asterism.ExitStatus.refused, "refused"),
            (Asterism.ExitStatus.error, "usage, parse or connection error"),
        ] {
            #expect(help.contains("\(status)  \(meaning)"), "root help lacks exit status \(status)")
        }
    }
}
