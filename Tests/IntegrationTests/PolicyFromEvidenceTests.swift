import AsterismCLI
import Attestation
import Foundation
import KeydClient
import KeydCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `asterism policy from-evidence` and NodeAttestationClient against real nodes: each a swtpm, a keyd on it
/// and a trustd process whose VerificationService the operator asks over plaintext gRPC.
@Suite(.serialized, .needsSwtpm) struct PolicyFromEvidenceTests {
    /// One node's TPM and daemons. Unchecked Sendable: a test uses it from one task at a time.
    final class Node: @unchecked Sendable {
        let tpm: SoftwareTPM
        let keyd: KeydHarness
        let trustd: TrustdHarness

        /// A node whose PCR 23 was extended with `extendPCR23` before keyd started, and whose keyd attaches
        /// `eventLog` to its evidence, when given.
        init(extendPCR23: [UInt8]? = nil, eventLog: String? = nil) throws {
            tpm = try SoftwareTPM()
            if let extendPCR23 { try tpm.run("tpm2_pcrextend", ["23:sha256=\(hexString(extendPCR23))"]) }
            keyd = try KeydHarness(
                configuration: ["tpm-tcti = \(tpm.tcti)", "trustd-uids = \(geteuid())"]
                    + (eventLog.map { ["tpm-event-log = \($0)"] } ?? [])
            )
            trustd = try TrustdHarness(configuration: [
                "keyd-socket = \(keyd.socketPath)", "role = worker", "node-name = node-\(tpm.port)",
            ])
        }

        /// Its VerificationService, HOST:PORT.
        var endpoint: String { "127.0.0.1:\(trustd.verificationGRPCPort)" }

        /// SHA-256 of its AK's SubjectPublicKeyInfo, from evidence keyd gives its admin.
        func akDigest() throws -> [UInt8] {
            let document = try keyd.admin().evidence(
                .native,
                nonce: [UInt8](repeating: 1, count: 32),
                userDataDigest: [UInt8](repeating: 2, count: 32)
            ).document
            return try TPMTPublic(bytes: try NativeTPMEvidenceDocument(bytes: document).akPublic).keyDigest()
        }
    }

    /// A fresh directory for the operator's files.
    static func directory() throws -> String {
        var template = Array("/tmp/asterism-from-evidence-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
        return String(cString: made)
    }

    /// `asterism` in process, on a thread of its own (the command blocks while its gRPC calls run).
    static func asterism(_ arguments: [String]) async throws -> Asterism.Outcome {
        try await onThread { Asterism.execute(arguments) }
    }

    @Test("a policy from two nodes' evidence allows both AKs, expects their PCRs but 15, and takes their evidence")
    func policyFromTwoNodes() async throws {
        let first = try await onThread { try Node() }
        let second = try await onThread { try Node() }
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }

        let made = try await Self.asterism([
            "policy", "from-evidence", "--timeout", "120", "--endpoint", first.endpoint, "--endpoint", second.endpoint,
            "--out",
            directory + "/policy.json", "--version", "5",
        ])
        #expect(made.status == 0, "\(made.stderr)")
        let lines = made.stdout.split(separator: "\n")
        #expect(lines.count == 3, "\(made.stdout)")
        #expect(
            lines.first?.hasPrefix("\(first.endpoint)  ak sha256:\(hexString(try first.akDigest().prefix(8)))…") == true
        )
        #expect(lines.dropFirst().first?.hasPrefix("\(second.endpoint)  ak sha256:") == true)

        let policy = try MeasurementPolicy(json: Array(try Data(contentsOf: URL(filePath: directory + "/policy.json"))))
        #expect(policy.version == 5 && policy.evidenceVariants == [.asterismTPM] && !policy.insecureTrustAnyAK)
        #expect(policy.allowedAKDigests == [try first.akDigest(), try second.akDigest()])

        // The client directly: the quoted PCRs are what the policy expects, 15 left out.
        let client = NodeAttestationClient()
        let endpoint = try NodeAttestationClient.endpoint(parsing: first.endpoint)
        let attestation = try await client.fetch(endpoint, binding: .sealedV1, timeout: .seconds(30))
        #expect(attestation.integrity.isValid, "\(attestation.integrity.failures)")
        #expect(attestation.akDigest == (try first.akDigest()) && attestation.bootPublicKey.count == 32)
        let quoted = try #require(attestation.quotedPCRs)
        #expect(quoted.keys.contains(15) && quoted.count > 1)
        #expect(policy.measurements.entries.mapValues(\.value) == quoted.filter { $0.key != 15 })

