// libFuzzer target: the operator key, the signed policy and the measurement policy decoders.
//
// Checks, each a `fatalError`: an operator key that decodes re-encodes to exactly its input; a signed
// policy that decodes reads back from its own encoding as the same value, and never verifies with a key
// the fuzzer does not hold; a measurement policy that decodes keeps its input as its JSON, and its
// canonical form decodes to a policy with the same canonical form.
import KeydCore

/// The pinned key every signed input is checked against: 32 bytes whose private half nobody holds.
let pinned = try! OperatorKey(decoding: [1] + (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ 7) })

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    if let key = try? OperatorKey(decoding: input), key.encoded != input {
        fatalError("an operator key does not re-encode to its input")
    }
    if let signed = try? SignedPolicy(decoding: input) {
        guard let again = try? SignedPolicy(decoding: signed.encoded), again == signed else {
            fatalError("a signed policy does not read back from its own encoding")
        }
        if (try? signed.verified(by: pinned, above: nil)) != nil { fatalError("a fuzzed policy verified") }
    }
    if let policy = try? MeasurementPolicy(json: input) {
        if policy.json != input { fatalError("a policy does not keep its input as its JSON") }
        guard let canonical = try? MeasurementPolicy(json: policy.canonicalJSON),
            canonical.canonicalJSON == policy.canonicalJSON
        else {
            fatalError("a policy's canonical form does not read back to itself")
        }
    }
    return 0
}
