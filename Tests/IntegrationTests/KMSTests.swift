import ATLS
import ATLSTransport
import AsterismProto
import Attestation
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

/// The KMS for encrypted Kubernetes storage (issue 16): a control plane's `kms-listen` (KMSService
/// behind mutual aTLS with dataKey challenges) and a node's local socket (LocalKMSService), with real
/// keyds on swtpm. Data keys reach only attested nodes, sealed to their keyd, and leave it only on the
/// node's own 0600 socket.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct KMSTests {
    /// Runs `body` with the serving node's KMS listener on a loopback port.
    static func withKMS(_ scene: JoinScene, _ body: (Int) async throws -> Void) async throws {
        let socket = scene.server.keyd.socketPath
        let atls = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(
                    evidence: KeydEvidenceIssuer(socketPath: socket, format: .native),
                    keyMode: .cached
                ),
                deferredClientCheck: ATLSDeferredClientCheck(
                    challenges: KeydChallengeSource(socketPath: socket, purpose: .dataKey),
                    variants: [.asterismTPM]
                ),
                handshakeTimeout: .seconds(90)
            ),
            threadPool: scene.servicePool
        )
        let gateway = KeydGateway(socketPath: socket, maxConnections: 4)
        let service = KMSService(keyd: gateway, peers: atls.peers, logger: Logger(label: "test.kms"))
        let transport = atls.grpcTransport(host: "127.0.0.1", port: 0)
        try await withGRPCServer(transport: transport, services: [service]) { _ in
            let port = try #require(await transport.listeningAddress?.ipv4).port
            try await body(port)
        }
        await gateway.shutdown()
    }

    /// Runs `body` with `node`'s local KMS on a fresh 0600 Unix socket asking `port`, and a plaintext
    /// gRPC client of that socket (the KMS plugin's side).
    static func withLocalKMS(
        _ scene: JoinScene,
        node: ReleaseNode,
        role: NodeRole = .worker,
        nodeName: String = "worker-1",
        port: Int,
        _ body: (GRPCClient<HTTP2ClientTransport.Posix>, String) async throws -> Void
    ) async throws {
        let service = LocalKMSService(
            endpoints: [try HostPort.parse("127.0.0.1:\(port)", allowingNames: false).get()],
            keydSocketPath: node.keyd.socketPath,
            role: role,
            nodeName: nodeName,
            serviceVerifier: scene.serviceVerifier,
            callTimeout: .seconds(90),
            threadPool: scene.pool,
            logger: Logger(label: "test.kms-local")
        )
        let path = scene.outputDirectory + "/kms-\(nodeName).sock"
        let transport = HTTP2ServerTransport.Posix(
            listeningSocketDescriptor: Int(try LocalKMSSocket.listen(path: path)),
            transportSecurity: .plaintext
        )
        try await withGRPCServer(transport: transport, services: [service]) { _ in
            let client = try HTTP2ClientTransport.Posix(
                target: .unixDomainSocket(path: path),
                transportSecurity: .plaintext
            )
            try await withGRPCClient(transport: client) { grpc in try await body(grpc, path) }
        }
    }

    /// `GetDataKey` through `grpc`.
    static func dataKey(
        _ grpc: GRPCClient<HTTP2ClientTransport.Posix>,
        id: String,
        length: UInt32
    ) async throws
        -> [UInt8]
    {
        var options = CallOptions.defaults
        options.timeout = .seconds(180)
        let response = try await Kms_API.Client(wrapping: grpc).getDataKey(
            .with {
                $0.dataKeyID = id
                $0.length = length
            },
            options: options
        )
        #expect(response.sealedDataKey.isEmpty, "the local socket answers the opened key only")
        return Array(response.dataKey)
    }

    @Test("nodes get HKDF(master, salt, key-dek/<id>, length): equal for equal IDs, on every node; never a disk key")
    func dataKeys() async throws {
        let scene = try JoinScene()
        // The serving control plane asks its own KMS listener too: a second node whose AK the policy allows.
        try scene.server.formatStateDisk()
        let serverFacts = try scene.server.tpmFacts()
        let joinerFacts = try scene.joiner.tpmFacts()
        let policy = try MeasurementPolicy(
            version: 2,
            measurements: joinerFacts.measurements(0...7),
            allowedAKDigests: [joinerFacts.akDigest, serverFacts.akDigest],
            challengeLifetimeSeconds: JoinScene.challengeLifetimeSeconds
        )
        _ = try scene.server.admin().call(.policySet(signedPolicy: try scene.operatorKey.sign(policy)))
        func expected(_ id: String, _ length: Int) -> [UInt8] {
            ClusterSecret.hkdf(scene.secret.master, salt: scene.secret.salt, info: "key-dek/" + id, length: length)
        }
        try await Self.withKMS(scene) { port in
            var workerKeys: [String: [UInt8]] = [:]
            try await Self.withLocalKMS(scene, node: scene.joiner, port: port) { grpc, path in
                var info = stat()
                #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600, "the local socket is private")
                let first = try await Self.dataKey(grpc, id: "k8s-secrets", length: 32)
                let again = try await Self.dataKey(grpc, id: "k8s-secrets", length: 32)
                let other = try await Self.dataKey(grpc, id: "k8s-secrets-2", length: 32)
                let long = try await Self.dataKey(grpc, id: "volume.pvc-1_a", length: 64)
                #expect(first == again, "the same ID gives the same key")
                #expect(first != other, "another ID another key")
                #expect(first == expected("k8s-secrets", 32) && long == expected("volume.pvc-1_a", 64))
                workerKeys["k8s-secrets"] = first
                // The ID that is the measurement secret in Constellation's KMS is namespaced here.
                let collision = try await Self.dataKey(grpc, id: "measurementSecret", length: 32)
                #expect(collision != scene.secret.measurementSecret && collision == expected("measurementSecret", 32))
            }
            try await Self.withLocalKMS(scene, node: scene.server, role: .controlPlane, nodeName: "cp-0", port: port) {
                grpc,
                _ in
                let key = try await Self.dataKey(grpc, id: "k8s-secrets", length: 32)
                #expect(key == workerKeys["k8s-secrets"])
            }
        }
        // Every release was audited with its ID, and no key byte is in any record.
        let records = try scene.server.auditRecords()
        #expect(records.filter { $0.contains("\"dataKey.release\"") && $0.contains("\"granted\"") }.count == 6)
        let opened = try scene.joiner.auditRecords().filter { $0.contains("\"dataKey.open\"") }
        #expect(opened.count == 5 && opened.allSatisfy { $0.contains("\"granted\"") })
        let secrets =
            scene.secret.secrets(diskUUIDs: [try scene.joiner.diskUUID(), try scene.server.diskUUID()])
            + [expected("k8s-secrets", 32)]
        for node in [scene.server, scene.joiner] {
            #expect(leakedSecret(in: Array(try node.auditRecords().joined().utf8), secrets) == nil)
        }
    }

    @Test("the local socket refuses IDs and lengths out of bounds before anything leaves the node")
    func localRefusals() async throws {
        let scene = try JoinScene()
        try await Self.withKMS(scene) { port in
            try await Self.withLocalKMS(scene, node: scene.joiner, port: port) { grpc, _ in
                for (id, length, fragment) in [
                    ("../x", 32, "outside [A-Za-z0-9._-]"), ("", 32, "outside 1…128"),
                    (String(repeating: "a", count: 129), 32, "129 bytes"), (".x", 32, "starts with '.'"),
                    ("k", 15, "15 is outside 16…64"), ("k", 65, "65 is outside 16…64"),
                ] {
                    let error = await #expect(throws: RPCError.self, "\(id.prefix(8)) \(length)") {
                        _ = try await Self.dataKey(grpc, id: id, length: UInt32(length))
                    }
                    #expect(error?.code == .invalidArgument && error?.message.contains(fragment) == true)
                }
            }
        }
        #expect(try scene.server.auditRecords().filter { $0.contains("\"dataKey.release\"") }.isEmpty)
    }

    @Test("a client without attestation gets nothing: plaintext, or evidence bound to another nonce")
    func unattestedClients() async throws {
        let scene = try JoinScene()
        let joined = try scene.joiner.trustd().joinEvidence(
            JoinEvidenceRequest(
                nonce: ClusterSecret.random(32),
                certificateKeyHash: ClusterSecret.random(32),
                role: .worker,
                nodeName: "worker-1"
            )
        )
        try await Self.withKMS(scene) { port in
            var request = Kms_GetDataKeyRequest()
            request.dataKeyID = "k8s-secrets"
            request.length = 32
            request.bootPublicKey = Data(joined.bootPublicKey)
            request.diskUuid = joined.diskUUID
            request.nodeName = "worker-1"
            var options = CallOptions.defaults
            options.timeout = .seconds(30)
            // Plaintext gRPC: the aTLS listener carries no RPC without a handshake.
            let plain = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: port),
                transportSecurity: .plaintext
            )
            try await withGRPCClient(transport: plain) { grpc in
                await #expect(throws: RPCError.self) {
                    _ = try await Kms_API.Client(wrapping: grpc).getDataKey(request, options: options)
                }
            }
            // Genuine join evidence of the node, bound to a nonce of its choosing instead of the challenge's.
            let evidence = AttackEvidence(socketPath: scene.joiner.keyd.socketPath, nonce: ClusterSecret.random(32))
            let client = ATLSClient(
                configuration: .init(
                    verifier: scene.serviceVerifier,
                    issuer: AttestedCertificateIssuer(evidence: evidence, keyMode: .freshPerCertificate)
                ),
                threadPool: scene.pool
            )
            try await withGRPCClient(
                transport: try client.grpcTransport(target: .ipv4(address: "127.0.0.1", port: port))
            ) { grpc in
                let error = await #expect(throws: RPCError.self) {
                    _ = try await Kms_API.Client(wrapping: grpc).getDataKey(request, options: options)
                }
                #expect(error?.code == .permissionDenied && error?.message == "attestation refused")
            }
        }
        let records = try scene.server.auditRecords().filter { $0.contains("\"dataKey.release\"") }
        #expect(records.count == 1 && records[0].contains("\"evidenceRejected\""), "\(records)")
    }
}

