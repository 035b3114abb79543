import Crypto
import KeydCore
import KeydProtocol
import Testing

/// The trust state at rest: strict format, MAC under keyd's key, generation against the TPM counter.
@Suite struct TrustStateFileTests {
    static let key = SymmetricKey(data: [UInt8](repeating: 7, count: 32))
    static func mac(_ bytes: [UInt8]) -> [UInt8] { Array(HMAC<SHA256>.authenticationCode(for: bytes, using: key)) }
    static func otherMAC(_ bytes: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: bytes, using: SymmetricKey(data: [UInt8](repeating: 8, count: 32))))
    }
    static let encodedState = state.encoded(mac: mac)
    static let state = TrustStateFile(
        generation: 3,
        operatorKey: [1] + [UInt8](repeating: 9, count: 32),
        signedPolicy: Array("{}".utf8)
    )

    @Test func roundTrip() throws {
        let bytes = Self.state.encoded(mac: Self.mac)
        #expect(Array(bytes.prefix(6)) == Array("ATST".utf8) + [0, 1])
        #expect(try TrustStateFile(decoding: bytes, mac: Self.mac) == Self.state)
        let empty = TrustStateFile(generation: 1, operatorKey: [], signedPolicy: [])
        #expect(try TrustStateFile(decoding: empty.encoded(mac: Self.mac), mac: Self.mac) == empty)
    }

    @Test func theMACCoversTheLabelAndEveryByte() {
        let bytes = Self.state.encoded(mac: Self.mac)
        // The MAC is over the label too: the bare bytes' HMAC is not the tag.
        #expect(Array(bytes.suffix(32)) != Self.mac(Array(bytes.dropLast(32))))
        for position in [0, 5, 13, 20, bytes.count - 40, bytes.count - 1] {
            var edited = bytes
            edited[position] ^= 0x01
            #expect(throws: CoreError.self) { try TrustStateFile(decoding: edited, mac: Self.mac) }
        }
        #expect(throws: CoreError.self) { try TrustStateFile(decoding: bytes, mac: Self.otherMAC) }
    }

    static let malformed: [(String, [UInt8])] = [
        ("empty", []),
        ("truncated", Array(encodedState.dropLast())),
        ("trailing byte", encodedState + [0]),
        ("other magic", Array("AKEK".utf8) + Array(encodedState.dropFirst(4))),
        ("version 2", Array("ATST".utf8) + [0, 2] + Array(encodedState.dropFirst(6))),
        ("generation 0", TrustStateFile(generation: 0, operatorKey: [], signedPolicy: []).encoded(mac: mac)),
        ("oversized", [UInt8](repeating: 0, count: TrustStateFile.maximumLength + 1)),
    ]

    @Test(arguments: malformed)
    func malformedFilesAreRefused(name: String, bytes: [UInt8]) {
        #expect {
            try TrustStateFile(decoding: bytes, mac: Self.mac)
        } throws: {
            ($0 as? CoreError)?.code == .trustState
        }
    }

    @Test(arguments: [
        (UInt64?.none, UInt64?.none, TrustStateAnchor.Verdict.empty),
        (nil, 3, .removed),
        (4, nil, .counterMissing),
        (4, 4, .consistent),
        (5, 4, .lastChangeUncounted),
        (2, 4, .rolledBack(missing: 2)),
        (7, 4, .counterBehind(3)),
    ])
    func anchorVerdicts(generation: UInt64?, counter: UInt64?, verdict: TrustStateAnchor.Verdict) {
        #expect(TrustStateAnchor.compare(generation: generation, counter: counter) == verdict)
    }
}
