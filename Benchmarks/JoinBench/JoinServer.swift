import ATLS
import ATLSTransport
import AsterismTestSupport
import Attestation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KeydProtocol
import Logging
import NIOPosix
import Synchronization
import Trustd
import TrustdCore

/// Fixed join material (no Kubernetes API server on this machine; the bootstrap token's REST call is
/// not part of this figure).
struct FixedJoinMaterial: JoinMaterialSource {
    func material(nodeName: String, role: NodeRole) async throws -> JoinMaterial {
        JoinMaterial(
            apiServerEndpoint: "10.0.0.1:6443",
            token: "abcdef.0123456789abcdef",
            discoveryTokenCACertHash: "sha256:" + String(repeating: "ab", count: 32),
            kubernetesVersion: "v1.31.2"
        )
    }
}

/// Tickets the JoinService issued and refused (by reason), from its `observe` hook.
final class TicketTally: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    func observe(_ outcome: JoinTicketOutcome) { counts.withLock { $0[outcome.reason ?? "issued", default: 0] += 1 } }

    var snapshot: [String: Int] { counts.withLock { $0 } }
}

/// The serving node's trustd, in process: the JoinService (Trustd library) behind an aTLS gRPC server
/// on a loopback port, challenges from keyd's `challenge.issue` and releases through keyd's
/// `key.release` (KeydGateway). Its own attested certificate carries evidence from an in-process
/// software AK (`serverAK`): a fresh quote per connection, as keyd's `evidence.issue` would give on a TPM,
/// which keyd rate-limits to a few per second (PROTOCOL.md "Rate limits").
struct JoinServer {
    let keydSocket: String
    let serverAK: SoftwareTPMEvidenceIssuer
    let threadPool: NIOThreadPool
    let eventLoopGroup: MultiThreadedEventLoopGroup
    /// keyd's connections for `key.release`.
    let gateway: KeydGateway
    /// Unfinished handshakes one source may hold (every bench client connects from 127.0.0.1).
    let handshakesPerSource: Int
    let tally: TicketTally

    /// Runs `body` with the JoinService listening on the port it gets.
    func run<T: Sendable>(_ body: (Int) async throws -> T) async throws -> T {
        let atls = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(evidence: serverAK, keyMode: .cached),
                deferredClientCheck: ATLSDeferredClientCheck(
                    challenges: KeydChallengeSource(socketPath: keydSocket),
                    variants: [.asterismTPM]
                ),
                maxHandshakesPerSource: handshakesPerSource
            ),
            threadPool: threadPool
        )
        let tally = self.tally
        let service = JoinService(
            keyd: self.gateway,
            peers: atls.peers,
            material: FixedJoinMaterial(),
            // trustd's default release admission (16 in flight, 256 waiting); one source address for
            // every bench client, so its per-source bucket is opened wide.
            admission: AdmissionGate(
                name: "join",
                limits: AdmissionLimits(releasesOf: TrustdConfiguration()),
                sources: SourceBuckets(capacity: 16, ratePerSecond: 1_000_000, burst: 1_000_000),
                metrics: TrustdMetrics()
            ),
            logger: Logger(label: "join-bench.joinservice", factory: { _ in SwiftLogNoOpLogHandler() }),
            observe: { tally.observe($0) }
        )
        let transport = atls.grpcTransport(host: "127.0.0.1", port: 0, eventLoopGroup: eventLoopGroup)
        return try await withGRPCServer(transport: transport, services: [service]) { _ in
            guard let port = await transport.listeningAddress?.ipv4?.port else {
                throw BenchFailure("the JoinService has no IPv4 listening address")
            }
            return try await body(port)
        }
    }
}
