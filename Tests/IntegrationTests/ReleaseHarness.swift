import Attestation
import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

// What the sealed-release tests (SealedReleaseTests, MaliciousTrustdReleaseTests) share: a node (keyd on
// its own swtpm and state-disk image), the operator, the cluster's secrets derived independently of keyd,
// and the wire helpers a test trustd uses.

/// Sends `request` on `connection`, requires `ok` and decodes the payload with `read`; the raw answer
/// comes back too, so a test can search every answer it received for key bytes.
func ask<T>(
    _ connection: KeydConnection,
    _ request: Request,
    _ read: (inout WireReader) throws(ProtocolError) -> T
) throws -> (T, AnswerFrame) {
    let answer = try connection.call(request)
    return (try answer.decodePayload(request.kind, read), answer)
}

/// The operator: an Ed25519 key that signs measurement policies.
struct Operator {
    let signingKey = Curve25519.Signing.PrivateKey()

    /// The public key as keyd pins it.
    var key: OperatorKey { OperatorKey(signingKey.publicKey) }

    /// `policy` signed by this operator, in the wire form of `policy.set` and `init.accept`.
    func sign(_ policy: MeasurementPolicy) throws -> [UInt8] {
        let signature = try signingKey.signature(for: SignedPolicy.signedMessage(policy.json))
        return SignedPolicy(policy: policy.json, signature: Array(signature)).encoded
    }
}

/// The cluster's master secret, salt and measurement salt, with every value keyd derives from them
/// computed here with swift-crypto's HKDF, independently of KeydCore's derivation.
struct ClusterSecret {
    let master: [UInt8]
    let salt: [UInt8]
    let measurementSalt: [UInt8]

    /// Random secrets; `measurementSalt` nil derives it as keyd does for `kek.import` (which carries none).
    init(measurementSalt: [UInt8]? = Self.random(32)) {
        master = Self.random(32)
        salt = Self.random(32)
        self.measurementSalt = measurementSalt ?? Self.hkdf(master, salt: salt, info: "key-measurementSalt")
    }

    static func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

    static func hkdf(_ secret: [UInt8], salt: [UInt8], info: String, length: Int = 32) -> [UInt8] {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: secret),
            salt: salt,
            info: Array(info.utf8),
            outputByteCount: length
        )
        .withUnsafeBytes { Array($0) }
    }

    /// HKDF(master, salt, "key-" + uuid): the key the node's state disk opens with.
    func diskKey(uuid: String) -> [UInt8] { Self.hkdf(master, salt: salt, info: "key-" + uuid) }

    /// HKDF(master, salt, "key-measurementSecret").
    var measurementSecret: [UInt8] { Self.hkdf(master, salt: salt, info: "key-measurementSecret") }

    /// HKDF(measurementSecret, measurementSalt, "key-clusterID").
    var clusterID: [UInt8] { Self.hkdf(measurementSecret, salt: measurementSalt, info: "key-clusterID") }

    /// PCR 15 after one TPM2_PCR_Event of the cluster ID on a fresh boot: SHA-256(0^32 ‖ SHA-256(clusterID)).
    var markedPCR15: [UInt8] {
        Array(SHA256.hash(data: [UInt8](repeating: 0, count: 32) + Array(SHA256.hash(data: clusterID))))
    }

    /// The secrets no answer or audit record may hold: master, salt, measurement secret and the disk
    /// keys of `uuids`.
    func secrets(diskUUIDs uuids: [String] = []) -> [[UInt8]] {
        [master, salt, measurementSecret] + uuids.map(diskKey(uuid:))
    }

    /// The init envelope the operator seals to a keyd's boot key (`init.accept`), bound to the operator key
    /// and signed policy sent beside it.
    func initEnvelope(to bootPublicKey: [UInt8], operatorKey: [UInt8], signedPolicy: [UInt8]) throws -> [UInt8] {
        let kek = try KeyEncryptionKey(
            masterSecret: SecretBytes(copying: master),
            salt: SecretBytes(copying: salt),
            measurementSalt: measurementSalt
        )
        return try InitEnvelope.seal(kek, to: bootPublicKey, operatorKey: operatorKey, signedPolicy: signedPolicy)
    }

    /// `kek.import` through `admin` (the measurement salt is then derived, see `init(measurementSalt:)`).
    func importKEK(_ admin: KeydConnection) throws {
        try master.withUnsafeBytes { masterBytes in
            try salt.withUnsafeBytes { saltBytes in try admin.importKEK(masterSecret: masterBytes, salt: saltBytes) }
        }
    }
}

