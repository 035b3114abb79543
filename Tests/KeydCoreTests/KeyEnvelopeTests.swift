import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import KeydProtocol
import Testing

@testable import KeydCore

/// Key and init envelopes: HPKE (RFC 9180) round trips, the binding in info and AAD, strict parsing.
@Suite struct KeyEnvelopeTests {
    static let master = Array(0..<32).map(UInt8.init)
    static let salt = Array(32..<64).map(UInt8.init)
    static let uuid = try! DiskUUID(validating: "0f0e0d0c-0b0a-4988-8776-655443322110")

    static func kek(measurementSalt: [UInt8]? = nil) throws -> KeyEncryptionKey {
        try KeyEncryptionKey(
            masterSecret: SecretBytes(copying: master),
            salt: SecretBytes(copying: salt),
            measurementSalt: measurementSalt
        )
    }

    static func binding(
        purpose: EnvelopePurpose = .join,
        challengeID: [UInt8] = Array(repeating: 0xC1, count: 16),
        role: NodeRole,
        nodeName: String = "node-1"
    ) throws -> EnvelopeBinding {
        try EnvelopeBinding(
            purpose: purpose,
            challengeID: challengeID,
            diskUUID: uuid,
            role: role,
            nodeName: try KubernetesNodeName(validating: nodeName)
        )
    }

    static func secretBytes(_ secret: borrowing SecretBytes) -> [UInt8] { secret.withUnsafeBytes { Array($0) } }

    /// HKDF-SHA-256 outputs computed with Python's hmac (master 00..1f, salt 20..3f): the disk key of
    /// `uuid`, the derived measurement salt, and the cluster ID from both.
    static let diskKeyHex = "5d0042df93803ea78d9cc2d4216aabb22667696b20f9fdb48f1a1a668fdbd56b"
    static let measurementSaltHex = "425c8a7e428e81733c3a3d61e86f898fbf614c0f02d098c183a45b128084189d"
    static let clusterIDHex = "c790aa1ce3d52b898710fc533f80ad214c11bcb4071f66489f092b34e632947f"

    @Test func releasedKeysFollowTheDerivations() throws {
        let kek = try Self.kek()
        #expect(hexString(kek.measurementSalt) == Self.measurementSaltHex)
        #expect(hexString(kek.clusterID) == Self.clusterIDHex)
        let keys = kek.releasedKeys(for: Self.uuid, includeKEK: false)
        #expect(hexString(Self.secretBytes(keys.diskKey)) == Self.diskKeyHex)
        #expect(hexString(keys.clusterID) == Self.clusterIDHex)
        let carriesKEK = keys.carriesKEK
        #expect(!carriesKEK)
        let explicit = try Self.kek(measurementSalt: [UInt8](repeating: 7, count: 32))
        #expect(explicit.measurementSalt == [UInt8](repeating: 7, count: 32))
        let wrong = #expect(throws: CoreError.self) { _ = try Self.kek(measurementSalt: [1]) }
        #expect(wrong?.code == .secretLength)
    }

    @Test(arguments: [NodeRole.worker, .controlPlane], [EnvelopePurpose.join, .rejoin])
    func sealThenOpenGivesTheKeysAndTheBinding(role: NodeRole, purpose: EnvelopePurpose) throws {
        let kek = try Self.kek()
        let bootKey = BootKey()
        let binding = try Self.binding(purpose: purpose, role: role)
        let envelope = try KeyEnvelope.seal(
            kek.releasedKeys(for: Self.uuid, includeKEK: role == .controlPlane),
            binding: binding,
            to: bootKey.publicKey
        )
        // No key bytes in the clear.
        let diskKey = try bytes(fromHex: Self.diskKeyHex).unwrap()
        #expect(envelope.firstRange(of: diskKey) == nil && envelope.firstRange(of: Self.master) == nil)
        #expect(envelope.count <= KeyEnvelope.maximumLength)
        let opened = try KeyEnvelope.open(envelope, with: bootKey)
        #expect(opened.binding == binding)
        #expect(hexString(Self.secretBytes(opened.keys.diskKey)) == Self.diskKeyHex)
        #expect(opened.keys.measurementSalt == kek.measurementSalt)
        #expect(hexString(opened.keys.clusterID) == Self.clusterIDHex)
        switch opened.keys.clusterKEK {
        case .some(let received):
            #expect(role == .controlPlane)
            let same = received.deriveKey(info: "key-x", byteCount: 32).constantTimeEquals(
                kek.deriveKey(info: "key-x", byteCount: 32)
            )
            #expect(same)
            #expect(received.measurementSalt == kek.measurementSalt)
        case .none:
            #expect(role == .worker)
        }
    }

