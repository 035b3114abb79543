import ATLS
import ArgumentParser
import AsterismProto
import Attestation
import Crypto
import Foundation
import KeydCore
import NIOPosix
import Synchronization
import TrustdCore

/// The cluster's connection file (`asterism-cluster.json`): what later commands need to reach and check the
/// cluster. Public facts only: no key.
struct ClusterConnection: Codable, Equatable {
    /// The format's version (1).
    var format = 1
    /// The cluster ID (hex), what every node's PCR 15 is marked with.
    var clusterID: String
    /// Control planes' Init/Recover/policy-push endpoints, `host:port`.
    var endpoints: [String]
    /// Their VerificationService endpoints, `host:port`.
    var verificationEndpoints: [String]
    /// SHA-256 of the operator's public key (hex).
    var operatorKeyDigest: String
    /// The measurement policy in force (keyd's JSON): what every node, JoinService included, must meet.
    var policy: String

    /// The policy, parsed.
    func measurementPolicy() throws -> MeasurementPolicy {
        do throws(CoreError) {
            return try MeasurementPolicy(json: Array(policy.utf8))
        } catch {
            throw CLIInput.InputError(description: "the connection file's policy: \(error.message)")
        }
    }

    /// The cluster ID's bytes.
    func clusterIDBytes() throws -> [UInt8] {
        guard let bytes = bytes(fromHex: clusterID), bytes.count == 32 else {
            throw CLIInput.InputError(description: "the connection file's clusterID is not 32 bytes of hex")
        }
        return bytes
    }

    static func read(_ path: String) throws -> ClusterConnection {
        let bytes = try OperatorFiles.contents(of: path, what: "connection file", limit: 65_536)
        do {
            return try JSONDecoder().decode(ClusterConnection.self, from: Data(bytes))
        } catch {
            throw CLIInput.InputError(description: "\(path) is not an asterism connection file")
        }
    }

    /// The file's bytes: sorted keys, pretty-printed.
    var encoded: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(self)) ?? Data()) + [0x0A]
    }
}

/// The master-secret backup (`asterism-master-secret.json`, 0600): Constellation's `{"key", "salt"}` in
/// base64 and the measurement salt. Whoever holds it can recover, and decrypt, the whole cluster.
struct MasterSecretFile: Codable {
    var key: String
    var salt: String
    var measurementSalt: String

    /// Fresh random secrets: 32-byte master secret, salt and measurement salt.
    static func generate() -> MasterSecretFile {
        func random() -> String { SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() } }
        return MasterSecretFile(key: random(), salt: random(), measurementSalt: random())
    }

    static func read(_ path: String) throws -> MasterSecretFile {
        var bytes = try OperatorFiles.contents(of: path, what: "master secret", limit: 4096, ownerOnly: true)
        defer { for index in bytes.indices { bytes[index] = 0 } }
        guard let file = try? JSONDecoder().decode(MasterSecretFile.self, from: Data(bytes)) else {
            throw CLIInput.InputError(
                description: "\(path) is not {\"key\", \"salt\", \"measurementSalt\"} base64 JSON"
            )
        }
        return file
    }

    /// The KEK these secrets make; lengths checked by keyd's rules.
    func kek() throws -> KeyEncryptionKey {
        guard let master = Data(base64Encoded: key), let salt = Data(base64Encoded: salt),
            let measurementSalt = Data(base64Encoded: measurementSalt)
        else {
            throw CLIInput.InputError(description: "the master secret file's fields are not base64")
        }
        do throws(CoreError) {
            return try KeyEncryptionKey(
                masterSecret: SecretBytes(copying: master),
                salt: SecretBytes(copying: salt),
                measurementSalt: Array(measurementSalt)
            )
        } catch {
            throw CLIInput.InputError(description: "master secret file: \(error.message)")
        }
    }

    var encoded: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data()) + [0x0A]
    }
}

/// A hand-over ready to send, or the refusal to print.
enum Prepared {
    case ready(SealedHandOver)
    case refused(Asterism.Outcome)
}

/// What init and recover share: the operator's key and signed policy, the node's verified attestation, the
/// master secret sealed to its keyd.
struct SealedHandOver {
    let operatorKey: OperatorKey
    let signed: SignedPolicy
    let policy: MeasurementPolicy
    let attestation: NodeAttestation
    let envelope: [UInt8]

