import AsterismCLI
import Attestation
import Foundation
import Testing

/// `asterism attestation verify` run in process.
struct CLITests {
    static func snpArguments(
        _ extra: [String] = [],
        report: String = TestVectors.path("sev-snp/report-milan-vcek.bin")
    ) -> [String] {
        [
            "attestation", "verify", "snp", "--report", report, "--vcek", TestVectors.path("sev-snp/vcek-milan.der"),
            "--ask-ark", TestVectors.path("sev-snp/amd-ask-ark-milan.pem"), "--at", "2025-01-01T00:00:00Z",
        ] + extra
    }

    @Test(
        "snp: exit 0 valid, 1 refused, with human and JSON output",
        arguments: [
            ([String](), Int32(1), "snp.debug"),
            (["--allow-debug"], Int32(0), ""),
            (["--allow-debug", "--vmpl", "1", "--vmpl", "2"], Int32(1), "snp.vmpl"),
        ]
    )
    func snp(extra: [String], status: Int32, failing: String) throws {
        let human = Asterism.execute(Self.snpArguments(extra))
        #expect(human.status == status, "\(human.stderr)")
        #expect(human.stdout.hasPrefix("sev-snp: " + (status == 0 ? "VALID" : "REFUSED")))
        if !failing.isEmpty { #expect(human.stdout.contains("FAIL  \(failing)")) }
        let json = Asterism.execute(Self.snpArguments(extra + ["--json"]))
        #expect(json.status == status)
        let report = try JSONDecoder().decode(AttestationReport.self, from: Data(json.stdout.utf8))
        #expect(report.isValid == (status == 0))
        #expect(report.failures.map(\.policy) == (failing.isEmpty ? [] : [failing]))
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(object?["valid"] as? Bool == (status == 0))
    }

    /// The real Milan report's TCB is bootloader=2 tee=0 snp=5 microcode=68.
    @Test(
        "snp --min-tcb: met, above, and every component checked",
        arguments: [
            ("bootloader=2,tee=0,snp=5,microcode=68", Int32(0)),
            ("snp=5", Int32(0)),
            ("bootloader=2,tee=0,snp=5,microcode=68,fmc=0", Int32(0)),
            ("bootloader=3", Int32(1)),
            ("tee=1", Int32(1)),
            ("snp=6", Int32(1)),
            ("microcode=69", Int32(1)),
            ("bootloader=2,tee=0,snp=6,microcode=68", Int32(1)),
        ]
    )
    func snpMinimumTCB(minimum: String, status: Int32) throws {
        let outcome = Asterism.execute(Self.snpArguments(["--allow-debug", "--min-tcb", minimum, "--json"]))
        #expect(outcome.status == status, "\(outcome.stdout)\(outcome.stderr)")
        let report = try JSONDecoder().decode(AttestationReport.self, from: Data(outcome.stdout.utf8))
        let result = try #require(report.result(of: "snp.tcb.minimum"))
        #expect(result.outcome == (status == 0 ? .passed : .failed))
        #expect(result.values.first { $0.name == "reported" }?.value == "bootloader=2 tee=0 snp=5 microcode=68")
        if minimum == "snp=6" {
            #expect(result.values.first { $0.name == "minimum" }?.value == "bootloader=0 tee=0 snp=6 microcode=0")
        }
    }

    @Test(
        "usage and parse errors exit 2",
        arguments: [
            snpArguments(["--min-tcb", "snp=x"]),
            snpArguments(["--min-tcb", "snp=256"]),
            snpArguments(["--min-tcb", "vmpl=1"]),
            snpArguments(["--min-tcb", "snp=5,snp=6"]),
            snpArguments(["--min-tcb", ""]),
            ["attestation", "verify", "snp"],
            ["attestation", "verify", "tpm", "--attest", "/nonexistent"],
            ["attestation", "verify", "bogus"],
            snpArguments(["--at", "yesterday"]),
            snpArguments(report: TestVectors.path("sev-snp/vcek-milan.der")),
        ]
    )
    func usageErrors(arguments: [String]) {
        let outcome = Asterism.execute(arguments)
        #expect(outcome.status == 2)
        #expect(!outcome.stderr.isEmpty)
    }

    @Test("tpm and constellation verify swtpm evidence", .needsSwtpm)
    func tpmAndConstellation() throws {
        let quotes = try SwtpmQuotes.get()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("asterism-cli-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func write(_ name: String, _ bytes: [UInt8]) -> String {
            let path = directory + "/" + name
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
            return path
        }
        let quote = quotes.ecc
        let pcrs =
            "{\"sha256\": {" + quote.pcrs.map { "\"\($0.key)\": \"\(hex($0.value))\"" }.joined(separator: ", ") + "}}"
        let base = [
            "attestation", "verify", "tpm", "--attest", write("q.msg", quote.attest), "--signature",
            write("q.sig", quote.signature),
            "--ak-public", write("ak.pub", quote.akPublic), "--pcrs", write("pcrs.json", Array(pcrs.utf8)),
        ]
        let trusted = base + ["--ak-digest", hex(try quote.akDigest)]
        #expect(Asterism.execute(trusted + ["--nonce", hex(quote.qualifyingData)]).status == 0)
        let unfresh = Asterism.execute(trusted)
        #expect(unfresh.status == 0)
        #expect(unfresh.stdout.contains("skip  tpm.quote.qualifying-data: no nonce given: freshness was not checked"))
        #expect(Asterism.execute(trusted + ["--nonce", "00"]).status == 1)
        #expect(Asterism.execute(base).status == 1)
        let insecure = Asterism.execute(base + ["--insecure-trust-document-ak"])
        #expect(insecure.status == 0)
        #expect(insecure.stdout.contains("NOTE  insecureTrustDocumentAK"))

        let constellation = quotes.constellation
        let document = ConstellationVTPMDocument(
            akPublic: constellation.akPublic,
            quotes: [
                .init(
                    quote: constellation.attest,
                    rawSignature: constellation.signature,
                    hash: 11,
                    pcrs: constellation.pcrs
                )
            ],
            userData: SwtpmQuotes.userDataDigest
        ).jsonBytes()
        let measurements =
            "{\"4\": {\"expected\": \"\(hex(constellation.pcrs[4]!))\", \"warnOnly\": false}, \"15\": \"\(hex(constellation.pcrs[15]!))\"}"
        let arguments = [
            "attestation", "verify", "constellation", "--document", write("doc.json", document), "--nonce",
            hex(SwtpmQuotes.nonce),
            "--measurements", write("m.json", Array(measurements.utf8)),
        ]
        #expect(Asterism.execute(arguments).status == 1)
        let accepted = Asterism.execute(arguments + ["--insecure-trust-document-ak", "--json"])
        #expect(accepted.status == 0, "\(accepted.stdout)")
        #expect(
            try JSONDecoder().decode(AttestationReport.self, from: Data(accepted.stdout.utf8)).notes == [
                AKTrust.insecureNote
            ]
        )
        #expect(Asterism.execute(arguments + ["--insecure-trust-document-ak", "--nonce", "ff"]).status == 1)
    }
}
