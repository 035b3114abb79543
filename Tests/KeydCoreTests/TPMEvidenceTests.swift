import Crypto
import Foundation
import KeydCore
import KeydProtocol
import Testing

/// Evidence binding, the Constellation document, base64, SPKI/PEM and the sealed KEK file.
struct TPMEvidenceTests {
    @Test("base64 matches Foundation for every length up to 70", arguments: 0...70)
    func base64(length: Int) {
        let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        #expect(Base64.encode(bytes) == Data(bytes).base64EncodedString())
    }

    @Test func qualifyingDataFollowsTheDocumentedBindings() {
        let nonce = Array(repeating: UInt8(1), count: 32)
        let digest = Array(repeating: UInt8(2), count: 32)
        #expect(
            EvidenceBinding.nativeQualifyingData(nonce: nonce, userDataDigest: digest)
                == Array(SHA256.hash(data: Array("asterism-tpm-evidence-v1".utf8) + nonce + digest))
        )
        #expect(
            EvidenceBinding.constellationQualifyingData(nonce: nonce, userData: digest)
                == Array(SHA256.hash(data: Array(SHA256.hash(data: digest + nonce))))
        )
        // The two bindings never coincide, so a quote for one variant cannot pass as the other.
        #expect(
            EvidenceBinding.nativeQualifyingData(nonce: nonce, userDataDigest: digest)
                != EvidenceBinding.constellationQualifyingData(nonce: nonce, userData: digest)
        )
    }

    @Test func constellationDocumentIsGoJSON() throws {
        let document = ConstellationVTPMDocument.encode(
            akPublic: [1, 2],
            attest: [3],
            signature: [4, 5, 6],
            pcrs: (0..<12).map { ($0, [UInt8($0)]) },
            eventLog: [],
            userData: [7]
        )
        let text = String(decoding: document, as: UTF8.self)
        // Go sorts map keys as strings and omits an empty event log (omitempty).
        #expect(text.contains(#""pcrs":{"0":"AA==","1":"AQ==","10":"Cg==","11":"Cw==","2":"Ag==""#))
        #expect(!text.contains("event_log"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(document)) as? [String: Any])
        #expect(object["UserData"] as? String == "Bw==")
    }

    @Test func p256PEMMatchesSwiftCrypto() throws {
        let key = P256.Signing.PrivateKey().publicKey
        let pem = SubjectPublicKeyInfo.pem(SubjectPublicKeyInfo.der(p256Point: Array(key.x963Representation)))
        #expect(pem == key.pemRepresentation + "\n")
    }

    @Test func rsaSPKIParsesAsDER() throws {
        let modulus = [0xC3] + (1..<256).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let der = SubjectPublicKeyInfo.der(rsaModulus: modulus, exponent: 65537)
        // SEQUENCE of 0x122 bytes, rsaEncryption, then the key with a leading zero before the high-bit modulus.
        #expect(der.prefix(4) == [0x30, 0x82, 0x01, 0x22])
        #expect(der.count == 0x126)
        #expect(Array(der.suffix(5)) == [0x02, 0x03, 0x01, 0x00, 0x01])
    }

    @Test func sealedKEKFileRoundTripsAndRefusesTampering() throws {
        let master = (0..<32).map { UInt8($0) }
        let salt = (32..<64).map { UInt8($0) }
        let measurementSalt = [UInt8](repeating: 0x6D, count: 32)
        let kek = try KeyEncryptionKey(
            masterSecret: SecretBytes(copying: master),
            salt: SecretBytes(copying: salt),
            measurementSalt: measurementSalt
        )
        let wrapping = SecretBytes(randomByteCount: 32)
        let file = try SealedKEKFile(
            sealing: kek,
            wrappingKey: wrapping,
            pcrs: [0, 7, 16],
            handle: 0x8101_0A58,
            objectName: [0x00, 0x0B] + [UInt8](repeating: 7, count: 32)
        )
        let bytes = file.encoded
        #expect(bytes.firstRange(of: master) == nil && bytes.firstRange(of: salt) == nil)
        let parsed = try SealedKEKFile(decoding: bytes)
        #expect(parsed == file && parsed.pcrs == [0, 7, 16] && parsed.handle == 0x8101_0A58)
        let opened = try parsed.open(wrappingKey: wrapping)
        let info = "key-00000000-0000-0000-0000-000000000000"
        let expected = kek.deriveKey(info: info, byteCount: 32)
        let same = opened.deriveKey(info: info, byteCount: 32).constantTimeEquals(expected)
        #expect(same)
        #expect(opened.measurementSalt == measurementSalt)

        // Another wrapping key, an edited handle or object name (additional data) or ciphertext: refused.
        #expect(throws: CoreError.self) { _ = try parsed.open(wrappingKey: SecretBytes(randomByteCount: 32)) }
        for position in [7, 12, 20, bytes.count - 1] {
            var edited = bytes
            edited[position] ^= 1
            let error = #expect(throws: CoreError.self) {
                _ = try SealedKEKFile(decoding: edited).open(wrappingKey: wrapping)
            }
            #expect(error?.code == .invalidSealedKEK)
        }
        #expect(throws: CoreError.self) { try SealedKEKFile(decoding: bytes + [0]) }
        // Version 1 kept the sealed object in the file, where a saved copy outlived kek.lock: refused.
        var version1 = bytes
        version1[5] = 1
        let old = #expect(throws: CoreError.self) { try SealedKEKFile(decoding: version1) }
        #expect(old?.description.contains("import the KEK again") == true)
        #expect(throws: CoreError.self) { try SealedKEKFile(decoding: Array(bytes.dropLast())) }
    }
}
