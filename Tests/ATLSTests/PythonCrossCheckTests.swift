import ATLS
import ATLSTransport
import AsterismTestSupport
import Attestation
import Foundation
import Testing

/// The wire format checked by another implementation: Python's ssl (OpenSSL) connects with a base64
/// nonce in the SNI and `cryptography` verifies the certificate, the extension, the nonce and the key
/// binding (atls_crosscheck.py), and that a second connection cannot resume the first one's session.
@Suite("aTLS wire format checked by Python ssl + cryptography", .serialized)
struct PythonCrossCheckTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
        "atls_crosscheck.py"
    ).path

    /// Makes sure `cryptography` imports, installing it with pip when it does not (the test set-up).
    static func ensureCryptography() throws {
        if try runCommand("/usr/bin/env", ["python3", "-c", "import cryptography"]).status == 0 { return }
        var last = ""
        for attempt in 1...3 {
            let result = try runCommand("/usr/bin/env", ["python3", "-m", "pip", "install", "--quiet", "cryptography"])
            if result.status == 0 { return }
            last = result.stderr
            Thread.sleep(forTimeInterval: Double(attempt * 2))
        }
        throw HarnessError("pip install cryptography failed: \(last)")
    }

    static let cases: [(String, String)] = [
        ("qemu-vtpm", "1.3"), ("qemu-vtpm", "1.2"), ("dummy", "1.3"), ("dummy", "1.2"),
    ]

    @Test("Python verifies the server's attested certificate", arguments: cases)
    func crossCheck(variant: String, tls: String) async throws {
        try Self.ensureCryptography()
        let evidence: any EvidenceIssuer = variant == "dummy" ? DummyEvidence.Issuer() : TestEvidence.constellation
        let atls = ATLSServer(
            configuration: .init(issuer: AttestedCertificateIssuer(evidence: evidence, keyMode: .freshPerCertificate)),
            threadPool: Loopback.pool
        )
        let server = try await Loopback.serve(atls)
        defer { Task { await server.close() } }
        let result = try await runCommand(
            "/usr/bin/env",
            ["python3", Self.script, "--port", String(server.port), "--tls", tls]
        )
        let line = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(result.status == 0, "python: \(line) \(result.stderr)")
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            "python printed \(result.stdout)"
        )
        #expect(object["ok"] as? Bool == true)
        #expect(object["variant"] as? String == variant)
        #expect(object["tls"] as? String == (tls == "1.3" ? "TLSv1.3" : "TLSv1.2"))
        #expect(object["alpn"] as? String == "h2")
        #expect(object["echoed"] as? String == "ping")
        // The server hands out sessions (BoringSSL's default; NIOSSL has no switch), so Python offers one
        // on its second connection; the per-connection context must refuse to resume it.
        #expect(object["sessionOffered"] as? Bool == true, "python got no session, the resumption check did not run")
        #expect(object["resumed"] as? Bool == false, "a session was resumed: attestation skipped")
        #expect(server.lastConnection?.failure == nil)
    }
}
