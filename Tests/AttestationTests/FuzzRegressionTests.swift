import Attestation
import Foundation
import Testing

/// Hostile inputs for every parser (length fields at and past their limits, counts that would
/// allocate without bound), and the findings of the Tests/KeydFuzz Attestation targets.
struct FuzzRegressionTests {
    static func hex(_ text: String) -> [UInt8] { bytes(fromHex: text.replacingOccurrences(of: " ", with: ""))! }

    /// (name, parser, input, expected error code)
    static let cases: [(String, String, [UInt8], AttestationError.Code)] = [
        ("attest: empty", "attest", [], .truncated),
        ("attest: signer size 0xffff", "attest", hex("ff544347 8018 ffff"), .lengthExceeded),
        (
            "attest: extraData of 65 bytes", "attest",
            hex("ff544347 8018 0000 0041") + [UInt8](repeating: 0, count: 65), .lengthExceeded
        ),
        ("attest: certify type", "attest", hex("ff544347 8017 0000 0000"), .unsupported),
        (
            "attest: clock safe = 2", "attest", hex("ff544347 8018 0000 0000") + [UInt8](repeating: 0, count: 16) + [2],
            .invalidValue
        ),
        (
            "attest: 17 PCR banks", "attest",
            hex("ff544347 8018 0000 0000") + [UInt8](repeating: 0, count: 25) + hex("00000011"), .lengthExceeded
        ),
        (
            "attest: sizeofSelect 5", "attest",
            hex("ff544347 8018 0000 0000") + [UInt8](repeating: 0, count: 25) + hex("00000001 000b 05"), .lengthExceeded
        ),
        ("public: keyedhash", "public", hex("0008 000b 00000000 0000 0010 0010 00"), .unsupported),
        (
            "public: RSA modulus shorter than keyBits", "public",
            hex("0001 000b 00050072 0000 0010 0014 000b 0800 00000000 0001 ff"), .invalidValue
        ),
        (
            "public: curve P-521", "public", hex("0023 000b 00050072 0000 0010 0018 000b 0005 0010 0000 0000"),
            .unsupported
        ),
        (
            "public: coordinate longer than the curve", "public",
            hex("0023 000b 00050072 0000 0010 0018 000b 0003 0010 0021") + [UInt8](repeating: 1, count: 33)
                + hex("0000"), .invalidValue
        ),
        ("public: authPolicy size 0xffff", "public", hex("0023 000b 00050072 ffff"), .lengthExceeded),
        ("public: TPM2B size larger than its bytes", "public2b", hex("0010 0023"), .truncated),
        ("signature: HMAC", "signature", hex("0005 000b 0000"), .unsupported),
        (
            "signature: RSA of 513 bytes", "signature", hex("0014 000b 0201") + [UInt8](repeating: 0, count: 513),
            .lengthExceeded
        ),
        (
            "signature: ECDSA r of 67 bytes", "signature", hex("0018 000b 0043") + [UInt8](repeating: 0, count: 67),
            .lengthExceeded
        ),
        (
            "event log: event size 0xffffffff", "log",
            hex("00000000 01000000") + [UInt8](repeating: 0, count: 20) + hex("ffffffff"), .invalidEventLog
        ),
        (
            "event log: PCR 24", "log", hex("18000000 01000000") + [UInt8](repeating: 0, count: 20) + hex("00000000"),
            .invalidEventLog
        ),
        (
            "event log: Spec ID with 0xffffffff algorithms", "log",
            hex("00000000 03000000") + [UInt8](repeating: 0, count: 20) + hex("1c000000")
                + Array("Spec ID Event03".utf8) + [0] + hex("00000000 00020002 ffffffff"), .invalidEventLog
        ),
        (
            "event log: Spec ID SHA-256 of 20 bytes", "log",
            hex("00000000 03000000") + [UInt8](repeating: 0, count: 20) + hex("21000000")
                + Array("Spec ID Event03".utf8) + [0] + hex("00000000 00020002 01000000 0b001400 00"), .invalidEventLog
        ),
        ("snp: version 1", "snp", [1] + [UInt8](repeating: 0, count: 1183), .unsupported),
        (
            "snp: r wider than 48 bytes", "snp",
            {
                var r = [UInt8](repeating: 0, count: 1184)
                r[0] = 2
                r[0x2A0 + 71] = 1
                return r
            }(), .invalidValue
        ),
        ("native: bad magic", "native", Array("AEVX".utf8) + hex("0001"), .invalidValue),
        ("native: version 2", "native", Array("AEVD".utf8) + hex("0002"), .unsupported),
        ("native: akPublic of 1025 bytes", "native", Array("AEVD".utf8) + hex("0001 0401"), .lengthExceeded),
        ("native: SHA-1 bank", "native", Array("AEVD".utf8) + hex("0001 0000 0000 0000 0004"), .unsupported),
        ("native: 25 PCRs", "native", Array("AEVD".utf8) + hex("0001 0000 0000 0000 000b 19"), .lengthExceeded),
        (
            "native: PCR indices descending", "native",
            Array("AEVD".utf8) + hex("0001 0000 0000 0000 000b 02 05") + [UInt8](repeating: 0, count: 32) + [4],
            .invalidValue
        ),
        (
            "native: event log over 196608 bytes", "native",
            Array("AEVD".utf8) + hex("0001 0000 0000 0000 000b 00") + [UInt8](repeating: 0, count: 32)
                + hex("00030001"), .lengthExceeded
        ),
        ("constellation: not JSON", "constellation", Array("{".utf8), .invalidJSON),
        (
            "constellation: PCR key 24", "constellation",
            Array(
                #"{"Attestation":{"ak_pub":"","quotes":[{"quote":"","raw_sig":"","pcrs":{"hash":11,"pcrs":{"24":""}}}]},"UserData":""}"#
                    .utf8
            ), .invalidValue
        ),
    ]

    @Test("hostile inputs are typed errors", arguments: cases)
    func hostile(name: String, parser: String, input: [UInt8], code: AttestationError.Code) {
        let error = #expect(throws: AttestationError.self, "\(name)") {
            switch parser {
            case "attest": _ = try TPMSAttest(bytes: input)
            case "public": _ = try TPMTPublic(bytes: input)
            case "public2b": _ = try TPMTPublic(bytes: input, sized: true)
            case "signature": _ = try TPMTSignature(bytes: input)
            case "log": _ = try TCGEventLog(bytes: input)
            case "snp": _ = try SNPReport(bytes: input)
            case "native": _ = try NativeTPMEvidenceDocument(bytes: input)
            default: _ = try ConstellationVTPMDocument(json: input)
            }
        }
        #expect(error?.code == code, "\(name): \(String(describing: error))")
    }
}
