// libFuzzer target: TCG event log parsing, replay in every declared bank, and comparison.
import Attestation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    guard let log = try? TCGEventLog(bytes: input) else { return 0 }
    for bank in log.algorithms.keys where bank.digestSize != nil {
        guard let pcrs = try? log.replay(bank: bank) else { continue }
        if Set(pcrs.keys) != log.replayedPCRs(bank: bank) { fatalError("replay and replayedPCRs disagree") }
        if let mismatches = try? log.compare(with: pcrs, bank: bank), !mismatches.isEmpty {
            fatalError("a log mismatches its own replay")
        }
    }
    for event in log.events { _ = event.summary }
    return 0
}
