import Foundation
import KeydctlCLI
import Testing

/// A test secret of `count` distinct-looking bytes; `seed` keeps key and salt apart.
private func bytes(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ Int(seed)) }
}

private func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

/// `{"key":"…","salt":"…"}` for the given byte lengths.
private func file(key: Int, salt: Int) -> String {
    #"{"key":"\#(base64(bytes(key, seed: 1)))","salt":"\#(base64(bytes(salt, seed: 2)))"}"#
}

private let key32 = base64(bytes(32, seed: 1))
private let salt32 = base64(bytes(32, seed: 2))

/// One row of the parser table: the file text and the error it must raise (nil: it parses).
struct SecretCase: CustomTestStringConvertible, Sendable {
    var name: String
    var text: String
    var error: KeydctlError?
    /// Words the error message must hold (lengths and limits).
    var mentions: [String] = []
    var testDescription: String { name }
}

/// Parses `text` from a buffer of exactly its length (arrays cannot hand out a non-copyable result).
func parseSecret(_ text: String) throws(KeydctlError) -> MasterSecret {
    let bytes = Array(text.utf8)
    let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
    defer { raw.deallocate() }
    raw.copyBytes(from: bytes)
    return try MasterSecretFile.parse(UnsafeRawBufferPointer(rebasing: raw[0..<bytes.count]))
}

private func parse(_ text: String) throws(KeydctlError) -> (key: [UInt8], salt: [UInt8]) {
    let secret = try parseSecret(text)
    return (secret.key.withUnsafeBytes { Array($0) }, secret.salt.withUnsafeBytes { Array($0) })
}

struct MasterSecretFileTests {
    static let valid: [(name: String, key: Int, salt: Int)] = [
        ("32/32", 32, 32), ("16/32", 16, 32), ("64/64", 64, 64), ("17/33 (one padding byte)", 17, 33),
    ]

    @Test(arguments: valid.map(\.name))
    func validFileDecodesToTheOriginalBytes(name: String) throws {
        let row = try #require(Self.valid.first { $0.name == name })
        let parsed = try parse(file(key: row.key, salt: row.salt))
        #expect(parsed.key == bytes(row.key, seed: 1))
        #expect(parsed.salt == bytes(row.salt, seed: 2))
    }

    @Test func whitespaceAndMemberOrderAreFree() throws {
        let parsed = try parse(" \n\t{ \"salt\" :\r\n \"\(salt32)\" ,\n  \"key\":\"\(key32)\"\n}\n\n")
        #expect(parsed.key == bytes(32, seed: 1))
        #expect(parsed.salt == bytes(32, seed: 2))
    }

    @Test func fileOfExactlyTheLimitIsAccepted() throws {
        let body = file(key: 32, salt: 32)
        let padded = body + String(repeating: " ", count: MasterSecretFile.maxFileSize - body.utf8.count)
        #expect(padded.utf8.count == MasterSecretFile.maxFileSize)
        #expect(try parse(padded).key.count == 32)
    }

