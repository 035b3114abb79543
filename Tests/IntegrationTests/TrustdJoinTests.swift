import ATLS
import ATLSTransport
import AsterismProto
import Attestation
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import KeydClient
import KeydCore
import KeydProtocol
import Logging
import NIOPosix
import Testing
import Trustd
import TrustdCore

@testable import FakeKubernetesAPI

/// Fixed join material (a control plane's Kubernetes API is a seam this machine cannot run; the
/// bootstrap-token client has its own tests against a fake API server).
struct FixedJoinMaterial: JoinMaterialSource {
    func material(nodeName: String, role: NodeRole) async throws -> JoinMaterial {
        JoinMaterial(
            apiServerEndpoint: "10.0.0.1:6443",
            token: "abcdef.0123456789abcdef",
            discoveryTokenCACertHash: "sha256:" + String(repeating: "ab", count: 32),
            certificateKey: role == .controlPlane ? String(repeating: "cd", count: 32) : "",
            kubernetesVersion: "v1.31.2"
        )
    }
}

/// A serving node (keyd on swtpm holding the cluster's KEK and the operator's policy) with trustd's
/// JoinService in process over real aTLS gRPC on loopback, and the joining side's pieces.
final class JoinScene {
    let secret = ClusterSecret(measurementSalt: nil)
    let operatorKey = Operator()
    let server: ReleaseNode
    let joiner: ReleaseNode
    /// The joining side's thread pool (evidence, certificate checks).
    let pool: NIOThreadPool
    /// The JoinService's own thread pool, as in its own process (challenges, client claims).
    let servicePool: NIOThreadPool
    let outputDirectory: String
    let serverAK: [UInt8]

    /// Whether the serving keyd and JoinService answer Constellation's binding (plain keys).
    let compatibility: Bool

    /// The serving keyd's challenge lifetime: longer than the 90 s handshake bound below, so a handshake the
    /// loaded full suite slows down cannot let the challenge expire before the row's own refusal is reached.
    static let challengeLifetimeSeconds = 300

    init(compatibility: Bool = false) throws {
        self.compatibility = compatibility
        server = try ReleaseNode(extra: compatibility ? ["constellation-compatibility = true"] : [])
        joiner = try ReleaseNode()
        try joiner.formatStateDisk()
        let facts = try joiner.tpmFacts()
        serverAK = try server.tpmFacts().akDigest
        let admin = try server.admin()
        _ = try admin.call(.operatorKeyPin(operatorKey: operatorKey.key.encoded))
        try secret.importKEK(admin)
        let policy = try MeasurementPolicy(
            version: 1,
            measurements: facts.measurements(0...7),
            allowedAKDigests: [facts.akDigest],
            evidenceVariants: compatibility ? [.asterismTPM, .qemuVTPM] : [.asterismTPM],
            challengeLifetimeSeconds: Self.challengeLifetimeSeconds
        )
        _ = try server.admin().call(.policySet(signedPolicy: try operatorKey.sign(policy)))
        pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        servicePool = NIOThreadPool(numberOfThreads: 4)
        servicePool.start()
        var template = Array("/tmp/trustd-join-XXXXXX".utf8CString)
        outputDirectory = String(cString: mkdtemp(&template)!)
    }

    deinit {
        try? pool.syncShutdownGracefully()
        try? servicePool.syncShutdownGracefully()
        try? FileManager.default.removeItem(atPath: outputDirectory)
    }

