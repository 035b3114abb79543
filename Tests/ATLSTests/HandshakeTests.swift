import ATLS
import ATLSTransport
import AsterismTestSupport
import Attestation
import Foundation
import NIOCore
import NIOSSL
import Synchronization
import Testing

/// Real handshakes over loopback between ATLSServer and ATLSClient, over TLS 1.3 and with TLS 1.2 forced.
@Suite("aTLS handshakes over loopback")
struct HandshakeTests {
    static let versions: [TLSVersion] = [.tlsv13, .tlsv12]

    func settings(_ version: TLSVersion) -> ATLSTLSSettings {
        var settings = ATLSTLSSettings()
        settings.maximumTLSVersion = version
        return settings
    }

    func server(
        _ evidence: any EvidenceIssuer = TestEvidence.native,
        mutual: Bool = false,
        keyMode: AttestedCertificateIssuer.KeyMode = .cached,
        now: @escaping @Sendable () -> Date = { Date() }
    ) -> ATLSServer {
        ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(evidence: evidence, keyMode: keyMode),
                clientVerifier: mutual ? TestEvidence.verifier : nil
            ),
            threadPool: Loopback.pool,
            now: now
        )
    }

    func client(_ version: TLSVersion, issuer: (any EvidenceIssuer)? = nil) -> ATLSClient {
        ATLSClient(
            configuration: .init(
                verifier: TestEvidence.verifier,
                issuer: issuer.map { AttestedCertificateIssuer(evidence: $0, keyMode: .freshPerCertificate) },
                tls: settings(version)
            ),
            threadPool: Loopback.pool
        )
    }

    @Test("one-way aTLS: the client proves the server's evidence, key and nonce", arguments: versions)
    func oneWay(version: TLSVersion) async throws {
        let server = try await Loopback.serve(server(keyMode: .freshPerCertificate))
        defer { Task { await server.close() } }
        let outcome = try await Loopback.connect(port: server.port, client(version))
        #expect(
            outcome.echoed,
            "\(String(describing: outcome.error)) \(String(describing: outcome.connection?.failure))"
        )
        #expect(outcome.version == version)
        #expect(outcome.alpn == "h2")
        let peer = try #require(outcome.connection?.peer)
        #expect(peer.variant == .asterismTPM)
        #expect(peer.evidence.report.isValid)
        #expect(server.lastConnection?.failure == nil)
        // Handlers behind the aTLS handlers see the handshake complete (the deadline handler passes it on).
        #expect(server.completed.withLock { $0 } == 1)
    }

    @Test("each connection sends a fresh nonce", arguments: versions)
    func freshNonces(version: TLSVersion) async throws {
        let server = try await Loopback.serve(server())
        defer { Task { await server.close() } }
        let first = try await Loopback.connect(port: server.port, client(version))
        let second = try await Loopback.connect(port: server.port, client(version))
        #expect(first.echoed && second.echoed)
        #expect(first.connection?.sentNonce != nil && first.connection?.sentNonce != second.connection?.sentNonce)
    }

    @Test(
        "the client refuses a wrong nonce, another key, another OID, an expired and a future certificate",
        arguments: versions
    )
    func clientRefusals(version: TLSVersion) async throws {
        let cases: [(String, ATLSServer, (ATLSError) -> Bool)] = [
            (
                "wrong nonce", server(WrongNonceIssuer(inner: TestEvidence.native)),
                { if case .evidenceRefused = $0 { true } else { false } }
            ),
            (
                "another key", server(OtherKeyIssuer(inner: TestEvidence.native)),
                { if case .userDataMismatch = $0 { true } else { false } }
            ),
            (
                "another OID", server(OtherOIDIssuer(inner: TestEvidence.native)),
                { if case .noAttestation = $0 { true } else { false } }
            ),
            ("expired", server(now: { Date() - 3 * 3600 }), { if case .expired = $0 { true } else { false } }),
            (
                "not yet valid", server(now: { Date() + 3 * 3600 }),
                { if case .notYetValid = $0 { true } else { false } }
            ),
        ]
        for (name, atls, expected) in cases {
            let server = try await Loopback.serve(atls)
            let outcome = try await Loopback.connect(port: server.port, client(version))
            await server.close()
            #expect(!outcome.echoed, "\(name) was accepted")
            let failure = try #require(outcome.connection?.failure, "\(name): no failure recorded")
            #expect(expected(failure), "\(name): \(failure)")
        }
    }

    @Test("the client refuses a plain certificate without attestation", arguments: versions)
    func plainCertificate(version: TLSVersion) async throws {
        let server = try await Loopback.serve(plain: plainServerConfiguration())
        defer { Task { await server.close() } }
        let outcome = try await Loopback.connect(port: server.port, client(version))
        #expect(!outcome.echoed)
        #expect(outcome.connection?.failure == .noAttestation(extensionOIDs: []))
    }

    @Test("the server refuses a ClientHello without a nonce in its SNI and names why locally")
    func serverRefusesBadSNI() async throws {
        let server = try await Loopback.serve(server())
        defer { Task { await server.close() } }
        for name in ["example.com", nil] as [String?] {
            let outcome = try await Loopback.connect(port: server.port) { channel in
                var configuration = TLSConfiguration.makeClientConfiguration()
                configuration.certificateVerification = .none
                let handler = try NIOSSLClientHandler(
                    context: NIOSSLContext(configuration: configuration),
                    serverHostname: name
                )
                try channel.pipeline.syncOperations.addHandler(handler)
            }
            #expect(!outcome.echoed)
            guard case .invalidNonce? = server.lastConnection?.failure else {
                Issue.record(
                    "server failure for SNI \(String(describing: name)): \(String(describing: server.lastConnection?.failure))"
                )
                continue
            }
        }
    }

    @Test("a failing evidence issuer refuses the handshake; its internal text stays in the server's record")
    func failingIssuer() async throws {
        let server = try await Loopback.serve(server(FailingIssuer()))
        defer { Task { await server.close() } }
        let outcome = try await Loopback.connect(port: server.port, client(.tlsv13))
        #expect(!outcome.echoed)
        #expect(outcome.connection?.peer == nil)
        #expect(!String(describing: outcome.error).contains("internal detail"))
        guard case .issuingFailed(let detail)? = server.lastConnection?.failure else {
            Issue.record("no issuing failure recorded")
            return
        }
        #expect(detail.contains("tpm unavailable"))
    }

    @Test(
        "mutual aTLS: both sides prove their evidence; the server keeps the client's identity while connected",
        arguments: versions
    )
    func mutual(version: TLSVersion) async throws {
        let atls = server(mutual: true)
        let server = try await Loopback.serve(atls)
        defer { Task { await server.close() } }
        let outcome = try await Loopback.connect(port: server.port, client(version, issuer: TestEvidence.constellation))
        #expect(
            outcome.echoed,
            "\(String(describing: outcome.error)) server: \(String(describing: server.lastConnection?.failure))"
        )
        #expect(outcome.connection?.peer?.serverNonce == server.lastConnection?.sentNonce)
        let clientIdentity = try #require(server.lastConnection?.peer)
        #expect(clientIdentity.variant == .qemuVTPM)
        // The registry forgets a connection once it closes (the gRPC test reads it while open): the
        // client has closed its side; the server's channel closes on that, and its close callbacks
        // (the registry's was added first) have run when the close future completes here.
        try await #require(server.lastChannel).closeFuture.get()
        #expect(atls.peers.count == 0)
    }

    @Test("mutual aTLS refuses a client without a certificate", arguments: versions)
    func mutualWithoutClientCertificate(version: TLSVersion) async throws {
        let atls = server(mutual: true)
        let server = try await Loopback.serve(atls)
        defer { Task { await server.close() } }
        let outcome = try await Loopback.connect(port: server.port, client(version))
        #expect(!outcome.echoed)
        #expect(server.lastConnection?.peer == nil)
    }

    @Test("mutual aTLS refuses a client certificate made for a stale server nonce", arguments: versions)
    func mutualStaleNonce(version: TLSVersion) async throws {
        let server = try await Loopback.serve(server(mutual: true))
        defer { Task { await server.close() } }
        let stale = client(version, issuer: StaleNonceIssuer(inner: TestEvidence.native))
        let first = try await Loopback.connect(port: server.port, stale)
        #expect(first.echoed, "first connection: \(String(describing: server.lastConnection?.failure))")
        let second = try await Loopback.connect(port: server.port, stale)
        #expect(!second.echoed)
        guard case .evidenceRefused(_, let reason, _)? = server.lastConnection?.failure else {
            Issue.record("stale nonce: \(String(describing: server.lastConnection?.failure))")
            return
        }
        #expect(reason.contains("qualifying"))
    }
}

