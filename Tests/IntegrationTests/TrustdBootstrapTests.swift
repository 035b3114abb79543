import ATLS
import AsterismCLI
import AsterismProto
import Attestation
import Foundation
import GRPCCore
import KeydCore
import KeydProtocol
import NIOPosix
import Testing

@testable import FakeKubernetesAPI

/// Init and Recover served by a control plane's trustd process (real keyd, swtpm, state-disk image), driven
/// by the operator CLI's ``BootstrapClient`` over one-way aTLS.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct TrustdBootstrapTests {
    /// A control plane awaiting its init, its trustd, and what the operator holds.
    final class Scene: @unchecked Sendable {
        let node: ReleaseNode
        let secret = ClusterSecret()
        let operatorKey = Operator()
        let facts: TPMFacts
        let signedPolicy: [UInt8]
        let api: FakeAPIServer
        let files: String
        let trustd: TrustdHarness
        let pool = NIOThreadPool(numberOfThreads: 2)

        init(extra: (String) -> [String] = { _ in [] }) async throws {
            node = try ReleaseNode()
            try node.formatStateDisk()
            facts = try node.tpmFacts()
            signedPolicy = try operatorKey.sign(
                try MeasurementPolicy(
                    version: 1,
                    measurements: facts.measurements(0...7),
                    allowedAKDigests: [facts.akDigest],
                    // Outlives the 90 s handshake bound below, as in JoinScene.
                    challengeLifetimeSeconds: JoinScene.challengeLifetimeSeconds
                )
            )
            let pki = try TestPKI()
            api = try await FakeAPIServer(bearerToken: "sa-token", pki: pki)
            var template = Array("/tmp/trustd-boot-XXXXXX".utf8CString)
            files = String(cString: mkdtemp(&template)!)
            try pki.caPEM.write(toFile: files + "/ca.crt", atomically: true, encoding: .utf8)
            try "sa-token".write(toFile: files + "/token", atomically: true, encoding: .utf8)
            let configuration =
                [
                    "keyd-socket = \(node.keyd.socketPath)", "role = control-plane", "node-name = cp-1",
                    "join-listen = 127.0.0.1:\(freeLoopbackPort())", "api-server-advertise = 10.0.0.1:6443",
                    "kubernetes-ca-file = \(files)/ca.crt", "kubernetes-token-file = \(files)/token",
                    "kubernetes-api-server = \(api.url)", "handshake-timeout-ms = 90000",
                ] + extra(files)
            trustd = try await onThread { try TrustdHarness(configuration: configuration) }
            pool.start()
        }

        deinit {
            try? pool.syncShutdownGracefully()
            try? FileManager.default.removeItem(atPath: files)
        }

        /// The operator's client: the node must show exactly its own AK.
        var client: BootstrapClient {
            BootstrapClient(
                host: "127.0.0.1",
                port: trustd.bootstrapPort,
                verifier: ATLSVerifier(validators: [
                    NativeTPMDocumentValidator(
                        policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [facts.akDigest]))
                    )
                ])
            )
        }

        /// The init request the operator's CLI sends: the master secret sealed to keyd's boot key, bound to
        /// `operatorKey` and `signedPolicy` (by default the ones sent).
        func initRequest(
            operatorKey sentKey: [UInt8]? = nil,
            sealedFor sealedKey: [UInt8]? = nil
        ) throws -> Init_InitRequest {
            let key = sentKey ?? operatorKey.key.encoded
            let bootKey = try node.trustd().bootKey().publicKey
            var request = Init_InitRequest()
            request.sealedMasterSecret = Data(
                try secret.initEnvelope(to: bootKey, operatorKey: sealedKey ?? key, signedPolicy: signedPolicy)
            )
            request.operatorPublicKey = Data(key)
            request.signedPolicy = Data(signedPolicy)
            return request
        }
    }

    @Test("Init: refusals change nothing, the sealed init marks the cluster, a second init and a recover are refused")
    func initOnce() async throws {
        let scene = try await Scene()
        // Constellation's plain master secret is refused before keyd is asked.
        var plain = try scene.initRequest()
        plain.kmsUri = "kms://cluster-kms?key=AAAA&salt=AAAA"
        let refusedPlain = await #expect(throws: BootstrapCallError.self) {
            _ = try await scene.client.initialize(plain, threadPool: scene.pool)
        }
        #expect(refusedPlain?.code == .invalidArgument)
        // A relay that swaps in its own operator key: the envelope does not open.
        let attacker = Operator()
        let swapped = try scene.initRequest(
            operatorKey: attacker.key.encoded,
            sealedFor: scene.operatorKey.key.encoded
        )
        let refusedSwap = await #expect(throws: BootstrapCallError.self) {
            _ = try await scene.client.initialize(swapped, threadPool: scene.pool)
        }
        #expect(refusedSwap?.code == .permissionDenied || refusedSwap?.code == .invalidArgument)
        #expect(try scene.node.admin().status().phase == .awaitingKEK)

        let lines = LineCollector()
        let success = try await scene.client.initialize(
            try scene.initRequest(),
            threadPool: scene.pool,
            onLog: { lines.append($0) }
        )
        #expect(Array(success.clusterID) == scene.secret.clusterID)
        #expect(lines.text.contains("cluster ID"), "\(lines.text)")
        let status = try scene.node.admin().status()
        #expect(status.phase == .holdingKEK && status.operatorKeyPinned && status.policyVersion == 1)
        #expect(try scene.node.diskOpens(with: scene.secret.diskKey(uuid: scene.node.diskUUID())))
        #expect(try scene.node.pcrFromKeyd(15) == scene.secret.markedPCR15)

        let again = await #expect(throws: BootstrapCallError.self) {
            _ = try await scene.client.initialize(try scene.initRequest(), threadPool: scene.pool)
        }
        #expect(again?.code == .failedPrecondition)
        var recover = Recoverproto_RecoverMessage()
        let initRequest = try scene.initRequest()
        recover.sealedMasterSecret = initRequest.sealedMasterSecret
        recover.operatorPublicKey = initRequest.operatorPublicKey
        recover.signedPolicy = initRequest.signedPolicy
        let recovered = await #expect(throws: BootstrapCallError.self) {
            _ = try await scene.client.recover(recover, threadPool: scene.pool)
        }
        #expect(recovered?.code == .failedPrecondition)

        // Policy push: another key's policy is refused (and audited); the operator's next version is taken.
        let next = try MeasurementPolicy(
            version: 2,
            measurements: scene.facts.measurements(0...7),
            allowedAKDigests: [scene.facts.akDigest]
        )
        let forged = await #expect(throws: BootstrapCallError.self) {
            _ = try await scene.client.push(signedPolicy: try attacker.sign(next), threadPool: scene.pool)
        }
        #expect(forged?.code == .permissionDenied)
        #expect(try scene.node.admin().status().policyVersion == 1)
        let pushed = try await scene.client.push(signedPolicy: try scene.operatorKey.sign(next), threadPool: scene.pool)
        #expect(pushed.version == 2 && Array(pushed.digest) == next.digest)
        let replayed = await #expect(throws: BootstrapCallError.self) {
            _ = try await scene.client.push(signedPolicy: scene.signedPolicy, threadPool: scene.pool)
        }
        #expect(replayed?.code == .permissionDenied)
        // A refusal's record is written once keyd's loop commits it, just after the answer.
        var policyRecords: [String] = []
        for _ in 0..<50 {
            policyRecords = try scene.node.auditRecords().filter { $0.contains("\"event\":\"policy.set\"") }
            if policyRecords.count >= 3 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
            policyRecords.count == 3 && policyRecords.allSatisfy { $0.contains("\"class\":\"trustd\"") },
            "\(policyRecords)"
        )
        // No secret reached trustd's log; the refusals are there with their reasons.
        let log = scene.trustd.log
        #expect(leakedSecret(in: Array(log.utf8), scene.secret.secrets()) == nil)
        #expect(log.contains("keyd refused"), "\(log)")
        _ = try await onThread { scene.trustd.stop() }
        try await scene.api.stop()
    }
}

