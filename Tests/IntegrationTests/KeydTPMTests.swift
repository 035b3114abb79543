import Attestation
import Crypto
import Foundation
import KeydClient
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// keyd's TPM (issue 4) against a real software TPM, checked with tpm2-tools and by hand.
@Suite(.serialized, .needsSwtpm) struct KeydTPMTests {
    /// A real crypto-agile log from other firmware, which keyd attaches to its evidence.
    static let eventLogPath = TestVectors.path("tpm-eventlogs/crypto_agile_eventlog")

    /// keyd on `tpm`, trustd mapped to this test's uid, with `extra` configuration lines.
    static func keyd(_ tpm: SoftwareTPM, _ extra: [String] = [], reusing: String? = nil) throws -> KeydHarness {
        let lines =
            [
                "tpm-tcti = \(tpm.tcti)", "trustd-uids = \(geteuid())", "disk-allow-initialize = true",
                "tpm-event-log = \(eventLogPath)",
            ] + extra
        return try KeydHarness(configuration: lines, reusing: reusing)
    }

    /// `keydctl tpm status --json`, parsed.
    static func tpmStatus(_ keyd: KeydHarness) throws -> [String: Any] {
        let result = try keyd.keydctl(["tpm", "status", "--json"])
        try #require(result.status == 0, "tpm status failed: \(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    static func random32() -> [UInt8] { (0..<32).map { _ in UInt8.random(in: 0...255) } }

    @Test func evidenceVerifiesWithTPM2CheckquoteAndBindsTheNonce() throws {
        let tpm = try SoftwareTPM()
        let keyd = try Self.keyd(tpm)
        let status = try Self.tpmStatus(keyd)
        #expect(status["available"] as? Bool == true, "\(status)")
        let ak = try #require(status["attestationKey"] as? [String: Any])
        #expect(ak["algorithm"] as? String == "ecc-p256")
        #expect((ak["publicKeyPEM"] as? String)?.hasPrefix("-----BEGIN PUBLIC KEY-----") == true)
        #expect(((status["pcrs"] as? [String: Any])?["sha256"] as? [String: Any])?.count == 24)

        let nonce = Self.random32()
        let digest = Self.random32()
        let parts = keyd.directory + "/parts"
        let document = keyd.directory + "/evidence.bin"
        let issued = try keyd.keydctl([
            "tpm", "evidence", "--nonce", hex(nonce), "--user-data-digest", hex(digest), "--out", document,
            "--parts-dir", parts,
        ])
        try #require(issued.status == 0, "tpm evidence failed: \(issued.stderr)")
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: document)))
        let parsed = try NativeEvidenceDocument(decoding: bytes)
        #expect(parsed.userDataDigest == digest && parsed.pcrs.map(\.index) == Array(0..<24))
        #expect(parsed.eventLog == [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.eventLogPath))))
        // The qualifying data is keyd's own binding of the nonce and the digest.
        var expected = SHA256()
        expected.update(data: Array("asterism-tpm-evidence-v1".utf8))
        expected.update(data: nonce)
        expected.update(data: digest)
        let qualifying = try String(contentsOfFile: parts + "/qualifying-data.hex", encoding: .utf8)
        #expect(qualifying == hex(Array(expected.finalize())) + "\n")
        #expect(keyd.auditLines.contains { $0.contains("\"tpm.evidence\"") })

        // The Swift verifier (Attestation) with the AK pinned by its SPKI digest.
        let pem = try #require(ak["publicKeyPEM"] as? String)
        let base64 = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let akDigest = Array(SHA256.hash(data: try #require(Data(base64Encoded: base64))))
        let pinned = TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [akDigest]), eventLogCheck: .skip)
        let valid = try TPMEvidenceValidator.validate(
            native: bytes,
            nonce: nonce,
            userDataDigest: digest,
            policy: pinned,
            at: Date()
        )
        #expect(valid.isValid, "\(valid.failures)")
        let stale = try TPMEvidenceValidator.validate(
            native: bytes,
            nonce: Self.random32(),
            userDataDigest: digest,
            policy: pinned,
            at: Date()
        )
        #expect(!stale.isValid, "a quote validated against another nonce")
        let otherData = try TPMEvidenceValidator.validate(
            native: bytes,
            nonce: nonce,
            userDataDigest: Self.random32(),
            policy: pinned,
            at: Date()
        )
        #expect(!otherData.isValid, "a quote validated against other user data")
        let untrusted = TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [Self.random32()]), eventLogCheck: .skip)
        #expect(
            !(try TPMEvidenceValidator.validate(
                native: bytes,
                nonce: nonce,
                userDataDigest: digest,
                policy: untrusted,
                at: Date()
            )).isValid
        )

        // tpm2_checkquote, an independent verifier (offline: OpenSSL over the files).
        let arguments = [
            "-u", parts + "/ak.pem", "-m", parts + "/attest.bin", "-s", parts + "/signature.bin", "-g", "sha256",
            "-f", parts + "/pcrs.bin",
        ]
        let checked = try runCommand("/usr/bin/tpm2_checkquote", arguments + ["-q", String(qualifying.dropLast())])
        #expect(checked.status == 0, "tpm2_checkquote refused keyd's quote: \(checked.stderr)")
        let otherNonce = hex(
            Array(SHA256.hash(data: Array("asterism-tpm-evidence-v1".utf8) + Self.random32() + digest))
        )
        #expect(
            try runCommand("/usr/bin/tpm2_checkquote", arguments + ["-q", otherNonce]).status != 0,
            "another nonce verified"
        )
        var edited = [UInt8](try Data(contentsOf: URL(fileURLWithPath: parts + "/pcrs.bin")))
        edited[140] ^= 1  // the first byte of PCR 0's value, after the selection and the digest-list count
        try Data(edited).write(to: URL(fileURLWithPath: parts + "/pcrs.bin"))
        #expect(
            try runCommand("/usr/bin/tpm2_checkquote", arguments + ["-q", String(qualifying.dropLast())]).status != 0,
            "an edited PCR value verified"
        )
    }

    @Test func rsaAttestationKeyQuotesValidate() throws {
        let tpm = try SoftwareTPM()
        let keyd = try Self.keyd(tpm, ["tpm-ak-algorithm = rsa-2048", "tpm-ak-handle = 0x81010a58"])
        let ak = try #require(try Self.tpmStatus(keyd)["attestationKey"] as? [String: Any])
        #expect(ak["algorithm"] as? String == "rsa-2048" && ak["handle"] as? String == "0x81010a58")
        let pem = try #require(ak["publicKeyPEM"] as? String)
        let der = try #require(
            Data(base64Encoded: pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined())
        )
        #expect(der.count == 294, "an RSA 2048 SubjectPublicKeyInfo is 294 bytes")
        let nonce = Self.random32()
        let digest = Self.random32()
        let document = try KeydConnection(path: keyd.socketPath).evidence(
            .native,
            nonce: nonce,
            userDataDigest: digest,
            asAdmin: false
        ).document
        let policy = TPMQuotePolicy(
            akTrust: AKTrust(allowedKeyDigests: [Array(SHA256.hash(data: der))]),
            eventLogCheck: .skip
        )
        let report = try TPMEvidenceValidator.validate(
            native: document,
            nonce: nonce,
            userDataDigest: digest,
            policy: policy,
            at: Date()
        )
        #expect(report.isValid, "\(report.failures)")
    }

    @Test func constellationDocumentCarriesTheGoTPMToolsFieldsAndBinding() throws {
        let tpm = try SoftwareTPM()
        let keyd = try Self.keyd(tpm)
        let connection = try KeydConnection(path: keyd.socketPath)
        let nonce = Self.random32()
        let userData = Self.random32()
        let document = try connection.evidence(
            .constellationQEMUVTPM,
            nonce: nonce,
            userDataDigest: userData,
            asAdmin: false
        ).document
        let object = try #require(try JSONSerialization.jsonObject(with: Data(document)) as? [String: Any])
        #expect(Set(object.keys) == ["Attestation", "InstanceInfo", "UserData"])
        #expect(object["InstanceInfo"] is NSNull)
        #expect(object["UserData"] as? String == Data(userData).base64EncodedString())
        let attestation = try #require(object["Attestation"] as? [String: Any])
        #expect(attestation["TeeAttestation"] is NSNull)
        let quote = try #require((attestation["quotes"] as? [[String: Any]])?.first)
        let pcrs = try #require(quote["pcrs"] as? [String: Any])
        #expect(pcrs["hash"] as? Int == 11 && (pcrs["pcrs"] as? [String: String])?.count == 24)
        let attest = try #require(Data(base64Encoded: quote["quote"] as? String ?? ""))
        #expect(Data(base64Encoded: attestation["ak_pub"] as? String ?? "") != nil)
        #expect(Data(base64Encoded: quote["raw_sig"] as? String ?? "") != nil)
        // extraData = SHA-256(SHA-256(userData || nonce)) with empty instance info.
        let extra = Array(SHA256.hash(data: Array(SHA256.hash(data: userData + nonce))))
        #expect(
            Array(attest).firstRange(of: [0x00, 0x20] + extra) != nil,
            "the quote does not carry Constellation's binding"
        )
        // trustd's evidence requests are not audited one by one (only counted).
        #expect(!keyd.auditLines.contains { $0.contains("\"evidence.issue\"") })
        #expect(try Self.tpmStatus(keyd)["evidenceIssued"] as? Int == 1)
    }

    @Test func attestationKeySurvivesARestartAndAPCRExtendChangesTheQuote() throws {
        let tpm = try SoftwareTPM()
        let first = try Self.keyd(tpm)
        let firstName = try #require(
            (try Self.tpmStatus(first)["attestationKey"] as? [String: Any])?["name"] as? String
        )
        let before = try #require(
            ((try Self.tpmStatus(first)["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["16"]
        )
        #expect(
            first.auditLines.contains { $0.contains("\"keyd.start\"") && $0.contains("\"tpm.ak.created\":\"true\"") }
        )
        first.stop()
        // While keyd is stopped, something extends PCR 16 (swtpm serves one client at a time).
        let extended = try tpm.tool("tpm2_pcrextend", ["16:sha256=" + String(repeating: "ab", count: 32)])
        try #require(extended.status == 0, "tpm2_pcrextend: \(extended.stderr)")
        let second = try Self.keyd(tpm)
        let status = try Self.tpmStatus(second)
        #expect(
            (status["attestationKey"] as? [String: Any])?["name"] as? String == firstName,
            "the AK changed across a restart"
        )
        #expect(second.auditLines.contains { $0.contains("\"tpm.ak.created\":\"false\"") })
        let after = ((status["pcrs"] as? [String: Any])?["sha256"] as? [String: String])?["16"]
        #expect(after != nil && after != before, "PCR 16 did not change")
    }

    @Test func sealedKEKUnsealsAfterARestartAndNotAfterAPCRChange() throws {
        let tpm = try SoftwareTPM()
        let keyd = try Self.keyd(tpm, ["tpm-pcrs = 0-7,16"])
        let secret = KnownSecret()
        try #require(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: secret.json).status == 0)
        #expect(try Self.tpmStatus(keyd)["sealedKEK"] as? String == "sealed")
        let sealedPath = keyd.stateDirectory + "/kek.sealed"
        let sealed = try Data(contentsOf: URL(fileURLWithPath: sealedPath))
        #expect(
            sealed.range(of: Data(secret.master)) == nil && sealed.range(of: Data(secret.salt)) == nil,
            "KEK in the clear at rest"
        )
        let mode = try FileManager.default.attributesOfItem(atPath: sealedPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let image = try KeydStateDiskTests.makeImage(in: keyd.directory)
        #expect(try keyd.keydctl(["disk", "format", "--device", image]).status == 0)
        #expect(try keyd.keydctl(["disk", "bind", "--device", image]).status == 0)

        // A restart unseals the KEK: keyd holds it without an import and the bound disk opens.
        keyd.waitForExit(afterSignal: SIGTERM)
        let restarted = try Self.keyd(tpm, ["tpm-pcrs = 0-7,16"], reusing: keyd.directory)
        let status = try restarted.keydctl(["status", "--json"])
        #expect(
            status.stdout.contains("\"phase\":\"holdingKEK\"") && status.stdout.contains("\"sealedKEK\":\"unsealed\""),
            "\(status.stdout)"
        )
        #expect(try restarted.keydctl(["disk", "open", "--device", image, "--name", "asterism-test"]).status == 0)
        #expect(restarted.auditLines.contains { $0.contains("\"kek.unseal\"") && $0.contains("\"granted\"") })

        // PCR 16 changes while keyd is stopped: the KEK no longer unseals and keyd says so.
        restarted.waitForExit(afterSignal: SIGTERM)
        try #require(try tpm.tool("tpm2_pcrextend", ["16:sha256=" + String(repeating: "cd", count: 32)]).status == 0)
        let refused = try Self.keyd(tpm, ["tpm-pcrs = 0-7,16"], reusing: keyd.directory)
        let after = try refused.keydctl(["status", "--json"])
        #expect(
            after.stdout.contains("\"phase\":\"awaitingKEK\"")
                && after.stdout.contains("\"sealedKEK\":\"unseal-failed\""),
            "\(after.stdout)"
        )
        #expect(
            refused.auditLines.contains {
                $0.contains("\"kek.unseal\"") && $0.contains("\"refused\"") && $0.contains("PCR policy")
            }
        )
        #expect(
            try refused.keydctl(["disk", "open", "--device", image, "--name", "asterism-test"]).stderr.contains(
                "wrongPhase"
            )
        )
        // The operator imports the KEK again; it is sealed to the new PCR values.
        #expect(try refused.keydctl(["kek", "import", "--file", "-"], stdin: secret.json).status == 0)
        #expect(try Self.tpmStatus(refused)["sealedKEK"] as? String == "sealed")
        // kek lock removes the KEK at rest too: a restart must not undo a lock.
        #expect(try refused.keydctl(["kek", "lock"]).status == 0)
        let lockedState = try Self.tpmStatus(refused)["sealedKEK"] as? String
        #expect(access(sealedPath, F_OK) != 0 && lockedState == "none")
        #expect(try refused.keydctl(["audit", "verify"]).status == 0)
    }

    @Test func tenThousandEvidenceRequestsLeaveNoTransientObjectOrSession() throws {
        let tpm = try SoftwareTPM()
        // Rates far above what swtpm serves, so that every request reaches the TPM.
        let rates = [
            "evidence-per-second = 100000", "evidence-burst = 100000", "evidence-per-second-per-connection = 100000",
            "evidence-burst-per-connection = 100000",
        ]
        let keyd = try Self.keyd(tpm, rates)
        let connection = try KeydConnection(path: keyd.socketPath)
        let nonce = Self.random32()
        for round in 0..<10_000 {
            let answer = try connection.evidence(.native, nonce: nonce, userDataDigest: Self.random32(), asAdmin: false)
            if round % 2500 == 0 { #expect(try NativeEvidenceDocument(decoding: answer.document).pcrs.count == 24) }
        }
        let status = try Self.tpmStatus(keyd)
        #expect(status["evidenceIssued"] as? Int == 10_000)
        #expect(status["transientObjects"] as? Int == 0 && status["loadedSessions"] as? Int == 0, "\(status)")
    }

    @Test func withoutATPMKeydStartsAndSaysSo() throws {
        // A TCTI with nothing behind it: keyd serves everything else and refuses TPM requests clearly.
        let keyd = try KeydHarness(configuration: ["tpm-tcti = swtpm:host=127.0.0.1,port=1"])
        let status = try keyd.keydctl(["status"])
        #expect(status.stdout.contains("UNAVAILABLE"), "\(status.stdout)")
        let report = try Self.tpmStatus(keyd)
        #expect(report["available"] as? Bool == false && (report["unavailableReason"] as? String)?.isEmpty == false)
        let refused = try keyd.keydctl([
            "tpm", "evidence", "--nonce", hex(Self.random32()), "--user-data-digest", hex(Self.random32()), "--out",
            keyd.directory + "/x",
        ])
        #expect(refused.status == 1 && refused.stderr.contains("tpmUnavailable"), "\(refused.stderr)")
        #expect(try keyd.keydctl(["kek", "import", "--file", "-"], stdin: KnownSecret().json).status == 0)
        #expect(try keyd.keydctl(["status", "--json"]).stdout.contains("\"sealedKEK\":\"not-sealed\""))
        #expect(access(keyd.stateDirectory + "/kek.sealed", F_OK) != 0)
        // libtss2's own error logging is silenced; keyd's log line says what failed.
        #expect(!keyd.log.contains("ERROR:tcti") && !keyd.log.contains("WARNING:"), "\(keyd.log)")
        #expect(keyd.log.contains("No TPM"))
    }
}
