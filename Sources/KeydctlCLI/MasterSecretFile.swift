import KeydProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Constellation's master-secret file: {"key":"<std base64>","salt":"<std base64>"}.
//
// Parsed by hand over the raw bytes, not with JSONSerialization, JSONDecoder or Data: those keep
// copies of the secret in buffers nobody wipes. The only copies made here are the decoded key and
// salt, in SecretBytes that zero themselves; the file buffer is a SecretBytes too.

/// The strict reader of a master-secret file.
public enum MasterSecretFile {
    /// Largest file accepted, in bytes.
    public static let maxFileSize = 4096
    /// Decoded key lengths keyd accepts.
    public static let keyLength = Limits.masterSecretLength
    /// Decoded salt lengths keyd accepts.
    public static let saltLength = Limits.saltLength

    /// Reads and parses the file at `path` (`-` is standard input); the file bytes are wiped after parsing.
    public static func read(path: String) throws(KeydctlError) -> MasterSecret {
        var contents = SecretBytes(capacity: maxFileSize + 1)
        let fd: Int32
        if path == "-" {
            fd = STDIN_FILENO
        } else {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        }
        defer { if fd != STDIN_FILENO { _ = close(fd) } }
        // One byte more than the limit tells an oversized file from one of exactly the limit.
        try contents.fill { (buffer) throws(KeydctlError) -> Int in
            try readFully(fd, into: buffer) { (error) in .cannotRead(path: path, errno: error) }
        }
        return try contents.withUnsafeBytes { (bytes) throws(KeydctlError) -> MasterSecret in
            try parse(bytes)
        }
    }

    /// Parses the file's bytes: exactly one flat object with string members `key` and `salt`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(KeydctlError) -> MasterSecret {
        guard !bytes.isEmpty else { throw .fileEmpty() }
        guard bytes.count <= maxFileSize else { throw .fileTooLarge(limit: maxFileSize) }
        var scanner = ObjectScanner(bytes)
        let members = try scanner.scanObject()
        guard let key = members.key else { throw .missingMember("key") }
        guard let salt = members.salt else { throw .missingMember("salt") }
        let keyText = UnsafeRawBufferPointer(rebasing: bytes[key])
        let saltText = UnsafeRawBufferPointer(rebasing: bytes[salt])
        // Check both texts and lengths before decoding either.
        let keyCount = try Base64.decodedCount(keyText, member: "key", offset: key.lowerBound)
        let saltCount = try Base64.decodedCount(saltText, member: "salt", offset: salt.lowerBound)
        guard keyLength.contains(keyCount) else { throw .secretLength("key", length: keyCount, bounds: keyLength) }
        guard saltLength.contains(saltCount) else { throw .secretLength("salt", length: saltCount, bounds: saltLength) }
        return MasterSecret(
            key: Base64.decode(keyText, count: keyCount),
            salt: Base64.decode(saltText, count: saltCount)
        )
    }
}

/// Byte ranges of the two member values inside the file.
struct MemberRanges {
    var key: Range<Int>?
    var salt: Range<Int>?
}

/// A cursor over the file bytes for one flat object of string members.
struct ObjectScanner {
    private let bytes: UnsafeRawBufferPointer
    private var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private static let quote = UInt8(ascii: "\"")
    private static let backslash = UInt8(ascii: "\\")

