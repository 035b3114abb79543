// libFuzzer target: key envelopes, data-key envelopes and init envelopes as keyd parses and opens them.
//
// Checks, each a `fatalError`: an input that parses re-encodes to exactly itself (so no trailing or
// non-canonical byte is accepted); no input parses as both kinds; opening with a boot key the input was
// not sealed to always fails (the fuzzer cannot forge an AEAD tag).
import KeydCore

/// The boot key every input is opened with: made once, so opening costs one HPKE attempt per input.
let bootKey = BootKey()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: start, count: count))
    let key = try? KeyEnvelope(decoding: input)
    if let key {
        if key.encoded != input { fatalError("a key envelope does not re-encode to its input") }
        if (try? key.open(with: bootKey)) != nil { fatalError("a fuzzed key envelope opened") }
    }
    if let initEnvelope = try? InitEnvelope(decoding: input) {
        if key != nil { fatalError("an input parsed as a key envelope and an init envelope") }
        if initEnvelope.encoded != input { fatalError("an init envelope does not re-encode to its input") }
        if (try? initEnvelope.open(with: bootKey, operatorKey: [], signedPolicy: [])) != nil {
            fatalError("a fuzzed init envelope opened")
        }
    }
    do {
        let opened = try DataKeyEnvelope.open(input, with: bootKey)
        fatalError("a fuzzed data-key envelope opened (\(opened.binding.dataKeyID))")
    } catch {}
    return 0
}
