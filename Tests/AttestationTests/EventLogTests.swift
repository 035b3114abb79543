import Attestation
import Crypto
import Foundation
import Testing

/// The TCG event logs from real machines in Tests/TestVectors/tpm-eventlogs.
@Suite
struct EventLogTests {
    @Test("every log parses and replays in each of its banks", arguments: TestVectors.eventLogs)
    func parsesAndReplays(name: String) throws {
        let log = try TCGEventLog(bytes: try TestVectors.bytes("tpm-eventlogs/" + name))
        #expect(!log.events.isEmpty)
        for bank in log.algorithms.keys where bank.digestSize != nil {
            let pcrs = try log.replay(bank: bank)
            #expect(Set(pcrs.keys) == log.replayedPCRs(bank: bank))
            for value in pcrs.values { #expect(value.count == bank.digestSize) }
        }
    }

    @Test("separator and action digests are the hash of their data", arguments: TestVectors.eventLogs)
    func digestsOfData(name: String) throws {
        let log = try TCGEventLog(bytes: try TestVectors.bytes("tpm-eventlogs/" + name))
        for event in log.events where event.type == TCGEventLog.separator || event.type == 0x8000_0007 {
            for (bank, digest) in event.digests {
                let expected: [UInt8] =
                    switch bank {
                    case .sha1: Array(Insecure.SHA1.hash(data: event.data))
                    case .sha256: Array(SHA256.hash(data: event.data))
                    case .sha384: Array(SHA384.hash(data: event.data))
                    default: digest
                    }
                #expect(digest == expected, "\(name) event \(event.number) \(bank)")
            }
        }
    }

    /// Logs of a whole boot (the others are partial: option ROMs, a secure-boot certificate, a NoAction event).
    static let wholeBoots = [
        "coreos_36_shielded_vm_no_secure_boot_eventlog", "crypto_agile_eventlog",
        "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
    ]

    @Test("whole-boot logs extend PCRs 0-7 and separate each of PCRs 0-6", arguments: wholeBoots)
    func firmwareShape(name: String) throws {
        let log = try TCGEventLog(bytes: try TestVectors.bytes("tpm-eventlogs/" + name))
        let separators = Set(log.events.filter { $0.type == TCGEventLog.separator }.map(\.pcr))
        #expect(separators.isSuperset(of: 0...6))
        let bank: TPMAlgorithm = log.algorithms[.sha256] != nil ? .sha256 : .sha1
        #expect(log.replayedPCRs(bank: bank).isSuperset(of: 0...7))
    }

    @Test("every measured event carries a digest for each bank the log declares", arguments: TestVectors.eventLogs)
    func everyBank(name: String) throws {
        let log = try TCGEventLog(bytes: try TestVectors.bytes("tpm-eventlogs/" + name))
        for event in log.events.dropFirst() where event.type != TCGEventLog.noAction {
            #expect(Set(event.digests.keys) == Set(log.algorithms.keys), "\(name) event \(event.number)")
        }
        let banks = log.algorithms.keys.filter { $0.digestSize != nil }
        let covered = Set(try banks.map { try Set(log.replay(bank: $0).keys) })
        #expect(covered.count <= 1, "banks replay different PCR sets")
    }

    @Test("the crypto-agile and legacy formats are told apart")
    func formats() throws {
        let agile = try TCGEventLog(bytes: TestVectors.bytes("tpm-eventlogs/crypto_agile_eventlog"))
        #expect(agile.cryptoAgile)
        #expect(agile.algorithms.keys.contains(.sha256))
        #expect(try !TCGEventLog(bytes: TestVectors.bytes("tpm-eventlogs/option_rom_eventlog")).cryptoAgile)
        let short = try TCGEventLog(bytes: TestVectors.bytes("tpm-eventlogs/short_no_action_eventlog"))
        #expect(short.startupLocality == 3)
        #expect(try short.replay(bank: .sha1).isEmpty)
    }

    @Test("a PCR that does not match names the PCR and its events")
    func mismatchNamesEvents() throws {
        let ubuntu = "tpm-eventlogs/ubuntu_2104_shielded_vm_no_secure_boot_eventlog"
        let log = try TCGEventLog(bytes: try TestVectors.bytes(ubuntu))
        var quoted = try log.replay(bank: .sha256)
        #expect(try log.compare(with: quoted, bank: .sha256).isEmpty)
        quoted[4]![0] ^= 1
        let mismatches = try log.compare(with: quoted, bank: .sha256)
        #expect(mismatches.map(\.pcr) == [4])
        let events = try #require(mismatches.first).events
        #expect(!events.isEmpty)
        #expect(events.allSatisfy { $0.pcr == 4 })
        #expect(events.contains { $0.typeName == "EV_EFI_BOOT_SERVICES_APPLICATION" })
        #expect(events.contains { $0.typeName == "EV_SEPARATOR" })
    }

    @Test("every prefix of a log either parses or is refused with a typed error")
    func truncations() throws {
        let bytes = try TestVectors.bytes("tpm-eventlogs/crypto_agile_eventlog")
        for length in stride(from: 0, to: bytes.count, by: 7) {
            do {
                _ = try TCGEventLog(bytes: bytes.prefix(length))
            } catch {
                #expect([.invalidEventLog, .truncated].contains(error.code))
            }
        }
    }
}
