import ATLS
import Attestation
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@Suite("aTLS certificates and verifier (pure)")
struct CertificateTests {
    let nonce = ATLSNonce.random()
    let now = Date()

    @Test("a nonce reads only the canonical padded standard base64 of 32 bytes")
    func nonceCodec() throws {
        let nonce = try ATLSNonce(bytes: Array(0..<32))
        #expect(nonce.base64 == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        #expect(try ATLSNonce(base64: nonce.base64) == nonce)
        for bad in [
            "", "example.com", String(nonce.base64.dropLast()), nonce.base64 + "=",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=",
        ] {
            #expect(throws: ATLSError.self) { try ATLSNonce(base64: bad) }
        }
        #expect(throws: ATLSError.self) { try ATLSNonce(bytes: [1, 2, 3]) }
        #expect(ATLSNonce.random() != ATLSNonce.random())
    }

    @Test("the certificate has Constellation's shape")
    func certificateShape() throws {
        let credential = try AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .freshPerCertificate)
            .issue(nonce: nonce, now: now)
        let certificate = try Certificate(derEncoded: credential.certificateDER)
        #expect(certificate.version == .v3)
        #expect(certificate.subject.description == "CN=Constellation")
        #expect(certificate.issuer == certificate.subject)
        #expect(abs(certificate.notValidBefore.timeIntervalSince(now) + 7200) < 1)
        #expect(abs(certificate.notValidAfter.timeIntervalSince(now) - 7200) < 1)
        #expect(certificate.serialNumber.bytes.count <= 17 && certificate.serialNumber.bytes.count >= 15)
        #expect(certificate.signatureAlgorithm == .ecdsaWithSHA256)
        let extensions = Array(certificate.extensions)
        #expect(extensions.count == 1)
        #expect(extensions[0].oid == [1, 3, 9900, 77, 1])
        #expect(!extensions[0].critical)
        #expect(try NativeTPMEvidenceDocument(bytes: extensions[0].value).userDataDigest == credential.keyHash)
        #expect(credential.keyHash == Array(SHA256.hash(data: credential.privateKey.publicKey.derRepresentation)))
    }

    @Test("a fresh-key issuer makes a key per certificate, a cached one keeps it; both make fresh evidence")
    func keyModes() throws {
        let fresh = AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .freshPerCertificate)
        #expect(try fresh.issue(nonce: nonce).keyHash != fresh.issue(nonce: nonce).keyHash)
        let cached = AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached)
        let first = try cached.issue(nonce: nonce)
        let second = try cached.issue(nonce: ATLSNonce.random())
        #expect(first.keyHash == second.keyHash)
        #expect(first.certificateDER != second.certificateDER)
        #expect(throws: ATLSError.self) {
            try TestEvidence.verifier.verify(certificateDER: second.certificateDER, nonce: nonce, at: now)
        }
    }

    @Test("a valid certificate verifies for both TPM variants and names what it proved")
    func verifies() throws {
        for issuer in [TestEvidence.native, TestEvidence.constellation] {
            let credential = try AttestedCertificateIssuer(evidence: issuer, keyMode: .cached).issue(
                nonce: nonce,
                now: now
            )
            let identity = try TestEvidence.verifier.verify(
                certificateDER: credential.certificateDER,
                nonce: nonce,
                at: now
            )
            #expect(identity.variant == issuer.variant)
            #expect(identity.keyHash == credential.keyHash)
            #expect(identity.evidence.report.isValid)
            #expect(!identity.isInsecure)
            #expect(identity.serverNonce == nil)
        }
    }

    @Test(
        "the refusal matrix: wrong nonce, another key, another OID, no extension, expired, not yet valid, bad signature"
    )
    func refusals() throws {
        func make(_ evidence: any EvidenceIssuer, at time: Date = Date()) throws -> [UInt8] {
            try AttestedCertificateIssuer(evidence: evidence, keyMode: .freshPerCertificate).issue(
                nonce: nonce,
                now: time
            ).certificateDER
        }
        let verifier = TestEvidence.verifier
        func refusal(_ der: [UInt8], at time: Date? = nil) -> ATLSError? {
            do {
                _ = try verifier.verify(certificateDER: der, nonce: nonce, at: time ?? now)
                return nil
            } catch { return error }
        }
        guard
            case .evidenceRefused(let variant, let reason, _)? = refusal(
                try make(WrongNonceIssuer(inner: TestEvidence.native))
            )
        else {
            Issue.record("wrong nonce accepted")
            return
        }
        #expect(variant == "asterism-tpm")
        #expect(reason.contains("qualifying"))
        guard
            case .userDataMismatch(let expected, let actual)? = refusal(
                try make(OtherKeyIssuer(inner: TestEvidence.native))
            )
        else {
            Issue.record("another key accepted")
            return
        }
        #expect(expected != actual)
        #expect(
            refusal(try make(OtherOIDIssuer(inner: TestEvidence.native)))
                == .noAttestation(extensionOIDs: ["1.3.9900.99.1"])
        )

        let key = P256.Signing.PrivateKey()
        let plain = try AttestedCertificate.make(key: key, variant: .asterismTPM, document: [], now: now)
        var stripped = try Certificate(derEncoded: plain)
        stripped = try Certificate(
            version: .v3,
            serialNumber: stripped.serialNumber,
            publicKey: stripped.publicKey,
            notValidBefore: stripped.notValidBefore,
            notValidAfter: stripped.notValidAfter,
            issuer: stripped.issuer,
            subject: stripped.subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: Certificate.Extensions(),
            issuerPrivateKey: Certificate.PrivateKey(key)
        )
        #expect(refusal(try serialize(stripped)) == .noAttestation(extensionOIDs: []))

        let valid = try make(TestEvidence.native)
        guard case .expired? = refusal(valid, at: now + 2 * 3600 + 60) else {
            Issue.record("expired accepted")
            return
        }
        guard case .notYetValid? = refusal(valid, at: now - 2 * 3600 - 60) else {
            Issue.record("not yet valid accepted")
            return
        }

        var tampered = valid
        tampered[tampered.count - 5] ^= 0x01  // inside the signature
        #expect(
            refusal(tampered) == .badSelfSignature
                || refusal(tampered).map { if case .certificateUnreadable = $0 { true } else { false } } == true
        )

        // Signed by another key than the one it certifies.
        let other = P256.Signing.PrivateKey()
        let parsed = try Certificate(derEncoded: valid)
        let resigned = try Certificate(
            version: .v3,
            serialNumber: parsed.serialNumber,
            publicKey: parsed.publicKey,
            notValidBefore: parsed.notValidBefore,
            notValidAfter: parsed.notValidAfter,
            issuer: parsed.issuer,
            subject: parsed.subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: parsed.extensions,
            issuerPrivateKey: Certificate.PrivateKey(other)
        )
        #expect(refusal(try serialize(resigned)) == .badSelfSignature)
        #expect(
            refusal([0x30, 0x03, 0x02, 0x01, 0x00]).map { if case .certificateUnreadable = $0 { true } else { false } }
                == true
        )
    }

    @Test("the dummy variant is accepted only with insecureAcceptDummy, and says it is insecure")
    func dummyNeedsExplicitSetting() throws {
        let der = try AttestedCertificateIssuer(evidence: DummyEvidence.Issuer(), keyMode: .cached).issue(
            nonce: nonce,
            now: now
        ).certificateDER
        #expect(throws: ATLSError.self) {
            try ATLSVerifier(validators: [DummyEvidence.Validator()]).verify(certificateDER: der, nonce: nonce, at: now)
        }
        let identity = try ATLSVerifier(validators: [DummyEvidence.Validator()], insecureAcceptDummy: true).verify(
            certificateDER: der,
            nonce: nonce,
            at: now
        )
        #expect(identity.isInsecure)
        #expect(identity.evidence.report.notes.contains(DummyEvidence.insecureNote))
        #expect(throws: ATLSError.self) {
            try ATLSVerifier(validators: [DummyEvidence.Validator()], insecureAcceptDummy: true).verify(
                certificateDER: der,
                nonce: .random(),
                at: now
            )
        }
    }

    @Test("the server nonce extension is read back for mutual aTLS")
    func serverNonceExtension() throws {
        let serverNonce = ATLSNonce.random()
        let credential = try AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached).issue(
            nonce: nonce,
            serverNonce: serverNonce,
            now: now
        )
        #expect(
            try TestEvidence.verifier.verify(certificateDER: credential.certificateDER, nonce: nonce, at: now)
                .serverNonce == serverNonce
        )
    }

    @Test("an oversized document and a failing issuer give issuing errors, not certificates")
    func issuingFailures() throws {
        #expect(throws: ATLSError.self) {
            try AttestedCertificate.make(
                key: P256.Signing.PrivateKey(),
                variant: .dummy,
                document: [UInt8](repeating: 0, count: 300_000),
                now: now
            )
        }
        #expect(throws: ATLSError.self) {
            try AttestedCertificateIssuer(evidence: FailingIssuer(), keyMode: .cached).issue(nonce: nonce)
        }
    }

    private func serialize(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }
}
