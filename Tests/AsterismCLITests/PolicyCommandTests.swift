import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import KeydCore
import Testing

@testable import AsterismCLI

#if canImport(Glibc)
import Glibc
#endif

/// `asterism keygen` and `asterism policy sign|verify|show` in process, on files in a fresh directory.
struct PolicyCommandTests {
    /// A fresh temporary directory, removed when the test's value goes.
    final class Scratch {
        let path: String
        init() throws {
            var template = Array("/tmp/asterism-policy-XXXXXX".utf8CString)
            guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
            path = String(cString: made)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }

        func file(_ name: String) -> String { path + "/" + name }
        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: file(name), atomically: false, encoding: .utf8)
        }
        func read(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(filePath: file(name)))) }
        func mode(_ name: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: file(name))[.posixPermissions] as? Int) ?? -1
        }
    }

    static let policyJSON = """
        {"version": 3,
         "measurements": {"4": "\(String(repeating: "ab", count: 32))",
                          "7": {"expected": "\(String(repeating: "11", count: 32))", "warnOnly": true}},
         "akTrust": {"allowedDigests": ["\(String(repeating: "22", count: 32))"]},
         "evidenceVariants": ["asterism-tpm"],
         "challengeLifetimeSeconds": 30,
         "revoked": {"akDigests": ["\(String(repeating: "33", count: 32))"]}}
        """

    /// A scratch directory with an operator key pair (`op.pem`, `op.pub`) and `policy.json`.
    static func scene() throws -> Scratch {
        let scratch = try Scratch()
        let made = Asterism.execute(["keygen", "--out", scratch.file("op.pem"), "--public-out", scratch.file("op.pub")])
        try #require(made.status == 0, "\(made.stderr)")
        try scratch.write("policy.json", policyJSON)
        return scratch
    }

    /// `policy sign` of the scene's policy into `signed.json`.
    static func sign(_ scratch: Scratch, key: String = "op.pem", policy: String = "policy.json") -> Asterism.Outcome {
        Asterism.execute([
            "policy", "sign", "--key", scratch.file(key), "--policy", scratch.file(policy), "--out",
            scratch.file("signed.json"),
        ])
    }

    @Test func keygenWritesAnOwnerOnlyKeyAndPrintsItsPublicHalf() throws {
        let scratch = try Scratch()
        let made = Asterism.execute(["keygen", "--out", scratch.file("op.pem")])
        #expect(made.status == 0 && made.stderr.isEmpty, "\(made.stderr)")
        #expect(try scratch.mode("op.pem") == 0o600)
        let key = try P256.Signing.PrivateKey(
            pemRepresentation: String(decoding: try scratch.read("op.pem"), as: UTF8.self)
        )
        let operatorKey = OperatorKey(key.publicKey)
        #expect(made.stdout.contains(operatorKey.pem))
        #expect(made.stdout.hasSuffix("digest sha256:\(hexString(operatorKey.digest))\n"))

        let json = Asterism.execute(["keygen", "--out", scratch.file("second.pem"), "--json"])
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: String],
            "\(json.stdout)"
        )
        let printed = try OperatorKey(pem: try #require(object["publicKeyPEM"]))
        #expect(object["digest"] == hexString(printed.digest))
        #expect(printed != operatorKey, "every keygen makes a new key")
    }

    @Test func keygenNeverReplacesAFile() throws {
        let scratch = try Scratch()
        try scratch.write("op.pem", "keep me")
        let refused = Asterism.execute(["keygen", "--out", scratch.file("op.pem")])
        #expect(refused.status == 2 && refused.stderr.contains("exists"), "\(refused.stderr)")
        #expect(try scratch.read("op.pem") == Array("keep me".utf8))
        // Nor writes through a link to another file.
        symlink(scratch.file("target"), scratch.file("link.pem"))
        #expect(Asterism.execute(["keygen", "--out", scratch.file("link.pem")]).status == 2)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("target")))
        // A public-key file in the way leaves the private key written, and says where.
        try scratch.write("taken.pub", "")
        let half = Asterism.execute([
            "keygen", "--out", scratch.file("new.pem"), "--public-out", scratch.file("taken.pub"),
        ])
        #expect(half.status == 2 && half.stderr.contains("the private key is in"), "\(half.stderr)")
    }

    @Test func signThenVerify() throws {
        let scratch = try Self.scene()
        let signed = Self.sign(scratch)
        #expect(signed.status == 0, "\(signed.stderr)")
        #expect(signed.stdout.contains("policy version 3"))
        // What keyd reads: the signed form, verifying under the public key keygen wrote, over the bytes as given.
        let decoded = try SignedPolicy(decoding: try scratch.read("signed.json"))
        #expect(decoded.policy == Array(Self.policyJSON.utf8))
        let key = try OperatorKey(pem: String(decoding: try scratch.read("op.pub"), as: UTF8.self))
        #expect(try decoded.verified(by: key, above: 2).version == 3)

        let verify = [
            "policy", "verify", "--signed", scratch.file("signed.json"), "--operator-key", scratch.file("op.pub"),
        ]
        let valid = Asterism.execute(verify)
        #expect(valid.status == 0 && valid.stdout.contains("VALID policy version 3"), "\(valid)")
        #expect(Asterism.execute(verify + ["--above", "2"]).status == 0)
        let stale = Asterism.execute(verify + ["--above", "3", "--json"])
        #expect(stale.status == 1)
        let verdict = try #require(try JSONSerialization.jsonObject(with: Data(stale.stdout.utf8)) as? [String: Any])
        #expect(verdict["valid"] as? Bool == false)
        #expect((verdict["reason"] as? String)?.contains("version 3 is not above the current version 3") == true)
    }

    @Test func verifyRefusesAnotherKeyAndATamperedPolicy() throws {
        let scratch = try Self.scene()
        try #require(Self.sign(scratch).status == 0)
        #expect(
            Asterism.execute(["keygen", "--out", scratch.file("other.pem"), "--public-out", scratch.file("other.pub")])
                .status == 0
        )
        let other = Asterism.execute([
            "policy", "verify", "--signed", scratch.file("signed.json"), "--operator-key", scratch.file("other.pub"),
        ])
        #expect(other.status == 1 && other.stdout.contains("does not verify with the pinned operator key"), "\(other)")

        // One byte of the policy changed (still a valid policy), the signature kept.
        let original = try SignedPolicy(decoding: try scratch.read("signed.json"))
        var policy = original.policy
        let digit = try #require(policy.firstIndex(of: UInt8(ascii: "3")))
        policy[digit] = UInt8(ascii: "4")
        #expect((try? MeasurementPolicy(json: policy))?.version == 4)
        let tampered = SignedPolicy(policy: policy, signature: original.signature)
        try Data(tampered.encoded).write(to: URL(filePath: scratch.file("tampered.json")))
        let refused = Asterism.execute([
            "policy", "verify", "--signed", scratch.file("tampered.json"), "--operator-key", scratch.file("op.pub"),
        ])
        #expect(refused.status == 1 && refused.stdout.contains("REFUSED"), "\(refused)")

        // A file that is no signed policy is a parse error.
        let garbage = Asterism.execute([
            "policy", "verify", "--signed", scratch.file("policy.json"), "--operator-key", scratch.file("op.pub"),
        ])
        #expect(garbage.status == 2 && garbage.stderr.contains("signed policy"), "\(garbage)")
    }

    @Test func signRefusesAnExposedKeyAnInvalidPolicyAndAnExistingOutput() throws {
        let scratch = try Self.scene()
        chmod(scratch.file("op.pem"), 0o644)
        let exposed = Self.sign(scratch)
        #expect(exposed.status == 2 && exposed.stderr.contains("mode 0644"), "\(exposed.stderr)")
        chmod(scratch.file("op.pem"), 0o640)
        #expect(Self.sign(scratch).stderr.contains("mode 0640"))
        chmod(scratch.file("op.pem"), 0o600)

        try scratch.write(
            "bad.json",
            #"{"version": 0, "measurements": {}, "akTrust": {}, "evidenceVariants": ["asterism-tpm"]}"#
        )
        let invalid = Self.sign(scratch, policy: "bad.json")
        #expect(invalid.status == 2 && invalid.stderr.contains("version 0 is outside"), "\(invalid.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("signed.json")))

        #expect(Self.sign(scratch).status == 0)
        let first = try scratch.read("signed.json")
        let again = Self.sign(scratch)
        #expect(again.status == 2 && again.stderr.contains("exists"))
        #expect(try scratch.read("signed.json") == first)
        let forced = Asterism.execute([
            "policy", "sign", "--key", scratch.file("op.pem"), "--policy", scratch.file("policy.json"), "--out",
            scratch.file("signed.json"), "--force",
        ])
        #expect(forced.status == 0, "\(forced.stderr)")
    }

    @Test func showPrintsBarePoliciesAndSignedOnes() throws {
        let scratch = try Self.scene()
        try #require(Self.sign(scratch).status == 0)
        let policy = try MeasurementPolicy(json: Array(Self.policyJSON.utf8))

        let bare = Asterism.execute(["policy", "show", scratch.file("policy.json")])
        #expect(bare.status == 0, "\(bare.stderr)")
        #expect(bare.stdout.hasPrefix("policy version 3  sha256:\(hexString(policy.digest))\n"))
        for line in [
            "  variants    asterism-tpm", "  challenge   30 s", "  PCRs        1 enforced, 1 warn-only",
            "    4  \(String(repeating: "ab", count: 32))", "    7  \(String(repeating: "11", count: 32))  (warn only)",
            "  AKs         1 allowed, 0 CA certificates", "  revoked     0 disks, 1 AKs",
        ] {
            #expect(bare.stdout.contains(line + "\n"), "missing \(line) in:\n\(bare.stdout)")
        }
        #expect(!bare.stdout.contains("signature"))

        let signed = Asterism.execute(["policy", "show", scratch.file("signed.json")])
        #expect(signed.status == 0 && signed.stdout.contains("unverified (give --operator-key"), "\(signed)")
        #expect(signed.stdout.contains("sha256:\(hexString(policy.digest))"))

        let checked = Asterism.execute([
            "policy", "show", scratch.file("signed.json"), "--operator-key", scratch.file("op.pub"), "--json",
        ])
        #expect(checked.status == 0, "\(checked.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(checked.stdout.utf8)) as? [String: Any])
        #expect(object["kind"] as? String == "signed-policy" && object["signatureVerifies"] as? Bool == true)
        #expect(object["version"] as? Int == 3 && object["digest"] as? String == hexString(policy.digest))
        #expect((object["measurements"] as? [[String: Any]])?.map { $0["index"] as? Int } == [4, 7])
        #expect(object["allowedAKDigests"] as? [String] == [String(repeating: "22", count: 32)])
        #expect(object["challengeLifetimeSeconds"] as? Int == 30)
        #expect((object["signatureLength"] as? Int).map { (64...72).contains($0) } == true)

        #expect(
            Asterism.execute(["keygen", "--out", scratch.file("o.pem"), "--public-out", scratch.file("o.pub")]).status
                == 0
        )
        let wrongKey = Asterism.execute([
            "policy", "show", scratch.file("signed.json"), "--operator-key", scratch.file("o.pub"),
        ])
        #expect(wrongKey.status == 1 && wrongKey.stdout.contains("DOES NOT VERIFY"), "\(wrongKey)")

        try scratch.write("neither.json", "{}")
        let neither = Asterism.execute(["policy", "show", scratch.file("neither.json")])
        #expect(neither.status == 2 && neither.stderr.contains("is neither a signed policy"), "\(neither.stderr)")
    }
}

