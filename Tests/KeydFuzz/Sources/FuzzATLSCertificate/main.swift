// libFuzzer target: a peer's attested certificate through the aTLS verifier (X.509 parse, self-signature,
// extension walk, every validator), and the SNI nonce parser a server runs on every ClientHello.
import ATLS
import Attestation
import FoundationEssentials

let policy = TPMQuotePolicy(akTrust: AKTrust(insecureTrustDocumentAK: true))
let verifier = ATLSVerifier(
    validators: [
        NativeTPMDocumentValidator(policy: policy), ConstellationVTPMValidator(policy: policy),
        DummyEvidence.Validator(),
    ],
    insecureAcceptDummy: true
)
let nonce = try! ATLSNonce(bytes: [UInt8](repeating: 0x42, count: 32))
let time = Date(timeIntervalSince1970: 1_800_000_000)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    if let identity = try? verifier.verify(certificateDER: input, nonce: nonce, at: time) {
        // Whatever verified must be bound to the certificate's key.
        if identity.evidence.userData != identity.keyHash {
            fatalError("verified evidence not bound to the certificate key")
        }
    }
    if let parsed = try? ATLSNonce(base64: String(decoding: input, as: UTF8.self)),
        parsed.base64 != String(decoding: input, as: UTF8.self)
    {
        fatalError("a nonce parsed from a non-canonical spelling")
    }
    return 0
}
