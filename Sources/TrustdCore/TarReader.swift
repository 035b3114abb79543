/// A tar archive read one 512-byte block at a time (ustar, GNU and pax headers), accepting only what
/// is safe to extract: regular files and directories with relative names that stay inside the target
/// (no absolute name, no `..`), no setuid, setgid or sticky bit, entry count and sizes bounded. Links
/// (symbolic and hard), devices, FIFOs and unknown entry types are refused, not skipped: an archive
/// that holds one is not what the component list promised. A pax `path`/`size` record or a GNU long
/// name applies to the next entry; other pax records are ignored. Pure: the caller reads, decompresses
/// and writes.
public struct TarReader: Sendable {
    /// A tar block's size.
    public static let blockSize = 512

    /// The bounds an archive must stay within.
    public struct Limits: Sendable {
        public var maxEntries: Int
        public var maxFileBytes: Int
        public var maxTotalBytes: Int

        public init(
            maxEntries: Int = ComponentLimits.maxArchiveEntries,
            maxFileBytes: Int,
            maxTotalBytes: Int
        ) {
            self.maxEntries = maxEntries
            self.maxFileBytes = maxFileBytes
            self.maxTotalBytes = maxTotalBytes
        }
    }

    /// One entry to create.
    public struct Entry: Hashable, Sendable {
        /// A regular file or a directory.
        public enum Kind: Hashable, Sendable { case file, directory }
        /// The name's components, canonical (empty: the archive's own root directory, `./`).
        public var path: [String]
        public var kind: Kind
        /// The permission bits (`0o777` at most).
        public var mode: UInt32
        /// The file's size in bytes (0 for a directory).
        public var size: Int
    }

    /// What a block meant.
    public enum Event: Hashable, Sendable {
        /// A new entry; a file's data follows in `.data` events unless its size is 0.
        case entry(Entry)
        /// The next bytes of the current file; `last` on its final block.
        case data(ArraySlice<UInt8>, last: Bool)
        /// The end-of-archive marker.
        case end
    }

    private enum State: Hashable, Sendable {
        case header
        case fileData(remaining: Int)
        case extendedHeader(type: UInt8, remaining: Int)
        case ended
    }

    private let limits: Limits
    private var state = State.header
    private var entries = 0
    private var totalBytes = 0
    private var extended: [UInt8] = []
    private var nextPath: String?
    private var nextSize: Int?

    public init(limits: Limits) { self.limits = limits }

    /// Consumes the next block; nil when the block only carries header data for the next entry or is
    /// padding after the end.
    public mutating func consume(_ block: ArraySlice<UInt8>) throws(ComponentError) -> Event? {
        precondition(block.count == Self.blockSize, "tar blocks are 512 bytes")
        switch state {
        case .ended:
            guard block.allSatisfy({ $0 == 0 }) else { throw Self.refuse("data after the end-of-archive marker") }
            return nil
        case .fileData(let remaining):
            let count = min(remaining, Self.blockSize)
            state = remaining > count ? .fileData(remaining: remaining - count) : .header
            return .data(block.prefix(count), last: remaining == count)
        case .extendedHeader(let type, let remaining):
            let count = min(remaining, Self.blockSize)
            extended += block.prefix(count)
            guard remaining == count else {
                state = .extendedHeader(type: type, remaining: remaining - count)
                return nil
            }
            state = .header
            try applyExtended(type: type)
            return nil
        case .header:
            if block.allSatisfy({ $0 == 0 }) {
                guard nextPath == nil, nextSize == nil else {
                    throw Self.refuse("the archive ends after an extended header")
                }
                state = .ended
                return .end
            }
            return try header(block)
        }
    }

    /// Checks that the archive ended at its end-of-archive marker, not inside an entry.
    public func finish() throws(ComponentError) {
        guard state == .ended else { throw Self.refuse("the archive is truncated (no end-of-archive marker)") }
    }

    /// Parses a header block.
    private mutating func header(_ block: ArraySlice<UInt8>) throws(ComponentError) -> Event? {
        let b = Array(block)
        let recorded = try Self.number(b[148..<156], field: "checksum")
        let sum = b.indices.reduce(0) { $0 + ((148..<156).contains($1) ? 0x20 : Int(b[$1])) }
        guard recorded == sum else { throw Self.refuse("header checksum \(recorded) does not match \(sum)") }
        let type = b[156]
        var size = try Self.number(b[124..<136], field: "size")
        if let override = nextSize { size = override }
        let name: String
        if let override = nextPath {
            name = override
        } else {
            let base = Self.text(b[0..<100])
            // ustar (POSIX) splits long names into prefix/name; old GNU headers use those bytes for times.
            let ustar = b[257..<263].elementsEqual(Array("ustar\0".utf8))
            let prefix = ustar ? Self.text(b[345..<500]) : ""
            name = prefix.isEmpty ? base : prefix + "/" + base
        }
        nextPath = nil
        nextSize = nil
        switch type {
        case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"):
            guard size <= ComponentLimits.maxExtendedHeaderBytes else {
                throw Self.refuse("extended header of \(size) bytes exceeds \(ComponentLimits.maxExtendedHeaderBytes)")
            }
            extended = []
            if size == 0 {
                try applyExtended(type: type)
            } else {
                state = .extendedHeader(type: type, remaining: size)
            }
            return nil
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"), UInt8(ascii: "5"):
            break
        case UInt8(ascii: "1"): throw Self.refuse("\(Self.shown(name)) is a hard link (links are not extracted)")
        case UInt8(ascii: "2"): throw Self.refuse("\(Self.shown(name)) is a symbolic link (links are not extracted)")
        case UInt8(ascii: "3"), UInt8(ascii: "4"): throw Self.refuse("\(Self.shown(name)) is a device node")
        case UInt8(ascii: "6"): throw Self.refuse("\(Self.shown(name)) is a FIFO")
        default: throw Self.refuse("\(Self.shown(name)) has entry type \(type), which is not extracted")
        }
        var isDirectory = type == UInt8(ascii: "5")
        if name.hasSuffix("/"), size == 0 { isDirectory = true }
        let mode = try Self.number(b[100..<108], field: "mode")
        guard mode & 0o7000 == 0 else {
            throw Self.refuse("\(Self.shown(name)) has mode \(String(mode, radix: 8)) (setuid, setgid or sticky)")
        }
        entries += 1
        guard entries <= limits.maxEntries else { throw Self.refuse("more than \(limits.maxEntries) entries") }
        let path = try Self.components(of: name)
        if isDirectory {
            guard size == 0 else { throw Self.refuse("directory \(Self.shown(name)) has a size") }
            return .entry(Entry(path: path, kind: .directory, mode: UInt32(mode & 0o777), size: 0))
        }
        guard !path.isEmpty else { throw Self.refuse("a file entry has no name") }
        guard size <= limits.maxFileBytes else {
            throw Self.refuse("\(Self.shown(name)) is \(size) bytes, over the \(limits.maxFileBytes)-byte limit")
        }
        totalBytes += size
        guard totalBytes <= limits.maxTotalBytes else {
            throw Self.refuse("the files total over \(limits.maxTotalBytes) bytes")
        }
        if size > 0 { state = .fileData(remaining: size) }
        return .entry(Entry(path: path, kind: .file, mode: UInt32(mode & 0o777), size: size))
    }

