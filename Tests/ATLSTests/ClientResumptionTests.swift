import ATLS
import Attestation
import Foundation
import NIOCore
import NIOSSL
import Testing

@testable import ATLSTransport

/// One-way clients share one TLS context; a server that would resume sessions (one shared context,
/// BoringSSL's default cache and tickets) still gets a full handshake and a fresh verification from each.
@Suite
struct ClientResumptionTests {
    @Test(
        "a shared client context never resumes: every connection verifies a certificate for its own nonce",
        arguments: HandshakeTests.versions
    )
    func sharedContextNeverResumes(version: TLSVersion) async throws {
        // The server: ONE context for all connections (so it keeps a session cache and issues
        // tickets), answering each ClientHello with an attested certificate for its SNI nonce.
        let issuer = AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached)
        let keys = NIOSSLKeyCache()
        var configuration = try plainServerConfiguration()
        configuration.maximumTLSVersion = version
        configuration.sslContextCallback = { values, promise in
            do {
                let nonce = try ATLSNonce(base64: values.serverHostname ?? "")
                promise.succeed(try NIOSSLContextConfigurationOverride(issuer.issue(nonce: nonce), keys: keys))
            } catch {
                promise.fail(error)
            }
        }
        let server = try await Loopback.serve(plain: configuration)
        defer { Task { await server.close() } }

        var settings = ATLSTLSSettings()
        settings.maximumTLSVersion = version
        let client = ATLSClient(
            configuration: .init(verifier: TestEvidence.verifier, tls: settings),
            threadPool: Loopback.pool
        )
        var nonces: [[UInt8]] = []
        for _ in 0..<3 {
            let outcome = try await Loopback.connect(port: server.port, client)
            #expect(outcome.echoed, "\(String(describing: outcome.error))")
            // A resumed session sends no certificate, so the verification callback would not have run.
            let peer = try #require(outcome.connection?.peer)
            #expect(peer.keyHash.count == 32)
            nonces.append(try #require(outcome.connection?.sentNonce).bytes)
        }
        #expect(Set(nonces).count == 3)
    }
}