/// `policy from-evidence`'s pure part: which PCRs, and nodes that disagree.
struct PolicyDraftTests {
    static func value(_ byte: UInt8) -> [UInt8] { [UInt8](repeating: byte, count: 32) }

    static func node(_ name: String, ak: UInt8, _ pcrs: [Int: UInt8]) -> PolicyDraft.Node {
        PolicyDraft.Node(endpoint: name, akDigest: value(ak), pcrs: pcrs.mapValues { value($0) })
    }

    @Test func defaultLeavesOutTheClusterIDMark() throws {
        let nodes = [Self.node("a:1", ak: 1, [0: 9, 4: 8, 15: 1]), Self.node("b:1", ak: 2, [0: 9, 4: 8, 15: 2])]
        let drafted = try PolicyDraft.measurements(nodes, choice: try .init(parsing: nil))
        #expect(drafted.entries.keys.sorted() == [0, 4])
        #expect(drafted.entries[4] == Measurements.Expected(value: Self.value(8)))
        let policy = try PolicyDraft.policy(nodes, choice: .init(parsing: "0"), version: 2, insecureTrustAnyAK: false)
        #expect(policy.allowedAKDigests == [Self.value(1), Self.value(2)] && policy.version == 2)
        #expect(policy.measurements.entries.keys.sorted() == [0] && policy.evidenceVariants == [.asterismTPM])
    }

