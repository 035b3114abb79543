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

        init() async throws {
            node = try ReleaseNode()
            try node.formatStateDisk()
            facts = try node.tpmFacts()
            signedPolicy = try operatorKey.sign(
                try MeasurementPolicy(
                    version: 1,
                    measurements: facts.measurements(0...7),
                    allowedAKDigests: [facts.akDigest]
                )
            )
            let pki = try TestPKI()
            api = try await FakeAPIServer(bearerToken: "sa-token", pki: pki)
            var template = Array("/tmp/trustd-boot-XXXXXX".utf8CString)
            files = String(cString: mkdtemp(&template)!)
            try pki.caPEM.write(toFile: files + "/ca.crt", atomically: true, encoding: .utf8)
            try "sa-token".write(toFile: files + "/token", atomically: true, encoding: .utf8)
            let configuration = [
                "keyd-socket = \(node.keyd.socketPath)", "role = control-plane", "node-name = cp-1",
                "join-listen = 127.0.0.1:\(freeLoopbackPort())", "api-server-advertise = 10.0.0.1:6443",
                "kubernetes-ca-file = \(files)/ca.crt", "kubernetes-token-file = \(files)/token",
                "kubernetes-api-server = \(api.url)", "handshake-timeout-ms = 90000",
            ]
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

/// Lines a callback received.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }

    var text: String { lock.withLock { lines.joined() } }
}
