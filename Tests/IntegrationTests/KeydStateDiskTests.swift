import Crypto
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A master secret and salt the test knows, so it can derive the disk key itself.
struct KnownSecret {
    let master: [UInt8]
    let salt: [UInt8]

    init() {
        master = (0..<32).map { _ in UInt8.random(in: 0...255) }
        salt = (0..<32).map { _ in UInt8.random(in: 0...255) }
    }

    /// Constellation's master-secret JSON for `keydctl kek import`.
    var json: Data {
        Data(
            "{\"key\":\"\(Data(master).base64EncodedString())\",\"salt\":\"\(Data(salt).base64EncodedString())\"}".utf8
        )
    }

    /// HKDF-SHA-256(master, salt, "key-" + uuid, 32): the key a bound disk opens with.
    func diskKey(uuid: String) -> [UInt8] {
        let key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: master),
            salt: salt,
            info: Array(("key-" + uuid).utf8),
            outputByteCount: 32
        )
        return key.withUnsafeBytes { Array($0) }
    }
}

/// `keydctl disk …` against the real keyd, on a sparse image file in the harness directory.
@Suite(.serialized, .needsRoot) struct KeydStateDiskTests {
    /// A sparse 32 MiB image in `directory`.
    static func makeImage(in directory: String) throws -> String {
        let path = directory + "/disk.img"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw HarnessError("create \(path): errno \(errno)") }
        defer { close(fd) }
        guard ftruncate(fd, 32 << 20) == 0 else { throw HarnessError("ftruncate \(path): errno \(errno)") }
        return path
    }

    /// `disk inspect --json`, parsed.
    static func inspect(_ keyd: KeydHarness, _ image: String) throws -> [String: Any] {
        let result = try keyd.keydctl(["disk", "inspect", "--device", image, "--json"])
        #expect(result.status == 0, "inspect failed: \(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        return try #require(object as? [String: Any], "report is not an object: \(result.stdout)")
    }

    @Test func formatInspectBindOpenThroughKeydctl() throws {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true"])
        let image = try Self.makeImage(in: keyd.directory)

        #expect(try Self.inspect(keyd, image)["luks2"] as? Bool == false)
        let formatted = try keyd.keydctl(["disk", "format", "--device", image])
        #expect(formatted.status == 0, "format failed: \(formatted.stderr)\n\(keyd.log)")

        let fresh = try Self.inspect(keyd, image)
        #expect(fresh["luks2"] as? Bool == true)
        #expect(fresh["profile"] as? String == "asterism")
        #expect(fresh["initialized"] as? Bool == false)
        #expect(fresh["keyslots"] as? [Int] == [0])
        #expect(fresh["headerCheck"] as? String == "ok")
        let uuid = try #require(fresh["uuid"] as? String)
        #expect(uuid == uuid.lowercased() && uuid.count == 36)
        let firstBootRecord = keyd.stateDirectory + "/headers/\(uuid).first-boot-keyslot"
        let record = try String(contentsOfFile: firstBootRecord, encoding: .utf8)
        #expect(record.hasPrefix("keyslot 0 salt ") && record.count < 100, "\(record)")

        // A LUKS2 device is never formatted again.
        let again = try keyd.keydctl(["disk", "format", "--device", image])
        #expect(again.status == 1 && again.stderr.contains("invalidArgument"), "\(again.stderr)")

        // Without a KEK, bind is refused and the disk stays as it was.
        let early = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(early.status == 1 && early.stderr.contains("wrongPhase"), "\(early.stderr)")
        let unchanged = try Self.inspect(keyd, image)
        #expect(unchanged["initialized"] as? Bool == false && unchanged["keyslots"] as? [Int] == [0])

        let secret = KnownSecret()
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: secret.json).status == 0)
        let bound = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(bound.status == 0, "bind failed: \(bound.stderr)\n\(keyd.log)")

        let after = try Self.inspect(keyd, image)
        #expect(after["initialized"] as? Bool == true)
        let slots = try #require(after["keyslots"] as? [Int])
        #expect(slots.count == 1)
        #expect(FileManager.default.fileExists(atPath: keyd.stateDirectory + "/headers/\(uuid).img"), "header backup")
        #expect(
            !FileManager.default.fileExists(atPath: firstBootRecord),
            "the first-boot keyslot record outlived the bind"
        )

        // cryptsetup itself opens the disk with the key the test derives.
        let keyFile = keyd.directory + "/disk.key"
        try Data(secret.diskKey(uuid: uuid)).write(to: URL(fileURLWithPath: keyFile))
        let oracle = try runCommand(
            "/usr/sbin/cryptsetup",
            ["open", "--test-passphrase", "--key-file", keyFile, image]
        )
        #expect(oracle.status == 0, "cryptsetup refused the derived key: \(oracle.stderr)")
        // …and not with another key of the same length.
        try Data(KnownSecret().diskKey(uuid: uuid)).write(to: URL(fileURLWithPath: keyFile))
        #expect(
            try runCommand("/usr/sbin/cryptsetup", ["open", "--test-passphrase", "--key-file", keyFile, image]).status
                != 0
        )

        let opened = try keyd.keydctl(["disk", "open", "--device", image, "--name", "asterism-test"])
        #expect(opened.status == 0, "open failed: \(opened.stderr)")
        #expect(opened.stdout.contains("activation unavailable"), "\(opened.stdout)")

        // Binding a bound disk again changes nothing.
        #expect(try keyd.keydctl(["disk", "bind", "--device", image]).status == 0)
        #expect(try Self.inspect(keyd, image)["keyslots"] as? [Int] == slots)

        // Every decision is audited with the device and UUID, and no record holds the key.
        let records = keyd.auditLines
        for event in ["disk.inspect", "disk.format", "disk.bind", "disk.open"] {
            #expect(records.contains { $0.contains("\"\(event)\"") && $0.contains(uuid) }, "no \(event) record")
        }
        let keyHex = secret.diskKey(uuid: uuid).map { String(format: "%02x", $0) }.joined()
        let keyBase64 = Data(secret.diskKey(uuid: uuid)).base64EncodedString()
        #expect(!records.joined().contains(keyHex) && !records.joined().contains(keyBase64))
        #expect(try keyd.keydctl(["audit", "verify"]).status == 0)
    }

    @Test func aDeviceLockedByAnotherProcessIsBusyAndUntouched() throws {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true"])
        let image = try Self.makeImage(in: keyd.directory)
        #expect(try keyd.keydctl(["disk", "format", "--device", image]).status == 0)
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: KnownSecret().json).status == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: image))

        // Another process owns the device the way udev and systemd agree on: flock(LOCK_EX).
        let holder = open(image, O_RDONLY | O_CLOEXEC)
        try #require(holder >= 0 && flock(holder, LOCK_EX) == 0)
        // Inspect is refused too: libcryptsetup would wait for the holder's lock and stall keyd.
        for command in [["bind"], ["open", "--name", "asterism-busy"], ["reset"], ["format"], ["inspect"]] {
            let busy = try keyd.keydctl(["disk"] + command + ["--device", image])
            #expect(busy.status == 1 && busy.stderr.contains("diskBusy"), "\(command): \(busy.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before, "a busy device was changed")
        #expect(keyd.auditLines.filter { $0.contains("\"diskBusy\"") }.count == 5, "\(keyd.auditLines)")
        #expect(try keyd.keydctl(["status"]).status == 0, "keyd stalled")

        // A shared holder (a reader) lets inspect through but not a change.
        try #require(flock(holder, LOCK_SH) == 0)
        #expect(try Self.inspect(keyd, image)["initialized"] as? Bool == false)
        #expect(try keyd.keydctl(["disk", "bind", "--device", image]).stderr.contains("diskBusy"))
        close(holder)
        let bound = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(bound.status == 0, "bind after the holder let go failed: \(bound.stderr)")
    }

    @Test func openWithAnotherKEKIsAWrongKey() throws {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true"])
        let image = try Self.makeImage(in: keyd.directory)
        #expect(try keyd.keydctl(["disk", "format", "--device", image]).status == 0)
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: KnownSecret().json).status == 0)
        #expect(try keyd.keydctl(["disk", "bind", "--device", image]).status == 0)

        #expect(try keyd.keydctl(["kek", "lock"]).status == 0)
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: KnownSecret().json).status == 0)
        let opened = try keyd.keydctl(["disk", "open", "--device", image, "--name", "asterism-test"])
        #expect(opened.status == 1 && opened.stderr.contains("diskWrongKey"), "\(opened.stderr)")
        // A bind with the other KEK cannot take the disk over either.
        let rebound = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(rebound.status == 1 && rebound.stderr.contains("diskWrongKey"), "\(rebound.stderr)")
        #expect(try Self.inspect(keyd, image)["initialized"] as? Bool == true)
    }

    @Test func bindChangesNothingWhenTheHeaderBackupFails() throws {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true"])
        let image = try Self.makeImage(in: keyd.directory)
        #expect(try keyd.keydctl(["disk", "format", "--device", image]).status == 0)
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: KnownSecret().json).status == 0)
        // A file where the backup directory belongs: the backup fails before the first header change.
        let headers = keyd.stateDirectory + "/headers"
        try? FileManager.default.removeItem(atPath: headers)  // format recorded the device there
        #expect(FileManager.default.createFile(atPath: headers, contents: Data("x".utf8)))
        let failed = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(failed.status == 1 && failed.stderr.contains("stateRejected"), "\(failed.stderr)")
        let unchanged = try Self.inspect(keyd, image)
        #expect(unchanged["initialized"] as? Bool == false && unchanged["keyslots"] as? [Int] == [0])
        #expect(unchanged["firstBootKeyHeld"] as? Bool == true)
        // Once the backup can be written, the same keyd (still holding the passphrase) binds.
        try FileManager.default.removeItem(atPath: headers)
        #expect(try keyd.keydctl(["disk", "bind", "--device", image]).status == 0)
        let bound = try Self.inspect(keyd, image)
        #expect(bound["initialized"] as? Bool == true && bound["firstBootKeyHeld"] as? Bool == false)
    }

    @Test func formatRefusedUnlessConfigurationAllowsInitializing() throws {
        let keyd = try KeydHarness()
        let image = try Self.makeImage(in: keyd.directory)
        let result = try keyd.keydctl(["disk", "format", "--device", image])
        #expect(result.status == 1 && result.stderr.contains("diskNotLUKS2"), "\(result.stderr)")
        #expect(try Self.inspect(keyd, image)["luks2"] as? Bool == false)
        let missing = try keyd.keydctl(["disk", "inspect", "--device", keyd.directory + "/absent.img"])
        #expect(missing.status == 1 && missing.stderr.contains("diskMissing"), "\(missing.stderr)")
    }

    @Test func headerOfAnotherProfileIsRejected() throws {
        let keyd = try KeydHarness()
        let image = try Self.makeImage(in: keyd.directory)
        // aes-cbc-essiv fits no profile: keyd refuses it and never reformats it.
        let made = try runCommand(
            "/usr/sbin/cryptsetup",
            [
                "luksFormat", "--type", "luks2", "--batch-mode", "--cipher", "aes-cbc-essiv:sha256", "--key-size",
                "256",
                "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", image,
            ],
            stdin: Data(repeating: 7, count: 32)
        )
        try #require(made.status == 0, "cryptsetup luksFormat: \(made.stderr)")
        let result = try keyd.keydctl(["disk", "inspect", "--device", image])
        #expect(result.status == 1 && result.stderr.contains("diskHeaderRejected"), "\(result.stderr)")
        #expect(keyd.auditLines.contains { $0.contains("disk.inspect") && $0.contains("cipher") })
    }
}