    /// Reads the key and signed policy (the key must have signed it), attests the node over
    /// `verification`, and seals `kek` to its keyd. A node the policy refuses is a refusal: nothing is sent.
    static func prepare(
        key path: String,
        signedPolicy policyPath: String,
        verification: HostPort,
        kek: borrowing KeyEncryptionKey,
        timeout: Duration
    ) throws -> Prepared {
        let signingKey = try OperatorFiles.signingKey(path)
        let operatorKey = OperatorKey(signingKey.publicKey)
        let signed = try PolicyInput.signed(policyPath)
        let policy: MeasurementPolicy
        do throws(CoreError) {
            policy = try signed.verified(by: operatorKey, above: nil)
        } catch {
            throw CLIInput.InputError(description: "\(policyPath): \(error.message)")
        }
        let attestation = try Blocking.run {
            try await NodeAttestationClient().fetch(verification, binding: .sealedV1, timeout: timeout)
        }
        let report = NodeAttestationClient().validate(attestation, against: policy)
        guard report.isValid else {
            return .refused(
                .refused(
                    ReportRendering.text(report),
                    reason: "\(verification): the node's evidence fails the policy; nothing was sent"
                )
            )
        }
        let envelope: [UInt8]
        do throws(CoreError) {
            envelope = try InitEnvelope.seal(
                kek,
                to: attestation.bootPublicKey,
                operatorKey: operatorKey.encoded,
                signedPolicy: signed.encoded
            )
        } catch {
            throw CLIInput.InputError(description: "sealing the master secret: \(error.message)")
        }
        return .ready(
            SealedHandOver(
                operatorKey: operatorKey,
                signed: signed,
                policy: policy,
                attestation: attestation,
                envelope: envelope
            )
        )
    }

    /// The client of the node's Init/Recover listener, which must show evidence the policy accepts.
    func client(_ endpoint: HostPort, timeout: Duration) -> BootstrapClient {
        BootstrapClient(
            host: endpoint.host,
            port: endpoint.port,
            verifier: ATLSVerifier(validators: [
                NativeTPMDocumentValidator(policy: policy.quotePolicy(expectedQualifyingData: []))
            ]),
            timeout: timeout
        )
    }
}

/// Options every lifecycle command takes to reach a node.
struct NodeOptions: ParsableArguments {
    @Option(name: .long, help: "The node's Init/Recover endpoint, HOST:PORT (trustd's bootstrap-listen).")
    var endpoint: String
    @Option(
        name: .customLong("verification-endpoint"),
        help: "The node's VerificationService, HOST:PORT (default: the endpoint's host, port 30081)."
    )
    var verificationEndpoint: String?
    @Option(name: .long, help: "Seconds one call may take, handshake included.") var timeout = 120

    func endpoints() throws -> (bootstrap: HostPort, verification: HostPort) {
        let bootstrap = try NodeAttestationClient.endpoint(parsing: endpoint)
        let verification =
            try verificationEndpoint.map { try NodeAttestationClient.endpoint(parsing: $0) }
            ?? NodeAttestationClient.endpoint(
                parsing: "\(bootstrap.kind == .ipv6 ? "[\(bootstrap.host)]" : bootstrap.host):30081"
            )
        return (bootstrap, verification)
    }

    func validate() throws {
        guard (1...3600).contains(timeout) else { throw ValidationError("--timeout must be 1…3600 seconds") }
    }
}

/// A thread pool for one command's aTLS work.
func withThreadPool<T>(_ body: (NIOThreadPool) throws -> T) rethrows -> T {
    let pool = NIOThreadPool(numberOfThreads: 2)
    pool.start()
    defer { try? pool.syncShutdownGracefully() }
    return try body(pool)
}

