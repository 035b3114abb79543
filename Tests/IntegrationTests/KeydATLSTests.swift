import ATLS
import ATLSTransport
import AsterismCLI
import Attestation
import Crypto
import Foundation
import KeydProtocol
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// aTLS with real TPM evidence: an ATLSServer whose certificates carry keyd's quotes from swtpm,
/// checked by `asterism atls probe` with the AK pinned by its digest from `keydctl tpm status`.
@Suite(.serialized, .needsSwtpm) struct KeydATLSTests {
    /// A listening aTLS server issuing through `issuer`; closes with the returned channel.
    static func serve(_ issuer: KeydEvidenceIssuer, pool: NIOThreadPool) async throws -> any Channel {
        let server = ATLSServer(
            configuration: .init(issuer: AttestedCertificateIssuer(evidence: issuer, keyMode: .freshPerCertificate)),
            threadPool: pool
        )
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try server.addHandler(to: channel) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    @Test func probeVerifiesKeydsTPMEvidenceInTheAttestedCertificate() async throws {
        let tpm = try SoftwareTPM()
        // No firmware event log: swtpm's PCRs are not what any real log replays to (a log that does not
        // match is refused, which `eventLogThatDoesNotReplayIsRefused` shows).
        let keyd = try KeydHarness(configuration: ["tpm-tcti = \(tpm.tcti)", "trustd-uids = \(geteuid())"])
        let status = try KeydTPMTests.tpmStatus(keyd)
        let ak = try #require(status["attestationKey"] as? [String: Any])
        let pem = try #require(ak["publicKeyPEM"] as? String)
        let base64 = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let akDigest = hex(Array(SHA256.hash(data: try #require(Data(base64Encoded: base64)))))
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()

        for (format, variant) in [(EvidenceVariant.native, "asterism-tpm"), (.constellationQEMUVTPM, "qemu-vtpm")] {
            let channel = try await Self.serve(
                KeydEvidenceIssuer(socketPath: keyd.socketPath, format: format),
                pool: pool
            )
            let port = try #require(channel.localAddress?.port)
            let attested = Asterism.execute(["atls", "probe", "127.0.0.1:\(port)", "--ak-digest", akDigest, "--json"])
            #expect(attested.status == 0, "\(variant): \(attested.stdout) \(attested.stderr) keyd log: \(keyd.log)")
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data(attested.stdout.utf8)) as? [String: Any]
            )
            #expect(object["variant"] as? String == variant)
            #expect(object["insecure"] as? Bool == false)
            // Without the pin the same evidence is refused, and the refusal names the AK trust policy.
            let refused = Asterism.execute(["atls", "probe", "127.0.0.1:\(port)"])
            #expect(refused.status == 1)
            #expect(refused.stdout.contains("tpm.ak.trust"))
            try await channel.close()
        }
        try await pool.shutdownGracefully()
    }

    @Test
    func eventLogThatDoesNotReplayIsRefused() async throws {
        let tpm = try SoftwareTPM()
        let keyd = try KeydTPMTests.keyd(tpm)  // attaches a real crypto-agile log from other firmware
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let channel = try await Self.serve(KeydEvidenceIssuer(socketPath: keyd.socketPath), pool: pool)
        let port = try #require(channel.localAddress?.port)
        let refused = Asterism.execute(["atls", "probe", "127.0.0.1:\(port)", "--insecure-trust-document-ak"])
        #expect(refused.status == 1)
        #expect(refused.stdout.contains("tpm.event-log"), "\(refused.stdout)")
        #expect(refused.stdout.contains("PCR 0 replayed from the event log differs from the quote"))
        try await channel.close()
        try await pool.shutdownGracefully()
    }
}
