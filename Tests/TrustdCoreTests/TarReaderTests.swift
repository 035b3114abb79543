import Testing

@testable import TrustdCore

/// Tar headers crafted here, block by block, for what /bin/tar will not write (huge sizes, bad
/// checksums, setuid bits kept, devices without root).
enum TarBlocks {
    /// A header block: ustar magic, octal fields, checksum computed unless `checksum` is given.
    static func header(
        _ name: String,
        type: Character = "0",
        size: Int = 0,
        mode: Int = 0o644,
        link: String = "",
        prefix: String = "",
        sizeField: [UInt8]? = nil,
        checksum: Int? = nil
    ) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int) { block.replaceSubrange(offset..<offset + bytes.count, with: bytes) }
        func octal(_ value: Int, width: Int) -> [UInt8] {
            let digits = String(value, radix: 8)
            return Array((String(repeating: "0", count: width - 1 - digits.count) + digits).utf8) + [0]
        }
        put(Array(name.utf8), at: 0)
        put(octal(mode, width: 8), at: 100)
        put(octal(0, width: 8), at: 108)
        put(octal(0, width: 8), at: 116)
        put(sizeField ?? octal(size, width: 12), at: 124)
        put(octal(0, width: 12), at: 136)
        block[156] = type.asciiValue!
        put(Array(link.utf8), at: 157)
        put(Array("ustar\0".utf8), at: 257)
        put(Array("00".utf8), at: 263)
        put(Array(prefix.utf8), at: 345)
        put([UInt8](repeating: 0x20, count: 8), at: 148)
        let sum = checksum ?? block.reduce(0) { $0 + Int($1) }
        put(octal(sum, width: 7) + [0x20], at: 148)
        return block
    }

    /// `bytes` padded to whole blocks.
    static func data(_ bytes: [UInt8]) -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
    }

    /// A pax extended header (`x`) carrying `records`.
    static func pax(_ records: [(String, String)], type: Character = "x") -> [UInt8] {
        var body: [UInt8] = []
        for (key, value) in records {
            let content = " \(key)=\(value)\n"
            var length = content.utf8.count + 1
            while String(length).utf8.count + content.utf8.count != length { length += 1 }
            body += Array("\(length)\(content)".utf8)
        }
        return header("././@PaxHeader", type: type, size: body.count) + data(body)
    }

    /// The end-of-archive marker.
    static let end = [UInt8](repeating: 0, count: 1024)

    /// Runs `archive` through a reader; the events, or the error.
    static func read(
        _ archive: [UInt8],
        limits: TarReader.Limits = .init(maxFileBytes: 1 << 20, maxTotalBytes: 1 << 21)
    ) throws(ComponentError) -> [TarReader.Event] {
        var reader = TarReader(limits: limits)
        var events: [TarReader.Event] = []
        for start in stride(from: 0, to: archive.count, by: 512) {
            if let event = try reader.consume(archive[start..<start + 512]) { events.append(event) }
        }
        try reader.finish()
        return events
    }
}