    /// The joining side's check of the JoinService: exactly the serving node's AK.
    var serviceVerifier: ATLSVerifier {
        ATLSVerifier(validators: [
            NativeTPMDocumentValidator(policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [serverAK])))
        ])
    }

    /// Runs `body` with the JoinService listening on a loopback port.
    func withJoinService(_ body: (Int) async throws -> Void) async throws {
        try await withJoinServiceAndServer { port, _ in try await body(port) }
    }

    /// Runs `body` with the JoinService listening on a loopback port, and its aTLS server.
    func withJoinServiceAndServer(_ body: (Int, ATLSServer) async throws -> Void) async throws {
        let socket = server.keyd.socketPath
        let atls = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(
                    evidence: KeydEvidenceIssuer(socketPath: socket, format: .native),
                    keyMode: .cached
                ),
                deferredClientCheck: ATLSDeferredClientCheck(
                    challenges: KeydChallengeSource(socketPath: socket),
                    variants: compatibility ? [.asterismTPM, .qemuVTPM] : [.asterismTPM]
                ),
                // The full suite runs hundreds of tests on two cores: a handshake (a quote on swtpm on
                // each side) can take longer than the production default of 10 s there.
                handshakeTimeout: .seconds(90)
            ),
            threadPool: servicePool
        )
        let gateway = KeydGateway(socketPath: socket, maxConnections: 4)
        let service = JoinService(
            keyd: gateway,
            peers: atls.peers,
            material: FixedJoinMaterial(),
            constellationCompatibility: compatibility,
            logger: Logger(label: "test.joinservice")
        )
        let transport = atls.grpcTransport(host: "127.0.0.1", port: 0)
        try await withGRPCServer(transport: transport, services: [service]) { _ in
            let port = try #require(await transport.listeningAddress?.ipv4).port
            try await body(port, atls)
        }
        await gateway.shutdown()
    }

    /// A join client of the joining node for `endpoints`.
    func client(
        _ endpoints: [HostPort],
        verifier: ATLSVerifier? = nil,
        maxAttempts: Int? = 3,
        deadline: Duration = .seconds(120),
        backoff: JoinBackoff = JoinBackoff(initialMilliseconds: 10, maximumMilliseconds: 50)
    ) -> JoinClient {
        JoinClient(
            configuration: .init(
                endpoints: endpoints,
                role: .worker,
                nodeName: "worker-1",
                serviceVerifier: verifier ?? serviceVerifier,
                callTimeout: .seconds(60),
                deadline: deadline,
                backoff: backoff,
                maxAttempts: maxAttempts,
                outputDirectory: outputDirectory
            ),
            keydSocketPath: joiner.keyd.socketPath,
            threadPool: pool,
            logger: Logger(label: "test.joinclient")
        )
    }

    /// The output directory's file names.
    var writtenFiles: [String] { (try? FileManager.default.contentsOfDirectory(atPath: outputDirectory)) ?? [] }
}

@Suite(.serialized, .needsSwtpm, .needsRoot) struct TrustdJoinTests {
    @Test("a node joins through trustd's JoinService, then rejoins after its keyd restarts")
    func joinAndRejoin() async throws {
        let scene = try JoinScene()
        try await scene.withJoinService { port in
            let endpoint = try HostPort.parse("127.0.0.1:\(port)", allowingNames: false).get()
            let outcome = try await scene.client([endpoint]).join()
            #expect(outcome.accepted.diskOpened)
            #expect(outcome.accepted.clusterID == scene.secret.clusterID)
            let uuid = try scene.joiner.diskUUID()
            // Checked independently of keyd: the disk opens with HKDF(master, salt, "key-" + uuid), and
            // tpm2_pcrread shows PCR 15 marked with the cluster ID.
            #expect(try scene.joiner.diskOpens(with: scene.secret.diskKey(uuid: uuid)))
            #expect(try scene.joiner.pcrFromTools(15) == scene.secret.markedPCR15)
            let material = try JoinFiles(directory: scene.outputDirectory).readMaterial()
            #expect(material.token == "abcdef.0123456789abcdef" && material.nodeName == "worker-1")
            #expect(material.certificateKey == nil && !material.controlPlane)
            var info = stat()
            #expect(stat(scene.outputDirectory + "/" + JoinFiles.joinMaterial, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600, "the token's file is private")

            // The joining keyd restarts (a new boot key, no disk key in memory): it rejoins.
            scene.joiner.stopKeyd()
            try scene.joiner.start()
            let rejoined = try await scene.client([endpoint]).rejoin()
            #expect(rejoined.accepted.diskOpened)
            #expect(rejoined.accepted.clusterID == scene.secret.clusterID)
            #expect(try scene.joiner.pcrFromTools(15) == scene.secret.markedPCR15, "PCR 15 is marked once")

            // No key byte in any audit record of either keyd.
            let secrets = scene.secret.secrets(diskUUIDs: [uuid])
            for node in [scene.server, scene.joiner] {
                #expect(leakedSecret(in: Array(try node.auditRecords().joined().utf8), secrets) == nil)
            }
        }
    }

