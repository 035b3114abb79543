import Attestation
import Foundation
import Testing

/// Replays each crypto-agile test log into a real (software) TPM with tpm2_pcrextend and compares the
/// TPM's PCRs with ``TCGEventLog/replay(bank:)``: an oracle independent of this module's hashing.
@Suite(.needsSwtpm)
struct EventLogSwtpmTests {
    static let logs = [
        "coreos_36_shielded_vm_no_secure_boot_eventlog", "crypto_agile_eventlog", "sb_cert_eventlog",
        "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
    ]

    @Test("replay matches the TPM's own extends", arguments: logs)
    func replayMatchesTPM(name: String) throws {
        let log = try TCGEventLog(bytes: try TestVectors.bytes("tpm-eventlogs/" + name))
        let tpm = try SoftwareTPM()
        func tool(_ name: String, _ arguments: [String]) throws -> String { try tpm.run(name, arguments) }
        // The TPM starts at locality 0; a log from locality 3 starts PCR 0 elsewhere, so leave PCR 0 out then.
        let banks = [(TPMAlgorithm.sha1, "sha1"), (.sha256, "sha256")].filter { log.algorithms[$0.0] != nil }
        let measured = log.events.filter {
            $0.type != TCGEventLog.noAction && !(log.startupLocality != 0 && $0.pcr == 0)
        }
        for chunk in stride(from: 0, to: measured.count, by: 16) {
            let specs = measured[chunk..<min(chunk + 16, measured.count)].map { event in
                "\(event.pcr):" + banks.map { "\($0.1)=\(hex(event.digests[$0.0] ?? []))" }.joined(separator: ",")
            }
            _ = try tool("tpm2_pcrextend", specs)
        }
        for (bank, bankName) in banks {
            let replayed = try log.replay(bank: bank).filter { !(log.startupLocality != 0 && $0.key == 0) }
            let output = try tool(
                "tpm2_pcrread",
                ["\(bankName):" + replayed.keys.sorted().map(String.init).joined(separator: ",")]
            )
            var fromTPM: [Int: [UInt8]] = [:]
            for line in output.split(separator: "\n") where line.contains(": 0x") {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard let index = Int(parts[0].trimmingCharacters(in: .whitespaces)),
                    let value = bytes(fromHex: parts[1].trimmingCharacters(in: .whitespaces))
                else { continue }
                fromTPM[index] = value
            }
            #expect(fromTPM == replayed, "\(bankName) bank of \(name)")
            #expect(!replayed.isEmpty)
        }
    }
}
