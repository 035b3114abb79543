// libFuzzer target: TPMT_PUBLIC and TPM2B_PUBLIC parsing, then key import and digest (which must
// throw AttestationError or succeed, never trap).
import Attestation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    for key in [
        try? TPMTPublic(bytes: input), try? TPMTPublic(bytes: input, sized: true), try? TPMTPublic(anyEncoding: input),
    ] {
        guard let key else { continue }
        _ = key.name
        if let digest = try? key.keyDigest(), digest.count != 32 { fatalError("key digest of \(digest.count) bytes") }
    }
    return 0
}