    /// Applies a pax header's `path` and `size` records, or a GNU long name, to the next entry.
    private mutating func applyExtended(type: UInt8) throws(ComponentError) {
        defer { extended = [] }
        if type == UInt8(ascii: "L") {
            nextPath = Self.text(extended[...])
            return
        }
        var rest = extended[...]
        while !rest.isEmpty {
            guard let space = rest.firstIndex(of: 0x20),
                let length = Int(String(decoding: rest[rest.startIndex..<space], as: UTF8.self)),
                length > space - rest.startIndex + 1, length <= rest.count,
                rest[rest.startIndex + length - 1] == 0x0A
            else { throw Self.refuse("malformed pax extended header") }
            let record = rest[(space + 1)..<(rest.startIndex + length - 1)]
            rest = rest[(rest.startIndex + length)...]
            guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else {
                throw Self.refuse("malformed pax record")
            }
            let key = String(decoding: record[..<equals], as: UTF8.self)
            let value = record[(equals + 1)...]
            // A global header ('g') sets defaults for every entry: only its harmless records are accepted.
            if type == UInt8(ascii: "g"), key == "path" || key == "size" || key == "linkpath" {
                throw Self.refuse("a global pax header sets \(key)")
            }
            switch key {
            case "path":
                guard !value.contains(0) else { throw Self.refuse("pax path contains NUL") }
                nextPath = String(decoding: value, as: UTF8.self)
            case "size":
                guard let size = Int(String(decoding: value, as: UTF8.self)), size >= 0 else {
                    throw Self.refuse("malformed pax size")
                }
                nextSize = size
            default: break
            }
        }
    }

    /// A name's canonical components: `.` and empty components dropped, absolute names and `..` refused.
    static func components(of name: String) throws(ComponentError) -> [String] {
        guard name.utf8.count <= ComponentLimits.maxEntryNameLength else {
            throw refuse("an entry name is over \(ComponentLimits.maxEntryNameLength) bytes")
        }
        guard !name.hasPrefix("/") else { throw refuse("\(shown(name)) is an absolute name") }
        let parts = name.split(separator: "/").filter { $0 != "." }.map(String.init)
        guard !parts.contains("..") else { throw refuse("\(shown(name)) has a '..' component") }
        guard !parts.contains(where: { $0.utf8.count > ComponentLimits.maxNameLength }) else {
            throw refuse("\(shown(name)) has a component over \(ComponentLimits.maxNameLength) bytes")
        }
        return parts
    }

    /// A NUL-terminated text field.
    private static func text(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// A numeric field: octal digits (space or NUL padded), or GNU's base-256 form (high bit set).
    static func number(_ field: ArraySlice<UInt8>, field name: String) throws(ComponentError) -> Int {
        guard let first = field.first else { return 0 }
        if first & 0x80 != 0 {
            guard first == 0x80 else { throw refuse("\(name) field is negative") }
            var value = 0
            for byte in field.dropFirst() {
                guard value <= (Int.max >> 8) else { throw refuse("\(name) field overflows") }
                value = value << 8 | Int(byte)
            }
            return value
        }
        var value = 0
        var digits = field.drop { $0 == 0x20 }
        digits = digits.prefix { $0 != 0 && $0 != 0x20 }
        for byte in digits {
            guard (0x30...0x37).contains(byte) else { throw refuse("\(name) field is not octal") }
            guard value <= (Int.max >> 3) else { throw refuse("\(name) field overflows") }
            value = value << 3 | Int(byte - 0x30)
        }
        return value
    }

    /// An entry name as errors show it (bounded, without control characters).
    private static func shown(_ name: String) -> String {
        "\"" + String(name.prefix(120).map { $0.isASCII && ($0.asciiValue ?? 0) < 0x20 ? "?" : $0 }) + "\""
    }

    private static func refuse(_ detail: String) -> ComponentError { ComponentError(.archive, detail) }
}
