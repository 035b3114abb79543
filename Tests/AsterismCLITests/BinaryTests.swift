import AsterismCLI
import AsterismTestSupport
import Foundation
import Testing

/// The built `asterism` binary, through ArgumentParser's own dispatch: each way of asking for help prints the
/// help of the command named, and runs end with the README's exit statuses, as they do in process.
struct BinaryTests {
    /// Runs the binary at 100 columns, the width of the goldens.
    static func run(_ arguments: [String]) throws -> CommandResult {
        var environment = ProcessInfo.processInfo.environment
        environment["COLUMNS"] = "100"
        return try Spawn.run(BuiltProducts.asterism, arguments, environment: environment)
    }

    @Test(
        "help of the command named",
        arguments: [
            ([], "asterism"),
            (["--help"], "asterism"),
            (["help"], "asterism"),
            (["attestation"], "attestation"),
            (["attestation", "--help"], "attestation"),
            (["attestation", "verify", "-h"], "attestation-verify"),
            (["attestation", "verify", "snp", "--help"], "attestation-verify-snp"),
            (["attestation", "verify", "tpm", "--help"], "attestation-verify-tpm"),
            (["help", "attestation", "verify", "tpm"], "attestation-verify-tpm"),
            (["attestation", "verify", "constellation", "--help"], "attestation-verify-constellation"),
            (["keygen", "--help"], "keygen"),
            (["policy"], "policy"),
            (["policy", "sign", "--help"], "policy-sign"),
            (["help", "policy", "verify"], "policy-verify"),
            (["policy", "show", "-h"], "policy-show"),
            (["policy", "from-evidence", "--help"], "policy-from-evidence"),
            (["atls", "--help"], "atls"),
            (["atls", "probe", "--help"], "atls-probe"),
            (["help", "atls", "probe"], "atls-probe"),
        ]
    )
    func help(arguments: [String], golden: String) throws {
        let result = try Self.run(arguments)
        #expect(result.status == Asterism.ExitStatus.valid, "\(result.stderr)")
        #expect(result.stdout == (try HelpGoldenTests.golden.text(golden)))
        #expect(result.stderr.isEmpty)
    }

    static func snp(_ extra: [String]) -> [String] {
        [
            "attestation", "verify", "snp", "--report", TestVectors.path("sev-snp/report-milan-vcek.bin"),
            "--vcek", TestVectors.path("sev-snp/vcek-milan.der"),
            "--ask-ark", TestVectors.path("sev-snp/amd-ask-ark-milan.pem"), "--at", "2025-01-01T00:00:00Z",
        ] + extra
    }

    @Test(
        "exit statuses, the same in process",
        arguments: [
            (snp(["--allow-debug"]), Asterism.ExitStatus.valid, "sev-snp: VALID"),
            (snp([]), Asterism.ExitStatus.refused, "FAIL  snp.debug"),
            (["attestation", "verify", "bogus"], Asterism.ExitStatus.error, ""),
            (["attestation", "verify", "snp"], Asterism.ExitStatus.error, ""),
            (snp(["--min-tcb", "snp=x"]), Asterism.ExitStatus.error, ""),
            (
                [
                    "attestation", "verify", "tpm", "--attest", "/nonexistent", "--signature", "/nonexistent",
                    "--ak-public", "/nonexistent", "--pcrs", "/nonexistent",
                ], Asterism.ExitStatus.error, ""
            ),
            (
                ["policy", "verify", "--signed", "/nonexistent", "--operator-key", "/nonexistent"],
                Asterism.ExitStatus.error, ""
            ),
            (["policy", "from-evidence", "--out", "/nonexistent/policy.json"], Asterism.ExitStatus.error, ""),
            (["keygen"], Asterism.ExitStatus.error, ""),
            (["atls", "probe", "no-port"], Asterism.ExitStatus.error, ""),
            (["atls", "probe", "127.0.0.1:1", "--tls", "1.1"], Asterism.ExitStatus.error, ""),
            (["--bogus"], Asterism.ExitStatus.error, ""),
        ]
    )
    func exitStatus(arguments: [String], status: Int32, printed: String) throws {
        let result = try Self.run(arguments)
        #expect(result.status == status, "\(result.stderr)")
        let inProcess = Asterism.execute(arguments)
        #expect(inProcess.status == status, "\(inProcess.stderr)")
        if printed.isEmpty {
            #expect(!result.stderr.isEmpty && result.stdout.isEmpty)
            #expect(!inProcess.stderr.isEmpty && inProcess.stdout.isEmpty)
        } else {
            #expect(result.stdout.contains(printed))
            #expect(inProcess.stdout == result.stdout)
        }
    }
}
