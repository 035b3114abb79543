import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// keyd's fault-injection hook exists only in debug builds, so these tests do too.
#if DEBUG
/// Crash safety of the state-disk re-key (issue 3): a failure or a SIGKILL after each step of
/// ``StateDiskRekey``'s order leaves a disk that opens with the old or the new key.
@Suite(.serialized, .needsRoot) struct KeydRekeyFaultTests {
    /// Arms keyd's debug-only hook: `rekey:<step>:<fail|kill>`.
    static func fault(_ step: String, _ action: String) -> [String: String] {
        ["KEYD_FAULT_INJECT": "rekey:\(step):\(action)"]
    }

    /// Whether `cryptsetup open --test-passphrase` accepts `key` for `image`.
    static func cryptsetupOpens(_ image: String, key: [UInt8], keyFile: String) throws -> Bool {
        try Data(key).write(to: URL(fileURLWithPath: keyFile))
        return try runCommand("/usr/sbin/cryptsetup", ["open", "--test-passphrase", "--key-file", keyFile, image])
            .status == 0
    }

    /// A keyd armed with `environment`, a freshly formatted image, its UUID and an imported KEK.
    static func formattedAndKEKImported(
        environment: [String: String]
    ) throws -> (KeydHarness, String, String, KnownSecret) {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true"], environment: environment)
        let image = try KeydStateDiskTests.makeImage(in: keyd.directory)
        let formatted = try keyd.keydctl(["disk", "format", "--device", image])
        try #require(formatted.status == 0, "format failed: \(formatted.stderr)\n\(keyd.log)")
        let uuid = try #require(try KeydStateDiskTests.inspect(keyd, image)["uuid"] as? String)
        let secret = KnownSecret()
        try #require(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: secret.json).status == 0)
        return (keyd, image, uuid, secret)
    }

    @Test(arguments: ["addNewKeyslot", "verifyNewKeyslot", "markTokenInitialized", "removeOldKeyslot"])
    func failedStepRestoresTheDiskAndTheOldKeyStillBinds(step: String) throws {
        let (keyd, image, uuid, secret) = try Self.formattedAndKEKImported(environment: Self.fault(step, "fail"))
        #expect(keyd.log.contains("Fault injection armed"), "\(keyd.log)")

        let failed = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(failed.status == 1 && failed.stderr.contains("internal"), "\(failed.stderr)")
        #expect(
            keyd.auditLines.contains {
                $0.contains("\"disk.bind\"") && $0.contains(uuid)
                    && $0.contains("injected fault after re-key step \(step)")
                    && $0.contains("header restored")
            },
            "no audit record of the failed bind:\n\(keyd.auditLines.joined(separator: "\n"))"
        )

        // The header backup put the disk back as it was before the bind.
        let restored = try KeydStateDiskTests.inspect(keyd, image)
        #expect(restored["headerCheck"] as? String == "ok")
        #expect(restored["initialized"] as? Bool == false)
        #expect(restored["keyslots"] as? [Int] == [0])
        #expect(restored["firstBootKeyHeld"] as? Bool == true)
        let keyFile = keyd.directory + "/disk.key"
        #expect(try !Self.cryptsetupOpens(image, key: secret.diskKey(uuid: uuid), keyFile: keyFile))

        // The fault fires once: the same keyd, still holding the first-boot key, now binds.
        let bound = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(bound.status == 0, "bind after the fault failed: \(bound.stderr)\n\(keyd.log)")
        let after = try KeydStateDiskTests.inspect(keyd, image)
        #expect(after["initialized"] as? Bool == true)
        #expect((after["keyslots"] as? [Int])?.count == 1)
        #expect(try Self.cryptsetupOpens(image, key: secret.diskKey(uuid: uuid), keyFile: keyFile))
        #expect(try keyd.keydctl(["audit", "verify"]).status == 0)
    }

    /// After a SIGKILL following `step`: whether the derived (new) key already opens the disk, and how
    /// many keyslots a successor's resumed bind leaves. The first-boot passphrase died with keyd, but its
    /// keyslot is named in `<uuid>.first-boot-keyslot` (index and salt), so the successor removes it.
    @Test(arguments: [
        ("addNewKeyslot", true, 1), ("verifyNewKeyslot", true, 1), ("markTokenInitialized", true, 1),
        ("removeOldKeyslot", true, 1),
    ])
    func sigkillAfterStepLeavesADiskThatOpensWithTheOldOrTheNewKey(
        step: String,
        newKeyOpens: Bool,
        keyslotsAfterResume: Int
    ) throws {
        let (keyd, image, uuid, secret) = try Self.formattedAndKEKImported(environment: Self.fault(step, "kill"))
        #expect(keyd.log.contains("Fault injection armed"), "\(keyd.log)")

        let killed = try keyd.keydctl(["disk", "bind", "--device", image])
        try #require(killed.status == 2, "bind was answered (status \(killed.status)): \(killed.stderr)\n\(keyd.log)")
        #expect(keyd.waitForExit() == 128 + SIGKILL)

        // A successor on the same state directory (appending to the same log), without the hook, with the same KEK.
        let predecessorLog = keyd.log
        let successor = try KeydHarness(configuration: ["disk-allow-initialize = true"], reusing: keyd.directory)
        #expect(
            !successor.log.dropFirst(predecessorLog.count).contains("Fault injection armed"),
            "the successor is armed"
        )
        let keyFile = successor.directory + "/disk.key"
        let opens = try Self.cryptsetupOpens(image, key: secret.diskKey(uuid: uuid), keyFile: keyFile)
        #expect(opens == newKeyOpens, "after a kill at \(step) the derived key opens: \(opens)")
        let crashed = try KeydStateDiskTests.inspect(successor, image)
        #expect(crashed["luks2"] as? Bool == true && crashed["headerCheck"] as? String == "ok", "\(crashed)")
        #expect(crashed["firstBootKeyHeld"] as? Bool == false)
        try #require(try successor.keydctl(["kek", "import", "--file", "-"], stdin: secret.json).status == 0)

        if opens {
            // The new-key case: a bind resumes the re-key where the order left it.
            let resumed = try successor.keydctl(["disk", "bind", "--device", image])
            #expect(resumed.status == 0, "resume after a kill at \(step) failed: \(resumed.stderr)\n\(successor.log)")
            let after = try KeydStateDiskTests.inspect(successor, image)
            #expect(after["initialized"] as? Bool == true)
            #expect((after["keyslots"] as? [Int])?.count == keyslotsAfterResume, "\(after)")
            #expect(try Self.cryptsetupOpens(image, key: secret.diskKey(uuid: uuid), keyFile: keyFile))
            let opened = try successor.keydctl(["disk", "open", "--device", image, "--name", "asterism-test"])
            #expect(opened.status == 0, "open after resume failed: \(opened.stderr)")
        } else {
            // The old-key case: the disk is exactly the freshly formatted one; only the lost first-boot key opens it.
            #expect(crashed["initialized"] as? Bool == false && crashed["keyslots"] as? [Int] == [0], "\(crashed)")
            let refused = try successor.keydctl(["disk", "bind", "--device", image])
            #expect(refused.status == 1 && refused.stderr.contains("diskWrongKey"), "\(refused.stderr)")
        }
        // The audit chain survives the kill (the killed bind left no record, torn or whole).
        #expect(try successor.keydctl(["audit", "verify"]).status == 0)
    }
}
#endif
