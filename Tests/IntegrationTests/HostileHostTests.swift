import Crypto
import Foundation
import KeydClient
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real keyd whose configured state disk (an image outside its state directory) it formatted
/// itself, holding a KEK, beside a watched directory that attacks try to reach.
final class HostileHostScene {
    let keyd: KeydHarness
    let watched: WatchedDirectory
    /// The directory of the state-disk image (removed at the end).
    let diskDirectory: String
    /// The configured state disk (`state-disk-device`).
    let image: String
    /// The UUID keyd formatted the disk with.
    private(set) var uuid = ""

    /// Starts keyd with `device` (default: a sparse image) as its configured state disk.
    init(device: ((String) throws -> String)? = nil) throws {
        var template = Array("/tmp/keyd-hh-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
        diskDirectory = String(cString: made)
        image = try device?(diskDirectory) ?? KeydStateDiskTests.makeImage(in: diskDirectory)
        keyd = try KeydHarness(configuration: [
            "disk-allow-initialize = true", "trustd-uids = \(geteuid())", "state-disk-device = \(image)",
        ])
        watched = try WatchedDirectory(beside: keyd)
    }

    deinit {
        keyd.stop()
        try? FileManager.default.removeItem(atPath: diskDirectory)
    }

    /// Formats the configured disk through the admin (an empty device field), imports a KEK, and
    /// returns the UUID keyd chose.
    func formatAndImportKEK() throws {
        let admin = try keyd.admin()
        let formatted = try admin.roundTrip(.diskFormat(device: ""))
        try #require(formatted.status == .ok, "format: \(formatted.status)\n\(keyd.log)")
        let secret = KnownSecret()
        try secret.master.withUnsafeBytes { m in
            try secret.salt.withUnsafeBytes { try admin.importKEK(masterSecret: m, salt: $0) }
        }
        let inspected = try admin.call(.diskInspect(device: image)).decodePayload(.diskInspect, DiskInspectAnswer.read)
        let report = try JSONSerialization.jsonObject(with: Data(inspected.report)) as? [String: Any]
        uuid = try #require(report?["uuid"] as? String)
    }

    /// A fresh connection on the trustd socket, checked to be classified trustd.
    func trustd() throws -> KeydConnection {
        let connection = try KeydConnection(path: keyd.socketPath)
        try #require(connection.hello.peerClass == .trustd)
        return connection
    }

    /// `request` on a fresh connection (trustd's or the admin's): the status and how long keyd took.
    func ask(_ request: Request, asTrustd: Bool) throws -> (status: StatusCode, seconds: Double) {
        let connection = asTrustd ? try trustd() : try keyd.admin()
        defer { connection.close() }
        let start = DispatchTime.now().uptimeNanoseconds
        let answer = try connection.roundTrip(request)
        return (answer.status, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// SHA-256 of the whole image: keyd writes nothing to a disk it refused.
    func imageDigest() throws -> [UInt8] {
        Array(SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: image))))
    }

    /// Every `"uuid":"…"` value in the audit log: each must be a canonical UUID.
    var auditedUUIDs: [String] {
        keyd.auditLines.flatMap { line in
            line.components(separatedBy: #""uuid":""#).dropFirst().map { String($0.prefix { $0 != "\"" }) }
        }
    }
}

/// The hostile host: it writes every byte of the state disk between boots (../shared/design/ARCHITECTURE.md,
/// "Threat model"). One row per attack; every row ends with ``AttackChecks``: refused with its documented
/// status, audited, the admin served within 1 s, nothing outside the state directory changed, memory flat.
@Suite(.serialized, .needsRoot) struct HostileHostTests {
    /// One header a host crafted on the configured state disk after keyd formatted it.
    struct HeaderAttack: Sendable, CustomTestStringConvertible {
        /// The row's name.
        let name: String
        /// The header field keyd's refusal names (PROTOCOL.md, "LUKS2 header check").
        let field: String
        /// What the host did to the header.
        let edit: @Sendable (LUKS2HeaderEditor) throws -> Void
        var testDescription: String { name }
    }

    /// A UUID rewritten to `uuid` (raw bytes of the 40-byte field).
    static func uuid(_ name: String, _ uuid: [UInt8]) -> HeaderAttack {
        HeaderAttack(name: name, field: "UUID") { try $0.edit(uuid: uuid) }
    }

    /// The metadata rewritten by `change`.
    static func metadata(
        _ name: String,
        field: String,
        _ change: @escaping @Sendable (inout [String: Any]) -> Void
    ) -> HeaderAttack {
        HeaderAttack(name: name, field: field) { try $0.edit(metadata: change) }
    }

