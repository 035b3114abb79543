import Attestation
import Crypto
import Foundation
import KeydProtocol
import Testing

@testable import KeydCore

/// Data keys (`dataKey.release`, `dataKey.open`): the ID's rules, the `key-dek/` namespace, and the
/// data-key envelope, which never opens as a key envelope or the other way round.
@Suite struct DataKeyTests {
    static let uuid = KeyEnvelopeTests.uuid

    /// HKDF-SHA-256 outputs computed with Python's hmac (master 00..1f, salt 20..3f).
    static let k8sSecrets32Hex = "277498e5fb7537dafd9f118055fedd72826e341d4aa5718ba0c6d80114c26f61"
    static let dekMeasurementSecretHex = "ad6d3fdb039919951c69c8cbaafd8b981df1a09bf8843447680b444a70b0ff0c"
    static let measurementSecretHex = "ea7fedd14f5a29b1b8545592fc20bfdae06918e4ff447b1a0b8e4f3356005bda"

    static func bytes(_ secret: borrowing SecretBytes) -> [UInt8] { secret.withUnsafeBytes { Array($0) } }

    static func binding(
        id: String = "k8s-secrets",
        length: Int = 32,
        role: NodeRole = .worker
    ) throws
        -> DataKeyBinding
    {
        try DataKeyBinding(
            challengeID: Array(repeating: 0xD1, count: 16),
            diskUUID: uuid,
            role: role,
            nodeName: try KubernetesNodeName(validating: "node-1"),
            dataKeyID: try DataKeyID(validating: id),
            length: length
        )
    }

    @Test(arguments: [
        "a", "k8s-secrets", "measurementSecret", "clusterID", "Key_1.2-3", String(repeating: "x", count: 128),
        "0f0e0d0c-0b0a-4988-8776-655443322110",
    ])
    func acceptedIDs(_ id: String) throws {
        #expect(try DataKeyID(validating: id).text == id)
    }

    @Test(arguments: [
        ("", "0 bytes is outside 1…128"), (String(repeating: "x", count: 129), "129 bytes is outside 1…128"),
        ("../x", "outside [A-Za-z0-9._-]"), (".hidden", "starts with '.'"), ("a/b", "outside [A-Za-z0-9._-]"),
        ("dek/x", "outside [A-Za-z0-9._-]"), ("a b", "outside [A-Za-z0-9._-]"), ("é", "outside [A-Za-z0-9._-]"),
        ("a\u{0}", "outside [A-Za-z0-9._-]"),
    ])
    func refusedIDsNameTheRule(_ id: String, _ fragment: String) {
        let error = #expect(throws: CoreError.self) { _ = try DataKeyID(validating: id) }
        #expect(error?.code == .invalidDataKey)
        #expect(error?.message.contains(fragment) == true, "\(error?.message ?? "")")
    }

    @Test(arguments: [(15, false), (16, true), (32, true), (64, true), (65, false), (0, false)])
    func lengthBounds(_ length: Int, _ accepted: Bool) {
        let result = Result { () throws(CoreError) -> Int in try DataKeyID.checkedLength(length) }
        switch result {
        case .success(let value): #expect(accepted && value == length)
        case .failure(let error):
            #expect(!accepted)
            #expect(error.message.contains("\(length) is outside 16…64"))
        }
    }

    @Test func derivationMatchesTheVectorAndIsNamespaced() throws {
        let kek = try KeyEnvelopeTests.kek()
        let id = try DataKeyID(validating: "k8s-secrets")
        #expect(hexString(Self.bytes(kek.dataKey(id: id, length: 32))) == Self.k8sSecrets32Hex)
        #expect(KeyDerivation.dataKeyInfo(id: id) == "key-dek/k8s-secrets")
        // The same ID gives the same key; another ID another key.
        #expect(Self.bytes(kek.dataKey(id: id, length: 32)) == Self.bytes(kek.dataKey(id: id, length: 32)))
        let other = try DataKeyID(validating: "k8s-secrets-2")
        #expect(Self.bytes(kek.dataKey(id: other, length: 32)) != Self.bytes(kek.dataKey(id: id, length: 32)))
    }

