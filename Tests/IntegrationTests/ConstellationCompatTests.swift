import ATLS
import ATLSTransport
import AsterismTestSupport
import Crypto
import Foundation
import KeydClient
import Testing
import Trustd
import X509

/// trustd's Constellation compatibility mode, checked by an independent client: Python grpcio with
/// Constellation's schema (constellation_join.py) through an aTLS relay whose client certificate carries
/// the joining node keyd's Constellation (qemu-vtpm) evidence.
@Suite(
    .serialized,
    .needsSwtpm,
    .needsRoot,
    .enabled(
        if: ConstellationClient.available,
        "needs python3-grpcio, python3-protobuf and protoc (scripts/install-deps)"
    )
)
struct ConstellationCompatTests {
    @Test("compatibility on: Constellation's client gets the node's keys in plain, for join and rejoin")
    func compatibleJoinAndRejoin() async throws {
        let scene = try JoinScene(compatibility: true)
        let uuid = try scene.joiner.diskUUID()
        try await scene.withJoinService { port in
            let relay = try await ATLSRelay(client: ConstellationClient.atls(scene), targetPort: port)
            let csr = try ConstellationClient.csrHex()
            let joined = try await ConstellationClient.run(
                ["--call", "join", "--disk-uuid", uuid, "--csr-hex", csr],
                port: relay.port
            )
            #expect(joined["error"] == nil, "\(joined)")
            #expect(joined["state_disk_key"] == hex(scene.secret.diskKey(uuid: uuid)))
            #expect(joined["measurement_secret"] == hex(scene.secret.measurementSecret))
            #expect(joined["measurement_salt"] == hex(scene.secret.measurementSalt))
            #expect(joined["token"] == "abcdef.0123456789abcdef" && joined["api_server_endpoint"] == "10.0.0.1:6443")
            let rejoined = try await ConstellationClient.run(
                ["--call", "rejoin", "--disk-uuid", uuid],
                port: relay.port
            )
            #expect(rejoined["state_disk_key"] == hex(scene.secret.diskKey(uuid: uuid)), "\(rejoined)")
            try await relay.stop()
        }
        let records = try scene.server.auditRecords().filter { $0.contains("\"event\":\"compat.release\"") }
        #expect(records.count == 2 && records.allSatisfy { $0.contains("\"granted\"") }, "\(records)")
    }

    @Test("compatibility off: a Constellation document is refused at the aTLS handshake; no keys, no release")
    func compatibilityOff() async throws {
        let scene = try JoinScene()
        let uuid = try scene.joiner.diskUUID()
        try await scene.withJoinService { port in
            let relay = try await ATLSRelay(client: ConstellationClient.atls(scene), targetPort: port)
            let csr = try ConstellationClient.csrHex()
            let answer = try await ConstellationClient.run(
                ["--call", "join", "--disk-uuid", uuid, "--csr-hex", csr],
                port: relay.port
            )
            // The JoinService reads only Asterism documents from client certificates: the handshake
            // fails, the client sees the connection closed, and keyd is never asked.
            #expect(answer["code"] == "UNAVAILABLE", "\(answer)")
            #expect(answer["state_disk_key"] == nil)
            try await relay.stop()
        }
        #expect(try scene.server.auditRecords().filter { $0.contains("compat.release") }.isEmpty)
    }
}

/// The lowercase hex of `bytes`.
func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

/// Running constellation_join.py.
enum ConstellationClient {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("constellation_join.py").path
    /// Debian's Python, where python3-grpcio installs (not a user's own python3 on PATH).
    static let python = "/usr/bin/python3"

    static var available: Bool {
        (try? runCommand(python, ["-c", "import grpc, google.protobuf"]).status) == 0
            && (try? runCommand("/usr/bin/env", ["protoc", "--version"]).status) == 0
    }

    /// The relay's aTLS client: it checks the JoinService like the sealed client, and attests with the
    /// joining node keyd's Constellation-format evidence, as Constellation's bootstrapper does.
    static func atls(_ scene: JoinScene) -> ATLSClient {
        ATLSClient(
            configuration: .init(
                verifier: scene.serviceVerifier,
                issuer: AttestedCertificateIssuer(
                    evidence: KeydEvidenceIssuer(
                        socketPath: scene.joiner.keyd.socketPath,
                        format: .constellationQEMUVTPM
                    ),
                    keyMode: .freshPerCertificate
                )
            ),
            threadPool: scene.pool
        )
    }

    /// A kubelet CSR for worker-1, hex.
    static func csrHex() throws -> String {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        return hex(try TestCertificates.csr(try TestCertificates.kubeletSubject("worker-1"), key: key))
    }

    /// Runs the script against the relay on `port` off the cooperative pool; its JSON answer.
    static func run(_ arguments: [String], port: Int) async throws -> [String: String] {
        let result = try await onThread { try runCommand(python, [script, "--port", String(port)] + arguments) }
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: String] else {
            throw HarnessError("constellation_join.py: status \(result.status), \(result.stdout) \(result.stderr)")
        }
        return object
    }
}