/// The mutual server's nonce as Go clients read it: the one CertificateRequest CA name, `CN=<base64>`,
/// as OpenSSL's s_client prints it (an implementation that is not BoringSSL reading the wire).
@Suite("mutual aTLS CA name read by openssl s_client")
struct CANameTests {
    @Test("the CertificateRequest carries exactly CN=<the server's nonce>", arguments: ["-tls1_3", "-tls1_2"])
    func caName(version: String) async throws {
        let atls = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached),
                clientVerifier: TestEvidence.verifier
            ),
            threadPool: Loopback.pool
        )
        let server = try await Loopback.serve(atls)
        defer { Task { await server.close() } }
        let sni = ATLSNonce.random().base64
        let result = try await runCommand(
            "/usr/bin/env",
            [
                "openssl", "s_client", "-connect", "127.0.0.1:\(server.port)", "-servername", sni, version, "-ign_eof",
            ],
            stdin: Data()
        )
        let output = result.stdout + result.stderr
        let nonce = try #require(server.lastConnection?.sentNonce)
        let lines = output.split(separator: "\n").map(String.init)
        let header = try #require(
            lines.firstIndex { $0.hasPrefix("Acceptable client certificate CA names") },
            "\(output)"
        )
        // s_client quotes values with characters such as '/' or '+'.
        #expect(
            lines[header + 1] == "CN = \(nonce.base64)" || lines[header + 1] == "CN = \"\(nonce.base64)\"",
            "\(lines[header + 1])"
        )
        #expect(!lines[header + 2].hasPrefix("CN ="), "more than one CA name")
    }
}