    @Test func disagreementNamesThePCRAndBothNodes() throws {
        let nodes = [Self.node("a:1", ak: 1, [0: 9, 15: 1]), Self.node("b:1", ak: 2, [0: 7, 15: 1])]
        #expect(throws: PolicyDraft.Refusal.self) { try PolicyDraft.measurements(nodes, choice: .allQuoted) }
        do {
            _ = try PolicyDraft.measurements(nodes, choice: .quotedButClusterID)
            Issue.record("disagreeing nodes drafted a policy")
        } catch {
            #expect(error.description.hasPrefix("PCR 0 differs: a:1 quotes 0909"))
            #expect(error.description.contains("b:1 quotes 0707"))
        }
        let missing = [Self.node("a:1", ak: 1, [0: 9, 1: 3]), Self.node("b:1", ak: 2, [0: 9])]
        #expect(throws: PolicyDraft.Refusal(description: "b:1 did not quote PCR 1")) {
            try PolicyDraft.measurements(missing, choice: .listed([1]))
        }
        #expect(try PolicyDraft.measurements(missing, choice: .listed([0])).entries.count == 1)
    }

    @Test(arguments: ["", "24", "1,1", "a", "01", "all"])
    func badPCRListsAreUsageErrors(text: String) {
        #expect(throws: (any Error).self) { try PolicyDraft.PCRChoice(parsing: text) }
    }

    @Test func pcrListsAreSorted() throws {
        #expect(try PolicyDraft.PCRChoice(parsing: "7,0,23") == .listed([0, 7, 23]))
        #expect(try PolicyDraft.PCRChoice(parsing: "all-quoted") == .allQuoted)
    }

    @Test func fromEvidenceUsageAndConnectionErrorsExit2() async throws {
        for arguments in [
            ["policy", "from-evidence", "--out", "/nonexistent/p.json"],
            ["policy", "from-evidence", "--endpoint", "no-port", "--out", "/nonexistent/p.json"],
            ["policy", "from-evidence", "--endpoint", "127.0.0.1:1", "--pcrs", "99", "--out", "/nonexistent/p.json"],
        ] {
            let outcome = Asterism.execute(arguments)
            #expect(outcome.status == 2 && !outcome.stderr.isEmpty, "\(arguments): \(outcome)")
        }
        // Nothing listens on port 1: a connection error, named, from a thread of its own (the command blocks).
        let refused = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    returning: Asterism.execute([
                        "policy", "from-evidence", "--endpoint", "127.0.0.1:1", "--out", "/nonexistent/p.json",
                        "--timeout", "5",
                    ])
                )
            }
        }
        #expect(refused.status == 2 && refused.stderr.contains("127.0.0.1:1:"), "\(refused)")
    }
}