    @Test("an impostor JoinService (an AK the node does not trust) gets nothing; no files are written")
    func impostorServiceIsRefused() async throws {
        let scene = try JoinScene()
        try await scene.withJoinService { port in
            let endpoint = try HostPort.parse("127.0.0.1:\(port)", allowingNames: false).get()
            let untrusting = ATLSVerifier(validators: [
                NativeTPMDocumentValidator(
                    policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [[UInt8](repeating: 7, count: 32)]))
                )
            ])
            await #expect(throws: JoinClientError.self) {
                try await scene.client([endpoint], verifier: untrusting, maxAttempts: 2).join()
            }
            #expect(scene.writtenFiles.isEmpty)
            // The node's disk stayed shut: nothing reached its keyd's envelope.accept.
            let accepts = try scene.joiner.auditRecords().filter { $0.contains("\"event\":\"envelope.accept\"") }
            #expect(accepts.isEmpty, "\(accepts)")
        }
    }

    @Test("a JoinService that is down: bounded attempts, a clear error, no files")
    func serviceDown() async throws {
        let scene = try JoinScene()
        // A port nobody listens on: bind one, note it, close it.
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(probe, $0, &length) }
        }
        close(probe)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let endpoint = try HostPort.parse("127.0.0.1:\(port)", allowingNames: false).get()
        do throws(JoinClientError) {
            _ = try await scene.client([endpoint], maxAttempts: 3).join()
            Issue.record("joined a service that is down")
        } catch {
            guard case .gaveUp(let attempts, let last) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(attempts == 3)
            #expect(last.contains("127.0.0.1:\(port)"), "\(last)")
        }
        #expect(scene.writtenFiles.isEmpty)
    }

    @Test(
        "1,000 connections that never finish the handshake: refused beyond the per-source cap; a good node still joins"
    )
    func neverFinishingHandshakes() async throws {
        let scene = try JoinScene()
        raiseOpenFileLimit()
        try await scene.withJoinServiceAndServer { port, atls in
            // 1,000 connections from 127.0.0.2 (another source on loopback) that send nothing.
            let hogs = try silentConnections(1_000, to: port)
            defer { for fd in hogs { close(fd) } }
            let endpoint = try HostPort.parse("127.0.0.1:\(port)", allowingNames: false).get()
            // While the service is still turning away the hogs beyond their share, a connection of the
            // good node can be refused too; it retries as a node would (a production backoff starts at
            // 250 ms), so the attempts span the seconds the service needs on a loaded machine.
            let client = scene.client(
                [endpoint],
                maxAttempts: 8,
                backoff: JoinBackoff(initialMilliseconds: 500, maximumMilliseconds: 4000)
            )
            let outcome = try await client.join()
            #expect(outcome.accepted.diskOpened)
            // The hogs (accepted before the good connection) hold the source's share and no more.
            let held = atls.handshakesInProgress
            #expect((1...64).contains(held), "\(held) handshakes in progress")
        }
    }
}

/// Join evidence from a keyd's trustd socket, with an attack's twist: `nonce` replaces the JoinService's
/// nonce when set, and `replay` returns the first document for every later handshake.
final class AttackEvidence: EvidenceIssuer, @unchecked Sendable {
    let socketPath: String
    let nonce: [UInt8]?
    let replay: Bool
    private let lock = NSLock()
    private var first: JoinEvidenceAnswer?
    /// What the last handshake bound.
    private(set) var last: JoinEvidenceAnswer?

    init(socketPath: String, nonce: [UInt8]? = nil, replay: Bool = false) {
        self.socketPath = socketPath
        self.nonce = nonce
        self.replay = replay
    }

    var variant: AttestationVariant { .asterismTPM }

    func issue(userData: [UInt8], nonce serviceNonce: [UInt8]) throws -> [UInt8] {
        if replay, let first = lock.withLock({ first }) {
            lock.withLock { last = first }
            return first.document
        }
        let connection = try KeydConnection(path: socketPath)
        defer { connection.close() }
        let answer = try connection.joinEvidence(
            JoinEvidenceRequest(
                nonce: nonce ?? serviceNonce,
                certificateKeyHash: userData,
                role: .worker,
                nodeName: "worker-1"
            )
        )
        lock.withLock {
            if first == nil { first = answer }
            last = answer
        }
        return answer.document
    }