    @Test func theWireFormIsAsDocumented() throws {
        let bootKey = BootKey()
        let binding = try Self.binding(role: .worker, nodeName: "n")
        let envelope = try KeyEnvelope.seal(
            Self.kek().releasedKeys(for: Self.uuid, includeKEK: false),
            binding: binding,
            to: bootKey.publicKey
        )
        var expected: [UInt8] = Array("AENV".utf8) + [0, 1, 1, 1] + [UInt8](repeating: 0xC1, count: 16)
        expected += [0, 36] + Array(Self.uuid.text.utf8) + [0, 1] + Array("n".utf8)
        #expect(Array(envelope.prefix(expected.count)) == expected)
        // RFC 9180 structure: a 32-byte X25519 encapsulated key, then the plaintext (97 bytes) plus the 16-byte tag.
        let rest = Array(envelope.dropFirst(expected.count))
        #expect(rest.count == 32 + 2 + 97 + 16)
        #expect(Array(rest[32..<34]) == [0, 113])
        let parsed = try KeyEnvelope(decoding: envelope)
        #expect(parsed.binding == binding && parsed.encoded == envelope)
    }

    /// RFC 9180's published vector for mode 0, KEM 0x0020, KDF 0x0001, AEAD 0x0002 (from the CFRG
    /// test-vectors.json that swift-crypto ships, first encryption): keyd's suite opens it.
    @Test func theSuiteIsRFC9180sX25519HKDFSHA256AES256GCM() throws {
        let suite = EnvelopeHPKE.ciphersuite
        #expect(suite.kem == .Curve25519_HKDF_SHA256 && suite.kdf == .HKDF_SHA256 && suite.aead == .AES_GCM_256)
        let bootKey = BootKey(
            privateKey: try Curve25519.KeyAgreement.PrivateKey(
                rawRepresentation: try bytes(
                    fromHex: "497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d"
                )
                .unwrap()
            )
        )
        #expect(hexString(bootKey.publicKey) == "430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c")
        let plaintext = try EnvelopeHPKE.open(
            try bytes(
                fromHex: "e5d84cd531cfb583096e7cfa9641bd3079cf3a91cda813c52deb5f512be9931980a41de125a925cdad859d5b7a"
            )
            .unwrap(),
            encapsulatedKey: try bytes(fromHex: "6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256")
                .unwrap(),
            info: try bytes(fromHex: "4f6465206f6e2061204772656369616e2055726e").unwrap(),
            additionalData: try bytes(fromHex: "436f756e742d30").unwrap(),
            with: bootKey
        ) { Array($0) }
        #expect(String(decoding: plaintext, as: UTF8.self) == "Beauty is truth, truth beauty")
    }

