import KeydProtocol

/// A state disk's UUID, validated: canonical lowercase RFC 4122 text, 8-4-4-4-12 digits `0-9a-f`.
///
/// - Important: The host writes the UUID into the LUKS2 header, and keyd names files after it
///   (`<state-dir>/headers/<uuid>.*`) and derives the disk key from it. The only initializer
///   validates, so a string that was not checked cannot name a file or a key. Uppercase is refused
///   rather than folded, so two spellings never name one disk.
public struct DiskUUID: Hashable, Sendable, CustomStringConvertible {
    /// The 36 characters.
    public let text: String

    /// Validates `text`; throws ``CoreError/Code/invalidDiskUUID`` (the value quoted) for anything
    /// but 36 characters of lowercase hex in 8-4-4-4-12 groups.
    public init(validating text: String) throws(CoreError) {
        guard Self.isCanonical(text) else { throw .invalidDiskUUID(text) }
        self.text = text
    }

    public var description: String { text }

    /// True for exactly 36 bytes: 8-4-4-4-12 groups of `0-9a-f` joined by `-`.
    static func isCanonical(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return false }
        for (index, byte) in bytes.enumerated() {
            switch index {
            case 8, 13, 18, 23:
                guard byte == UInt8(ascii: "-") else { return false }
            default:
                guard
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                        || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                else { return false }
            }
        }
        return true
    }
}