/// `asterism init`.
struct InitCommand: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Initialize a cluster on its first control plane.",
        discussion: """
            Verifies the node's attestation against the signed policy, generates the master secret (or takes it \
            from --master-secret), writes its backup, seals it to the node's keyd together with the operator key \
            and the policy, sends it, and writes the connection file once the node answers with the cluster ID \
            computed here. Nothing is sent to a node whose evidence fails the policy. Exit 0 initialized, 1 \
            refused (by the policy or the node), 2 usage, file or connection error.
            """
    )

    @OptionGroup var node: NodeOptions
    @Option(name: .long, help: "The operator's private key (asterism keygen).") var key: String
    @Option(name: .long, help: "The signed first policy (asterism policy sign).") var policy: String
    @Option(
        name: .customLong("master-secret"),
        help: "Take the master secret from this backup file instead of generating one."
    )
    var masterSecret: String?
    @Option(name: .customLong("out-dir"), help: "Where the connection and master-secret files go.") var outDirectory =
        "."
    @OptionGroup var output: OutputOptions

    func outcome() -> Asterism.Outcome {
        let connectionPath = outDirectory + "/asterism-cluster.json"
        let backupPath = outDirectory + "/asterism-master-secret.json"
        do {
            let (bootstrap, verification) = try node.endpoints()
            // Nothing is overwritten: both files must be new before anything is sent.
            for path in [connectionPath] + (masterSecret == nil ? [backupPath] : [])
            where FileManager.default.fileExists(atPath: path) {
                throw CLIInput.InputError(description: "\(path) exists; it is not overwritten")
            }
            let secrets = try masterSecret.map(MasterSecretFile.read) ?? MasterSecretFile.generate()
            let kek = try secrets.kek()
            let timeout = Duration.seconds(node.timeout)
            let handOver: SealedHandOver
            switch try SealedHandOver.prepare(
                key: key,
                signedPolicy: policy,
                verification: verification,
                kek: kek,
                timeout: timeout
            ) {
            case .refused(let refusal): return refusal
            case .ready(let prepared): handOver = prepared
            }
            // The backup exists before the secret leaves this machine.
            if masterSecret == nil { try OperatorFiles.create(backupPath, secrets.encoded, mode: 0o600) }
            var request = Init_InitRequest()
            request.sealedMasterSecret = Data(handOver.envelope)
            request.operatorPublicKey = Data(handOver.operatorKey.encoded)
            request.signedPolicy = Data(handOver.signed.encoded)
            request.measurementSalt = Data(kek.measurementSalt)
            let log = LogLines(json: output.json)
            let initRequest = request
            let success = try withThreadPool { pool in
                let client = handOver.client(bootstrap, timeout: timeout)
                return try Blocking.run { try await client.initialize(initRequest, threadPool: pool, onLog: log.print) }
            }
            let expected = kek.clusterID
            guard Array(success.clusterID) == expected else {
                return .refused(
                    log.text,
                    reason: "the node reports cluster ID \(hexString(success.clusterID)), not \(hexString(expected))"
                )
            }
            let connection = ClusterConnection(
                clusterID: hexString(expected),
                endpoints: ["\(bootstrap)"],
                verificationEndpoints: ["\(verification)"],
                operatorKeyDigest: hexString(handOver.operatorKey.digest),
                policy: String(decoding: handOver.policy.json, as: UTF8.self)
            )
            try OperatorFiles.create(connectionPath, connection.encoded, mode: 0o644)
            if !success.kubeconfig.isEmpty {
                try OperatorFiles.create(outDirectory + "/admin.conf", Array(success.kubeconfig), mode: 0o600)
            }
            if output.json {
                return .printed(
                    ReportRendering.json(
                        encoding: [
                            "clusterID": hexString(expected), "connectionFile": connectionPath,
                            "masterSecretFile": masterSecret ?? backupPath,
                        ]
                    )
                )
            }
            return .printed(
                log.text
                    + """
                    initialized: cluster ID \(hexString(expected)) (PCR 15 of \(bootstrap.host) marked with it)
                    connection file: \(connectionPath)
                    master secret: \(masterSecret ?? backupPath) (keep it offline: it recovers and decrypts the cluster)

                    """
            )
        } catch let error as BootstrapCallError where error.code == .failedPrecondition {
            return .refused("", reason: "the node refused: \(error.description)")
        } catch {
            return .failed(error)
        }
    }
}