    /// Scans `{ "key": "...", "salt": "..." }` with optional whitespace and nothing after it.
    mutating func scanObject() throws(KeydctlError) -> MemberRanges {
        skipWhitespace()
        guard peek() == UInt8(ascii: "{") else { throw .notAnObject(offset: position) }
        position += 1
        var members = MemberRanges()
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            position += 1
        } else {
            while true {
                skipWhitespace()
                let nameOffset = position
                guard peek() == Self.quote else {
                    throw .unexpectedByte(offset: position, expected: "a member name in quotes")
                }
                let name = try scanString()
                let isKey = equals(name, "key")
                guard isKey || equals(name, "salt") else { throw .unknownMember(offset: nameOffset) }
                let memberName = isKey ? "key" : "salt"
                if (isKey ? members.key : members.salt) != nil {
                    throw .duplicateMember(memberName, offset: nameOffset)
                }
                skipWhitespace()
                guard peek() == UInt8(ascii: ":") else { throw .unexpectedByte(offset: position, expected: "':'") }
                position += 1
                skipWhitespace()
                guard peek() == Self.quote else { throw .valueNotString(memberName, offset: position) }
                let value = try scanString()
                if isKey { members.key = value } else { members.salt = value }
                skipWhitespace()
                if peek() == UInt8(ascii: ",") {
                    position += 1
                    continue
                }
                guard peek() == UInt8(ascii: "}") else {
                    throw .unexpectedByte(offset: position, expected: "',' or '}'")
                }
                position += 1
                break
            }
        }
        skipWhitespace()
        guard position == bytes.count else { throw .trailingBytes(bytes.count - position, offset: position) }
        return members
    }

    /// Scans a string at the current quote; returns the range between the quotes.
    private mutating func scanString() throws(KeydctlError) -> Range<Int> {
        let start = position
        position += 1
        while position < bytes.count {
            let byte = bytes[position]
            if byte == Self.quote {
                position += 1
                return (start + 1)..<(position - 1)
            }
            // Base64 and the two names never need an escape; refusing them keeps the parser exact.
            if byte == Self.backslash { throw .backslash(offset: position) }
            if byte < 0x20 { throw .controlCharacter(offset: position) }
            position += 1
        }
        throw .unterminatedString(offset: start)
    }

    private func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { position += 1 }
    }

    private func equals(_ range: Range<Int>, _ name: StaticString) -> Bool {
        guard range.count == name.utf8CodeUnitCount else { return false }
        return name.withUTF8Buffer { expected in
            for index in 0..<range.count where bytes[range.lowerBound + index] != expected[index] { return false }
            return true
        }
    }
}

/// Standard base64 (RFC 4648 section 4) with required padding and no whitespace.
enum Base64 {
    /// The 6-bit value of an alphabet byte, or nil.
    @inline(__always)
    static func value(of byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): byte - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }

    /// Checks `text` (found at file `offset`) and returns how many bytes it decodes to.
    static func decodedCount(_ text: UnsafeRawBufferPointer, member: String, offset: Int) throws(KeydctlError) -> Int {
        let padding = UInt8(ascii: "=")
        var padded = 0
        for (index, byte) in text.enumerated() {
            if byte == padding {
                padded += 1
                continue
            }
            guard value(of: byte) != nil else { throw .base64Character(member, offset: offset + index) }
            // Data after padding.
            if padded > 0 { throw .base64Padding(member, offset: offset + index - padded) }
        }
        guard text.count % 4 == 0 else { throw .base64Length(member, length: text.count) }
        guard padded <= 2 else { throw .base64Padding(member, offset: offset + text.count - padded) }
        return text.count / 4 * 3 - padded
    }

    /// Decodes `text`, already checked by ``decodedCount(_:member:offset:)``, into a fresh secret buffer.
    static func decode(_ text: UnsafeRawBufferPointer, count: Int) -> SecretBytes {
        var out = SecretBytes(capacity: count)
        out.fill { buffer in
            var written = 0
            var quantum: UInt32 = 0
            var bits = 0
            for byte in text {
                guard let sextet = value(of: byte) else { break }  // padding: checked to be last
                quantum = (quantum << 6) | UInt32(sextet)
                bits += 6
                if bits >= 8 {
                    bits -= 8
                    buffer[written] = UInt8(truncatingIfNeeded: quantum >> UInt32(bits))
                    written += 1
                }
            }
            precondition(written == count, "base64 decoded \(written) bytes, expected \(count)")
            return written
        }
        return out
    }
}
