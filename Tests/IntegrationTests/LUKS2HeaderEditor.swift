import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What a hostile host does to a LUKS2 image between two boots: rewrite its header. Test support only.
///
/// LUKS2 keeps two copies of its header, at offset 0 and at `hdr_size`; each is a 4096-byte binary
/// header (magic, version, `hdr_size`, label, checksum algorithm, UUID, checksum, …) followed by the
/// JSON metadata area, up to `hdr_size`. The editor changes the binary UUID and label fields and the
/// JSON of both copies, then recomputes each checksum as the on-disk format specifies: SHA-256 over
/// `hdr_size` bytes with the 64-byte `csum` field zeroed. libcryptsetup then loads the header as if
/// it had written it (tests check with `cryptsetup luksDump`).
struct LUKS2HeaderEditor {
    /// The image file.
    let path: String

    /// Byte offsets and lengths of the binary header fields (LUKS2 on-disk format, `struct luks2_hdr_disk`).
    static let magicLength = 6
    static let headerSizeOffset = 8
    static let labelOffset = 24
    static let labelLength = 48
    static let checksumAlgorithmOffset = 72
    static let uuidOffset = 168
    static let uuidLength = 40
    static let checksumOffset = 448
    static let checksumLength = 64
    static let jsonOffset = 4096
    static let primaryMagic: [UInt8] = [0x4C, 0x55, 0x4B, 0x53, 0xBA, 0xBE]
    static let secondaryMagic: [UInt8] = [0x53, 0x4B, 0x55, 0x4C, 0xBA, 0xBE]

    /// Rewrites both header copies: the binary UUID and label fields when given (raw bytes, NUL-padded,
    /// so a NUL inside is possible), and the JSON metadata through `metadata`.
    func edit(uuid: [UInt8]? = nil, label: [UInt8]? = nil, metadata: ((inout [String: Any]) -> Void)? = nil) throws {
        let file = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? file.close() }
        try file.seek(toOffset: UInt64(Self.headerSizeOffset))
        let sizeBytes = try exactly(file.read(upToCount: 8), count: 8)
        let headerSize = Int(sizeBytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        guard (16384...(4 << 20)).contains(headerSize) else { throw HarnessError("hdr_size \(headerSize)") }
        for (offset, magic) in [(0, Self.primaryMagic), (headerSize, Self.secondaryMagic)] {
            try file.seek(toOffset: UInt64(offset))
            var header = [UInt8](try exactly(file.read(upToCount: headerSize), count: headerSize))
            guard Array(header[0..<Self.magicLength]) == magic else {
                throw HarnessError("no LUKS2 magic at \(offset)")
            }
            let algorithm = header[Self.checksumAlgorithmOffset..<(Self.checksumAlgorithmOffset + 32)]
            guard Array(algorithm.prefix { $0 != 0 }) == Array("sha256".utf8) else {
                throw HarnessError("checksum algorithm is not sha256")
            }
            if let uuid { try Self.put(uuid, into: &header, at: Self.uuidOffset, length: Self.uuidLength) }
            if let label { try Self.put(label, into: &header, at: Self.labelOffset, length: Self.labelLength) }
            if let metadata {
                let area = header[Self.jsonOffset...].prefix { $0 != 0 }
                guard var object = try JSONSerialization.jsonObject(with: Data(area)) as? [String: Any] else {
                    throw HarnessError("metadata at \(offset) is not an object")
                }
                metadata(&object)
                let json = [UInt8](try JSONSerialization.data(withJSONObject: object))
                try Self.put(json, into: &header, at: Self.jsonOffset, length: headerSize - Self.jsonOffset)
            }
            Self.sign(&header)
            try file.seek(toOffset: UInt64(offset))
            try file.write(contentsOf: header)
        }
        try file.synchronize()
    }

    /// The JSON metadata of the primary header.
    func metadata() throws -> [String: Any] {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? file.close() }
        try file.seek(toOffset: UInt64(Self.jsonOffset))
        let area = try exactly(file.read(upToCount: 12288), count: 12288).prefix { $0 != 0 }
        guard let object = try JSONSerialization.jsonObject(with: Data(area)) as? [String: Any] else {
            throw HarnessError("metadata is not an object")
        }
        return object
    }

    /// The checksum of one header copy: SHA-256 over the copy with its `csum` field zeroed.
    static func sign(_ header: inout [UInt8]) {
        header.replaceSubrange(
            checksumOffset..<(checksumOffset + checksumLength),
            with: repeatElement(0, count: checksumLength)
        )
        let digest = Array(SHA256.hash(data: header))
        header.replaceSubrange(checksumOffset..<(checksumOffset + digest.count), with: digest)
    }

    /// Writes `bytes` NUL-padded into a field of `length` bytes; at least one NUL must remain.
    private static func put(_ bytes: [UInt8], into header: inout [UInt8], at offset: Int, length: Int) throws {
        guard bytes.count < length else { throw HarnessError("\(bytes.count) bytes do not fit a \(length)-byte field") }
        header.replaceSubrange(
            offset..<(offset + length),
            with: bytes + [UInt8](repeating: 0, count: length - bytes.count)
        )
    }
}

/// `data`, which must hold exactly `count` bytes.
private func exactly(_ data: Data?, count: Int) throws -> Data {
    guard let data, data.count == count else { throw HarnessError("short read: \(data?.count ?? 0) of \(count) bytes") }
    return data
}
