import ATLS
import AsterismTestSupport
import Attestation
import NIOSSL
import Testing

@testable import ATLSTransport

/// The server and client load a cached certificate key into NIOSSL once, not per handshake.
@Suite
struct KeyCacheTests {
    @Test("a cached-key issuer's credentials share one NIOSSL key; fresh keys each get their own")
    func cachedKeyParsedOnce() throws {
        let cache = NIOSSLKeyCache()
        let cached = AttestedCertificateIssuer(evidence: SoftwareTPMEvidenceIssuer(format: .native), keyMode: .cached)
        let first = try cache.key(for: try cached.issue(nonce: .random()))
        let second = try cache.key(for: try cached.issue(nonce: .random()))
        #expect(first === second)

        let fresh = AttestedCertificateIssuer(
            evidence: SoftwareTPMEvidenceIssuer(format: .native),
            keyMode: .freshPerCertificate
        )
        let credentialA = try fresh.issue(nonce: .random())
        let credentialB = try fresh.issue(nonce: .random())
        let keyA = try cache.key(for: credentialA)
        let keyB = try cache.key(for: credentialB)
        #expect(keyA !== keyB && keyA !== first)
        // Each is the credential's own key.
        #expect(keyA == (try NIOSSLPrivateKey(bytes: Array(credentialA.privateKey.derRepresentation), format: .der)))
        #expect(keyB == (try NIOSSLPrivateKey(bytes: Array(credentialB.privateKey.derRepresentation), format: .der)))
        #expect(keyA != keyB)
    }
}