extension TrustdBootstrapTests {
    @Test("kubeadm-handoff: Init writes the 0600 kubeadm init configuration asterism-kubeadm-init.path starts on")
    func initHandsKubeadmToItsUnit() async throws {
        let scene = try await Scene { files in ["kubeadm-handoff = true", "output-directory = \(files)"] }
        let lines = LineCollector()
        let success = try await scene.client.initialize(
            try scene.initRequest(),
            threadPool: scene.pool,
            onLog: { lines.append($0) }
        )
        #expect(Array(success.clusterID) == scene.secret.clusterID && success.kubeconfig.isEmpty)
        #expect(lines.text.contains("handed to asterism-kubeadm-init.service"), "\(lines.text)")
        let file = scene.files + "/kubeadm-init.yaml"
        #expect(try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int == 0o600)
        let yaml = try String(contentsOfFile: file, encoding: .utf8)
        #expect(yaml.contains("kind: InitConfiguration") && yaml.contains("controlPlaneEndpoint: 10.0.0.1:6443"))
        _ = try await onThread { scene.trustd.stop() }
        try await scene.api.stop()
    }

    @Test("Init runs kubeadm init with a 0600 InitConfiguration and answers the admin kubeconfig it wrote")
    func initRunsKubeadm() async throws {
        // A stand-in for kubeadm (no Kubernetes runs here) that checks its contract and writes admin.conf.
        let scene = try await Scene { files in
            let script = """
                #!/bin/sh
                set -e
                [ "$1" = init ] && [ "$2" = --config ] || { echo "unexpected arguments: $*" >&2; exit 3; }
                [ "$(stat -c %a "$3")" = 600 ] || { echo "config not 0600" >&2; exit 4; }
                grep -q 'kind: InitConfiguration' "$3" && grep -q 'kind: ClusterConfiguration' "$3"
                grep -q 'controlPlaneEndpoint: 10.0.0.1:6443' "$3" && grep -q 'name: cp-1' "$3"
                echo "[init] Using Kubernetes version: v1.31.2"
                printf 'apiVersion: v1\\nkind: Config\\nclusters: []\\n' > \(files)/admin.conf
                """
            FileManager.default.createFile(
                atPath: files + "/kubeadm",
                contents: Data(script.utf8),
                attributes: [.posixPermissions: 0o755]
            )
            return [
                "kubeadm-path = \(files)/kubeadm", "kubeadm-admin-kubeconfig = \(files)/admin.conf",
                "output-directory = \(files)",
            ]
        }
        let lines = LineCollector()
        let success = try await scene.client.initialize(
            try scene.initRequest(),
            threadPool: scene.pool,
            onLog: { lines.append($0) }
        )
        #expect(Array(success.clusterID) == scene.secret.clusterID)
        #expect(String(decoding: success.kubeconfig, as: UTF8.self).contains("kind: Config"), "\(success)")
        #expect(lines.text.contains("kubeadm init completed"), "\(lines.text)")
        #expect(scene.trustd.log.contains("Using Kubernetes version"), "kubeadm's output reaches the node's log")
        _ = try await onThread { scene.trustd.stop() }
        try await scene.api.stop()
    }

