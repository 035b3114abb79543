/// A bounds-checked cursor over untrusted bytes; every read either succeeds or throws, never traps.
struct ByteReader {
    private(set) var bytes: ArraySlice<UInt8>
    /// The structure being read, for error messages.
    let what: String
    private let start: Int

    init(_ bytes: ArraySlice<UInt8>, what: String) {
        self.bytes = bytes
        self.what = what
        self.start = bytes.startIndex
    }

    /// Bytes not yet read.
    var remaining: Int { bytes.count }
    /// Offset of the next byte from the start of the structure.
    var offset: Int { bytes.startIndex - start }

    /// Reads `count` bytes.
    mutating func read(_ count: Int, _ field: String) throws(AttestationError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count else {
            throw .truncated("\(what).\(field)", needed: count, available: bytes.count)
        }
        let slice = bytes.prefix(count)
        bytes = bytes.dropFirst(count)
        return slice
    }

    /// Reads a big-endian unsigned integer of `T`'s width.
    mutating func readBE<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, _ field: String) throws(AttestationError) -> T {
        let raw = try read(MemoryLayout<T>.size, field)
        return raw.reduce(T(0)) { $0 << 8 | T($1) }
    }

    /// Reads a little-endian unsigned integer of `T`'s width.
    mutating func readLE<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, _ field: String) throws(AttestationError) -> T {
        let raw = try read(MemoryLayout<T>.size, field)
        return raw.reversed().reduce(T(0)) { $0 << 8 | T($1) }
    }

    mutating func u8(_ field: String) throws(AttestationError) -> UInt8 { try readBE(UInt8.self, field) }
    mutating func u16(_ field: String) throws(AttestationError) -> UInt16 { try readBE(UInt16.self, field) }
    mutating func u32(_ field: String) throws(AttestationError) -> UInt32 { try readBE(UInt32.self, field) }
    mutating func u64(_ field: String) throws(AttestationError) -> UInt64 { try readBE(UInt64.self, field) }

    /// Reads a TPM2B: a big-endian `u16` size at most `limit`, then that many bytes.
    mutating func tpm2b(_ field: String, limit: Int) throws(AttestationError) -> [UInt8] {
        let size = Int(try u16("\(field).size"))
        guard size <= limit else { throw .lengthExceeded("\(what).\(field)", length: size, limit: limit) }
        return Array(try read(size, field))
    }

    /// Throws unless every byte was read.
    func finish() throws(AttestationError) {
        guard bytes.isEmpty else { throw .trailingBytes(what, count: bytes.count) }
    }
}

/// Lowercase hexadecimal of `bytes`.
@inlinable
public func hexString<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
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