    /// The last bound answer.
    func bound() throws -> JoinEvidenceAnswer {
        guard let last = lock.withLock({ last }) else { throw RPCError(code: .internalError, message: "none bound") }
        return last
    }
}

extension JoinScene {
    /// One `IssueJoinTicket` on a fresh aTLS connection with `evidence` (its certificate key kept across
    /// connections when `cachedKey`), the request's disk UUID replaced by `diskUUID` when set.
    func rawJoin(
        port: Int,
        evidence: AttackEvidence,
        cachedKey: AttestedCertificateIssuer? = nil,
        diskUUID: String? = nil
    ) async throws -> Join_IssueJoinTicketResponse {
        let client = ATLSClient(
            configuration: .init(
                verifier: serviceVerifier,
                issuer: cachedKey ?? AttestedCertificateIssuer(evidence: evidence, keyMode: .freshPerCertificate)
            ),
            threadPool: pool
        )
        var options = CallOptions.defaults
        options.timeout = .seconds(150)
        options.waitForReady = false
        return try await withGRPCClient(
            transport: try client.grpcTransport(target: .ipv4(address: "127.0.0.1", port: port))
        ) { grpc in
            try await grpc.attestedUnary(Join_API.Method.IssueJoinTicket.descriptor, options: options) {
                let bound = try evidence.bound()
                var request = Join_IssueJoinTicketRequest()
                request.diskUuid = diskUUID ?? bound.diskUUID
                request.bootPublicKey = Data(bound.bootPublicKey)
                request.evidenceBinding = .sealedV1
                request.nodeName = "worker-1"
                return request
            }
        }
    }
}

/// The JoinService under attack: every row is refused with a sanitized status, keyd's audit names the
/// reason, and a good node joins afterwards on the same service.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct JoinServiceAttackTests {
    /// Expects `attempt` to fail with `code` and a reason free of internal text.
    func expectRefused(
        _ code: RPCError.Code,
        _ row: String,
        _ attempt: () async throws -> Join_IssueJoinTicketResponse
    ) async {
        do {
            _ = try await attempt()
            Issue.record("\(row): a ticket was issued")
        } catch let error as RPCError {
            #expect(error.code == code, "\(row): \(error)")
            #expect(
                !error.message.contains("keyd") && error.message.count < 64,
                "\(row): unsanitized '\(error.message)'"
            )
        } catch {
            Issue.record("\(row): \(error)")
        }
    }

    @Test("untrusted AK, replayed evidence, evidence for another nonce, another node's disk UUID: all refused")
    func attacks() async throws {
        let scene = try JoinScene()
        let stranger = try ReleaseNode()
        try stranger.formatStateDisk()
        let otherUUID = try stranger.diskUUID()
        try await scene.withJoinService { port in
            let joinerSocket = scene.joiner.keyd.socketPath
            // A node whose AK the policy does not allow.
            await expectRefused(.permissionDenied, "untrusted AK") {
                try await scene.rawJoin(port: port, evidence: AttackEvidence(socketPath: stranger.keyd.socketPath))
            }
            // Evidence for a nonce of the attacker's choosing, not the service's challenge.
            await expectRefused(.permissionDenied, "another nonce") {
                try await scene.rawJoin(
                    port: port,
                    evidence: AttackEvidence(socketPath: joinerSocket, nonce: ClusterSecret.random(32))
                )
            }
            // Genuine evidence, but the ticket asks for another node's disk.
            await expectRefused(.permissionDenied, "another node's disk UUID") {
                try await scene.rawJoin(
                    port: port,
                    evidence: AttackEvidence(socketPath: joinerSocket),
                    diskUUID: otherUUID
                )
            }
            // A granted join's certificate key and evidence replayed on a new connection.
            let replaying = AttackEvidence(socketPath: joinerSocket, replay: true)
            let kept = AttestedCertificateIssuer(evidence: replaying, keyMode: .cached)
            let granted = try await scene.rawJoin(port: port, evidence: replaying, cachedKey: kept)
            #expect(!granted.sealedKeys.isEmpty)
            await expectRefused(.permissionDenied, "replayed evidence") {
                try await scene.rawJoin(port: port, evidence: replaying, cachedKey: kept)
            }

            // keyd's audit names each refusal.
            let refusals = try scene.server.auditRecords().filter {
                $0.contains("\"key.release\"") && $0.contains("\"evidenceRejected\"")
            }
            #expect(refusals.count == 4, "\(refusals)")
            #expect(refusals.filter { $0.contains("tpm.quote.qualifying-data") }.count == 3, "\(refusals)")

            // The service still serves a good node.
            let endpoint = try HostPort.parse("127.0.0.1:\(port)", allowingNames: false).get()
            let outcome = try await scene.client([endpoint]).join()
            #expect(outcome.accepted.diskOpened)
            #expect(try scene.joiner.diskOpens(with: scene.secret.diskKey(uuid: try scene.joiner.diskUUID())))
        }
    }
}