/// Where any secret of `secrets` (a 16-byte run from its start or its end, raw or as lowercase hex)
/// appears in `bytes`; nil when none does.
func leakedSecret(in bytes: [UInt8], _ secrets: [[UInt8]]) -> String? {
    let text = String(decoding: bytes, as: UTF8.self)
    for secret in secrets {
        for run in [Array(secret.prefix(16)), Array(secret.suffix(16))] {
            if contains(bytes, run) { return "raw bytes of a secret" }
            if text.contains(hex(run)) { return "hex of a secret" }
        }
    }
    return nil
}

private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
        if haystack[start..<start + needle.count].elementsEqual(needle) { return true }
    }
    return false
}

/// What an evidence document of a node's TPM says: its AK's digest and its PCR values.
struct TPMFacts {
    let akDigest: [UInt8]
    let pcrs: [Int: [UInt8]]

    /// Enforced measurements of `indices` as this TPM reports them.
    func measurements(_ indices: some Sequence<Int>) -> Measurements {
        Measurements(Dictionary(uniqueKeysWithValues: indices.map { ($0, Measurements.Expected(value: pcrs[$0]!)) }))
    }
}

/// A node: keyd with trustd mapped to this test's euid, on its own swtpm (unless `tpm` is false) and
/// with a sparse 32 MiB image as its configured state disk, which keyd may format.
final class ReleaseNode {
    let tpm: SoftwareTPM?
    /// The state-disk image.
    let image: String
    private let imageDirectory: String
    private let configuration: [String]
    /// The keyd process (replaced by ``restart()``).
    private(set) var keyd: KeydHarness

    init(tpm withTPM: Bool = true, extra: [String] = []) throws {
        tpm = withTPM ? try SoftwareTPM() : nil
        var template = Array("/tmp/keyd-disk-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HarnessError("mkdtemp: errno \(errno)") }
        imageDirectory = String(cString: made)
        image = try KeydStateDiskTests.makeImage(in: imageDirectory)
        let mapping =
            "asterism-it-" + String(imageDirectory.suffix(6)).lowercased().filter { $0.isLetter || $0.isNumber }
        configuration =
            (tpm.map { ["tpm-tcti = \($0.tcti)"] } ?? []) + [
                "trustd-uids = \(geteuid())", "disk-allow-initialize = true", "state-disk-device = \(image)",
                "state-disk-mapping = \(mapping)",
                // Join evidence takes TPM tokens; the tests ask for more than keyd's default bursts.
                "evidence-burst = 1000", "evidence-per-second = 1000", "evidence-burst-per-connection = 1000",
                "evidence-per-second-per-connection = 1000",
            ] + extra
        keyd = try KeydHarness(configuration: configuration)
    }

    deinit {
        keyd.stop()
        // stop() keeps the directory of a keyd that a test stopped itself.
        try? FileManager.default.removeItem(atPath: keyd.directory)
        try? FileManager.default.removeItem(atPath: imageDirectory)
    }

    /// A hello'd connection on the admin socket.
    func admin() throws -> KeydConnection { try keyd.admin() }

    /// A hello'd connection on the trustd socket, as trustd.
    func trustd() throws -> KeydConnection {
        let connection = try KeydConnection(path: keyd.socketPath)
        try #require(connection.hello.peerClass == .trustd)
        return connection
    }

    /// `disk.format` of the state-disk image from the admin (this boot then holds its first-boot key).
    func formatStateDisk() throws { try admin().formatDisk(device: image) }

    /// The state disk's LUKS2 UUID (from `disk.inspect`).
    func diskUUID() throws -> String {
        let report = try admin().inspectDisk(device: image).report
        let object = try JSONSerialization.jsonObject(with: Data(report)) as? [String: Any]
        return try #require(object?["uuid"] as? String, "no uuid in \(String(decoding: report, as: UTF8.self))")
    }

    /// Whether cryptsetup itself opens the state disk with `key` (a key file on standard input).
    func diskOpens(with key: [UInt8]) throws -> Bool {
        let result = try runCommand(
            "/usr/sbin/cryptsetup",
            ["open", "--test-passphrase", "--key-file", "-", image],
            stdin: Data(key)
        )
        return result.status == 0
    }

    /// The AK digest and PCRs of a `tpm.evidence` document of this node's TPM.
    func tpmFacts() throws -> TPMFacts {
        let document = try admin().evidence(
            .native,
            nonce: ClusterSecret.random(32),
            userDataDigest: ClusterSecret.random(32)
        ).document
        let parsed = try NativeTPMEvidenceDocument(bytes: document)
        return TPMFacts(akDigest: try TPMTPublic(bytes: parsed.akPublic).keyDigest(), pcrs: parsed.pcrs)
    }

    /// PCR `index` (SHA-256 bank) as keyd's `tpm.status` report gives it.
    func pcrFromKeyd(_ index: Int) throws -> [UInt8] {
        let report = try admin().tpmStatus().report
        let object = try JSONSerialization.jsonObject(with: Data(report)) as? [String: Any]
        let bank = (object?["pcrs"] as? [String: Any])?["sha256"] as? [String: Any]
        let value = try #require(bank?["\(index)"] as? String, "PCR \(index) not in the report")
        return try #require(bytes(fromHex: value))
    }

    /// PCR `index` read by tpm2_pcrread; swtpm serves one client at a time, so keyd must be stopped.
    func pcrFromTools(_ index: Int) throws -> [UInt8] {
        let tpm = try #require(tpm)
        let output = try tpm.run("tpm2_pcrread", ["sha256:\(index)"])
        let line = try #require(
            output.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("\(index):") },
            "tpm2_pcrread: \(output)"
        )
        let value = try #require(line.split(separator: "0x").last.map(String.init))
        return try #require(bytes(fromHex: value.trimmingCharacters(in: .whitespaces)))
    }

    /// Every audit record, read page by page with `audit.read`.
    func auditRecords() throws -> [String] {
        let admin = try admin()
        var records: [String] = []
        while true {
            let page = try admin.readAudit(firstRecord: UInt64(records.count), maxRecords: 512)
            records += page.records
            if page.records.isEmpty || UInt64(records.count) >= page.totalRecords { return records }
        }
    }

    /// Stops keyd (SIGTERM) and keeps its directory, the image and the TPM for ``start()``.
    func stopKeyd() { keyd.waitForExit(afterSignal: SIGTERM) }

    /// Starts keyd again in the same directory on the same TPM: a restart within the same boot.
    func start() throws { keyd = try KeydHarness(configuration: configuration, reusing: keyd.directory) }
}