        // Full validation: this policy takes the node; one that does not allow its AK, revokes it or expects
        // another PCR value does not, and the report names the check.
        #expect(client.validate(attestation, against: policy).isValid)
        let otherAK = try MeasurementPolicy(
            version: 1,
            measurements: policy.measurements,
            allowedAKDigests: [try second.akDigest()]
        )
        let revoked = try MeasurementPolicy(
            version: 1,
            measurements: policy.measurements,
            allowedAKDigests: policy.allowedAKDigests,
            revokedAKDigests: [attestation.akDigest]
        )
        var entries = policy.measurements.entries
        entries[0] = Measurements.Expected(value: [UInt8](repeating: 0x5A, count: 32))
        let otherPCR0 = try MeasurementPolicy(
            version: 1,
            measurements: Measurements(entries),
            allowedAKDigests: policy.allowedAKDigests
        )
        for (refusing, check) in [
            (otherAK, "tpm.ak.trust"), (revoked, "policy.revoked-ak"), (otherPCR0, "measurements.pcr[0]"),
        ] {
            let report = client.validate(attestation, against: refusing)
            #expect(
                !report.isValid && report.failures.contains { $0.policy.hasPrefix(check) },
                "\(check): \(report.failures)"
            )
        }

        // The operator's next steps: sign it, verify the signature.
        let signed = try await Self.asterism([
            "keygen", "--out", directory + "/op.pem", "--public-out", directory + "/op.pub",
        ])
        #expect(signed.status == 0)
        #expect(
            try await Self.asterism([
                "policy", "sign", "--key", directory + "/op.pem", "--policy", directory + "/policy.json", "--out",
                directory + "/signed.json",
            ]).status == 0
        )
        let verified = try await Self.asterism([
            "policy", "verify", "--signed", directory + "/signed.json", "--operator-key", directory + "/op.pub",
        ])
        #expect(verified.status == 0 && verified.stdout.contains("VALID policy version 5"), "\(verified)")
    }

    @Test("nodes that quote different PCR values make no policy; the PCRs they agree on do")
    func disagreeingNodes() async throws {
        let plain = try await onThread { try Node() }
        let extended = try await onThread { try Node(extendPCR23: [UInt8](repeating: 0xA5, count: 32)) }
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let both = [
            "policy", "from-evidence", "--timeout", "120", "--endpoint", plain.endpoint, "--endpoint",
            extended.endpoint,
        ]

        let refused = try await Self.asterism(both + ["--out", directory + "/policy.json"])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderr.contains("PCR 23 differs: \(plain.endpoint) quotes "), "\(refused.stderr)")
        #expect(refused.stderr.contains(", \(extended.endpoint) quotes "))
        #expect(!FileManager.default.fileExists(atPath: directory + "/policy.json"))

        let agreed = try await Self.asterism(both + ["--out", directory + "/policy.json", "--pcrs", "0,7", "--json"])
        #expect(agreed.status == 0, "\(agreed.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(agreed.stdout.utf8)) as? [String: Any])
        #expect(object["pcrs"] as? [Int] == [0, 7] && (object["nodes"] as? [Any])?.count == 2)
    }

    @Test("evidence whose event log does not replay to its quote is refused, and no policy is written")
    func eventLogThatDoesNotReplay() async throws {
        // A real machine's log beside a fresh software TPM's PCRs.
        let node = try await onThread {
            try Node(eventLog: TestVectors.path("tpm-eventlogs/crypto_agile_eventlog"))
        }
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let refused = try await Self.asterism([
            "policy", "from-evidence", "--timeout", "120", "--endpoint", node.endpoint, "--out",
            directory + "/policy.json",
        ])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stderr.contains("\(node.endpoint): evidence refused (tpm.event-log:"), "\(refused.stderr)")
        #expect(refused.stdout.contains("FAIL  tpm.event-log"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/policy.json"))
    }
}