/// `count` TCP connections from 127.0.0.2 (another source address on loopback) to 127.0.0.1:`port`
/// that never send a byte.
func silentConnections(_ count: Int, to port: Int) throws -> [Int32] {
    var connections: [Int32] = []
    for _ in 0..<count {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr("127.0.0.2")
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_addr.s_addr = inet_addr("127.0.0.1")
        remote.sin_port = UInt16(port).bigEndian
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
        }
        guard bound == 0, connected == 0 else {
            let saved = errno
            close(fd)
            for open in connections { close(open) }
            throw HarnessError("connect from 127.0.0.2: errno \(saved)")
        }
        connections.append(fd)
    }
    return connections
}

extension JoinScene {
    /// Writes a policy that admits the JoinService's AK (no PCRs) beside the output directory; returns its path.
    func writeServicePolicy(named name: String) throws -> String {
        let path = outputDirectory + "/../" + name
        let policy = try MeasurementPolicy(version: 1, measurements: Measurements([:]), allowedAKDigests: [serverAK])
        try Data(policy.canonicalJSON).write(to: URL(fileURLWithPath: path))
        return path
    }
}

/// The trustd executable: a worker's trustd process joins through a JoinService, says READY=1 once
/// joined, stops cleanly on SIGTERM, and rejoins after its keyd and itself restart.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct TrustdProcessTests {
    @Test("a worker's trustd process installs a component, joins, runs kubeadm, stops on SIGTERM, and rejoins")
    func workerProcessJoinsAndRejoins() async throws {
        let scene = try JoinScene()
        let policyFile = try scene.writeServicePolicy(named: "join-service-policy-\(getpid()).json")
        defer { unlink(policyFile) }
        // The bootstrapper's pieces in the real process: a component installed before the join, and a
        // script standing in for kubeadm that keeps its arguments and what its config file held.
        let work = scene.outputDirectory + "-boot"
        try FileManager.default.createDirectory(atPath: work + "/src", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let tool = Array("#!/bin/sh\necho crictl\n".utf8)
        try Data(tool).write(to: URL(fileURLWithPath: work + "/src/crictl"))
        let toolHash = "sha256:" + SHA256.hash(data: tool).map { String(format: "%02x", $0) }.joined()
        try #"[{"url": "file://\#(work)/src/crictl", "hash": "\#(toolHash)", "installPath": "bin/crictl"}]"#
            .write(toFile: work + "/components.json", atomically: true, encoding: .utf8)
        try """
        #!/bin/sh
        echo "$*" >> \(work)/kubeadm-calls
        stat -c %a "$3" > \(work)/kubeadm-config-mode
        cp "$3" \(work)/kubeadm-config.yaml
        echo "[preflight] Running pre-flight checks"
        """.write(toFile: work + "/kubeadm", atomically: true, encoding: .utf8)
        chmod(work + "/kubeadm", 0o755)
        try await scene.withJoinService { port in
            let configuration = [
                "keyd-socket = \(scene.joiner.keyd.socketPath)", "role = worker", "node-name = worker-1",
                "join-endpoints = 127.0.0.1:\(port)", "join-service-policy-file = \(policyFile)",
                "output-directory = \(scene.outputDirectory)", "backoff-initial-ms = 10", "backoff-max-ms = 100",
                "join-deadline-seconds = 300", "call-timeout-ms = 60000",
                "kubernetes-components-file = \(work)/components.json", "components-install-root = \(work)/root",
                "kubeadm-path = \(work)/kubeadm",
            ]
            let first = try await onThread { try TrustdHarness(configuration: configuration) }
            let uuid = try scene.joiner.diskUUID()
            #expect(try scene.joiner.diskOpens(with: scene.secret.diskKey(uuid: uuid)))
            #expect(try scene.joiner.pcrFromTools(15) == scene.secret.markedPCR15)
            let material = try JoinFiles(directory: scene.outputDirectory).readMaterial()
            #expect(material.nodeName == "worker-1")
            #expect(first.log.contains("join complete"), "\(first.log)")
            // The component, then kubeadm join with a 0600 config carrying the ticket's material.
            #expect(try Data(contentsOf: URL(fileURLWithPath: work + "/root/bin/crictl")) == Data(tool))
            let configFile = scene.outputDirectory + "/kubeadm-join.yaml"
            #expect(
                try String(contentsOfFile: work + "/kubeadm-calls", encoding: .utf8) == "join --config \(configFile)\n"
            )
            #expect(try String(contentsOfFile: work + "/kubeadm-config-mode", encoding: .utf8) == "600\n")
            let yaml = try String(contentsOfFile: work + "/kubeadm-config.yaml", encoding: .utf8)
            #expect(yaml.contains(material.token) && yaml.contains(material.discoveryTokenCACertHash))
            #expect(!FileManager.default.fileExists(atPath: configFile), "the token's config file is removed")
            #expect(FileManager.default.fileExists(atPath: scene.outputDirectory + "/kubeadm-join.done"))
            let state = try String(contentsOfFile: scene.outputDirectory + "/node-setup.state", encoding: .utf8)
            #expect(state.contains("completed=kubeadm-done"), "\(state)")
            #expect(first.log.contains("kubeadm: [preflight] Running pre-flight checks"), "\(first.log)")
            #expect(!first.log.contains(String(material.token.dropFirst(7))), "the token's secret is never logged")
            let log = first.log
            let firstStatus = try await onThread { first.stop() }
            #expect(firstStatus == 0, "SIGTERM ends trustd cleanly: \(log)")

            // Reboot of the node's daemons: keyd forgets its disk key; trustd finds its join material and
            // rejoins; the component and kubeadm are done already.
            scene.joiner.stopKeyd()
            try scene.joiner.start()
            let second = try await onThread { try TrustdHarness(configuration: configuration) }
            #expect(second.log.contains("rejoin complete"), "\(second.log)")
            #expect(second.log.contains("Component already installed"), "\(second.log)")
            #expect(try scene.joiner.pcrFromTools(15) == scene.secret.markedPCR15)
            #expect(
                try String(contentsOfFile: work + "/kubeadm-calls", encoding: .utf8).split(separator: "\n").count == 1
            )
            let secondStatus = try await onThread { second.stop() }
            #expect(secondStatus == 0)
        }
    }

    @Test("kubeadm-handoff: trustd writes the 0600 join configuration that asterism-kubeadm-join.service runs as root")
    func kubeadmHandoffToItsUnit() async throws {
        let scene = try JoinScene()
        let policyFile = try scene.writeServicePolicy(named: "join-service-policy-handoff-\(getpid()).json")
        defer { unlink(policyFile) }
        let work = scene.outputDirectory + "-handoff"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try """
        #!/bin/sh
        echo "$*" >> \(work)/kubeadm-calls
        """.write(toFile: work + "/kubeadm", atomically: true, encoding: .utf8)
        chmod(work + "/kubeadm", 0o755)
        // The unit's own command lines, with the installed paths pointed at this test's.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let unit = try String(contentsOfFile: root + "/systemd/asterism-kubeadm-join.service", encoding: .utf8)
        let commands = unit.split(separator: "\n").filter { $0.hasPrefix("ExecStart") }.map {
            String($0.split(separator: "=", maxSplits: 1)[1])
                .replacingOccurrences(of: "/run/state/bin/kubeadm", with: work + "/kubeadm")
                .replacingOccurrences(of: "/var/lib/asterism-trustd/join", with: scene.outputDirectory)
        }
        #expect(commands.count == 3, "\(commands)")
        try await scene.withJoinService { port in
            let configuration = [
                "keyd-socket = \(scene.joiner.keyd.socketPath)", "role = worker", "node-name = worker-1",
                "join-endpoints = 127.0.0.1:\(port)", "join-service-policy-file = \(policyFile)",
                "output-directory = \(scene.outputDirectory)", "backoff-initial-ms = 10", "backoff-max-ms = 100",
                "join-deadline-seconds = 300", "call-timeout-ms = 60000", "kubeadm-handoff = true",
            ]
            let first = try await onThread { try TrustdHarness(configuration: configuration) }
            let configFile = scene.outputDirectory + "/kubeadm-join.yaml"
            let attributes = try FileManager.default.attributesOfItem(atPath: configFile)
            #expect(attributes[.posixPermissions] as? Int == 0o600)
            let material = try JoinFiles(directory: scene.outputDirectory).readMaterial()
            #expect(try String(contentsOfFile: configFile, encoding: .utf8).contains(material.token))
            #expect(first.log.contains("handed to asterism-kubeadm-join.service"), "\(first.log)")
            #expect(!FileManager.default.fileExists(atPath: work + "/kubeadm-calls"), "trustd ran no kubeadm")
            _ = try await onThread { first.stop() }

            // What the unit does, as root: kubeadm join, the marker, the token's file removed.
            for command in commands {
                let words = command.split(separator: " ").map(String.init)
                let result = try await runCommand(words[0], Array(words.dropFirst()))
                #expect(result.status == 0, "\(command): \(result.stderr)")
            }
            #expect(
                try String(contentsOfFile: work + "/kubeadm-calls", encoding: .utf8) == "join --config \(configFile)\n"
            )
            #expect(!FileManager.default.fileExists(atPath: configFile))

            // After a restart the marker ends the set-up: no configuration is written again.
            scene.joiner.stopKeyd()
            try scene.joiner.start()
            let second = try await onThread { try TrustdHarness(configuration: configuration) }
            #expect(second.log.contains("rejoin complete"), "\(second.log)")
            #expect(!FileManager.default.fileExists(atPath: configFile))
            _ = try await onThread { second.stop() }
        }
    }

    @Test("a configuration error stops trustd with status 2 and names the line")
    func badConfiguration() throws {
        var template = Array("/tmp/trustd-conf-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "role = worker\njoin-endpoints = 10.0.0.1\n".write(
            toFile: directory + "/c",
            atomically: true,
            encoding: .utf8
        )
        let result = try runCommand(BuiltProducts.trustd, ["--config", directory + "/c"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("line 2") && result.stderr.contains("join-endpoints"), "\(result.stderr)")
        // Join endpoints without a policy for the JoinService: refused at start, not trusted blindly.
        try "join-endpoints = 10.0.0.1:30090\noutput-directory = \(directory)\n".write(
            toFile: directory + "/d",
            atomically: true,
            encoding: .utf8
        )
        let unpinned = try runCommand(BuiltProducts.trustd, ["--config", directory + "/d"])
        #expect(unpinned.status == 2)
        #expect(unpinned.stderr.contains("join-service-policy-file"), "\(unpinned.stderr)")
        let checked = try runCommand(BuiltProducts.trustd, ["--config", directory + "/c", "--check-config"])
        #expect(checked.status == 2)
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, closed: another process could take it in between, which
/// a test then reports as a bind failure, not as a wrong result).
func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Two nodes, every daemon a real process: the control plane's keyd and trustd (JoinService, bootstrap
/// tokens on a fake kube-apiserver, the one seam this machine cannot run for real) and the worker's keyd
/// and trustd, which joins through it and rejoins after both its daemons restart.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct TwoNodeProcessTests {
    @Test("a worker joins through a control plane's trustd process and rejoins after a restart")
    func twoNodes() async throws {
        let scene = try JoinScene()
        let pki = try TestPKI()
        let bearer = "fake-sa-token-" + ClusterSecret.random(8).map { String($0, radix: 16) }.joined()
        let api = try await FakeAPIServer(bearerToken: bearer, pki: pki)
        let files = scene.outputDirectory + "-cp"
        try FileManager.default.createDirectory(atPath: files, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: files) }
        try pki.caPEM.write(toFile: files + "/ca.crt", atomically: true, encoding: .utf8)
        try bearer.write(toFile: files + "/token", atomically: true, encoding: .utf8)
        let policy = try MeasurementPolicy(
            version: 1,
            measurements: Measurements([:]),
            allowedAKDigests: [scene.serverAK]
        )
        try Data(policy.canonicalJSON).write(to: URL(fileURLWithPath: files + "/join-service-policy.json"))

        let joinPort = freeLoopbackPort()
        let serving = [
            "keyd-socket = \(scene.server.keyd.socketPath)", "role = control-plane", "node-name = cp-1",
            "join-listen = 127.0.0.1:\(joinPort)", "api-server-advertise = 10.0.0.1:6443",
            "kubernetes-ca-file = \(files)/ca.crt", "kubernetes-token-file = \(files)/token",
            "kubernetes-api-server = \(api.url)", "kubernetes-version = v1.31.2", "handshake-timeout-ms = 90000",
        ]
        let controlPlane = try await onThread { try TrustdHarness(configuration: serving) }
        let worker = [
            "keyd-socket = \(scene.joiner.keyd.socketPath)", "role = worker", "node-name = worker-1",
            "join-endpoints = 127.0.0.1:\(joinPort)", "join-service-policy-file = \(files)/join-service-policy.json",
            "output-directory = \(scene.outputDirectory)", "backoff-initial-ms = 10", "backoff-max-ms = 200",
            "join-deadline-seconds = 300", "call-timeout-ms = 60000",
        ]
        let first = try await onThread { try TrustdHarness(configuration: worker) }
        let uuid = try scene.joiner.diskUUID()
        #expect(try scene.joiner.diskOpens(with: scene.secret.diskKey(uuid: uuid)))
        #expect(try scene.joiner.pcrFromTools(15) == scene.secret.markedPCR15)
        // The token the worker got is a Secret on the API server, as kubeadm join will look it up.
        let material = try JoinFiles(directory: scene.outputDirectory).readMaterial()
        #expect(material.apiServerEndpoint == "10.0.0.1:6443" && material.kubernetesVersion == "v1.31.2")
        let id = String(material.token.prefix(6))
        let stored = try #require(api.secrets["bootstrap-token-\(id)"], "\(api.secrets.keys)")
        #expect(stored["token-secret"] == String(material.token.dropFirst(7)))
        #expect(!controlPlane.log.contains(material.token), "the token's secret is never logged")
        #expect(!first.log.contains(String(material.token.dropFirst(7))))
        _ = try await onThread { first.stop() }

        // The control plane's /metrics counts the ticket; its VerificationService answers the HTTP form.
        let scraped = try await onThread { try TrustdHarness.get(port: controlPlane.metricsPort, path: "/metrics") }
        #expect(scraped.status == 200)
        #expect(scraped.body.contains("trustd_join_tickets_total{outcome=\"issued\""), "\(scraped.body)")
        #expect(scraped.body.contains("trustd_release_seconds"))
        let nonce = Data(ClusterSecret.random(32)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        let attested = try await onThread {
            try TrustdHarness.get(port: controlPlane.verificationHTTPPort, path: "/?nonce=\(nonce)")
        }
        #expect(attested.status == 200 && attested.body.hasPrefix("{\"data\":\""), "\(attested)")

        // 1,000 connections that never finish a handshake: the control plane's trustd keeps its memory,
        // and the worker still rejoins through it while they are held.
        raiseOpenFileLimit()
        let memoryBefore = try #require(residentKiB(pid: controlPlane.pid))
        let hogs = try silentConnections(1_000, to: joinPort)
        defer { for fd in hogs { close(fd) } }

        scene.joiner.stopKeyd()
        try scene.joiner.start()
        let second = try await onThread { try TrustdHarness(configuration: worker) }
        let memoryAfter = try #require(residentKiB(pid: controlPlane.pid))
        #expect(memoryAfter <= memoryBefore + 16_384, "trustd grew from \(memoryBefore) KiB to \(memoryAfter) KiB")
        #expect(second.log.contains("rejoin complete"), "\(second.log)")
        #expect(try scene.joiner.pcrFromTools(15) == scene.secret.markedPCR15)
        let workerStatus = try await onThread { second.stop() }
        let controlPlaneLog = controlPlane.log
        let controlPlaneStatus = try await onThread { controlPlane.stop() }
        #expect(workerStatus == 0)
        #expect(controlPlaneStatus == 0, "\(controlPlaneLog)")
        try await api.stop()
    }
}
