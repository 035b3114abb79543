import Crypto
import Foundation
import KeydClient
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

// What every row of the attack tables (HostileHostTests, CompromisedTrustdTests) asserts after its
// attack: the attack was refused with its documented status and audited, keyd still serves the admin
// within a second, nothing outside the state directory changed, and keyd's memory stayed flat.

/// A directory outside keyd's state directory that an attack tries to reach: a few files of
/// different shapes, listed and hashed before and after.
struct WatchedDirectory {
    /// The directory's path.
    let path: String

    /// Makes the directory beside `harness`'s state directory with the bait files.
    init(beside harness: KeydHarness) throws {
        try self.init(in: harness.directory)
    }

    /// Makes `directory/watched` with the bait files (before keyd starts, for attacks on its start).
    init(in directory: String) throws {
        path = directory + "/watched"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        // A file whose last line has no newline (what a torn-log repair would cut), a large one, a small one.
        try Data("first line\nlast line without newline".utf8).write(to: URL(fileURLWithPath: path + "/torn.txt"))
        try Data(repeating: 0x61, count: 100_000).write(to: URL(fileURLWithPath: path + "/big.txt"))
        try Data("keep".utf8).write(to: URL(fileURLWithPath: path + "/small.txt"))
    }

    /// Every entry (recursively) with its type, size and SHA-256, in name order.
    func snapshot() throws -> [String] {
        var lines: [String] = []
        let enumerator = FileManager.default.enumerator(atPath: path)
        while let name = enumerator?.nextObject() as? String {
            let full = path + "/" + name
            var info = stat()
            guard lstat(full, &info) == 0 else { continue }
            let type = info.st_mode & S_IFMT
            var line = "\(name) type=\(type) size=\(info.st_size) mode=\(String(info.st_mode & 0o7777, radix: 8))"
            if type == S_IFREG, let data = FileManager.default.contents(atPath: full) {
                line += " sha256=" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
            }
            lines.append(line)
        }
        return lines.sorted()
    }
}

/// keyd's resident memory in KiB (VmRSS), or nil when it cannot be read.
func residentKiB(pid: pid_t) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}

/// The checks every attack row ends with.
struct AttackChecks {
    let keyd: KeydHarness
    let watched: WatchedDirectory
    let before: [String]
    let memoryBefore: Int
    /// Memory growth tolerated across one attack (allocator slack, the audit chain's buffers).
    static let memorySlackKiB = 8 * 1024

    /// Takes the "before" picture.
    init(_ keyd: KeydHarness, watched: WatchedDirectory) throws {
        self.keyd = keyd
        self.watched = watched
        before = try watched.snapshot()
        memoryBefore = residentKiB(pid: keyd.pid) ?? 0
    }

    /// The admin's `status` round trip on a fresh connection, in seconds.
    func adminStatusSeconds() throws -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        let admin = try KeydConnection(path: keyd.adminSocketPath, timeoutMilliseconds: 5000)
        defer { admin.close() }
        _ = try admin.status()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Asserts what every row asserts: an audit record for which `audited` holds, the admin served
    /// within 1 s, the watched directory unchanged, memory flat.
    func verify(
        audited: (String) -> Bool,
        _ comment: Comment,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let found = keyd.auditLines.contains(where: audited)
        #expect(found, "\(comment): no audit record", sourceLocation: sourceLocation)
        try verifyStillServing(comment, sourceLocation: sourceLocation)
    }

    /// For an attack that is routine or refused without a record (PROTOCOL.md says which): no audit
    /// record for which `unaudited` holds, then what every row asserts.
    func verify(
        notAudited unaudited: (String) -> Bool,
        _ comment: Comment,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let found = keyd.auditLines.contains(where: unaudited)
        #expect(!found, "\(comment): audited", sourceLocation: sourceLocation)
        try verifyStillServing(comment, sourceLocation: sourceLocation)
    }

    /// The admin served within 1 s, the watched directory unchanged, memory flat.
    private func verifyStillServing(_ comment: Comment, sourceLocation: SourceLocation) throws {
        let seconds = try adminStatusSeconds()
        #expect(seconds < 1.0, "\(comment): admin status took \(seconds) s", sourceLocation: sourceLocation)
        #expect(
            try watched.snapshot() == before,
            "\(comment): the watched directory changed",
            sourceLocation: sourceLocation
        )
        if let after = residentKiB(pid: keyd.pid), memoryBefore > 0 {
            #expect(
                after <= memoryBefore + Self.memorySlackKiB,
                "\(comment): resident memory grew from \(memoryBefore) KiB to \(after) KiB",
                sourceLocation: sourceLocation
            )
        }
    }
}
