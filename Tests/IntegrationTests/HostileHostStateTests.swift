import Foundation
import KeydClient
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The hostile host and keyd's state directory: between boots the host rewrites every byte of the
/// disk that holds `/var/lib/keyd`. One row per attack; each asserts (AttackChecks) that keyd refused
/// with its documented status and audited it, still serves the admin within a second, changed nothing
/// outside its state directory, and kept its memory flat.
@Suite(.serialized, .needsSwtpm) struct HostileHostStateTests {
    /// A stopped keyd's directory on `tpm`, with its state and a watched directory beside it.
    struct Scene {
        let tpm: SoftwareTPM
        let directory: String
        let watched: WatchedDirectory
        var state: String { directory + "/state" }

        init() throws {
            tpm = try SoftwareTPM()
            var template = Array("/tmp/keyd-host-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
            directory = String(cString: made)
            watched = try WatchedDirectory(in: directory)
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: false)
            chmod(state, 0o700)
        }

        /// keyd started on this scene's directory and TPM.
        func start(_ extra: [String] = []) throws -> KeydHarness {
            try KeydHarness(
                configuration: ["tpm-tcti = \(tpm.tcti)", "disk-allow-initialize = true"] + extra,
                reusing: directory
            )
        }

        /// Starts keyd, lets `body` use it, and stops it, keeping the directory.
        func run(_ body: (KeydHarness) throws -> Void) throws {
            let keyd = try start()
            try body(keyd)
            keyd.waitForExit(afterSignal: SIGTERM)
        }
    }

    /// The `status` answer over a fresh admin connection.
    static func status(_ keyd: KeydHarness) throws -> StatusAnswer {
        let admin = try keyd.admin()
        defer { admin.close() }
        return try admin.status()
    }

    @Test("a symlinked audit.log is moved aside, not followed: the file it pointed to keeps its torn last line")
    func symlinkedAuditLog() throws {
        let scene = try Scene()
        // The host points audit.log at a file outside whose last line has no newline.
        #expect(symlink(scene.watched.path + "/torn.txt", scene.state + "/audit.log") == 0)
        let keyd = try scene.start()
        let checks = try AttackChecks(keyd, watched: scene.watched)
        #expect(try Self.status(keyd).auditIntact)
        try checks.verify(
            audited: { $0.contains("\"state.rejected\"") && $0.contains("symbolic link") },
            "symlinked audit.log"
        )
        let aside = try FileManager.default.contentsOfDirectory(atPath: scene.state).filter {
            $0.hasPrefix("audit.log.rejected-")
        }
        #expect(aside.count == 1)
    }

    @Test("a FIFO for audit.log or kek.sealed does not hang keyd at start")
    func fifoStateFiles() throws {
        let scene = try Scene()
        #expect(mkfifo(scene.state + "/audit.log", 0o600) == 0)
        #expect(mkfifo(scene.state + "/kek.sealed", 0o600) == 0)
        let keyd = try scene.start()
        let checks = try AttackChecks(keyd, watched: scene.watched)
        let status = try Self.status(keyd)
        #expect(status.sealedKEK == .unsealFailed && status.phase == .awaitingKEK)
        try checks.verify(audited: { $0.contains("\"state.rejected\"") && $0.contains("FIFO") }, "FIFO audit.log")
        try checks.verify(
            audited: { $0.contains("\"kek.unseal\"") && $0.contains("\"refused\"") && $0.contains("FIFO") },
            "FIFO kek.sealed"
        )
    }

    @Test("a symlinked headers/ refuses disk format with stateRejected before the device is touched")
    func symlinkedHeadersDirectory() throws {
        let scene = try Scene()
        #expect(symlink(scene.watched.path, scene.state + "/headers") == 0)
        let keyd = try scene.start()
        let checks = try AttackChecks(keyd, watched: scene.watched)
        let image = try KeydStateDiskTests.makeImage(in: scene.directory)
        let admin = try keyd.admin()
        let answer = try admin.roundTrip(.diskFormat(device: image))
        #expect(answer.status == .stateRejected)
        #expect(try LUKS2Probe.isBlank(image), "the image was not formatted")
        try checks.verify(
            audited: { $0.contains("\"disk.format\"") && $0.contains("\"stateRejected\"") },
            "symlinked headers/"
        )
    }