@Suite struct TarReaderTests {
    @Test func filesAndDirectories() throws {
        let content = Array("#!/bin/sh\necho kubeadm\n".utf8)
        let big = [UInt8](repeating: 0x41, count: 1000)
        let archive =
            TarBlocks.header("./", type: "5", mode: 0o755) + TarBlocks.header("./bin/", type: "5", mode: 0o755)
            + TarBlocks.header("./bin/kubeadm", size: content.count, mode: 0o755) + TarBlocks.data(content)
            + TarBlocks.header("bin/big", size: big.count) + TarBlocks.data(big)
            + TarBlocks.header("empty", size: 0) + TarBlocks.end + [UInt8](repeating: 0, count: 8192)
        let events = try TarBlocks.read(archive)
        #expect(
            events == [
                .entry(.init(path: [], kind: .directory, mode: 0o755, size: 0)),
                .entry(.init(path: ["bin"], kind: .directory, mode: 0o755, size: 0)),
                .entry(.init(path: ["bin", "kubeadm"], kind: .file, mode: 0o755, size: content.count)),
                .data(content[...], last: true),
                .entry(.init(path: ["bin", "big"], kind: .file, mode: 0o644, size: 1000)),
                .data(big[0..<512], last: false),
                .data(big[512..<1000], last: true),
                .entry(.init(path: ["empty"], kind: .file, mode: 0o644, size: 0)),
                .end,
            ]
        )
    }

    @Test func longNames() throws {
        let long = String(repeating: "d/", count: 80) + "file"
        let viaPax =
            TarBlocks.pax([("path", long), ("mtime", "1700000000.5")]) + TarBlocks.header("short", size: 1)
            + TarBlocks.data([7]) + TarBlocks.end
        let viaGNU =
            TarBlocks.header("././@LongLink", type: "L", size: long.utf8.count + 1)
            + TarBlocks.data(Array(long.utf8) + [0]) + TarBlocks.header("short", size: 1) + TarBlocks.data([7])
            + TarBlocks.end
        let viaPrefix = TarBlocks.header("file", size: 1, prefix: "p/q") + TarBlocks.data([7]) + TarBlocks.end
        let expected = Array(long.split(separator: "/").map(String.init))
        #expect(try TarBlocks.read(viaPax).first == .entry(.init(path: expected, kind: .file, mode: 0o644, size: 1)))
        #expect(try TarBlocks.read(viaGNU).first == .entry(.init(path: expected, kind: .file, mode: 0o644, size: 1)))
        #expect(
            try TarBlocks.read(viaPrefix).first
                == .entry(.init(path: ["p", "q", "file"], kind: .file, mode: 0o644, size: 1))
        )
    }

    /// A refused archive and a fragment of its message.
    struct Refusal: Sendable, CustomTestStringConvertible {
        let archive: [UInt8]
        let says: String
        var testDescription: String { says }
    }

    static let hugeBase256: [UInt8] = [0x80, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0]

    static let refusals: [Refusal] = [
        Refusal(archive: TarBlocks.header("/etc/passwd", size: 0) + TarBlocks.end, says: "is an absolute name"),
        Refusal(archive: TarBlocks.header("../x", size: 0) + TarBlocks.end, says: "has a '..' component"),
        Refusal(archive: TarBlocks.header("a/../../x", size: 0) + TarBlocks.end, says: "has a '..' component"),
        Refusal(archive: TarBlocks.header("x", size: 0, prefix: "..") + TarBlocks.end, says: "'..' component"),
        Refusal(
            archive: TarBlocks.pax([("path", "../../etc/cron.d/x")]) + TarBlocks.header("ok") + TarBlocks.end,
            says: "'..'"
        ),
        Refusal(
            archive: TarBlocks.header("l", type: "2", link: "/etc/shadow") + TarBlocks.end,
            says: "is a symbolic link"
        ),
        Refusal(archive: TarBlocks.header("l", type: "2", link: "inside") + TarBlocks.end, says: "is a symbolic link"),
        Refusal(archive: TarBlocks.header("h", type: "1", link: "x") + TarBlocks.end, says: "is a hard link"),
        Refusal(archive: TarBlocks.header("c", type: "3") + TarBlocks.end, says: "is a device node"),
        Refusal(archive: TarBlocks.header("b", type: "4") + TarBlocks.end, says: "is a device node"),
        Refusal(archive: TarBlocks.header("f", type: "6") + TarBlocks.end, says: "is a FIFO"),
        Refusal(archive: TarBlocks.header("s", type: "S") + TarBlocks.end, says: "entry type 83"),
        Refusal(archive: TarBlocks.header("su", mode: 0o4755) + TarBlocks.end, says: "mode 4755 (setuid"),
        Refusal(archive: TarBlocks.header("sg", mode: 0o2755) + TarBlocks.end, says: "mode 2755"),
        Refusal(archive: TarBlocks.header("st", type: "5", mode: 0o1777) + TarBlocks.end, says: "mode 1777"),
        Refusal(archive: TarBlocks.header("x", checksum: 1) + TarBlocks.end, says: "header checksum 1 does not match"),
        Refusal(
            archive: TarBlocks.header("big", sizeField: hugeBase256) + TarBlocks.end,
            says: "over the 1048576-byte limit"
        ),
        Refusal(
            archive: TarBlocks.header("neg", sizeField: [0xFF] + [UInt8](repeating: 0xFF, count: 11)) + TarBlocks.end,
            says: "size field is negative"
        ),
        Refusal(
            archive: TarBlocks.header("x", sizeField: Array("0000000008x\0".utf8)) + TarBlocks.end,
            says: "not octal"
        ),
        Refusal(
            archive: TarBlocks.pax([("size", "4294967296")]) + TarBlocks.header("x") + TarBlocks.end,
            says: "over the"
        ),
        Refusal(
            archive: TarBlocks.pax([("path", "x")], type: "g") + TarBlocks.end,
            says: "a global pax header sets path"
        ),
        Refusal(
            archive: TarBlocks.header("x", size: 600) + TarBlocks.data([UInt8](repeating: 1, count: 600)),
            says: "truncated"
        ),
        Refusal(archive: TarBlocks.header("x", size: 10) + TarBlocks.data([1]), says: "truncated"),
        Refusal(archive: TarBlocks.end + TarBlocks.header("late"), says: "data after the end-of-archive marker"),
        Refusal(archive: TarBlocks.pax([("path", "x")]) + TarBlocks.end, says: "ends after an extended header"),
        Refusal(
            archive: TarBlocks.header("x", type: "x", size: 70_000) + TarBlocks.end,
            says: "extended header of 70000"
        ),
        Refusal(
            archive: TarBlocks.header("d", type: "5", size: 1) + TarBlocks.data([1]) + TarBlocks.end,
            says: "has a size"
        ),
    ]

    @Test(arguments: refusals)
    func refused(refusal: Refusal) {
        let error = #expect(throws: ComponentError.self) { try TarBlocks.read(refusal.archive) }
        #expect(error?.code == .archive)
        #expect(error?.description.contains(refusal.says) == true, "\(String(describing: error))")
    }

    @Test func bounds() {
        let three =
            (0..<3).flatMap {
                TarBlocks.header("f\($0)", size: 100) + TarBlocks.data([UInt8](repeating: 1, count: 100))
            }
            + TarBlocks.end
        let entries = #expect(throws: ComponentError.self) {
            try TarBlocks.read(three, limits: .init(maxEntries: 2, maxFileBytes: 1000, maxTotalBytes: 1000))
        }
        #expect(entries?.description == "more than 2 entries")
        let total = #expect(throws: ComponentError.self) {
            try TarBlocks.read(three, limits: .init(maxEntries: 10, maxFileBytes: 100, maxTotalBytes: 250))
        }
        #expect(total?.description == "the files total over 250 bytes")
        let file = #expect(throws: ComponentError.self) {
            try TarBlocks.read(three, limits: .init(maxEntries: 10, maxFileBytes: 99, maxTotalBytes: 1000))
        }
        #expect(file?.description == "\"f0\" is 100 bytes, over the 99-byte limit")
        #expect(throws: Never.self) {
            try TarBlocks.read(three, limits: .init(maxEntries: 3, maxFileBytes: 100, maxTotalBytes: 300))
        }
    }

    @Test func numbers() throws {
        #expect(try TarReader.number(Array("  0644 \0".utf8)[...], field: "mode") == 0o644)
        #expect(try TarReader.number([0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0][...], field: "size") == 1 << 32)
        #expect(try TarReader.number([UInt8](repeating: 0, count: 12)[...], field: "size") == 0)
        #expect(throws: ComponentError.self) {
            try TarReader.number([0x80] + [UInt8](repeating: 0xFF, count: 11)[...], field: "size")
        }
    }
}