    @Test func noIDReachesTheMeasurementSecretClusterIDOrADiskKey() throws {
        // Constellation's KMS derives data keys under "key-" + id: the ID "measurementSecret" is the
        // measurement secret, and a disk UUID as ID is that disk's key. Under "key-dek/" neither is.
        let kek = try KeyEnvelopeTests.kek()
        let measurementSecret = kek.deriveKey(info: KeyDerivation.measurementSecretInfo, byteCount: 32)
        #expect(hexString(Self.bytes(measurementSecret)) == Self.measurementSecretHex)
        let asID = kek.dataKey(id: try DataKeyID(validating: "measurementSecret"), length: 32)
        #expect(hexString(Self.bytes(asID)) == Self.dekMeasurementSecretHex)
        #expect(Self.bytes(asID) != Self.bytes(measurementSecret))
        let keys = kek.releasedKeys(for: Self.uuid, includeKEK: false)
        let uuidAsID = kek.dataKey(id: try DataKeyID(validating: Self.uuid.text), length: 32)
        #expect(Self.bytes(uuidAsID) != Self.bytes(keys.diskKey))
        for name in ["clusterID", "measurementSalt"] {
            let info = "key-" + name
            let reserved = kek.deriveKey(info: info, byteCount: 32)
            #expect(Self.bytes(kek.dataKey(id: try DataKeyID(validating: name), length: 32)) != Self.bytes(reserved))
            // No valid ID can spell a reserved info: the prefix holds a '/', which an ID cannot.
            #expect(KeyDerivation.dataKeyInfo(id: try DataKeyID(validating: name)) != info)
        }
    }

    @Test(arguments: [16, 32, 64])
    func envelopeRoundTrip(_ length: Int) throws {
        let kek = try KeyEnvelopeTests.kek()
        let bootKey = BootKey()
        let binding = try Self.binding(length: length)
        let key = kek.dataKey(id: binding.dataKeyID, length: length)
        let envelope = try DataKeyEnvelope.seal(key, binding: binding, to: bootKey.publicKey)
        let opened = try DataKeyEnvelope.open(envelope, with: bootKey)
        #expect(opened.binding == binding)
        #expect(Self.bytes(opened.key) == Self.bytes(key))
    }

    @Test func envelopeForAnotherBootKeyOrWithAChangedByteDoesNotOpen() throws {
        let kek = try KeyEnvelopeTests.kek()
        let binding = try Self.binding()
        let recipient = BootKey()
        let envelope = try DataKeyEnvelope.seal(
            kek.dataKey(id: binding.dataKeyID, length: 32),
            binding: binding,
            to: recipient.publicKey
        )
        let other = #expect(throws: CoreError.self) { _ = try DataKeyEnvelope.open(envelope, with: BootKey()) }
        #expect(other?.code == .invalidEnvelope)
        for index in [6, 7, 30, envelope.count - 60, envelope.count - 1] {
            var changed = envelope
            changed[index] ^= 0x01
            let error = #expect(throws: CoreError.self, "byte \(index)") {
                _ = try DataKeyEnvelope.open(changed, with: recipient)
            }
            #expect(error?.code == .invalidEnvelope)
        }
    }

    @Test func keyAndDataKeyEnvelopesNeverOpenAsEachOther() throws {
        let kek = try KeyEnvelopeTests.kek()
        let bootKey = BootKey()
        let keyEnvelope = try KeyEnvelope.seal(
            kek.releasedKeys(for: Self.uuid, includeKEK: true),
            binding: try KeyEnvelopeTests.binding(role: .controlPlane),
            to: bootKey.publicKey
        )
        let asDataKey = #expect(throws: CoreError.self) { _ = try DataKeyEnvelope.open(keyEnvelope, with: bootKey) }
        #expect(asDataKey?.message.contains("purpose") == true, "\(asDataKey?.message ?? "")")
        // Even with the purpose byte rewritten, the HPKE info differs: the AEAD refuses it.
        var relabelled = keyEnvelope
        relabelled[6] = DataKeyBinding.purpose
        #expect(throws: CoreError.self) { _ = try DataKeyEnvelope.open(relabelled, with: bootKey) }

        let binding = try Self.binding()
        let dataEnvelope = try DataKeyEnvelope.seal(
            kek.dataKey(id: binding.dataKeyID, length: 32),
            binding: binding,
            to: bootKey.publicKey
        )
        let asKeys = #expect(throws: CoreError.self) { _ = try KeyEnvelope.open(dataEnvelope, with: bootKey) }
        #expect(asKeys?.code == .invalidEnvelope)
    }

    @Test func sealRefusesAKeyOfAnotherLengthAndALowOrderBootKey() throws {
        let kek = try KeyEnvelopeTests.kek()
        let binding = try Self.binding(length: 32)
        let short = #expect(throws: CoreError.self) {
            _ = try DataKeyEnvelope.seal(
                kek.dataKey(id: binding.dataKeyID, length: 16),
                binding: binding,
                to: BootKey().publicKey
            )
        }
        #expect(short?.code == .invalidDataKey)
        let lowOrder = #expect(throws: CoreError.self) {
            _ = try DataKeyEnvelope.seal(
                kek.dataKey(id: binding.dataKeyID, length: 32),
                binding: binding,
                to: [UInt8](repeating: 0, count: 32)
            )
        }
        #expect(lowOrder?.code == .invalidEnvelope)
    }
}
