// libFuzzer target: TPMS_ATTEST parsing. A parse either throws AttestationError or yields a quote
// whose bytes are the input and whose selection holds only indices its masks allow.
import Attestation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    guard let attest = try? TPMSAttest(bytes: input) else { return 0 }
    guard attest.bytes == input, attest.type == TPMSAttest.quoteType else {
        fatalError("parsed quote does not hold its input")
    }
    for bank in attest.pcrSelection
    where bank.indices.contains(where: { $0 < 0 || $0 >= 32 }) || bank.indices != bank.indices.sorted() {
        fatalError("selection index out of range or unsorted")
    }
    return 0
}
