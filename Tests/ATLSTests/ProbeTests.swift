import ATLS
import ATLSTransport
import AsterismCLI
import Attestation
import Foundation
import Testing

/// `asterism atls probe` against real aTLS servers on loopback.
@Suite("asterism atls probe")
struct ProbeTests {
    func serve(_ evidence: any EvidenceIssuer, mutual: Bool = false) async throws -> Loopback.Server {
        try await Loopback.serve(
            ATLSServer(
                configuration: .init(
                    issuer: AttestedCertificateIssuer(evidence: evidence, keyMode: .cached),
                    clientVerifier: mutual ? TestEvidence.verifier : nil
                ),
                threadPool: Loopback.pool
            )
        )
    }

    func json(_ outcome: Asterism.Outcome) throws -> [String: Any] {
        try #require(
            try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any],
            "stdout: \(outcome.stdout) stderr: \(outcome.stderr)"
        )
    }

    @Test("an attested server: exit 0, variant, key hash and the report, in text and JSON", arguments: ["1.3", "1.2"])
    func attested(tls: String) async throws {
        let server = try await serve(TestEvidence.native)
        defer { Task { await server.close() } }
        let digest = hexString(TestEvidence.native.akDigest)
        let text = Asterism.execute(["atls", "probe", "127.0.0.1:\(server.port)", "--ak-digest", digest, "--tls", tls])
        #expect(text.status == 0, "\(text.stdout) \(text.stderr)")
        #expect(text.stdout.hasPrefix("atls probe 127.0.0.1:\(server.port): ATTESTED"))
        #expect(text.stdout.contains("asterism-tpm (1.3.9900.77.1)"))
        #expect(text.stdout.contains("tpm.ak.trust"))
        let outcome = Asterism.execute([
            "atls", "probe", "127.0.0.1:\(server.port)", "--ak-digest", digest, "--tls", tls, "--json",
        ])
        let object = try json(outcome)
        #expect(outcome.status == 0)
        #expect(object["attested"] as? Bool == true)
        #expect(object["variant"] as? String == "asterism-tpm")
        #expect((object["keyHash"] as? String)?.count == 64)
        #expect(object["insecure"] as? Bool == false)
        #expect(object["tlsVersion"] as? String == (tls == "1.3" ? "TLSv1.3" : "TLSv1.2"))
        #expect(object["alpn"] as? String == "h2")
        let report = try #require(object["report"] as? [String: Any])
        #expect(report["valid"] as? Bool == true)
        #expect((report["results"] as? [Any])?.isEmpty == false)
    }

    @Test("an untrusted AK: exit 1 with the failed policy named")
    func untrustedAK() async throws {
        let server = try await serve(TestEvidence.constellation)
        defer { Task { await server.close() } }
        let outcome = Asterism.execute(["atls", "probe", "127.0.0.1:\(server.port)", "--json"])
        #expect(outcome.status == 1)
        let object = try json(outcome)
        #expect(object["attested"] as? Bool == false)
        #expect((object["refusal"] as? String)?.contains("qemu-vtpm evidence was refused") == true)
        #expect((object["refusal"] as? String)?.contains("tpm.ak.trust") == true)
    }

    @Test("the dummy variant needs --insecure-accept-dummy and is then marked insecure")
    func dummy() async throws {
        let server = try await serve(DummyEvidence.Issuer())
        defer { Task { await server.close() } }
        let refused = Asterism.execute(["atls", "probe", "127.0.0.1:\(server.port)"])
        #expect(refused.status == 1)
        #expect(refused.stdout.contains("no extension for a configured validator"))
        let accepted = Asterism.execute([
            "atls", "probe", "127.0.0.1:\(server.port)", "--insecure-accept-dummy", "--json",
        ])
        #expect(accepted.status == 0, "\(accepted.stdout)")
        let object = try json(accepted)
        #expect(object["variant"] as? String == "dummy")
        #expect(object["insecure"] as? Bool == true)
    }

    @Test("a mutual server's own attestation is still reported to a probe without a client certificate")
    func mutualServer() async throws {
        let server = try await serve(TestEvidence.native, mutual: true)
        defer { Task { await server.close() } }
        let outcome = Asterism.execute([
            "atls", "probe", "127.0.0.1:\(server.port)", "--ak-digest", hexString(TestEvidence.native.akDigest),
        ])
        #expect(outcome.status == 0, "\(outcome.stdout) \(outcome.stderr)")
        #expect(outcome.stdout.contains("ATTESTED"))
    }

    @Test("usage and connection errors exit 2")
    func errors() async throws {
        for arguments in [
            ["atls", "probe", "nohost"], ["atls", "probe", "127.0.0.1:0"], ["atls", "probe", "127.0.0.1:99999"],
            ["atls", "probe", "127.0.0.1:1", "--tls", "1.1"], ["atls", "probe", "127.0.0.1:1", "--ak-digest", "xyz"],
        ] {
            let outcome = Asterism.execute(arguments)
            #expect(outcome.status == 2, "\(arguments): \(outcome)")
            #expect(!outcome.stderr.isEmpty)
        }
        // Nothing listens on port 1 (privileged, unused): the connection is refused.
        let outcome = Asterism.execute(["atls", "probe", "127.0.0.1:1", "--timeout", "3"])
        #expect(outcome.status == 2)
        #expect(outcome.stderr.contains("127.0.0.1:1"))
    }
}
