import ATLS
import Attestation
import Crypto
import Foundation
import Testing

/// ``AttestedClaim``: what a deferred-check server reads from a client certificate before keyd verifies
/// the document. The certificate checks are the verifier's; the document is passed on as it is.
@Suite("attested claims")
struct AttestedClaimTests {
    let key = P256.Signing.PrivateKey()
    let now = Date()

    func certificate(_ variant: AttestationVariant = .asterismTPM, document: [UInt8] = [1, 2, 3]) throws -> [UInt8] {
        try AttestedCertificate.make(key: key, variant: variant, document: document, now: now)
    }

    @Test("the document of an accepted variant and the certificate key's hash")
    func reads() throws {
        let claim = try AttestedClaim(certificateDER: try certificate(), variants: [.qemuVTPM, .asterismTPM], at: now)
        #expect(claim.variant == .asterismTPM)
        #expect(claim.document == [1, 2, 3], "the document is carried unvalidated, as keyd will check it")
        #expect(claim.keyHash == AttestedCertificate.userData(for: key.publicKey))
    }

    @Test("a document of a variant the server does not accept is no claim")
    func otherVariant() throws {
        #expect(throws: ATLSError.self) {
            try AttestedClaim(certificateDER: try certificate(.qemuVTPM), variants: [.asterismTPM], at: now)
        }
    }

    @Test("outside its validity, or with a broken self-signature, the certificate claims nothing")
    func certificateChecks() throws {
        let der = try certificate()
        #expect(throws: ATLSError.self) {
            try AttestedClaim(certificateDER: der, variants: [.asterismTPM], at: now + 3 * 3600)
        }
        #expect(throws: ATLSError.self) {
            try AttestedClaim(certificateDER: der, variants: [.asterismTPM], at: now - 3 * 3600)
        }
        var tampered = der
        tampered[tampered.count - 5] ^= 0x01  // inside the signature
        #expect(throws: ATLSError.self) {
            try AttestedClaim(certificateDER: tampered, variants: [.asterismTPM], at: now)
        }
        #expect(throws: ATLSError.self) {
            try AttestedClaim(certificateDER: [0x30, 0x00], variants: [.asterismTPM], at: now)
        }
    }
}
