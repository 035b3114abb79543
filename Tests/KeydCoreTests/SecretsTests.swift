import Testing

@testable import KeydCore

/// Custody of secret bytes and of the key-encryption key's lengths.
@Suite struct SecretsTests {
    /// Copies `bytes` into secret storage.
    static func secret(_ bytes: [UInt8]) -> SecretBytes {
        SecretBytes(copying: bytes)
    }

    /// The bytes of `secret`, copied out for comparison in a test only.
    static func bytes(_ secret: borrowing SecretBytes) -> [UInt8] {
        secret.withUnsafeBytes { Array($0) }
    }

    @Test func copyingKeepsTheBytes() {
        let input: [UInt8] = [0, 1, 2, 0xFE, 0xFF]
        let secret = Self.secret(input)
        let count = secret.count
        #expect(count == 5)
        #expect(Self.bytes(secret) == input)
    }

    @Test func copyingFromABufferOrASliceKeepsTheBytes() {
        let input: [UInt8] = [9, 8, 7, 6, 5, 4]
        let fromBuffer = input.withUnsafeBytes { buffer in
            let secret = SecretBytes(copying: buffer)
            return Self.bytes(secret)
        }
        #expect(fromBuffer == input)
        #expect(Self.bytes(SecretBytes(copying: input[2...])) == [7, 6, 5, 4])
    }

    @Test func emptySecretHasNoBytes() {
        let secret = Self.secret([])
        let count = secret.count
        #expect(count == 0)
        #expect(Self.bytes(secret).isEmpty)
    }

    @Test(arguments: [1, 16, 32, 64, 100])
    func randomHasTheRequestedLength(count: Int) {
        let secret = SecretBytes(randomByteCount: count)
        let actual = secret.count
        #expect(actual == count)
    }

    @Test func randomSecretsDiffer() {
        let first = SecretBytes(randomByteCount: 32)
        let second = SecretBytes(randomByteCount: 32)
        let equal = first.constantTimeEquals(second)
        #expect(!equal)
        #expect(Self.bytes(first) != [UInt8](repeating: 0, count: 32))
    }

    /// (left, right, equal)
    static let comparisons: [([UInt8], [UInt8], Bool)] = [
        ([1, 2, 3], [1, 2, 3], true),
        ([1, 2, 3], [1, 2, 4], false),
        ([0, 2, 3], [1, 2, 3], false),
        ([1, 2, 3], [1, 2], false),
        ([1, 2], [1, 2, 3], false),
        ([], [], true),
    ]

    @Test(arguments: comparisons)
    func constantTimeEquals(left: [UInt8], right: [UInt8], equal: Bool) {
        let result = Self.secret(left).constantTimeEquals(Self.secret(right))
        #expect(result == equal)
    }

    @Test func secretEqualsItself() {
        let secret = SecretBytes(randomByteCount: 48)
        let equal = secret.constantTimeEquals(secret)
        #expect(equal)
    }

    /// (master secret length, salt length, error message or nil when accepted)
    static let kekLengths: [(Int, Int, String?)] = [
        (16, 32, nil),
        (32, 32, nil),
        (64, 64, nil),
        (0, 32, "master secret length 0 is under minimum 16"),
        (15, 32, "master secret length 15 is under minimum 16"),
        (65, 32, "master secret length 65 exceeds limit 64"),
        (32, 0, "salt length 0 is under minimum 32"),
        (32, 31, "salt length 31 is under minimum 32"),
        (32, 65, "salt length 65 exceeds limit 64"),
        (8, 8, "master secret length 8 is under minimum 16"),
    ]

    @Test(arguments: kekLengths)
    func keyEncryptionKeyLengths(masterLength: Int, saltLength: Int, message: String?) {
        let master = Self.secret([UInt8](repeating: 0xA5, count: masterLength))
        let salt = Self.secret([UInt8](repeating: 0x5A, count: saltLength))
        do {
            let kek = try KeyEncryptionKey(masterSecret: master, salt: salt)
            #expect(message == nil, "accepted lengths \(masterLength)/\(saltLength)")
            let lengths = (kek.masterSecret.count, kek.salt.count)
            #expect(lengths == (masterLength, saltLength))
        } catch {
            #expect(error == CoreError.secretLength("", length: 0, limit: 0...0))
            #expect(error.message == message)
            // The message names lengths only: no byte of either secret appears in it.
            #expect(!error.description.lowercased().contains("a5"))
            #expect(!error.description.lowercased().contains("5a"))
        }
    }
}
