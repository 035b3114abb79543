import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The trust state (pinned operator key, signed policy) against a host that rewrites the state
/// directory between boots, and the audit group commit against a full disk.
@Suite(.serialized) struct TrustStateTests {
    /// keyd on `tpm` in `reusing` (or a fresh directory).
    static func keyd(_ tpm: SoftwareTPM, reusing: String? = nil, _ extra: [String] = []) throws -> KeydHarness {
        try KeydHarness(
            configuration: ["tpm-tcti = \(tpm.tcti)", "trustd-uids = \(geteuid())"] + extra,
            reusing: reusing
        )
    }

    /// A policy of `version` signed by `key`, in its wire form.
    static func signedPolicy(version: UInt64, key: Curve25519.Signing.PrivateKey) throws -> [UInt8] {
        let json = Array(
            #"{"version":\#(version),"measurements":{},"akTrust":{},"evidenceVariants":["asterism-tpm"]}"#.utf8
        )
        let signature = try key.signature(for: SignedPolicy.signedMessage(json))
        return SignedPolicy(policy: json, signature: Array(signature)).encoded
    }

    /// The decoded `status` answer on a fresh admin connection.
    static func status(_ keyd: KeydHarness) throws -> StatusAnswer { try keyd.admin().status() }

    /// Pins a key, imports a KEK, sets policy 1 and then 2; returns the trust.state bytes after the pin
    /// (an older copy) and the key.
    static func prepare(_ keyd: KeydHarness) throws -> (olderCopy: [UInt8], key: Curve25519.Signing.PrivateKey) {
        let key = Curve25519.Signing.PrivateKey()
        let admin = try keyd.admin()
        _ = try admin.call(.operatorKeyPin(operatorKey: OperatorKey(key.publicKey).encoded))
        let path = keyd.stateDirectory + "/trust.state"
        let older = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: masterSecretJSON()).status == 0)
        _ = try admin.call(.policySet(signedPolicy: try signedPolicy(version: 1, key: key)))
        _ = try admin.call(.policySet(signedPolicy: try signedPolicy(version: 2, key: key)))
        let status = try admin.status()
        #expect(status.policyVersion == 2 && status.operatorKeyPinned)
        return (older, key)
    }

    /// (name, what the host does to trust.state between boots, the reason the trust.check record gives).
    static let edits: [(String, @Sendable (String, [UInt8]) throws -> Void, String)] = [
        ("older copy put back", { path, older in try Data(older).write(to: URL(fileURLWithPath: path)) }, "older copy"),
        ("removed", { path, _ in try FileManager.default.removeItem(atPath: path) }, "was removed"),
        (
            "one byte changed",
            { path, _ in
                var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
                bytes[bytes.count / 2] ^= 1
                try Data(bytes).write(to: URL(fileURLWithPath: path))
            },
            "trust.state refused"
        ),
    ]

    @Test(.needsSwtpm, arguments: edits.indices)
    func hostEditOfTheTrustStateIsRefusedAtStart(edit: Int) throws {
        let (name, change, reason) = Self.edits[edit]
        let tpm = try SoftwareTPM()
        try withExtendedLifetime(tpm) {
            let keyd = try Self.keyd(tpm)
            let (older, _) = try Self.prepare(keyd)
            keyd.waitForExit(afterSignal: SIGTERM)
            try change(keyd.stateDirectory + "/trust.state", older)
            let restarted = try Self.keyd(tpm, reusing: keyd.directory)
            let status = try Self.status(restarted)
            #expect(status.policyVersion == 0 && !status.operatorKeyPinned, "\(name): the refused state is not used")
            #expect(status.policyDigest == [UInt8](repeating: 0, count: 32))
            let record = restarted.auditLines.last { $0.contains(#""event":"trust.check""#) }
            #expect(record?.contains(reason) == true, "\(name): \(record ?? "no trust.check record")")
            // keyd serves on; without a policy it releases nothing.
            let admin = try restarted.admin()
            #expect(try admin.roundTrip(.policyGet).status == .ok)
        }
    }

    @Test(.needsSwtpm) func trustStateSurvivesARestartAndOnlyNewerSignedPoliciesReplaceIt() throws {
        let tpm = try SoftwareTPM()
        try withExtendedLifetime(tpm) {
            let keyd = try Self.keyd(tpm)
            let (_, key) = try Self.prepare(keyd)
            let before = try Self.status(keyd)
            keyd.waitForExit(afterSignal: SIGTERM)
            let restarted = try Self.keyd(tpm, reusing: keyd.directory)
            let status = try Self.status(restarted)
            #expect(status.policyVersion == 2 && status.operatorKeyPinned && status.policyDigest == before.policyDigest)
            #expect(!restarted.auditLines.contains { $0.contains(#""event":"trust.check""#) })
            let admin = try restarted.admin()
            // Older, equal, unsigned and foreign-signed policies are refused with the reason audited.
            let other = Curve25519.Signing.PrivateKey()
            for (bytes, reason) in [
                (try Self.signedPolicy(version: 1, key: key), "policyVersionNotNewer"),
                (try Self.signedPolicy(version: 2, key: key), "policyVersionNotNewer"),
                (try Self.signedPolicy(version: 3, key: other), "policySignatureInvalid"),
                (Array(#"{"policy":"e30=","signature":""}"#.utf8), "policySignatureInvalid"),
            ] {
                #expect(try admin.roundTrip(.policySet(signedPolicy: bytes)).status == .policyRejected)
                let record = restarted.auditLines.last { $0.contains(#""event":"policy.set""#) }
                #expect(record?.contains(reason) == true, "\(record ?? "none")")
            }
            #expect(try admin.status().policyVersion == 2)
            // keydctl: show names the policy in force; set sends a newer one from a file.
            let shown = try restarted.keydctl(["policy", "show", "--json"])
            #expect(shown.status == 0 && shown.stdout.contains(hex(before.policyDigest)), "\(shown.stdout)")
            let file = restarted.directory + "/policy-3.json"
            try Data(try Self.signedPolicy(version: 3, key: key)).write(to: URL(fileURLWithPath: file))
            let set = try restarted.keydctl(["policy", "set", file])
            #expect(set.status == 0, "\(set.stderr)")
            #expect(try admin.status().policyVersion == 3)
            let stale = try restarted.keydctl(["policy", "set", file])
            #expect(stale.status == 1 && stale.stderr.contains("policyRejected"), "\(stale.stderr)")
            // A second pin is refused: the pinned key is never replaced.
            let pin = try admin.roundTrip(.operatorKeyPin(operatorKey: OperatorKey(other.publicKey).encoded))
            #expect(pin.status == .wrongPhase || pin.status == .policyRejected)
        }
    }

    @Test(.needsSwtpm) func pipelinedRecordsAreCommittedAsOneAnchoredGroup() throws {
        let tpm = try SoftwareTPM()
        try withExtendedLifetime(tpm) {
            let keyd = try Self.keyd(tpm)
            let recordsBefore = keyd.auditLines.count
            // 16 refused pins pipelined in one write: each staged, committed together.
            let client = try RawClient(path: keyd.adminSocketPath)
            var bytes = RawClient.hello()
            for sequence in 1...16 {
                bytes += RequestFrame(sequence: UInt32(sequence), request: .operatorKeyPin(operatorKey: [1]))
                    .encodeFrame()
            }
            client.send(bytes)
            let answers = client.readAnswers(17)
            #expect(answers.count == 17 && answers.dropFirst().allSatisfy { $0.status == .invalidArgument })
            let lines = Array(keyd.auditLines.dropFirst(recordsBefore))
            let pins = lines.filter { $0.contains(#""event":"operatorKey.pin""#) }
            #expect(pins.count == 16)
            let anchors = lines.compactMap { line -> UInt64? in
                guard let range = line.range(of: #""anchor":"#) else { return nil }
                return UInt64(line[range.upperBound...].prefix { $0.isNumber })
            }
            // Every group ends in an anchored line; fewer anchors than records means shared fsyncs and counts,
            // and consecutive anchors are consecutive TPM counter values.
            #expect(!anchors.isEmpty && anchors.count < pins.count, "anchors \(anchors) for \(pins.count) records")
            #expect(zip(anchors, anchors.dropFirst()).allSatisfy { $1 == $0 + 1 })
            #expect(lines.last?.contains(#""anchor":"#) == true)
        }
    }

    @Test(.needsSwtpm, .needsRoot) func fullDiskRefusesWithAuditFailureAndKeepsServing() throws {
        let tpm = try SoftwareTPM()
        try withExtendedLifetime(tpm) {
            var template = Array("/tmp/keyd-full-XXXXXX".utf8CString)
            let directory = String(cString: try #require(mkdtemp(&template)))
            #expect(try runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", directory]).status == 0)
            defer {
                _ = try? runCommand("/bin/umount", ["-l", directory])
                rmdir(directory)
            }
            let keyd = try Self.keyd(tpm, reusing: directory)
            let filler = directory + "/filler"
            _ = try runCommand("/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=64k", "count=64"])
            let admin = try keyd.admin()
            // The log's last page may still take a few records; refusals fill it until a commit fails.
            var refusals: [StatusCode] = []
            while refusals.last != .auditFailure && refusals.count < 1000 {
                refusals.append(try admin.roundTrip(.operatorKeyPin(operatorKey: [1])).status)
            }
            #expect(refusals.last == .auditFailure, "no commit failed in \(refusals.count) refusals")
            #expect(Set(refusals).isSubset(of: [.invalidArgument, .auditFailure]))
            // No key without its record: the import is refused and keyd holds no KEK.
            let imported = try keyd.keydctl(["kek", "import", "--file", "-"], stdin: masterSecretJSON())
            #expect(imported.status != 0)
            #expect(try admin.status().phase == .awaitingKEK)
            unlink(filler)
            #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: masterSecretJSON()).status == 0)
            #expect(try admin.status().phase == .holdingKEK)
            let verified = try admin.call(.auditVerify).decodePayload(.auditVerify, AuditVerifyAnswer.read)
            #expect(verified.intact, "the failed groups were cut away: \(verified.problem)")
        }
    }
}
