// libFuzzer target: the native evidence document (must re-serialize byte for byte) and
// Constellation's qemu-vtpm JSON document, each validated after parsing.
import Attestation
import FoundationEssentials

let policy = TPMQuotePolicy(akTrust: AKTrust(insecureTrustDocumentAK: true))
let time = ValidationContext(time: .init(timeIntervalSince1970: 0)).time

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    if let document = try? NativeTPMEvidenceDocument(bytes: input) {
        if document.serialized() != input { fatalError("native document does not re-serialize to its input") }
        _ = try? TPMEvidenceValidator.validate(
            native: input,
            nonce: nil,
            userDataDigest: document.userDataDigest,
            policy: policy,
            at: time
        )
    }
    if (try? ConstellationVTPMDocument(json: input)) != nil {
        _ = try? TPMEvidenceValidator.validate(
            constellation: input,
            nonce: [UInt8](repeating: 0, count: 32),
            userData: nil,
            policy: policy,
            at: time
        )
    }
    return 0
}