    @Test("a kek.sealed saved before kek lock and put back after it opens nothing")
    func restoredSealedKEK() throws {
        let scene = try Scene()
        let saved = scene.directory + "/kek.sealed.copy"
        try scene.run { (keyd: KeydHarness) throws in
            #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: KnownSecret().json).status == 0)
            #expect(try Self.status(keyd).sealedKEK == .sealed)
            try FileManager.default.copyItem(atPath: scene.state + "/kek.sealed", toPath: saved)
            #expect(try keyd.keydctl(["kek", "lock"]).status == 0)
        }
        // The host restores its copy while keyd is down.
        try FileManager.default.copyItem(atPath: saved, toPath: scene.state + "/kek.sealed")
        let keyd = try scene.start()
        let checks = try AttackChecks(keyd, watched: scene.watched)
        let status = try Self.status(keyd)
        #expect(status.phase == .awaitingKEK && status.sealedKEK == .unsealFailed)
        try checks.verify(
            audited: { $0.contains("\"kek.unseal\"") && $0.contains("\"refused\"") && $0.contains("no wrapping key") },
            "restored kek.sealed"
        )
    }

    /// Starts keyd on a log with a few records, stops it, applies `edit` to audit.log, starts again.
    static func editedAudit(_ edit: (inout [String]) -> Void) throws -> (Scene, KeydHarness, AttackChecks) {
        let scene = try Scene()
        try scene.run { (keyd: KeydHarness) throws in
            #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: KnownSecret().json).status == 0)
            #expect(try keyd.keydctl(["kek", "lock"]).status == 0)
        }
        let path = scene.state + "/audit.log"
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        edit(&lines)
        try (lines.isEmpty ? "" : lines.joined(separator: "\n") + "\n").write(
            toFile: path,
            atomically: true,
            encoding: .utf8
        )
        let keyd = try scene.start()
        return (scene, keyd, try AttackChecks(keyd, watched: scene.watched))
    }

    @Test("an audit log cut at a line boundary is found by the TPM counter at start and by audit verify")
    func truncatedAuditLog() throws {
        let (scene, keyd, checks) = try Self.editedAudit { $0.removeLast(2) }
        // The scene keeps its software TPM running until the end.
        defer { withExtendedLifetime(scene) {} }
        #expect(try !Self.status(keyd).auditIntact)
        let verified = try keyd.admin().verifyAudit()
        #expect(!verified.intact && verified.problem == .truncated, "\(verified)")
        try checks.verify(audited: { $0.contains("\"audit.check\"") && $0.contains("\"truncated\"") }, "cut audit log")
    }

    @Test("an audit log rewritten without the key is found: it no longer carries the key's MACs")
    func rewrittenAuditLog() throws {
        let (scene, keyd, checks) = try Self.editedAudit { lines in
            // Keep the lines, change one decision and recompute nothing (the host has no key).
            lines[2] = lines[2].replacingOccurrences(of: "\"granted\"", with: "\"refused\"")
        }
        #expect(try !Self.status(keyd).auditIntact)
        #expect(try keyd.admin().verifyAudit().problem == .edited)
        try checks.verify(
            audited: { $0.contains("\"audit.check\"") && $0.contains("\"edited\"") },
            "rewritten audit log"
        )
        withExtendedLifetime(scene) {}
    }

    @Test("an audit log removed altogether is found: the TPM counter has counted records that are gone")
    func removedAuditLog() throws {
        let (scene, keyd, checks) = try Self.editedAudit { $0.removeAll() }
        defer { withExtendedLifetime(scene) {} }
        #expect(try !Self.status(keyd).auditIntact)
        try checks.verify(
            audited: { $0.contains("\"audit.chain\"") && $0.contains("the log was removed") },
            "removed audit log"
        )
    }
}

/// Reads the first bytes of an image: all zero means it was never formatted.
enum LUKS2Probe {
    static func isBlank(_ path: String) throws -> Bool {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        return try handle.read(upToCount: 4096)?.allSatisfy { $0 == 0 } ?? true
    }
}
