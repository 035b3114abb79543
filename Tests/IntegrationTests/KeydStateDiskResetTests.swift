import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `keydctl disk close` and `disk reset` against the real keyd on a sparse image file.
@Suite(.serialized, .needsRoot) struct KeydStateDiskResetTests {
    @Test func resetMarksABoundDiskAndFormatReinitializesIt() throws {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true"])
        let image = try KeydStateDiskTests.makeImage(in: keyd.directory)
        let secret = KnownSecret()
        #expect(try keyd.keydctl(["disk", "format", "--device", image]).status == 0)
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: secret.json).status == 0)
        #expect(try keyd.keydctl(["disk", "bind", "--device", image]).status == 0)
        let bound = try KeydStateDiskTests.inspect(keyd, image)
        let uuid = try #require(bound["uuid"] as? String)
        #expect(bound["initialized"] as? Bool == true)

        // A bound disk is never formatted, even by an admin.
        #expect(try keyd.keydctl(["disk", "format", "--device", image]).status == 1)

        let reset = try keyd.keydctl(["disk", "reset", "--device", image])
        #expect(reset.status == 0, "\(reset.stderr)")
        let marked = try KeydStateDiskTests.inspect(keyd, image)
        #expect(marked["initialized"] as? Bool == false)
        #expect(marked["uuid"] as? String == uuid, "reset only marks; the header stays")
        #expect(FileManager.default.fileExists(atPath: keyd.stateDirectory + "/headers/\(uuid).before-reset.img"))

        // The marked disk still opens with its key until it is formatted again.
        let keyFile = keyd.directory + "/disk.key"
        try Data(secret.diskKey(uuid: uuid)).write(to: URL(fileURLWithPath: keyFile))
        let stillOpens = try runCommand(
            "/usr/sbin/cryptsetup",
            ["open", "--test-passphrase", "--key-file", keyFile, image]
        )
        #expect(stillOpens.status == 0, "\(stillOpens.stderr)")

        // Format re-initializes it: a new UUID, and the old key no longer opens it.
        let formatted = try keyd.keydctl(["disk", "format", "--device", image])
        #expect(formatted.status == 0, "\(formatted.stderr)")
        let fresh = try KeydStateDiskTests.inspect(keyd, image)
        #expect(fresh["uuid"] as? String != uuid)
        #expect(fresh["initialized"] as? Bool == false)
        let oldKey = try runCommand(
            "/usr/sbin/cryptsetup",
            ["open", "--test-passphrase", "--key-file", keyFile, image]
        )
        #expect(oldKey.status != 0)
        #expect(keyd.auditLines.contains { $0.contains("\"event\":\"disk.reset\"") && $0.contains(uuid) })
    }

    @Test func resetRefusesWhatIsNotAStateDisk() throws {
        let keyd = try KeydHarness()
        let image = try KeydStateDiskTests.makeImage(in: keyd.directory)
        let result = try keyd.keydctl(["disk", "reset", "--device", image])
        #expect(result.status == 1 && result.stderr.contains("diskNotLUKS2"), "\(result.stderr)")
        let missing = try keyd.keydctl(["disk", "reset", "--device", keyd.directory + "/absent.img"])
        #expect(missing.status == 1 && missing.stderr.contains("diskMissing"), "\(missing.stderr)")
    }

    @Test func closeWithoutDeviceMapperSaysSo() throws {
        let keyd = try KeydHarness()
        let result = try keyd.keydctl(["disk", "close", "--name", "state"])
        if access("/dev/mapper/control", R_OK | W_OK) == 0, open("/dev/mapper/control", O_RDWR) >= 0 {
            // A device mapper exists: closing a mapping that is not there is refused.
            #expect(result.status == 1, "\(result.stderr)")
        } else {
            #expect(result.status == 1 && result.stderr.contains("diskActivationUnavailable"), "\(result.stderr)")
        }
        #expect(keyd.auditLines.contains { $0.contains("\"event\":\"disk.close\"") })
    }
}

/// `disk-profile = constellation`: keyd formats with Constellation's argon2id keyslot and binds it.
@Suite(.serialized, .needsRoot) struct KeydConstellationProfileTests {
    @Test func constellationProfileFormatsAndBinds() throws {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true", "disk-profile = constellation"])
        let image = try KeydStateDiskTests.makeImage(in: keyd.directory)
        let formatted = try keyd.keydctl(["disk", "format", "--device", image])
        #expect(formatted.status == 0, "\(formatted.stderr)")
        let report = try KeydStateDiskTests.inspect(keyd, image)
        #expect(report["profile"] as? String == "constellation")
        let dump = try runCommand("/usr/sbin/cryptsetup", ["luksDump", image])
        #expect(dump.stdout.contains("argon2id"))
        #expect(dump.stdout.contains("constellation-state-disk"))

        let secret = KnownSecret()
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: secret.json).status == 0)
        let bound = try keyd.keydctl(["disk", "bind", "--device", image])
        #expect(bound.status == 0, "\(bound.stderr)")
        let uuid = try #require(report["uuid"] as? String)
        let keyFile = keyd.directory + "/disk.key"
        try Data(secret.diskKey(uuid: uuid)).write(to: URL(fileURLWithPath: keyFile))
        #expect(
            try runCommand("/usr/sbin/cryptsetup", ["open", "--test-passphrase", "--key-file", keyFile, image]).status
                == 0
        )
    }
}

/// Both LUKS2 headers destroyed on a device keyd formatted: its own status, audited, nothing changed.
@Suite(.serialized, .needsRoot) struct KeydHeadersDestroyedTests {
    @Test func destroyedHeadersAreReportedAndNeverReformatted() throws {
        let keyd = try KeydHarness(configuration: ["disk-allow-initialize = true"])
        let image = try KeydStateDiskTests.makeImage(in: keyd.directory)
        #expect(try keyd.keydctl(["disk", "format", "--device", image]).status == 0)
        let uuid = try #require(try KeydStateDiskTests.inspect(keyd, image)["uuid"] as? String)

        // Zero the primary (0…16 KiB) and secondary (16…32 KiB) header areas.
        let fd = open(image, O_WRONLY | O_CLOEXEC)
        #expect(fd >= 0)
        let zeros = [UInt8](repeating: 0, count: 32 << 10)
        #expect(zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == zeros.count)
        fsync(fd)
        close(fd)
        let before = try Data(contentsOf: URL(fileURLWithPath: image))

        let inspected = try keyd.keydctl(["disk", "inspect", "--device", image])
        #expect(inspected.status == 1 && inspected.stderr.contains("diskHeadersDestroyed"), "\(inspected.stderr)")
        let formatted = try keyd.keydctl(["disk", "format", "--device", image])
        #expect(formatted.status == 1 && formatted.stderr.contains("diskHeadersDestroyed"), "\(formatted.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before, "nothing was written to the device")
        #expect(
            keyd.auditLines.contains {
                $0.contains("\"event\":\"disk.format\"") && $0.contains("diskHeadersDestroyed") && $0.contains(uuid)
            }
        )

        // A blank device keyd never formatted is still just "not LUKS2".
        let blank = keyd.directory + "/blank.img"
        let blankFD = open(blank, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        ftruncate(blankFD, 32 << 20)
        close(blankFD)
        let report = try KeydStateDiskTests.inspect(keyd, blank)
        #expect(report["luks2"] as? Bool == false)
    }
}
