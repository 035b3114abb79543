import ATLS
import ATLSTransport
import AsterismProto
import AsterismTestSupport
import Attestation
import FoundationEssentials
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import KeydCore
import KeydProtocol
import NIOPosix
import Trustd

/// One joining node as the bench plays it: a software P-256 AK (one of the policy's allow-listed AKs,
/// shared by nodes whose index is equal modulo their count), its own boot key, state-disk UUID and
/// node name. It does what a joining node's keyd and trustd do on the wire, without the disk:
/// no `envelope.accept`.
final class BenchNode: Sendable {
    /// The AK that signs this node's quotes.
    let ak: SoftwareTPMEvidenceIssuer
    /// The boot key the envelopes are sealed to.
    let bootKey: BootKey
    let bootPublicKey: [UInt8]
    let diskUUID: DiskUUID
    let nodeName: KubernetesNodeName

    /// Node `index` (0…0xffff) signing with `ak`.
    init(index: Int, ak: SoftwareTPMEvidenceIssuer) throws(CoreError) {
        precondition((0...0xffff).contains(index), "node index \(index) outside 0...65535")
        self.ak = ak
        bootKey = BootKey()
        bootPublicKey = bootKey.publicKey
        let suffix = String(index, radix: 16)
        diskUUID = try DiskUUID(
            validating: "5e1ea5e0-0b0a-4988-8776-6554433" + String(repeating: "0", count: 5 - suffix.count) + suffix
        )
        nodeName = try KubernetesNodeName(validating: "worker-\(index)")
    }

    /// Why `envelope` is not this node's release, or nil when it opens with the boot key and binds
    /// this node's disk, name and role (worker) for a join.
    func problem(envelope: [UInt8]) -> String? {
        do {
            let opened = try KeyEnvelope.open(envelope, with: bootKey)
            let binding = opened.binding
            guard binding.diskUUID == diskUUID, binding.nodeName == nodeName, binding.role == .worker,
                binding.purpose == .join
            else { return "binds \(binding.nodeName), \(binding.diskUUID), \(binding.role), \(binding.purpose)" }
            guard !opened.keys.carriesKEK else { return "carries the KEK to a worker" }
            return nil
        } catch {
            return "does not open with \(nodeName)'s boot key: \(error.message)"
        }
    }
}

/// Join evidence exactly as keyd's `joinEvidence.issue` makes it, with the node's software AK: a quote
/// whose qualifying data is the join binding (PROTOCOL.md "Sealed key release") of the JoinService's
/// challenge nonce, the aTLS certificate key's hash, the node's boot key, disk UUID, role and name, and
/// whose user data is the certificate key's hash.
struct BenchJoinEvidenceIssuer: EvidenceIssuer {
    let node: BenchNode

    var variant: AttestationVariant { .asterismTPM }

    func issue(userData: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        let claims = try JoinClaims(
            nonce: nonce,
            certificateKeyHash: userData,
            bootPublicKey: node.bootPublicKey,
            diskUUID: node.diskUUID,
            role: .worker,
            nodeName: node.nodeName
        )
        return try node.ak.issueNative(qualifyingData: JoinBinding.qualifyingData(claims), userDataDigest: userData)
    }
}

/// What a joining node's trustd does for one ticket, as the join client does it: a fresh aTLS
/// connection (the JoinService's attestation verified, the node's join evidence bound to the
/// connection's challenge in the handshake), the ticket request written once the handshake is done,
/// the single answer read; the envelope is returned unopened.
struct TicketClient: Sendable {
    /// Verifies the JoinService's attested certificate.
    let serviceVerifier: ATLSVerifier
    /// The JoinService's loopback port.
    let port: Int
    /// Where the client certificates' evidence is made.
    let threadPool: NIOThreadPool
    let eventLoopGroup: MultiThreadedEventLoopGroup
    /// One attempt's limit (handshake and call).
    let timeout: Duration

    /// One `IssueJoinTicket` (or `IssueRejoinTicket`) for `node` on a new connection; the sealed keys.
    func ticket(_ node: BenchNode, rejoin: Bool) async throws -> [UInt8] {
        let client = ATLSClient(
            configuration: .init(
                verifier: serviceVerifier,
                issuer: AttestedCertificateIssuer(
                    evidence: BenchJoinEvidenceIssuer(node: node),
                    keyMode: .freshPerCertificate
                )
            ),
            threadPool: threadPool
        )
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.connection.maxIdleTime = nil
        config.backoff = .init(initial: timeout, max: timeout, multiplier: 1, jitter: 0)
        var options = CallOptions.defaults
        options.timeout = timeout
        options.waitForReady = false
        let transport = try client.grpcTransport(
            target: .ipv4(address: "127.0.0.1", port: port),
            config: config,
            eventLoopGroup: eventLoopGroup
        )
        return try await withGRPCClient(transport: transport) { grpc in
            if rejoin {
                let response: Join_IssueRejoinTicketResponse = try await grpc.attestedUnary(
                    Join_API.Method.IssueRejoinTicket.descriptor,
                    options: options
                ) {
                    var request = Join_IssueRejoinTicketRequest()
                    request.diskUuid = node.diskUUID.text
                    request.bootPublicKey = Data(node.bootPublicKey)
                    request.evidenceBinding = .sealedV1
                    request.nodeName = node.nodeName.text
                    return request
                }
                return Array(response.sealedKeys)
            }
            let response: Join_IssueJoinTicketResponse = try await grpc.attestedUnary(
                Join_API.Method.IssueJoinTicket.descriptor,
                options: options
            ) {
                var request = Join_IssueJoinTicketRequest()
                request.diskUuid = node.diskUUID.text
                request.bootPublicKey = Data(node.bootPublicKey)
                request.evidenceBinding = .sealedV1
                request.nodeName = node.nodeName.text
                return request
            }
            guard !response.token.isEmpty else { throw BenchFailure("a join ticket without join material") }
            return Array(response.sealedKeys)
        }
    }
}
