// libFuzzer target: SEV-SNP report parsing (inputs are padded or cut to 1184 bytes half the time,
// so the fields past the size check are reached) and AMD certificate parsing.
import Attestation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    let sized =
        input.count >= 1184 ? Array(input.prefix(1184)) : input + [UInt8](repeating: 0, count: 1184 - input.count)
    for candidate in [input, sized] {
        guard let report = try? SNPReport(bytes: candidate) else { continue }
        if report.bytes != candidate || report.signatureRS.count != 96 { fatalError("report does not hold its input") }
        for product in SNPProduct.allCases { _ = report.reportedTCB(product).description }
    }
    _ = try? AMDCertificate(derEncoded: input)
    _ = try? AMDCertificate.pemBundle(String(decoding: input, as: UTF8.self))
    return 0
}
