import Testing

@testable import KeydCore

/// HKDF-SHA-256 against every vector of CONSTELLATION-WIRE.md ("Key derivation") and RFC 5869 A.1–A.3.
@Suite struct KeyDerivationTests {
    /// A Constellation derivation: master secret, salt, info, 32-byte output.
    struct ConstellationVector: Sendable, CustomTestStringConvertible {
        let secret: [UInt8]
        let salt: [UInt8]
        let info: String
        let okm: String
        var testDescription: String { info }
    }

    /// From shared/design/CONSTELLATION-WIRE.md, section "Key derivation" (re-checked with Python's hmac).
    static let constellationVectors: [ConstellationVector] = [
        ConstellationVector(
            secret: [UInt8](repeating: 0x00, count: 32),
            salt: [UInt8](repeating: 0x00, count: 32),
            info: "key-00000000-0000-0000-0000-000000000000",
            okm: "2b5c829f691bfd4232f8aac464bccc07e605c7c8e82cbca09837e86d0b6d0665"
        ),
        ConstellationVector(
            secret: [UInt8](repeating: 0xFF, count: 32),
            salt: [UInt8](repeating: 0xFF, count: 32),
            info: "key-ffffffff-ffff-ffff-ffff-ffffffffffff",
            okm: "1484aa39d3415e906e07940ff215d8b1eee705d3027dba93306af4abff4f70be"
        ),
        ConstellationVector(
            secret: Array(0x00...0x1F),
            salt: Array(0x20...0x3F),
            info: "key-clusterID",
            okm: "128c164378fe8767f998fbdfe4b4d6463ec5ae1b664ea5999bc27417607ae9b6"
        ),
        ConstellationVector(
            secret: Array(0x40...0x5F),
            salt: Array(0x60...0x7F),
            info: "key-measurementSecret",
            okm: "4790578891f3fe6cc22cb661ecdc1b7e33121b1287546a52ba33a9136719c213"
        ),
    ]

    /// An RFC 5869 case: IKM, salt, info, OKM (all hex), L implied by the OKM.
    struct RFCVector: Sendable, CustomTestStringConvertible {
        let name: String
        let ikm: String
        let salt: String
        let info: String
        let okm: String
        var testDescription: String { name }
    }

    /// RFC 5869 appendix A.1–A.3 (the SHA-256 cases), as in swift-crypto's rfc-5869-HKDF-SHA256.txt.
    static let rfcVectors: [RFCVector] = [
        RFCVector(
            name: "A.1",
            ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            salt: "000102030405060708090a0b0c",
            info: "f0f1f2f3f4f5f6f7f8f9",
            okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        ),
        RFCVector(
            name: "A.2",
            ikm: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                + "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f",
            salt: "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
                + "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
            info: "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
                + "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
            okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
                + "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"
        ),
        RFCVector(
            name: "A.3",
            ikm: "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b",
            salt: "",
            info: "",
            okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        ),
    ]

    /// Bytes of a hex string (test data only).
    static func bytes(hex: String) -> [UInt8] {
        let digits = Array(hex.utf8)
        precondition(digits.count % 2 == 0, "odd hex length")
        func value(_ digit: UInt8) -> UInt8 {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
            default: preconditionFailure("not lowercase hex")
            }
        }
        return stride(from: 0, to: digits.count, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
    }

    /// The bytes of a derived secret as lowercase hex (test only).
    static func hex(_ secret: borrowing SecretBytes) -> String {
        secret.withUnsafeBytes { lowercaseHex($0) }
    }

    static func kek(secret: [UInt8], salt: [UInt8]) throws -> KeyEncryptionKey {
        try KeyEncryptionKey(
            masterSecret: SecretsTests.secret(secret),
            salt: SecretsTests.secret(salt)
        )
    }

    @Test(arguments: constellationVectors)
    func constellationVectorThroughKEK(vector: ConstellationVector) throws {
        let kek = try Self.kek(secret: vector.secret, salt: vector.salt)
        let key = kek.deriveKey(info: vector.info, byteCount: 32)
        let count = key.count
        let hex = Self.hex(key)
        #expect(count == 32)
        #expect(hex == vector.okm)
    }

    @Test(arguments: constellationVectors)
    func constellationVectorThroughGenericHKDF(vector: ConstellationVector) {
        let key = vector.secret.withUnsafeBytes { secret in
            vector.salt.withUnsafeBytes { salt in
                Self.hex(KeyDerivation.hkdfSHA256(secret: secret, salt: salt, info: vector.info.utf8, byteCount: 32))
            }
        }
        #expect(key == vector.okm)
    }

    @Test(arguments: rfcVectors)
    func rfc5869(vector: RFCVector) {
        let ikm = Self.bytes(hex: vector.ikm)
        let salt = Self.bytes(hex: vector.salt)
        let info = Self.bytes(hex: vector.info)
        let length = vector.okm.utf8.count / 2
        let okm = ikm.withUnsafeBytes { ikm in
            salt.withUnsafeBytes { salt in
                Self.hex(KeyDerivation.hkdfSHA256(secret: ikm, salt: salt, info: info, byteCount: length))
            }
        }
        #expect(okm == vector.okm)
    }