    /// Keyslot 0's dictionary changed by `change`.
    static func keyslot0(_ metadata: inout [String: Any], _ change: (inout [String: Any]) -> Void) {
        var keyslots = metadata["keyslots"] as? [String: Any] ?? [:]
        var keyslot = keyslots["0"] as? [String: Any] ?? [:]
        change(&keyslot)
        keyslots["0"] = keyslot
        metadata["keyslots"] = keyslots
    }

    static let headerAttacks: [HeaderAttack] = [
        // The host rewrote the UUID so that keyd's reset backup, headers/<uuid>.before-reset.img, lands in the
        // watched directory beside the state directory (and bind's headers/<uuid>.img, format's records).
        uuid("UUID climbing out of the state directory", Array("../../watched/x".utf8)),
        // The issue's finding as reproduced: the backup went to /tmp/x.before-reset.img as root.
        uuid("UUID ../../../../tmp/x", Array("../../../../tmp/x".utf8)),
        // A slash inside an otherwise UUID-shaped value: a subdirectory of headers/.
        uuid("UUID with a slash", Array("0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b/a49".utf8)),
        // A NUL in the binary field: libcryptsetup hands out the part before it, which is no UUID.
        uuid("UUID with a NUL", Array("0f8e0c8a-1c6b-4e59".utf8) + [0] + Array("-9f5a-3e0d1c2b3a49".utf8)),
        // One non-hex digit.
        uuid("UUID with a non-hex digit", Array("0f8e0c8a-1c6b-4e59-9f5a-3e0d1c2b3g49".utf8)),
        // Uppercase: refused, never folded (two spellings would name one disk's files and key).
        uuid("uppercase UUID", Array("0F8E0C8A-1C6B-4E59-9F5A-3E0D1C2B3A49".utf8)),
        // A label carrying a terminal escape sequence and a line break into reports and logs.
        HeaderAttack(name: "label with control characters", field: "label") {
            try $0.edit(label: Array("asterism\u{1B}[2J\nstate".utf8))
        },
        // Two asterism-state-disk tokens that disagree: inspect said initialized, format reformatted (data lost).
        metadata("doubled state-disk token", field: "state-disk tokens") {
            let initialized: [String: Any] = [
                "type": "asterism-state-disk", "keyslots": [String](), "initialized": true, "formatVersion": 1,
            ]
            var uninitialized = initialized
            uninitialized["initialized"] = false
            $0["tokens"] = ["0": initialized, "1": uninitialized] as [String: Any]
        },
        // A Constellation state-disk token beside keyd's own.
        metadata("state-disk tokens of both kinds", field: "state-disk tokens") {
            var tokens = $0["tokens"] as? [String: Any] ?? [:]
            tokens["1"] =
                [
                    "type": "constellation-state-disk", "keyslots": [String](), "diskIsInitialized": false,
                ] as [String: Any]
            $0["tokens"] = tokens
        },
        // keyd's token type with a member missing: it used to be skipped silently.
        metadata("unparseable state-disk token", field: "state-disk token") {
            let token: [String: Any] = ["type": "asterism-state-disk", "keyslots": [String](), "initialized": true]
            $0["tokens"] = ["0": token]
        },
        // The keyslot area re-declared as cipher_null: libcryptsetup loads it; only keyd's check refuses it.
        metadata("keyslot cipher_null", field: "keyslot 0 encryption") {
            keyslot0(&$0) { slot in
                var area = slot["area"] as? [String: Any] ?? [:]
                area["encryption"] = "cipher_null-ecb"
                slot["area"] = area
            }
        },
        // Another cipher than the profile's in the keyslot area.
        metadata("keyslot serpent-xts", field: "keyslot 0 encryption") {
            keyslot0(&$0) { slot in
                var area = slot["area"] as? [String: Any] ?? [:]
                area["encryption"] = "serpent-xts-plain64"
                slot["area"] = area
            }
        },
        // A billion PBKDF2 iterations: minutes of keyd's only thread at every bind and open.
        metadata("PBKDF2 iterations 10^9", field: "keyslot 0 PBKDF2 iterations") {
            keyslot0(&$0) { slot in
                var kdf = slot["kdf"] as? [String: Any] ?? [:]
                kdf["iterations"] = 1_000_000_000
                slot["kdf"] = kdf
            }
        },
        // The digest is checked at every unlock: a billion iterations there cost as much.
        metadata("digest PBKDF2 iterations 10^9", field: "digest PBKDF2 iterations") {
            var digests = $0["digests"] as? [String: Any] ?? [:]
            var digest = digests["0"] as? [String: Any] ?? [:]
            digest["iterations"] = 1_000_000_000
            digests["0"] = digest
            $0["digests"] = digests
        },
        // argon2id asking for 4 GiB of keyd's locked memory.
        metadata("argon2id memory 4 GiB", field: "keyslot 0 argon2id memory KiB") {
            keyslot0(&$0) { slot in
                let salt = (slot["kdf"] as? [String: Any])?["salt"] ?? ""
                slot["kdf"] =
                    ["type": "argon2id", "time": 4, "memory": 4_194_304, "cpus": 4, "salt": salt] as [String: Any]
            }
        },
        // argon2id with a million passes of 64 MiB.
        metadata("argon2id time cost 10^6", field: "keyslot 0 argon2id time cost") {
            keyslot0(&$0) { slot in
                let salt = (slot["kdf"] as? [String: Any])?["salt"] ?? ""
                slot["kdf"] =
                    ["type": "argon2id", "time": 1_000_000, "memory": 65536, "cpus": 4, "salt": salt] as [String: Any]
            }
        },
        // The allow-discards persistent flag: activation would leak which blocks are free.
        metadata("allow-discards persistent flag", field: "persistent flags") {
            var config = $0["config"] as? [String: Any] ?? [:]
            config["flags"] = ["allow-discards"]
            $0["config"] = config
        },
        // A mandatory requirement keyd does not know.
        metadata("requirements entry", field: "requirements") {
            var config = $0["config"] as? [String: Any] ?? [:]
            config["requirements"] = ["mandatory": ["asterism-test-requirement"]]
            $0["config"] = config
        },
        // Three keyslots: every unlock may try each keyslot's KDF.
        metadata("three keyslots", field: "keyslots") {
            var keyslots = $0["keyslots"] as? [String: Any] ?? [:]
            let first = keyslots["0"] as? [String: Any] ?? [:]
            for index in 1...2 {
                var copy = first
                var area = copy["area"] as? [String: Any] ?? [:]
                area["offset"] = String(32768 + 258_048 * index)
                copy["area"] = area
                keyslots[String(index)] = copy
            }
            $0["keyslots"] = keyslots
            var digests = $0["digests"] as? [String: Any] ?? [:]
            var digest = digests["0"] as? [String: Any] ?? [:]
            digest["keyslots"] = ["0", "1", "2"]
            digests["0"] = digest
            $0["digests"] = digests
        },
        // Ten times the anti-forensic stripes.
        metadata("anti-forensic stripes 40000", field: "keyslot 0 anti-forensic splitter") {
            keyslot0(&$0) { slot in
                var af = slot["af"] as? [String: Any] ?? [:]
                af["stripes"] = 40000
                slot["af"] = af
            }
        },
    ]