/// `asterism recover`.
struct RecoverCommand: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Give a control plane that cannot reach another one the cluster's master secret.",
        discussion: """
            Verifies the node's attestation against the signed policy in force, seals the master secret from its \
            backup to the node's keyd (bound to the operator key and that policy) and sends it; keyd takes it only \
            with the operator key it pinned. Exit 0 recovered (the node's cluster ID is the backup's), 1 refused, \
            2 usage, file or connection error.
            """
    )

    @OptionGroup var node: NodeOptions
    @Option(name: .long, help: "The operator's private key.") var key: String
    @Option(name: .long, help: "The signed policy in force (or a newer one).") var policy: String
    @Option(name: .customLong("master-secret"), help: "The master-secret backup written by asterism init.")
    var masterSecret: String
    @OptionGroup var output: OutputOptions

    func outcome() -> Asterism.Outcome {
        do {
            let (bootstrap, verification) = try node.endpoints()
            let kek = try MasterSecretFile.read(masterSecret).kek()
            let timeout = Duration.seconds(node.timeout)
            let handOver: SealedHandOver
            switch try SealedHandOver.prepare(
                key: key,
                signedPolicy: policy,
                verification: verification,
                kek: kek,
                timeout: timeout
            ) {
            case .refused(let refusal): return refusal
            case .ready(let prepared): handOver = prepared
            }
            var request = Recoverproto_RecoverMessage()
            request.sealedMasterSecret = Data(handOver.envelope)
            request.operatorPublicKey = Data(handOver.operatorKey.encoded)
            request.signedPolicy = Data(handOver.signed.encoded)
            let recoverRequest = request
            let answer = try withThreadPool { pool in
                let client = handOver.client(bootstrap, timeout: timeout)
                return try Blocking.run { try await client.recover(recoverRequest, threadPool: pool) }
            }
            let expected = kek.clusterID
            guard Array(answer.clusterID) == expected else {
                return .refused(
                    "",
                    reason: "the node reports cluster ID \(hexString(answer.clusterID)), not the backup's"
                )
            }
            if output.json {
                return .printed(
                    ReportRendering.json(encoding: ["clusterID": hexString(expected), "recovered": "true"])
                )
            }
            return .printed(
                "recovered: \(bootstrap.host) holds the cluster key again (cluster ID \(hexString(expected)))\n"
            )
        } catch let error as BootstrapCallError
            where error.code == .failedPrecondition || error.code == .permissionDenied
        {
            return .refused("", reason: "the node refused: \(error.description)")
        } catch {
            return .failed(error)
        }
    }
}

/// `asterism verify`.
struct ClusterVerifyCommand: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify a running node: fresh evidence, the policy, and PCR 15's cluster ID.",
        discussion: """
            Asks the node's VerificationService for evidence over a fresh nonce and validates it fully against \
            the policy (AK, signature, every enforced PCR, event log, revocations), then checks that PCR 15 holds \
            the cluster's mark. Exit 0 verified, 1 refused (the report names which PCR or event), 2 usage or \
            connection error.
            """
    )

    @Option(name: .long, help: "The node's VerificationService, HOST:PORT.") var endpoint: String
    @Option(name: .long, help: "The connection file (asterism init): policy and cluster ID.") var cluster: String?
    @Option(name: .long, help: "A policy file (bare or signed) instead of the connection file's.") var policy: String?
    @Option(name: .customLong("cluster-id"), help: "The cluster ID (hex) instead of the connection file's.")
    var clusterID: String?
    @Option(name: .long, help: "Seconds to wait for the node.") var timeout = 30
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard cluster != nil || policy != nil else { throw ValidationError("give --cluster or --policy") }
    }

    func outcome() -> Asterism.Outcome {
        do {
            let connection = try cluster.map(ClusterConnection.read)
            let measurementPolicy: MeasurementPolicy
            if let policy {
                if let signed = try? PolicyInput.signed(policy) {
                    measurementPolicy = try MeasurementPolicy(json: signed.policy)
                } else {
                    measurementPolicy = try PolicyInput.policy(policy).policy
                }
            } else {
                measurementPolicy = try connection!.measurementPolicy()
            }
            let expectedID =
                try clusterID.map { try CLIInput.hex($0, "--cluster-id", count: 32) }
                ?? connection?.clusterIDBytes()
            let target = try NodeAttestationClient.endpoint(parsing: endpoint)
            let timeout = Duration.seconds(timeout)
            let attestation = try Blocking.run {
                try await NodeAttestationClient().fetch(target, binding: .sealedV1, timeout: timeout)
            }
            let base = NodeAttestationClient().validate(attestation, against: measurementPolicy)
            let report = AttestationReport(
                evidence: base.evidence,
                results: base.results + [Self.clusterMark(attestation, expected: expectedID)],
                notes: base.notes
            )
            let text = output.json ? ReportRendering.json(report) : ReportRendering.text(report)
            return report.isValid ? .printed(text) : .refused(text, reason: "\(endpoint): not verified")
        } catch {
            return .failed(error)
        }
    }

    /// PCR 15 against the mark of `expected` (`SHA-256(0^32 ‖ SHA-256(clusterID))`).
    static func clusterMark(_ attestation: NodeAttestation, expected: [UInt8]?) -> PolicyResult {
        let name = "cluster.pcr15"
        guard let expected else {
            return PolicyResult(policy: name, outcome: .notChecked, message: "no cluster ID given")
        }
        guard let actual = attestation.document.pcrs[15] else {
            return PolicyResult(policy: name, outcome: .failed, message: "the quote does not cover PCR 15")
        }
        let mark = KeyDerivation.markedClusterPCR(clusterID: expected)
        return actual == mark
            ? PolicyResult(
                policy: name,
                outcome: .passed,
                message: "PCR 15 holds cluster \(hexString(expected.prefix(8)))…"
            )
            : PolicyResult(
                policy: name,
                outcome: .failed,
                message: "PCR 15 is not this cluster's mark",
                values: [("expected", hexString(mark)), ("actual", hexString(actual))]
            )
    }
}