    @Test func diskVectorUsesDiskKeyInfo() throws {
        let kek = try Self.kek(secret: [UInt8](repeating: 0, count: 32), salt: [UInt8](repeating: 0, count: 32))
        let info = KeyDerivation.diskKeyInfo(uuid: try DiskUUID(validating: "00000000-0000-0000-0000-000000000000"))
        #expect(info == "key-00000000-0000-0000-0000-000000000000")
        let hex = Self.hex(kek.deriveKey(info: info, byteCount: 32))
        #expect(hex == Self.constellationVectors[0].okm)
    }

    @Test func namedInfos() {
        #expect(KeyDerivation.measurementSecretInfo == "key-measurementSecret")
        #expect(KeyDerivation.clusterIDInfo == "key-clusterID")
    }

    @Test func bytesAndStringInfoAgree() throws {
        let kek = try Self.kek(secret: Array(0x00...0x1F), salt: Array(0x20...0x3F))
        let fromString = kek.deriveKey(info: KeyDerivation.clusterIDInfo, byteCount: 32)
        let fromBytes = kek.deriveKey(info: Array(KeyDerivation.clusterIDInfo.utf8), byteCount: 32)
        let equal = fromString.constantTimeEquals(fromBytes)
        #expect(equal)
    }

    @Test func differentInfosGiveDifferentKeys() throws {
        let kek = try Self.kek(secret: Array(0x00...0x1F), salt: Array(0x20...0x3F))
        let disk = kek.deriveKey(
            info: KeyDerivation.diskKeyInfo(uuid: try DiskUUID(validating: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")),
            byteCount: 32
        )
        let measurement = kek.deriveKey(info: KeyDerivation.measurementSecretInfo, byteCount: 32)
        let equal = disk.constantTimeEquals(measurement)
        #expect(!equal)
    }

    @Test(arguments: [1, 31, 32, 33, 64, KeyDerivation.maxByteCount])
    func outputLengths(byteCount: Int) throws {
        let kek = try Self.kek(secret: Array(0x00...0x1F), salt: Array(0x20...0x3F))
        let key = kek.deriveKey(info: "key-length", byteCount: byteCount)
        let count = key.count
        #expect(count == byteCount)
        // HKDF output is a prefix of any longer output with the same inputs.
        let long = Self.hex(kek.deriveKey(info: "key-length", byteCount: KeyDerivation.maxByteCount))
        let short = Self.hex(key)
        #expect(long.hasPrefix(short))
    }

    @Test func outputLengthZeroTraps() async {
        await #expect(processExitsWith: .failure) {
            let secret = [UInt8](repeating: 1, count: 32)
            _ = secret.withUnsafeBytes { KeyDerivation.hkdfSHA256(secret: $0, salt: $0, info: [], byteCount: 0).count }
        }
    }

    @Test func outputLengthOverMaximumTraps() async {
        await #expect(processExitsWith: .failure) {
            let secret = [UInt8](repeating: 1, count: 32)
            _ = secret.withUnsafeBytes {
                KeyDerivation.hkdfSHA256(secret: $0, salt: $0, info: [], byteCount: 255 * 32 + 1).count
            }
        }
    }

    static let validUUIDs = [
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    ]

    @Test(arguments: validUUIDs)
    func diskUUIDAcceptsLowercaseUUIDs(uuid: String) throws {
        #expect(try DiskUUID(validating: uuid).text == uuid)
        #expect(KeyDerivation.diskKeyInfo(uuid: try DiskUUID(validating: uuid)) == "key-" + uuid)
    }

    static let invalidUUIDs = [
        "",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",  // uppercase: refused, not folded
        "0f1e2d3c-4b5a-6978-8796-A5b4c3d2e1f0",  // one uppercase digit
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",  // no dashes
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",  // one digit short
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f00",  // one digit long
        "0f1e2d3c-4b5a-6978-8796_a5b4c3d2e1f0",  // wrong separator
        "0f1e2d3c4-b5a-6978-8796-a5b4c3d2e1f0",  // dash in the wrong place
        "0f1e2d3g-4b5a-6978-8796-a5b4c3d2e1f0",  // not hex
        "{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}",  // braces
        " 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",  // leading space
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f\u{0}",  // NUL
        "../../../../etc/shadow/aaaaaaaaaaaaa",  // 36 characters of path
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2/1f0",  // a slash
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fé",  // non-ASCII, 37 bytes
    ]

    @Test(arguments: invalidUUIDs)
    func diskUUIDRefusesEverythingElse(uuid: String) {
        #expect(throws: CoreError.invalidDiskUUID("")) {
            try DiskUUID(validating: uuid)
        }
    }

    @Test func invalidUUIDMessageIsOnePrintableLine() {
        do {
            _ = try DiskUUID(validating: "bad\nuuid\u{1B}[31m")
            Issue.record("accepted a bad UUID")
        } catch {
            #expect(
                error.message == #"disk UUID 'bad\u{a}uuid\u{1b}[31m' is not a lowercase 8-4-4-4-12 hexadecimal UUID"#
            )
        }
    }
}
