import ATLS
import ATLSTransport
import AsterismProto
import AsterismTestSupport
import Attestation
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore
import Synchronization
import Testing

/// Answers GetAttestation with the request's nonce and, on a mutual server, the caller's attested key
/// hash as read from the peer registry (so the test sees what a handler sees).
struct IdentityEchoService: Verify_API.SimpleServiceProtocol {
    let peers: ATLSPeerRegistry

    func getAttestation(
        request: Verify_GetAttestationRequest,
        context: ServerContext
    ) async throws -> Verify_GetAttestationResponse {
        var response = Verify_GetAttestationResponse()
        response.attestation = request.nonce
        if let identity = peers.identity(forPeer: context.remotePeer) {
            response.bootPublicKey = Data(identity.keyHash)
        }
        return response
    }
}

@Suite("gRPC over aTLS")
struct GRPCTests {
    func run(mutual: Bool, _ body: @Sendable (ATLSServer, Int) async throws -> Void) async throws {
        let atls = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached),
                clientVerifier: mutual ? TestEvidence.verifier : nil
            ),
            threadPool: Loopback.pool
        )
        let transport = atls.grpcTransport(host: "127.0.0.1", port: 0)
        try await withGRPCServer(transport: transport, services: [IdentityEchoService(peers: atls.peers)]) { _ in
            let address = try #require(await transport.listeningAddress?.ipv4)
            try await body(atls, address.port)
        }
    }

    func client(mutual: Bool) -> ATLSClient {
        ATLSClient(
            configuration: .init(
                verifier: TestEvidence.verifier,
                issuer: mutual ? AttestedCertificateIssuer(evidence: TestEvidence.constellation, keyMode: .cached) : nil
            ),
            threadPool: Loopback.pool
        )
    }

    @Test("a unary RPC over one-way aTLS")
    func unaryOneWay() async throws {
        try await run(mutual: false) { _, port in
            let client = client(mutual: false)
            try await withGRPCClient(transport: client.grpcTransport(target: .ipv4(address: "127.0.0.1", port: port))) {
                grpc in
                let verify = Verify_API.Client(wrapping: grpc)
                var request = Verify_GetAttestationRequest()
                request.nonce = Data([1, 2, 3])
                let response = try await verify.getAttestation(request)
                #expect(response.attestation == Data([1, 2, 3]))
                #expect(response.bootPublicKey.isEmpty)
            }
        }
    }

    @Test("a unary RPC over mutual aTLS; the handler reads the client's attested identity")
    func unaryMutual() async throws {
        let observed = Observed<ATLSConnection>()
        try await run(mutual: true) { server, port in
            let issuer = AttestedCertificateIssuer(evidence: TestEvidence.constellation, keyMode: .cached)
            let client = ATLSClient(
                configuration: .init(verifier: TestEvidence.verifier, issuer: issuer),
                threadPool: Loopback.pool,
                onConnection: { observed.append($0) }
            )
            try await withGRPCClient(transport: client.grpcTransport(target: .ipv4(address: "127.0.0.1", port: port))) {
                grpc in
                let verify = Verify_API.Client(wrapping: grpc)
                for round in 0..<3 {
                    var request = Verify_GetAttestationRequest()
                    request.nonce = Data([UInt8(round)])
                    let response = try await verify.getAttestation(request)
                    #expect(response.attestation == Data([UInt8(round)]))
                    let serverSaw = Array(response.bootPublicKey)
                    #expect(serverSaw.count == 32)
                    #expect(observed.all.contains { $0.peer != nil })
                    #expect(try issuer.issue(nonce: .random()).keyHash == serverSaw)
                }
            }
            #expect(observed.all.count >= 1)
        }
    }

    @Test("a reconnect is a new handshake with a new nonce")
    func reconnectGetsFreshNonce() async throws {
        let observed = Observed<ATLSConnection>()
        let client = ATLSClient(
            configuration: .init(verifier: TestEvidence.verifier),
            threadPool: Loopback.pool,
            onConnection: { observed.append($0) }
        )
        let atls = ATLSServer(
            configuration: .init(issuer: AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached)),
            threadPool: Loopback.pool
        )
        // The server closes idle connections after 100 ms, so the client's next RPC must reconnect.
        var config = ATLSServerTransport.Config.defaults
        config.connection.maxIdleTime = .milliseconds(100)
        let transport = atls.grpcTransport(host: "127.0.0.1", port: 0, config: config)
        // The client's TCP connections, to wait for the server's idle close of them.
        let channels = Observed<any Channel>()
        var clientConfig = HTTP2ClientTransport.Posix.Config.defaults
        clientConfig.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
            channels.append(channel)
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        try await withGRPCServer(transport: transport, services: [IdentityEchoService(peers: atls.peers)]) { _ in
            let port = try #require(await transport.listeningAddress?.ipv4).port
            var options = CallOptions.defaults
            options.waitForReady = true
            options.timeout = .seconds(120)  // generous: the full suite starves the cooperative pool at times
            try await withGRPCClient(
                transport: client.grpcTransport(target: .ipv4(address: "127.0.0.1", port: port), config: clientConfig)
            ) { grpc in
                let verify = Verify_API.Client(wrapping: grpc)
                for _ in 0..<3 {
                    // Each RPC starts after the previous connection closed, so it waits for a new one. An RPC
                    // that still met a closing connection fails `unavailable` (gRPC does not retry it); it is
                    // retried after a short backoff, a bounded number of times: each attempt waits for a ready connection.
                    for attempt in 1... {
                        do {
                            _ = try await verify.getAttestation(Verify_GetAttestationRequest(), options: options)
                            break
                        } catch let error as RPCError where error.code == .unavailable && attempt < 20 {
                            // Under the full suite's load a reconnect can miss several times; back off a little
                            // (at most about 4 s in all) before the next attempt.
                            try await Task.sleep(for: .milliseconds(20 * attempt))
                            continue
                        }
                    }
                    // The server's idle timer closes every connection the client has open, the RPC's among them.
                    for channel in channels.all { try await channel.closeFuture.get() }
                }
            }
        }
        let verified = observed.all.filter { $0.peer != nil }
        #expect(verified.count >= 3, "the client did not reconnect for every RPC")
        #expect(Set(verified.compactMap(\.sentNonce)).count == verified.count, "a nonce was reused")
    }

    @Test("the aTLS server transport refuses a plaintext gRPC client")
    func plaintextRefused() async throws {
        try await run(mutual: false) { _, port in
            let transport = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: port),
                transportSecurity: .plaintext
            )
            try await withGRPCClient(transport: transport) { grpc in
                let verify = Verify_API.Client(wrapping: grpc)
                var options = CallOptions.defaults
                options.timeout = .seconds(5)
                await #expect(throws: RPCError.self) {
                    _ = try await verify.getAttestation(Verify_GetAttestationRequest(), options: options)
                }
            }
        }
    }

    @Test("a client that does not trust the server's AK gets no RPC through")
    func untrustedServer() async throws {
        try await run(mutual: false) { _, port in
            let other = SoftwareTPMEvidenceIssuer(format: .native)
            let client = ATLSClient(
                configuration: .init(
                    verifier: ATLSVerifier(validators: [
                        NativeTPMDocumentValidator(
                            policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [other.akDigest]))
                        )
                    ])
                ),
                threadPool: Loopback.pool
            )
            try await withGRPCClient(transport: client.grpcTransport(target: .ipv4(address: "127.0.0.1", port: port))) {
                grpc in
                var options = CallOptions.defaults
                options.timeout = .seconds(5)
                await #expect(throws: RPCError.self) {
                    _ = try await Verify_API.Client(wrapping: grpc).getAttestation(
                        Verify_GetAttestationRequest(),
                        options: options
                    )
                }
            }
        }
    }
}

/// What a client's hooks saw, in order: its aTLS connections (`onConnection`) or its channels.
final class Observed<Element: Sendable>: Sendable {
    private let elements = Mutex<[Element]>([])
    func append(_ element: Element) { elements.withLock { $0.append(element) } }
    var all: [Element] { elements.withLock { $0 } }
}