/// `asterism policy push`.
struct PolicyPush: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Hand a new signed policy to every control plane's keyd.",
        discussion: """
            Each control plane of the connection file (or --endpoint) must attest under the policy in force \
            before the new one is sent; its keyd takes it only when the pinned operator key signed it with a \
            higher version. The connection file is updated once every node took it. Exit 0 every node took it, \
            1 some node refused, 2 usage, file or connection error.
            """
    )

    @Option(name: .long, help: "The signed policy to push (asterism policy sign).") var signed: String
    @Option(name: .long, help: "The connection file (asterism init).") var cluster: String
    @Option(name: .long, help: "Control plane endpoints, HOST:PORT (default: the connection file's).")
    var endpoint: [String] = []
    @Option(name: .long, help: "Seconds one node may take.") var timeout = 60
    @OptionGroup var output: OutputOptions

    func outcome() -> Asterism.Outcome {
        do {
            var connection = try ClusterConnection.read(cluster)
            let current = try connection.measurementPolicy()
            let pushed = try PolicyInput.signed(signed)
            let next = try MeasurementPolicy(json: pushed.policy)
            let targets = try (endpoint.isEmpty ? connection.endpoints : endpoint).map {
                try NodeAttestationClient.endpoint(parsing: $0)
            }
            let timeout = Duration.seconds(timeout)
            var lines: [String] = []
            var refused: [String] = []
            try withThreadPool { pool in
                for target in targets {
                    let client = BootstrapClient(
                        host: target.host,
                        port: target.port,
                        verifier: ATLSVerifier(validators: [
                            NativeTPMDocumentValidator(policy: current.quotePolicy(expectedQualifyingData: []))
                        ]),
                        timeout: timeout
                    )
                    do {
                        let answer = try Blocking.run {
                            try await client.push(signedPolicy: pushed.encoded, threadPool: pool)
                        }
                        lines.append("\(target): policy version \(answer.version) in force")
                    } catch let error as BootstrapCallError where error.code != nil {
                        lines.append("\(target): REFUSED \(error.description)")
                        refused.append("\(target)")
                    }
                }
            }
            guard refused.isEmpty else {
                return .refused(
                    lines.joined(separator: "\n") + "\n",
                    reason: "refused by \(refused.joined(separator: ", "))"
                )
            }
            connection.policy = String(decoding: next.json, as: UTF8.self)
            try OperatorFiles.create(cluster, connection.encoded, mode: 0o644, replacing: true)
            return .printed(lines.joined(separator: "\n") + "\n")
        } catch {
            return .failed(error)
        }
    }
}

/// The node's streamed log lines: printed as they come (not in `--json` mode), and kept.
final class LogLines: Sendable {
    let json: Bool
    private let lines = Mutex<[String]>([])

    init(json: Bool) { self.json = json }

    var print: @Sendable (String) -> Void {
        { [self] line in
            let text = "node: " + line.trimmingCharacters(in: .newlines) + "\n"
            lines.withLock { $0.append(text) }
        }
    }

    var text: String { lines.withLock { $0.joined() } }
}