    static let refused: [SecretCase] = [
        SecretCase(
            name: "key 15 bytes",
            text: file(key: 15, salt: 32),
            error: .secretLength("key", length: 15, bounds: 16...64),
            mentions: ["15", "16"]
        ),
        SecretCase(
            name: "salt 31 bytes",
            text: file(key: 32, salt: 31),
            error: .secretLength("salt", length: 31, bounds: 32...64),
            mentions: ["31", "32"]
        ),
        SecretCase(
            name: "key 65 bytes",
            text: file(key: 65, salt: 32),
            error: .secretLength("key", length: 65, bounds: 16...64),
            mentions: ["65", "64"]
        ),
        SecretCase(
            name: "salt 65 bytes",
            text: file(key: 32, salt: 65),
            error: .secretLength("salt", length: 65, bounds: 32...64),
            mentions: ["65", "64"]
        ),
        SecretCase(
            name: "empty key",
            text: #"{"key":"","salt":"\#(salt32)"}"#,
            error: .secretLength("key", length: 0, bounds: 16...64),
            mentions: ["0", "16"]
        ),
        SecretCase(
            name: "missing key",
            text: #"{"salt":"\#(salt32)"}"#,
            error: .missingMember("key"),
            mentions: ["key"]
        ),
        SecretCase(
            name: "missing salt",
            text: #"{"key":"\#(key32)"}"#,
            error: .missingMember("salt"),
            mentions: ["salt"]
        ),
        SecretCase(name: "empty object", text: "{ }", error: .missingMember("key")),
        SecretCase(
            name: "extra member",
            text: #"{"key":"\#(key32)","salt":"\#(salt32)","note":"x"}"#,
            error: .unknownMember(offset: 0)
        ),
        SecretCase(
            name: "member named like a secret",
            text: #"{"\#(key32)":"\#(salt32)"}"#,
            error: .unknownMember(offset: 0)
        ),
        SecretCase(
            name: "duplicate key",
            text: #"{"key":"\#(key32)","key":"\#(key32)","salt":"\#(salt32)"}"#,
            error: .duplicateMember("key", offset: 0)
        ),
        SecretCase(
            name: "duplicate salt",
            text: #"{"salt":"\#(salt32)","key":"\#(key32)","salt":"\#(salt32)"}"#,
            error: .duplicateMember("salt", offset: 0)
        ),
        SecretCase(
            name: "bad base64 character",
            text: #"{"key":"\#(key32.dropLast(4))*AA=","salt":"\#(salt32)"}"#,
            error: .base64Character("key", offset: 0)
        ),
        SecretCase(
            name: "URL-safe alphabet",
            text: #"{"key":"\#(key32)","salt":"_\#(salt32.dropFirst())"}"#,
            error: .base64Character("salt", offset: 0)
        ),
        SecretCase(
            name: "space inside base64",
            text: #"{"key":"\#(key32.prefix(8)) \#(key32.dropFirst(8))","salt":"\#(salt32)"}"#,
            error: .base64Character("key", offset: 0)
        ),
        SecretCase(
            name: "missing padding",
            text: #"{"key":"\#(key32.dropLast())","salt":"\#(salt32)"}"#,
            error: .base64Length("key", length: 0),
            mentions: ["43", "4"]
        ),
        SecretCase(
            name: "padding in the middle",
            text: #"{"key":"AAAA=AAA\#(key32.dropFirst(8))","salt":"\#(salt32)"}"#,
            error: .base64Padding("key", offset: 0)
        ),
        SecretCase(
            name: "three padding characters",
            text: #"{"key":"\#(key32.dropLast(4))A===","salt":"\#(salt32)"}"#,
            error: .base64Padding("key", offset: 0)
        ),
        SecretCase(
            name: "backslash escape",
            text: #"{"key":"\#(key32.dropLast(4))\/AA=","salt":"\#(salt32)"}"#,
            error: .backslash(offset: 0)
        ),
        SecretCase(
            name: "escaped member name",
            text: #"{"k\u0065y":"\#(key32)","salt":"\#(salt32)"}"#,
            error: .backslash(offset: 0)
        ),
        SecretCase(
            name: "raw control character",
            text: "{\"key\":\"\(key32.prefix(4))\t\(key32.dropFirst(4))\",\"salt\":\"\(salt32)\"}",
            error: .controlCharacter(offset: 0)
        ),
        SecretCase(
            name: "number value",
            text: #"{"key":12345,"salt":"\#(salt32)"}"#,
            error: .valueNotString("key", offset: 0)
        ),
        SecretCase(name: "not an object (array)", text: #"["\#(key32)","\#(salt32)"]"#, error: .notAnObject(offset: 0)),
        SecretCase(name: "not an object (string)", text: #""\#(key32)""#, error: .notAnObject(offset: 0)),
        SecretCase(name: "only whitespace", text: " \n ", error: .notAnObject(offset: 0)),
        SecretCase(
            name: "trailing garbage",
            text: file(key: 32, salt: 32) + "\n\(key32)",
            error: .trailingBytes(0, offset: 0)
        ),
        SecretCase(
            name: "two objects",
            text: file(key: 32, salt: 32) + file(key: 32, salt: 32),
            error: .trailingBytes(0, offset: 0)
        ),
        SecretCase(
            name: "missing comma",
            text: #"{"key":"\#(key32)" "salt":"\#(salt32)"}"#,
            error: .unexpectedByte(offset: 0, expected: ""),
            mentions: ["offset 54"]
        ),
        SecretCase(
            name: "missing colon",
            text: #"{"key" "\#(key32)","salt":"\#(salt32)"}"#,
            error: .unexpectedByte(offset: 0, expected: ""),
            mentions: ["offset 7"]
        ),
        SecretCase(
            name: "unclosed object",
            text: #"{"key":"\#(key32)","salt":"\#(salt32)""#,
            error: .unexpectedByte(offset: 0, expected: ""),
            mentions: ["offset 107"]
        ),
        SecretCase(name: "unterminated string", text: #"{"key":"\#(key32)"#, error: .unterminatedString(offset: 0)),
        SecretCase(
            name: "over 4 KiB",
            text: file(key: 32, salt: 32) + String(repeating: " ", count: 4096),
            error: .fileTooLarge(limit: 4096),
            mentions: ["4096"]
        ),
        SecretCase(name: "empty file", text: "", error: .fileEmpty()),
    ]

    @Test(arguments: refused)
    func invalidFileIsRefused(row: SecretCase) throws {
        let expected = try #require(row.error)
        let error = #expect(throws: KeydctlError.self) { try parse(row.text) }
        #expect(error == expected, "got: \(error.map(\.description) ?? "nothing")")
        let message = error?.description ?? ""
        for word in row.mentions {
            #expect(message.contains(word), "message lacks \(word): \(message)")
        }
        // No base64 text from the input: not the secrets, not even an eight-character piece of them.
        for secret in [key32, salt32] {
            for start in stride(from: 0, to: secret.count - 8, by: 4) {
                let piece = String(secret.dropFirst(start).prefix(8))
                #expect(!message.contains(piece), "message echoes input: \(message)")
            }
        }
        #expect(error?.exitCode == 3)
    }

    @Test func everyTruncationOfAValidFileIsRefused() {
        let whole = Array(file(key: 32, salt: 32).utf8)
        for length in 0..<whole.count {
            let prefix = String(decoding: whole[0..<length], as: UTF8.self)
            #expect(throws: KeydctlError.self, "prefix of \(length) bytes") { try parse(prefix) }
        }
    }
}

/// Reading the secret from a file (the path, not stdin).
struct MasterSecretFileReadTests {
    private func temporaryFile(_ contents: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appending(path: "keydctl-test-\(UUID().uuidString).json").path
        try Data(contents).write(to: URL(filePath: path))
        return path
    }

    @Test func readsAndDecodesAFile() throws {
        let path = try temporaryFile(Array(file(key: 32, salt: 48).utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let secret = try MasterSecretFile.read(path: path)
        #expect(secret.key.withUnsafeBytes { Array($0) } == bytes(32, seed: 1))
        #expect(secret.salt.withUnsafeBytes { Array($0) } == bytes(48, seed: 2))
    }

    @Test func refusesAFileOverTheLimitWithoutParsingIt() throws {
        let path = try temporaryFile([UInt8](repeating: UInt8(ascii: " "), count: MasterSecretFile.maxFileSize + 1))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: KeydctlError.fileTooLarge(limit: MasterSecretFile.maxFileSize)) {
            _ = try MasterSecretFile.read(path: path)
        }
    }

    @Test func missingFileIsBadInputNamingThePath() {
        let error = #expect(throws: KeydctlError.self) {
            _ = try MasterSecretFile.read(path: "/nonexistent/keydctl/secret.json")
        }
        #expect(error == .cannotOpen(path: "", errno: 0))
        #expect(error?.description.contains("/nonexistent/keydctl/secret.json") == true)
        #expect(error?.exitCode == 3)
    }

    @Test func directoryIsUnreadable() {
        let error = #expect(throws: KeydctlError.self) { _ = try MasterSecretFile.read(path: "/") }
        #expect(error == .cannotRead(path: "", errno: 0))
        #expect(error?.exitCode == 3)
    }
}
