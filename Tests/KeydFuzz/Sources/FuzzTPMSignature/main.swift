// libFuzzer target: TPMT_SIGNATURE parsing, and verification of whatever parses against a fixed
// P-256 and RSA key over the input itself (must return false, never trap).
import Attestation
import FoundationEssentials

/// A P-256 restricted signing key as tpm2_createak makes it.
let eccKey = try! TPMTPublic(
    bytes: [
        0x00, 0x23, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0B,
        0x00, 0x03, 0x00, 0x10, 0x00, 0x20,
    ] + bytes(fromHex: "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")!
        + [0x00, 0x20] + bytes(fromHex: "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")!
)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    guard let signature = try? TPMTSignature(bytes: input) else { return 0 }
    let attest = try! TPMSAttest(
        bytes: [0xFF, 0x54, 0x43, 0x47, 0x80, 0x18, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 25) + [0, 0, 0, 0, 0, 0]
    )
    let evidence = TPMQuoteEvidence(akPublic: eccKey, attest: attest, signature: signature, pcrValues: [:])
    let report = TPMQuoteValidator.validate(
        evidence,
        policy: TPMQuotePolicy(akTrust: AKTrust(insecureTrustDocumentAK: true)),
        context: ValidationContext(time: .init(timeIntervalSince1970: 0))
    )
    if report.result(of: "tpm.quote.signature")?.outcome == .passed { fatalError("a fuzzed signature verified") }
    return 0
}
