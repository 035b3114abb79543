import Crypto
import Foundation
import KeydCore
import Testing

/// The operator key: its wire form, PEM, and signature checks for both algorithms.
@Suite struct OperatorKeyTests {
    /// A signing operator for tests: the private key and the pinned public form.
    struct Signer: Sendable, CustomTestStringConvertible {
        let key: OperatorKey
        let sign: @Sendable ([UInt8]) -> [UInt8]
        var testDescription: String { key.algorithm.description }

        static func ed25519() -> Signer {
            let privateKey = Curve25519.Signing.PrivateKey()
            return Signer(key: OperatorKey(privateKey.publicKey)) { Array(try! privateKey.signature(for: $0)) }
        }

        static func p256() -> Signer {
            let privateKey = P256.Signing.PrivateKey()
            return Signer(key: OperatorKey(privateKey.publicKey)) {
                Array(try! privateKey.signature(for: SHA256.hash(data: $0)).derRepresentation)
            }
        }
    }

    static let signers = [Signer.ed25519(), Signer.p256()]

    @Test(arguments: signers)
    func encodedFormRoundTrips(signer: Signer) throws {
        let encoded = signer.key.encoded
        #expect(encoded.first == signer.key.algorithm.rawValue)
        #expect(encoded.count == 1 + signer.key.algorithm.keyLength)
        let decoded = try OperatorKey(decoding: encoded)
        #expect(decoded == signer.key)
        #expect(decoded.digest == Array(SHA256.hash(data: encoded)))
        #expect(signer.key.description.hasPrefix("\(signer.key.algorithm) key sha256:"))
    }

    @Test(arguments: signers)
    func pemRoundTrips(signer: Signer) throws {
        let pem = signer.key.pem
        #expect(pem.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        #expect(try OperatorKey(pem: pem) == signer.key)
    }

    @Test(arguments: signers)
    func signaturesVerifyOnlyForTheKeyAndTheMessage(signer: Signer) {
        let message = Array("asterism-policy-v1\n{}".utf8)
        let signature = signer.sign(message)
        #expect(signer.key.verify(signature: signature, message: message))
        #expect(!signer.key.verify(signature: signature, message: message + [0]))
        var flipped = signature
        flipped[flipped.count / 2] ^= 1
        #expect(!signer.key.verify(signature: flipped, message: message))
        #expect(!signer.key.verify(signature: [], message: message))
        let stranger = signer.key.algorithm == .ed25519 ? Signer.ed25519() : Signer.p256()
        #expect(!stranger.key.verify(signature: signature, message: message))
    }

    @Test func ecdsaTakesDEROnly() throws {
        let privateKey = P256.Signing.PrivateKey()
        let message = Array("policy".utf8)
        let raw = Array(try privateKey.signature(for: SHA256.hash(data: message)).rawRepresentation)
        #expect(!OperatorKey(privateKey.publicKey).verify(signature: raw, message: message))
    }

    /// (bytes, what the error names)
    static let malformed: [([UInt8], String)] = [
        ([], "empty"),
        ([3] + [UInt8](repeating: 1, count: 32), "algorithm 3"),
        ([1] + [UInt8](repeating: 1, count: 31), "ed25519 key of 31 bytes"),
        ([1] + [UInt8](repeating: 1, count: 33), "ed25519 key of 33 bytes"),
        ([2] + [UInt8](repeating: 1, count: 64), "ecdsa-p256 key of 64 bytes"),
        (
            [2] + Array(P256.Signing.PrivateKey().publicKey.compressedRepresentation)
                + [UInt8](repeating: 0, count: 32),
            "not an uncompressed point"
        ),
        ([2, 4] + [UInt8](repeating: 1, count: 64), "not an uncompressed point on the curve"),
    ]

    @Test(arguments: malformed)
    func strictDecoding(bytes: [UInt8], reason: String) {
        let error = #expect(throws: CoreError.self) { try OperatorKey(decoding: bytes) }
        #expect(error?.code == .invalidOperatorKey)
        #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
    }

    @Test func pemOfAnotherKeyTypeIsRefused() throws {
        let p384 = P384.Signing.PrivateKey().publicKey.pemRepresentation
        let error = #expect(throws: CoreError.self) { try OperatorKey(pem: p384) }
        #expect(error?.message.contains("other than Ed25519 or ECDSA P-256") == true)
        #expect(throws: CoreError.self) { try OperatorKey(pem: "not pem") }
    }
}
