/// A bounds-checked cursor over untrusted bytes; every read either succeeds or throws, never traps.
struct ByteReader {
    /// All the bytes; `position` moves through them (no slice is made until one is returned).
    private let base: ArraySlice<UInt8>
    private var position: Int
    /// The structure being read, for error messages.
    let what: String

    init(_ bytes: ArraySlice<UInt8>, what: String) {
        self.base = bytes
        self.position = bytes.startIndex
        self.what = what
    }

    /// The bytes not yet read.
    var bytes: ArraySlice<UInt8> { base[position...] }
    /// Number of bytes not yet read.
    var remaining: Int { base.endIndex - position }
    /// Offset of the next byte from the start of the structure.
    var offset: Int { position - base.startIndex }

    // Field names are autoclosures: interpolated names ("pcrs[\(index)]") cost nothing unless a read fails.

    /// Reads `count` bytes.
    mutating func read(_ count: Int, _ field: @autoclosure () -> String) throws(AttestationError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw .truncated("\(what).\(field())", needed: count, available: remaining)
        }
        let slice = base[position..<position + count]
        position += count
        return slice
    }

    /// Moves past `count` bytes without making a slice of them.
    mutating func skip(_ count: Int, _ field: @autoclosure () -> String) throws(AttestationError) {
        guard count >= 0, count <= remaining else {
            throw .truncated("\(what).\(field())", needed: count, available: remaining)
        }
        position += count
    }

    /// Reads a big-endian unsigned integer of `T`'s width.
    mutating func readBE<T: FixedWidthInteger & UnsignedInteger>(
        _: T.Type,
        _ field: @autoclosure () -> String
    ) throws(AttestationError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw .truncated("\(what).\(field())", needed: size, available: remaining) }
        var value: T = 0
        for index in position..<position + size { value = value << 8 | T(base[index]) }
        position += size
        return value
    }

    /// Reads a little-endian unsigned integer of `T`'s width.
    mutating func readLE<T: FixedWidthInteger & UnsignedInteger>(
        _: T.Type,
        _ field: @autoclosure () -> String
    ) throws(AttestationError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw .truncated("\(what).\(field())", needed: size, available: remaining) }
        var value: T = 0
        for index in (position..<position + size).reversed() { value = value << 8 | T(base[index]) }
        position += size
        return value
    }

    mutating func u8(_ field: @autoclosure () -> String) throws(AttestationError) -> UInt8 {
        guard remaining >= 1 else { throw .truncated("\(what).\(field())", needed: 1, available: remaining) }
        defer { position += 1 }
        return base[position]
    }

    mutating func u16(_ field: @autoclosure () -> String) throws(AttestationError) -> UInt16 {
        guard remaining >= 2 else { throw .truncated("\(what).\(field())", needed: 2, available: remaining) }
        defer { position += 2 }
        return UInt16(base[position]) << 8 | UInt16(base[position + 1])
    }

    mutating func u32(_ field: @autoclosure () -> String) throws(AttestationError) -> UInt32 {
        guard remaining >= 4 else { throw .truncated("\(what).\(field())", needed: 4, available: remaining) }
        defer { position += 4 }
        return UInt32(base[position]) << 24 | UInt32(base[position + 1]) << 16 | UInt32(base[position + 2]) << 8
            | UInt32(base[position + 3])
    }

    mutating func u64(_ field: @autoclosure () -> String) throws(AttestationError) -> UInt64 {
        guard remaining >= 8 else { throw .truncated("\(what).\(field())", needed: 8, available: remaining) }
        var value: UInt64 = 0
        for index in position..<position + 8 { value = value << 8 | UInt64(base[index]) }
        position += 8
        return value
    }

    /// Reads a TPM2B: a big-endian `u16` size at most `limit`, then that many bytes.
    mutating func tpm2b(_ field: @autoclosure () -> String, limit: Int) throws(AttestationError) -> [UInt8] {
        Array(try tpm2bSlice(field(), limit: limit))
    }

    /// Reads a TPM2B and returns where its bytes are (indices of the slice the reader was made with).
    mutating func tpm2bRange(_ field: @autoclosure () -> String, limit: Int) throws(AttestationError) -> Range<Int> {
        let size = Int(try u16("\(field()).size"))
        guard size <= limit else { throw .lengthExceeded("\(what).\(field())", length: size, limit: limit) }
        try skip(size, field())
        return (position - size)..<position
    }

    /// Reads a TPM2B without copying its bytes.
    mutating func tpm2bSlice(
        _ field: @autoclosure () -> String,
        limit: Int
    ) throws(AttestationError) -> ArraySlice<UInt8> {
        let size = Int(try u16("\(field()).size"))
        guard size <= limit else { throw .lengthExceeded("\(what).\(field())", length: size, limit: limit) }
        return try read(size, field())
    }

    /// Throws unless every byte was read.
    func finish() throws(AttestationError) {
        guard remaining == 0 else { throw .trailingBytes(what, count: remaining) }
    }
}

/// Lowercase hexadecimal of `bytes`.
@inlinable
public func hexString<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    @inline(__always) func digit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? nibble &+ 0x30 : nibble &+ 0x57 }
    return String(unsafeUninitializedCapacity: bytes.count * 2) { buffer in
        var index = 0
        for byte in bytes {
            buffer[index] = digit(byte >> 4)
            buffer[index + 1] = digit(byte & 0x0F)
            index += 2
        }
        return index
    }
}

/// Bytes of a hexadecimal string (either case, optional `0x`), or nil when it is not even-length hex.
public func bytes(fromHex text: String) -> [UInt8]? {
    var utf8 = Substring(text).utf8[...]
    if utf8.starts(with: "0x".utf8) || utf8.starts(with: "0X".utf8) { utf8 = utf8.dropFirst(2) }
    guard utf8.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(utf8.count / 2)
    var high: UInt8? = nil
    for char in utf8 {
        let value: UInt8
        switch char {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): value = char - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): value = char - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): value = char - UInt8(ascii: "A") + 10
        default: return nil
        }
        if let h = high {
            out.append(h << 4 | value)
            high = nil
        } else {
            high = value
        }
    }
    return out
}
