import Glibc
import KeydProtocol

/// A request body (no length prefix) built field by field, for cases the encoder refuses to make.
func requestBody(kind: UInt16, sequence: UInt32 = 0, _ fields: (inout WireWriter) -> Void = { _ in }) -> [UInt8] {
    var w = WireWriter()
    w.u16(kind)
    w.u32(sequence)
    fields(&w)
    return w.bytes
}

/// An answer body (no length prefix) built field by field.
func answerBody(kind: UInt16, sequence: UInt32 = 0, status: UInt16, payload: [UInt8] = []) -> [UInt8] {
    var w = WireWriter()
    w.u16(kind)
    w.u32(sequence)
    w.u16(status)
    w.fixed(payload, count: payload.count)
    return w.bytes
}

/// The body of a whole frame, after checking that the prefix counts it exactly.
func stripPrefix(_ frame: [UInt8]) -> [UInt8] {
    precondition(frame.count >= Limits.lengthPrefixSize, "frame shorter than its prefix")
    let length = frame.prefix(4).reduce(0) { $0 << 8 | Int($1) }
    precondition(length == frame.count - Limits.lengthPrefixSize, "prefix \(length) does not count the body")
    return Array(frame.dropFirst(Limits.lengthPrefixSize))
}

/// The four bytes of a big-endian length prefix.
func prefixBytes(_ length: UInt32) -> [UInt8] {
    [
        UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
        UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length),
    ]
}

/// `count` bytes counting up from `start`, so that a misplaced offset shows.
func pattern(_ count: Int, start: UInt8 = 1) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: Int(start) + $0) }
}

/// The error `body` throws when decoded, or nil when it decodes.
func requestError(_ body: [UInt8]) -> ProtocolError? {
    do {
        _ = try RequestFrame.decode(body: body)
        return nil
    } catch { return error }
}

/// The error `body` throws when decoded as an answer, or nil when it decodes.
func answerError(_ body: [UInt8]) -> ProtocolError? {
    do {
        _ = try AnswerFrame.decode(body: body)
        return nil
    } catch { return error }
}

/// SplitMix64: a small seeded generator, so that random chunkings repeat exactly.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The bytes of a file, read with Glibc (the protocol tests need no Foundation).
func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if n == 0 { break }
        bytes.append(contentsOf: chunk.prefix(n))
    }
    return bytes
}

/// The root of the source tree, from this file's path (Tests/KeydProtocolTests/Support.swift).
func sourceRoot(filePath: String = #filePath) -> String {
    var parts = filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}

/// PROTOCOL.md, found from this file's path in the source tree.
func protocolDocument() -> String? {
    readFile(sourceRoot() + "/Sources/KeydProtocol/PROTOCOL.md").map { String(decoding: $0, as: UTF8.self) }
}

/// The rows of the markdown table whose header row is exactly `header`, as trimmed cells.
func markdownTable(in document: String, header columns: [String]) -> [[String]] {
    let lines = document.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    func cells(_ line: String) -> [String] {
        line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
            .map { $0.trimmingCharacters() }
    }
    guard let header = lines.firstIndex(where: { $0.hasPrefix("|") && cells($0) == columns }) else {
        return []
    }
    var rows: [[String]] = []
    for line in lines[(header + 2)...] {
        guard line.hasPrefix("|") else { break }
        rows.append(cells(line))
    }
    return rows
}

extension Substring {
    /// The text without leading and trailing spaces.
    func trimmingCharacters() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

extension String {
    /// The text without leading and trailing spaces.
    func trimmingSpaces() -> String { self[...].trimmingCharacters() }
}

/// A markdown cell's text without the backquotes around a name.
func unquoted(_ cell: String) -> String {
    cell.filter { $0 != "`" }
}