    /// Every request that reads the header, as trustd (the configured disk) and as the admin; none may
    /// act on a header that fails the check, run its KDF or name a file after its UUID.
    static let headerRequests: [(request: Request, asTrustd: Bool)] = [
        (.diskInspect(device: ""), true),
        (.diskInspect(device: ""), false),
        (.diskReset(device: ""), false),
        (.diskFormat(device: ""), false),
        (.diskBind(device: ""), false),
        (.diskOpen(device: "", mappingName: "asterism-hostile"), false),
    ]

    @Test(arguments: headerAttacks)
    func craftedHeaderIsRefused(_ attack: HeaderAttack) throws {
        let scene = try HostileHostScene()
        try scene.formatAndImportKEK()
        try attack.edit(LUKS2HeaderEditor(path: scene.image))
        // libcryptsetup itself accepts the edited header; otherwise the row would test nothing.
        let dump = try runCommand("/usr/sbin/cryptsetup", ["luksDump", scene.image])
        try #require(dump.status == 0, "cryptsetup refused the crafted header: \(dump.stderr)")
        let image = try scene.imageDigest()
        let headersBefore = try FileManager.default.contentsOfDirectory(atPath: scene.keyd.stateDirectory + "/headers")

        let checks = try AttackChecks(scene.keyd, watched: scene.watched)
        for (request, asTrustd) in Self.headerRequests {
            let (status, seconds) = try scene.ask(request, asTrustd: asTrustd)
            #expect(status == .diskHeaderRejected, "\(attack.name): \(request.kind) answered \(status)")
            #expect(seconds < 1, "\(attack.name): \(request.kind) took \(seconds) s")
        }
        try checks.verify(
            audited: { $0.contains(#""status":"diskHeaderRejected""#) && $0.contains(attack.field) },
            "\(attack.name)"
        )
        #expect(try scene.imageDigest() == image, "\(attack.name): keyd wrote to a disk it refused")
        let headersAfter = try FileManager.default.contentsOfDirectory(atPath: scene.keyd.stateDirectory + "/headers")
        #expect(headersAfter.sorted() == headersBefore.sorted(), "\(attack.name): \(headersAfter)")
        #expect(
            scene.auditedUUIDs.allSatisfy { $0 == scene.uuid },
            "\(attack.name): an audit record names another UUID: \(scene.auditedUUIDs)"
        )
        #expect(scene.keyd.auditLines.filter { $0.contains(#""status":"diskHeaderRejected""#) }.count == 6)
    }

    @Test(
        "a FIFO named as the device: trustd may not name it, the admin's request and the configured FIFO are refused at once"
    )
    func fifoAsDevice() throws {
        // The host (or trustd) makes a FIFO anyone may open: `mkfifo -m 666`; keyd's configuration names it.
        let scene = try HostileHostScene { directory in
            let fifo = directory + "/fifo"
            guard mkfifo(fifo, 0o666) == 0, chmod(fifo, 0o666) == 0 else {
                throw HarnessError("mkfifo: errno \(errno)")
            }
            return fifo
        }
        let checks = try AttackChecks(scene.keyd, watched: scene.watched)
        // trustd naming the FIFO: a peer probing paths is misbehaving, refused before any open.
        #expect(try scene.ask(.diskInspect(device: scene.image), asTrustd: true).status == .denied)
        // trustd asking for the configured disk, here the FIFO, and the admin naming it: refused at once.
        for (request, asTrustd) in [
            (Request.diskInspect(device: ""), true), (.diskInspect(device: scene.image), false),
            (.diskFormat(device: ""), false), (.diskReset(device: scene.image), false),
        ] {
            let (status, seconds) = try scene.ask(request, asTrustd: asTrustd)
            #expect(status == .diskUnusable && seconds < 1, "\(request): \(status) after \(seconds) s")
        }
        // A directory and a character device are no disk either.
        for device in [scene.diskDirectory, "/dev/null"] {
            #expect(try scene.ask(.diskInspect(device: device), asTrustd: false).status == .diskUnusable)
        }
        try checks.verify(
            audited: { $0.contains(#""event":"disk.inspect""#) && $0.contains(#""status":"diskUnusable""#) },
            "FIFO as the device"
        )
        #expect(scene.keyd.auditLines.contains { $0.contains(#""status":"denied""#) && $0.contains(scene.image) })
        // keyd never blocked in open(): SIGTERM ends it at once.
        #expect(scene.keyd.stop() == 0)
    }

    @Test("path probing: trustd naming any path at all is denied alike, whether the path exists or not")
    func pathProbing() throws {
        let scene = try HostileHostScene()
        try scene.formatAndImportKEK()
        #expect(try scene.keyd.admin().roundTrip(.diskBind(device: "")).status == .ok)
        let backup = scene.keyd.stateDirectory + "/headers/\(scene.uuid).img"
        try #require(FileManager.default.fileExists(atPath: backup))
        let checks = try AttackChecks(scene.keyd, watched: scene.watched)
        // An existing file, a missing one, keyd's own header backup, a device, the configured disk itself.
        let probes = [
            scene.watched.path + "/small.txt", scene.watched.path + "/absent", backup, "/dev/null", scene.image,
            scene.keyd.stateDirectory + "/audit.log",
        ]
        for path in probes {
            let connection = try scene.trustd()
            let answer = try connection.roundTrip(.diskInspect(device: path))
            #expect(answer.status == .denied, "\(path): \(answer.status)")
            #expect(answer.status.closesConnection)
        }
        // The admin may name paths, but keyd's own header backup is no disk to show.
        #expect(try scene.ask(.diskInspect(device: backup), asTrustd: false).status == .diskUnusable)
        // trustd's one question, about the configured disk, is answered.
        #expect(try scene.ask(.diskInspect(device: ""), asTrustd: true).status == .ok)
        try checks.verify(
            audited: { $0.contains(#""event":"disk.inspect""#) && $0.contains(#""status":"denied""#) },
            "path probing"
        )
        // The first probe is written with its path; trustd's repeats of the same refusal are folded
        // into one audit.repeated (written when the window ends, or at stop), so probing cannot fill the log.
        let denials = scene.keyd.auditLines.filter { $0.contains(#""status":"denied""#) }
        #expect(denials.count == 1)
        #expect(denials.first?.contains(#""device":"\#(probes[0])""#) == true)
        scene.keyd.waitForExit(afterSignal: SIGTERM)
        let repeated = scene.keyd.auditLines.filter { $0.contains(#""event":"audit.repeated""#) }
        #expect(
            repeated.contains {
                $0.contains(#""event":"disk.inspect""#) && $0.contains(#""repeats":"\#(probes.count - 1)""#)
            }
        )
    }
}