    @Test func everyEditedByteIsRefused() throws {
        let bootKey = BootKey()
        let envelope = try KeyEnvelope.seal(
            Self.kek().releasedKeys(for: Self.uuid, includeKEK: true),
            binding: try Self.binding(role: .controlPlane),
            to: bootKey.publicKey
        )
        for position in envelope.indices {
            var edited = envelope
            edited[position] ^= 0x01
            let error = #expect(throws: CoreError.self, "byte \(position)") {
                _ = try KeyEnvelope.open(edited, with: bootKey)
            }
            #expect(error?.code == .invalidEnvelope)
        }
        #expect(throws: CoreError.self) { _ = try KeyEnvelope.open(envelope + [0], with: bootKey) }
        #expect(throws: CoreError.self) { _ = try KeyEnvelope.open(Array(envelope.dropLast()), with: bootKey) }
        let stranger = #expect(throws: CoreError.self) { _ = try KeyEnvelope.open(envelope, with: BootKey()) }
        #expect(stranger?.message.contains("another boot key") == true)
    }

    @Test func aBindingMovedToAnotherHeaderDoesNotOpen() throws {
        // Same keys and boot key, two bindings: swapping the ciphertexts between headers fails the AEAD.
        let bootKey = BootKey()
        let kek = try Self.kek()
        let first = try KeyEnvelope.seal(
            kek.releasedKeys(for: Self.uuid, includeKEK: false),
            binding: try Self.binding(role: .worker, nodeName: "node-1"),
            to: bootKey.publicKey
        )
        let second = try KeyEnvelope.seal(
            kek.releasedKeys(for: Self.uuid, includeKEK: false),
            binding: try Self.binding(role: .worker, nodeName: "node-2"),
            to: bootKey.publicKey
        )
        let headerLength = first.count - (32 + 2 + 97 + 16)
        let spliced = Array(second.prefix(headerLength)) + Array(first.dropFirst(headerLength))
        #expect(throws: CoreError.self) { _ = try KeyEnvelope.open(spliced, with: bootKey) }
    }

    @Test func sealRefusesAKEKThatDoesNotFitTheRoleAndBadBootKeys() throws {
        let kek = try Self.kek()
        let bootKey = BootKey()
        let workerWithKEK = #expect(throws: CoreError.self) {
            _ = try KeyEnvelope.seal(
                kek.releasedKeys(for: Self.uuid, includeKEK: true),
                binding: try Self.binding(role: .worker),
                to: bootKey.publicKey
            )
        }
        #expect(workerWithKEK?.message.contains("role worker") == true)
        #expect(throws: CoreError.self) {
            _ = try KeyEnvelope.seal(
                kek.releasedKeys(for: Self.uuid, includeKEK: false),
                binding: try Self.binding(role: .controlPlane),
                to: bootKey.publicKey
            )
        }
        // A short key, and the all-zero point (low order: the shared secret would be zero).
        for publicKey in [[UInt8](repeating: 9, count: 31), [UInt8](repeating: 0, count: 32)] {
            let error = #expect(throws: CoreError.self) {
                _ = try KeyEnvelope.seal(
                    kek.releasedKeys(for: Self.uuid, includeKEK: false),
                    binding: try Self.binding(role: .worker),
                    to: publicKey
                )
            }
            #expect(error?.code == .invalidEnvelope)
        }
        let shortID = #expect(throws: CoreError.self) { try Self.binding(challengeID: [1, 2], role: .worker) }
        #expect(shortID?.message.contains("challengeID is 2 bytes") == true)
    }

    /// The X25519 points of small order (their u-coordinates as RFC 7748 encodes them, non-canonical
    /// encodings of the same points included), as libsodium lists them.
    static let lowOrderPoints: [[UInt8]] = [
        [UInt8](repeating: 0, count: 32),
        [1] + [UInt8](repeating: 0, count: 31),
        hexBytes("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        hexBytes("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        hexBytes("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hexBytes("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hexBytes("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    ]

    static func hexBytes(_ text: String) -> [UInt8] {
        stride(from: 0, to: text.count, by: 2).map {
            let start = text.index(text.startIndex, offsetBy: $0)
            return UInt8(text[start..<text.index(start, offsetBy: 2)], radix: 16)!
        }
    }

    @Test(arguments: lowOrderPoints)
    func lowOrderPointsAreRefusedAsBootKeyAndAsEncapsulatedKey(point: [UInt8]) throws {
        let kek = try Self.kek()
        let sealing = #expect(throws: CoreError.self) {
            _ = try KeyEnvelope.seal(
                kek.releasedKeys(for: Self.uuid, includeKEK: false),
                binding: try Self.binding(role: .worker),
                to: point
            )
        }
        #expect(sealing?.code == .invalidEnvelope)
        // An envelope whose encapsulated key is such a point opens with no boot key: refused first.
        let bootKey = BootKey()
        let good = try KeyEnvelope.seal(
            kek.releasedKeys(for: Self.uuid, includeKEK: false),
            binding: try Self.binding(role: .worker),
            to: bootKey.publicKey
        )
        // `… encapsulatedKey fixed[32] | ciphertext bytes<512>` ends the envelope.
        let ciphertextLength = try KeyEnvelope(decoding: good).ciphertext.count
        let encapsulatedAt = good.count - ciphertextLength - 2 - 32
        var forged = good
        forged.replaceSubrange(encapsulatedAt..<(encapsulatedAt + 32), with: point)
        let opening = #expect(throws: CoreError.self) { _ = try KeyEnvelope.open(forged, with: bootKey) }
        #expect(opening?.message.contains("low-order") == true, "\(String(describing: opening))")
    }

    /// The table lookup keyd uses when sealing and the X25519 probe it uses when opening agree: on every
    /// listed point, with the ignored top bit set or not, and on 10,000 random encodings and real keys.
    @Test func smallOrderTableAgreesWithTheProbe() throws {
        var encodings =
            Self.lowOrderPoints
            + Self.lowOrderPoints.map { point in
                var high = point
                high[31] |= 0x80
                return high
            }
        encodings += (0..<5000).map { _ in (0..<32).map { _ in UInt8.random(in: 0...255) } }
        encodings += (0..<5000).map { _ in Array(Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation) }
        var lowOrder = 0
        for encoding in encodings {
            let key = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: encoding)
            let probed = EnvelopeHPKE.isLowOrder(key)
            #expect(EnvelopeHPKE.isSmallOrderEncoding(encoding) == probed, "\(encoding)")
            if probed { lowOrder += 1 }
        }
        #expect(lowOrder == 2 * Self.lowOrderPoints.count)
    }

    /// The attack the low-order check stops: with the all-zero point as encapsulated key the DH output
    /// is zero for every boot key, so anyone (a compromised trustd) can run RFC 9180's key schedule and
    /// seal keys of their choosing to every keyd. swift-crypto's HPKE opens such an envelope; keyd does not.
    @Test func forgedEnvelopeWithTheZeroPointOpensInSwiftCryptoButNotInKeyd() throws {
        let bootKey = BootKey()
        let binding = try Self.binding(role: .worker)
        // The attacker's plaintext: a disk key, measurement secret and salt they know, no KEK.
        let chosen = [UInt8](repeating: 0x41, count: 96) + [0]
        let forged = try ZeroDHSender.keyEnvelope(
            purpose: binding.purpose.rawValue,
            role: binding.role.rawValue,
            challengeID: binding.challengeID,
            diskUUID: binding.diskUUID.text,
            nodeName: binding.nodeName.text,
            recipient: bootKey.publicKey,
            plaintext: chosen
        )
        let parsed = try KeyEnvelope(decoding: forged)
        #expect(parsed.binding == binding && parsed.encapsulatedKey == [UInt8](repeating: 0, count: 32))
        // The library alone accepts it: it does not refuse the all-zero shared secret.
        var recipient = try HPKE.Recipient(
            privateKey: bootKey.privateKey,
            ciphersuite: EnvelopeHPKE.ciphersuite,
            info: Data(binding.hpkeInfo),
            encapsulatedKey: Data(parsed.encapsulatedKey)
        )
        let aad = Array(forged[..<(forged.count - parsed.ciphertext.count - 2 - 32)])
        #expect(Array(try recipient.open(parsed.ciphertext, authenticating: aad)) == chosen)
        // keyd refuses it before HPKE runs.
        let refused = #expect(throws: CoreError.self) { _ = try KeyEnvelope.open(forged, with: bootKey) }
        #expect(refused?.message.contains("encapsulated key is a low-order X25519 point") == true)
    }

    /// An envelope header (then a zero encapsulated key and an empty ciphertext) with these raw fields.
    static func envelope(
        purpose: UInt8 = 1,
        role: UInt8 = 1,
        uuid: [UInt8] = Array(uuid.text.utf8),
        name: [UInt8]
    )
        -> [UInt8]
    {
        var bytes = Array("AENV".utf8) + [0, 1, purpose, role] + [UInt8](repeating: 0, count: 16)
        bytes += [0, UInt8(uuid.count)] + uuid + [0, UInt8(name.count)] + name
        return bytes + [UInt8](repeating: 0, count: 32) + [0, 0]
    }

    /// (an envelope, what the error names)
    static let malformed: [([UInt8], String)] = [
        (envelope(purpose: 3, name: Array("n".utf8)), "purpose"),
        (envelope(role: 3, name: Array("n".utf8)), "role"),
        (envelope(uuid: Array("abc".utf8), name: Array("n".utf8)), "not a lowercase 8-4-4-4-12"),
        (envelope(uuid: Array(uuid.text.uppercased().utf8), name: Array("n".utf8)), "not a lowercase 8-4-4-4-12"),
        (envelope(uuid: Array((uuid.text + "0").utf8), name: Array("n".utf8)), "diskUUID"),
        (envelope(name: Array("A1".utf8)), "not a DNS-1123 subdomain"),
        (envelope(name: []), "not a DNS-1123 subdomain"),
        (envelope(name: Array("n".utf8)) + [0], "1 trailing bytes"),
        (Array(envelope(name: Array("n".utf8)).dropLast()), "ciphertext"),
        (Array("AENV".utf8) + [0, 2], "version"),
        (Array("AINI".utf8) + [0, 1], "magic"),
    ]

    @Test(arguments: malformed)
    func strictParsing(bytes: [UInt8], reason: String) {
        let error = #expect(throws: CoreError.self) { try KeyEnvelope(decoding: bytes) }
        #expect(error?.code == .invalidEnvelope)
        #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
    }

    @Test func initEnvelopeRoundTripsAndRefusesTampering() throws {
        let kek = try Self.kek(measurementSalt: [UInt8](repeating: 0x5A, count: 32))
        let bootKey = BootKey()
        let (operatorKey, signedPolicy) = (Array("operator key".utf8), Array("signed policy".utf8))
        let envelope = try InitEnvelope.seal(
            kek,
            to: bootKey.publicKey,
            operatorKey: operatorKey,
            signedPolicy: signedPolicy
        )
        func open(_ envelope: [UInt8], with bootKey: borrowing BootKey) throws -> KeyEncryptionKey {
            try InitEnvelope.open(envelope, with: bootKey, operatorKey: operatorKey, signedPolicy: signedPolicy)
        }
        #expect(Array(envelope.prefix(6)) == Array("AINI".utf8) + [0, 1])
        // encapsulatedKey, then the KEK's serialized form (1 + 32 + 1 + 32 + 32) plus the tag.
        #expect(envelope.count == 6 + 32 + 2 + 98 + 16)
        #expect(envelope.firstRange(of: Self.master) == nil)
        let opened = try open(envelope, with: bootKey)
        #expect(opened.measurementSalt == [UInt8](repeating: 0x5A, count: 32))
        let same = opened.deriveKey(info: "key-x", byteCount: 32).constantTimeEquals(
            kek.deriveKey(info: "key-x", byteCount: 32)
        )
        #expect(same)
        #expect(opened.clusterID == kek.clusterID)
        for position in envelope.indices {
            var edited = envelope
            edited[position] ^= 0x80
            #expect(throws: CoreError.self, "byte \(position)") { _ = try open(edited, with: bootKey) }
        }
        #expect(throws: CoreError.self) { _ = try open(envelope, with: BootKey()) }
        #expect(throws: CoreError.self) { _ = try open(envelope + [0], with: bootKey) }
        // Another operator key or signed policy beside the envelope (a relay swapping them) fails to open.
        #expect(throws: CoreError.self) {
            _ = try InitEnvelope.open(envelope, with: bootKey, operatorKey: [1], signedPolicy: signedPolicy)
        }
        #expect(throws: CoreError.self) {
            _ = try InitEnvelope.open(envelope, with: bootKey, operatorKey: operatorKey, signedPolicy: [1])
        }
        // A key envelope is no init envelope, and the other way round.
        #expect(throws: CoreError.self) { try KeyEnvelope(decoding: envelope) }
    }

    @Test func bootKeysDiffer() {
        let first = BootKey()
        let second = BootKey()
        #expect(first.publicKey.count == 32 && first.publicKey != second.publicKey)
    }
}

extension Optional {
    /// The value, or a failed test.
    func unwrap(sourceLocation: SourceLocation = #_sourceLocation) throws -> Wrapped {
        try #require(self, sourceLocation: sourceLocation)
    }
}
