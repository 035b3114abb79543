/// Reads the fields of one payload in order, with exact bounds, and refuses trailing bytes.
///
/// Offsets are relative to the start of the buffer it reads, so a secret field can be
/// reported by position and copied out of the receive buffer by its owner.
/// - Important: It borrows `bytes`; use it only inside the scope that owns that memory.
public struct WireReader {
    private let bytes: UnsafeRawBufferPointer
    /// Offset of the next unread byte.
    public private(set) var offset: Int

    /// Starts reading `bytes` at `offset`.
    public init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
        precondition(offset >= 0 && offset <= bytes.count, "reader offset outside its buffer")
        self.bytes = bytes
        self.offset = offset
    }

    /// Bytes not read yet.
    public var remaining: Int { bytes.count - offset }

    private mutating func take(_ count: Int, field: String) throws(ProtocolError) -> UnsafeRawBufferPointer {
        guard count <= remaining else {
            throw .truncated(field: field, needed: count, remaining: remaining)
        }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
        offset += count
        return slice
    }

    /// One byte.
    public mutating func u8(_ field: String) throws(ProtocolError) -> UInt8 {
        try take(1, field: field)[0]
    }

    /// A big-endian 16-bit integer.
    public mutating func u16(_ field: String) throws(ProtocolError) -> UInt16 {
        let b = try take(2, field: field)
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }

    /// A big-endian 32-bit integer.
    public mutating func u32(_ field: String) throws(ProtocolError) -> UInt32 {
        let b = try take(4, field: field)
        return b.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    /// A big-endian 64-bit integer.
    public mutating func u64(_ field: String) throws(ProtocolError) -> UInt64 {
        let b = try take(8, field: field)
        return b.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// A boolean: exactly 0 or 1.
    public mutating func bool(_ field: String) throws(ProtocolError) -> Bool {
        switch try u8(field) {
        case 0: return false
        case 1: return true
        case let other: throw .badEnum(field: field, value: Int(other))
        }
    }

    /// An enumerated byte from a closed list.
    public mutating func enumeration<E: RawRepresentable>(_ type: E.Type, _ field: String) throws(ProtocolError) -> E
    where E.RawValue == UInt8 {
        let raw = try u8(field)
        guard let value = E(rawValue: raw) else { throw .badEnum(field: field, value: Int(raw)) }
        return value
    }

    /// Exactly `count` bytes.
    public mutating func fixed(_ count: Int, _ field: String) throws(ProtocolError) -> [UInt8] {
        Array(try take(count, field: field))
    }

    private mutating func lengthPrefixed(
        _ bounds: ClosedRange<Int>,
        _ field: String
    ) throws(ProtocolError) -> UnsafeRawBufferPointer {
        let length = Int(try u16(field + ".length"))
        guard bounds.contains(length) else { throw .fieldLength(field: field, length: length, bounds: bounds) }
        return try take(length, field: field)
    }

    /// A `bytes<max>` field.
    public mutating func bytes(max: Int, _ field: String) throws(ProtocolError) -> [UInt8] {
        Array(try lengthPrefixed(0...max, field))
    }

    /// A `blob32<max>` field: a `u32` length ≤ max, then the bytes.
    public mutating func blob32(max: Int, _ field: String) throws(ProtocolError) -> [UInt8] {
        let length = Int(try u32(field + ".length"))
        guard length <= max else { throw .fieldLength(field: field, length: length, bounds: 0...max) }
        return Array(try take(length, field: field))
    }

    /// A `text<max>` field: UTF-8 without NUL or C0 control characters.
    public mutating func text(max: Int, _ field: String, allowEmpty: Bool = true) throws(ProtocolError) -> String {
        let raw = try lengthPrefixed((allowEmpty ? 0 : 1)...max, field)
        guard !raw.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { throw .badText(field: field) }
        guard let text = String(validating: raw, as: UTF8.self) else { throw .badText(field: field) }
        return text
    }

    /// A `secret<min,max>` field of at most `max` bytes, reported by position only; its bytes are not copied.
    /// The minimum is not a wire matter: a short secret decodes, and its owner refuses it (`invalidArgument`).
    public mutating func secret(max: Int, _ field: String) throws(ProtocolError) -> SecretField {
        let length = Int(try u16(field + ".length"))
        guard length <= max else { throw .fieldLength(field: field, length: length, bounds: 0...max) }
        let start = offset
        _ = try take(length, field: field)
        return SecretField(offset: start, count: length)
    }

    /// Ends the payload: any byte left is a violation.
    public func finish(_ kind: String) throws(ProtocolError) {
        guard remaining == 0 else { throw .trailingBytes(remaining, after: kind) }
    }
}

/// Where a secret field sits in the frame body it was decoded from.
public struct SecretField: Hashable, Sendable {
    /// Offset from the start of the frame body.
    public let offset: Int
    /// Length in bytes.
    public let count: Int

    /// Creates a location.
    public init(offset: Int, count: Int) {
        self.offset = offset
        self.count = count
    }
}

/// Appends fields in wire order.
public struct WireWriter: Sendable {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8]

    /// Starts an empty buffer.
    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends one byte.
    public mutating func u8(_ value: UInt8) { bytes.append(value) }

    /// Appends a big-endian 16-bit integer.
    public mutating func u16(_ value: UInt16) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    /// Appends a big-endian 32-bit integer.
    public mutating func u32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift)))
        }
    }

    /// Appends a big-endian 64-bit integer.
    public mutating func u64(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }

    /// Overwrites four bytes at `offset` with a big-endian 32-bit integer (the length prefix).
    public mutating func patchU32(_ value: UInt32, at offset: Int) {
        bytes[offset] = UInt8(truncatingIfNeeded: value >> 24)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 16)
        bytes[offset + 2] = UInt8(truncatingIfNeeded: value >> 8)
        bytes[offset + 3] = UInt8(truncatingIfNeeded: value)
    }

    /// Appends a boolean byte.
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    /// Appends bytes of a fixed-size field; the caller guarantees the size.
    public mutating func fixed(_ value: some Collection<UInt8>, count: Int) {
        precondition(value.count == count, "fixed field must be exactly \(count) bytes")
        bytes.append(contentsOf: value)
    }

    /// Appends a length-prefixed field; the caller guarantees the bound.
    public mutating func bytes(_ value: some Collection<UInt8>, max: Int) {
        precondition(value.count <= max && value.count <= Int(UInt16.max), "field longer than its bound")
        u16(UInt16(value.count))
        bytes.append(contentsOf: value)
    }

    /// Appends a `blob32<max>` field.
    public mutating func blob32(_ value: some Collection<UInt8>, max: Int) {
        precondition(value.count <= max && value.count <= Int(UInt32.max), "field longer than its bound")
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    /// Appends a text field.
    public mutating func text(_ value: String, max: Int) { bytes(Array(value.utf8), max: max) }

    /// Appends a secret field from raw memory.
    public mutating func secret(_ value: UnsafeRawBufferPointer) {
        precondition(value.count <= Int(UInt16.max), "secret longer than a u16 length")
        u16(UInt16(value.count))
        bytes.append(contentsOf: value)
    }
}