extension KMSTests {
    @Test("trustd processes: a worker's kms-socket gets data keys from a control plane's kms-listen")
    func processes() async throws {
        let scene = try JoinScene()
        let files = scene.outputDirectory
        let policy = try MeasurementPolicy(
            version: 1,
            measurements: Measurements([:]),
            allowedAKDigests: [scene.serverAK]
        )
        try Data(policy.json).write(to: URL(fileURLWithPath: files + "/join-service-policy.json"))
        let kmsPort = freeLoopbackPort()
        let (serverSocket, joinerSocket) = (scene.server.keyd.socketPath, scene.joiner.keyd.socketPath)
        let controlPlane = try await onThread {
            try TrustdHarness(configuration: [
                "keyd-socket = \(serverSocket)", "role = control-plane", "node-name = cp-1",
                "join-listen = 127.0.0.1:\(freeLoopbackPort())", "kms-listen = 127.0.0.1:\(kmsPort)",
                "handshake-timeout-ms = 90000",
            ])
        }
        let socket = files + "/kms.sock"
        let worker = try await onThread {
            try TrustdHarness(configuration: [
                "keyd-socket = \(joinerSocket)", "role = worker", "node-name = worker-1",
                "kms-socket = \(socket)", "kms-endpoints = 127.0.0.1:\(kmsPort)",
                "join-service-policy-file = \(files)/join-service-policy.json", "call-timeout-ms = 90000",
            ])
        }
        var info = stat()
        #expect(lstat(socket, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let expected = ClusterSecret.hkdf(
            scene.secret.master,
            salt: scene.secret.salt,
            info: "key-dek/etcd-secrets",
            length: 32
        )
        let client = try HTTP2ClientTransport.Posix(
            target: .unixDomainSocket(path: socket),
            transportSecurity: .plaintext
        )
        try await withGRPCClient(transport: client) { grpc in
            let first = try await Self.dataKey(grpc, id: "etcd-secrets", length: 32)
            let again = try await Self.dataKey(grpc, id: "etcd-secrets", length: 32)
            #expect(first == expected && again == expected)
        }
        #expect(leakedSecret(in: Array((worker.log + controlPlane.log).utf8), [expected]) == nil)
        _ = try await onThread { worker.stop() }
        _ = try await onThread { controlPlane.stop() }
    }
}