    /// `asterism` run in process on a thread of its own (its network commands block their thread).
    static func asterism(_ arguments: [String]) async throws -> Asterism.Outcome {
        try await onThread { Asterism.execute(arguments) }
    }

    @Test(
        "asterism init: refused with nothing sent when the evidence fails; recover races a client that is no operator"
    )
    func cliInitAndRecoverRace() async throws {
        let scene = try await Scene()
        let files = scene.files
        let node = "127.0.0.1:\(scene.trustd.bootstrapPort)"
        let verification = "127.0.0.1:\(scene.trustd.verificationGRPCPort)"
        #expect(try await Self.asterism(["keygen", "--out", files + "/operator.pem"]).status == 0)
        // A policy whose PCR 0 is not the node's: init refuses, sends nothing and writes no file.
        var wrong = scene.facts.pcrs
        wrong[0] = [UInt8](repeating: 0xEE, count: 32)
        let wrongPCRs = TPMFacts(akDigest: scene.facts.akDigest, pcrs: wrong).measurements(0...7)
        for (name, policy) in [
            (
                "wrong",
                try MeasurementPolicy(version: 1, measurements: wrongPCRs, allowedAKDigests: [scene.facts.akDigest])
            ),
            (
                "right",
                try MeasurementPolicy(
                    version: 1,
                    measurements: scene.facts.measurements(0...7),
                    allowedAKDigests: [scene.facts.akDigest]
                )
            ),
        ] {
            try Data(policy.json).write(to: URL(fileURLWithPath: "\(files)/\(name).json"))
            let signed = try await Self.asterism([
                "policy", "sign", "--key", files + "/operator.pem", "--policy", "\(files)/\(name).json",
                "--out", "\(files)/\(name).signed",
            ])
            #expect(signed.status == 0, "\(signed)")
        }
        let out = files + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        let initArguments = [
            "init", "--endpoint", node, "--verification-endpoint", verification, "--key", files + "/operator.pem",
            "--out-dir", out,
        ]
        let refused = try await Self.asterism(initArguments + ["--policy", files + "/wrong.signed"])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.stdout.contains("pcr.0") || refused.stdout.contains("PCR 0"), "\(refused.stdout)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
        #expect(try scene.node.admin().status().phase == .awaitingKEK)

        let initialized = try await Self.asterism(initArguments + ["--policy", files + "/right.signed"])
        #expect(initialized.status == 0, "\(initialized)")
        let backup = out + "/asterism-master-secret.json"
        let mode = try FileManager.default.attributesOfItem(atPath: backup)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let connection =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: out + "/asterism-cluster.json"))
            ) as? [String: Any]
        let clusterID = try #require(connection?["clusterID"] as? String)
        #expect(
            try scene.node.pcrFromKeyd(15)
                == KeyDerivation.markedClusterPCR(clusterID: try #require(bytes(fromHex: clusterID)))
        )
        // A second init: the node refuses (exit 1), and no file is overwritten.
        let again = try await Self.asterism(initArguments + ["--policy", files + "/right.signed"])
        #expect(again.status == 2 && again.stderr.contains("exists"), "\(again)")
        let verified = try await Self.asterism([
            "verify", "--endpoint", verification, "--cluster", out + "/asterism-cluster.json",
        ])
        #expect(verified.status == 0 && verified.stdout.contains("cluster.pcr15"), "\(verified)")

        // The node loses its KEK (locked, keyd restarted: the sealed copy is evicted) and waits for recovery.
        try scene.node.admin().lockKEK()
        scene.node.stopKeyd()
        try scene.node.start()
        #expect(try scene.node.admin().status().phase == .awaitingKEK)
        // Someone who is not the operator races for the recovery slot with its own secret, key and policy:
        // keyd's pinned key refuses it, and nothing changes.
        let intruder = Operator()
        let intruderPolicy = try intruder.sign(
            try MeasurementPolicy(version: 5, measurements: scene.facts.measurements(0...7), insecureTrustAnyAK: true)
        )
        var race = Recoverproto_RecoverMessage()
        race.sealedMasterSecret = Data(
            try ClusterSecret().initEnvelope(
                to: try scene.node.trustd().bootKey().publicKey,
                operatorKey: intruder.key.encoded,
                signedPolicy: intruderPolicy
            )
        )
        race.operatorPublicKey = Data(intruder.key.encoded)
        race.signedPolicy = Data(intruderPolicy)
        let raced = await #expect(throws: BootstrapCallError.self) {
            _ = try await scene.client.recover(race, threadPool: scene.pool)
        }
        #expect(raced?.code == .permissionDenied)
        #expect(try scene.node.admin().status().phase == .awaitingKEK)
        let recovered = try await Self.asterism([
            "recover", "--endpoint", node, "--verification-endpoint", verification, "--key", files + "/operator.pem",
            "--policy", files + "/right.signed", "--master-secret", backup,
        ])
        #expect(recovered.status == 0, "\(recovered)")
        let status = try scene.node.admin().status()
        #expect(status.phase == .holdingKEK && status.policyVersion == 1)
        _ = try await onThread { scene.trustd.stop() }
        try await scene.api.stop()
    }
}

/// Lines a callback received.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }

    var text: String { lock.withLock { lines.joined() } }
}