/// One join as two trustds run it: challenge on the serving keyd, join evidence on the joining keyd,
/// release on the serving keyd, acceptance on the joining keyd; every answer kept.
struct Join {
    let challenge: ChallengeAnswer
    let evidence: JoinEvidenceAnswer
    let release: KeyReleaseAnswer
    let accepted: EnvelopeAcceptAnswer
    /// Every answer frame of the four requests.
    let answers: [AnswerFrame]

    init(_ joiner: ReleaseNode, through server: ReleaseNode, role: NodeRole, nodeName: String) throws {
        let serving = try server.trustd()
        let joining = try joiner.trustd()
        let (challenge, issued) = try ask(serving, .challengeIssue(.join), ChallengeAnswer.read)
        let certificateKeyHash = ClusterSecret.random(32)
        let (evidence, attested) = try ask(
            joining,
            .joinEvidenceIssue(
                JoinEvidenceRequest(
                    nonce: challenge.nonce,
                    certificateKeyHash: certificateKeyHash,
                    role: role,
                    nodeName: nodeName
                )
            ),
            JoinEvidenceAnswer.read
        )
        let (release, released) = try ask(
            serving,
            .keyRelease(
                KeyReleaseRequest(
                    challengeID: challenge.challengeID,
                    evidence: evidence.document,
                    certificateKeyHash: certificateKeyHash,
                    bootPublicKey: evidence.bootPublicKey,
                    diskUUID: evidence.diskUUID,
                    role: role,
                    nodeName: nodeName
                )
            ),
            KeyReleaseAnswer.read
        )
        let (accepted, accept) = try ask(
            joining,
            .envelopeAccept(.join, envelope: release.envelope),
            EnvelopeAcceptAnswer.read
        )
        self.challenge = challenge
        self.evidence = evidence
        self.release = release
        self.accepted = accepted
        answers = [issued, attested, released, accept]
    }

    /// All answer bytes, for the key-byte search.
    var answerBytes: [UInt8] { answers.flatMap(\.payload) }
}
