@testable import ATLS
import Attestation
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

/// The verifier's own DER reader against swift-certificates, and its refusals.
@Suite("attested certificate reader")
struct AttestedCertificateReaderTests {
    let now = Date()

    func serialize(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    /// A certificate made by swift-certificates for `key`, self-signed, with these extensions and times.
    func made(key: P256.Signing.PrivateKey = P256.Signing.PrivateKey(), notBefore: Date? = nil, notAfter: Date? = nil,
              extensions: Certificate.Extensions = Certificate.Extensions(), signatureAlgorithm: Certificate.SignatureAlgorithm = .ecdsaWithSHA256,
              subject: DistinguishedName? = nil) throws -> [UInt8] {
        let name = try DistinguishedName { CommonName("Constellation") }
        return try serialize(Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: notBefore ?? now - 60, notValidAfter: notAfter ?? now + 60, issuer: name, subject: subject ?? name,
            signatureAlgorithm: signatureAlgorithm, extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(key)
        ))
    }

    /// The reader and swift-certificates agree on every field the verifier reads.
    func expectAgreement(_ der: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let mine = try AttestedCertificateReader(der: der)
        let theirs = try Certificate(derEncoded: der)
        #expect(Array(mine.tbs) == Array(theirs.tbsCertificateBytes), sourceLocation: sourceLocation)
        #expect(mine.notBefore == theirs.notValidBefore, sourceLocation: sourceLocation)
        #expect(mine.notAfter == theirs.notValidAfter, sourceLocation: sourceLocation)
        #expect(try Array(mine.issuer) == serializedName(theirs.issuer), sourceLocation: sourceLocation)
        #expect(try Array(mine.subject) == serializedName(theirs.subject), sourceLocation: sourceLocation)
        let key = try #require(P256.Signing.PublicKey(theirs.publicKey))
        #expect(Array(mine.subjectPublicKeyInfo) == Array(key.derRepresentation), sourceLocation: sourceLocation)
        #expect(Array(mine.publicKey) == Array(key.x963Representation), sourceLocation: sourceLocation)
        #expect(mine.extensions.map { AttestedCertificateReader.dotted($0.oid) } == theirs.extensions.map(\.oid.description),
                sourceLocation: sourceLocation)
        #expect(mine.extensions.map { Array($0.value) } == theirs.extensions.map { Array($0.value) }, sourceLocation: sourceLocation)
    }

    func serializedName(_ name: DistinguishedName) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(name)
        return serializer.serializedBytes
    }

    @Test("Asterism's certificates read the same as through swift-certificates, for both variants, with and without a server nonce")
    func agreesOnAsterismCertificates() throws {
        for evidence in [TestEvidence.native, TestEvidence.constellation] as [any EvidenceIssuer] {
            for keyMode in [AttestedCertificateIssuer.KeyMode.cached, .freshPerCertificate] {
                let issuer = AttestedCertificateIssuer(evidence: evidence, keyMode: keyMode)
                try expectAgreement(try issuer.issue(nonce: .random(), now: now).certificateDER)
                try expectAgreement(try issuer.issue(nonce: .random(), serverNonce: .random(), now: now).certificateDER)
            }
        }
    }

    @Test("certificates of other shapes read the same: GeneralizedTime, critical and several extensions, SHA-384, a long name")
    func agreesOnOtherShapes() throws {
        // 2050 and later are GeneralizedTime; before 1950 as well.
        try expectAgreement(try made(notBefore: Date(timeIntervalSince1970: -1_000_000_000), notAfter: Date(timeIntervalSince1970: 2_600_000_000)))
        // UTCTime's century boundary: 49 is 2049, 50 is 1950.
        try expectAgreement(try made(notBefore: Date(timeIntervalSince1970: -631_152_000), notAfter: Date(timeIntervalSince1970: 2_524_607_999)))
        // Leap day.
        try expectAgreement(try made(notBefore: Date(timeIntervalSince1970: 1_709_164_800), notAfter: Date(timeIntervalSince1970: 1_709_251_199)))
        try expectAgreement(try made(extensions: try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            SubjectAlternativeNames([.dnsName("node.example")])
            Certificate.Extension(oid: [1, 3, 9900, 77, 1], critical: false, value: [1, 2, 3])
        }))
        try expectAgreement(try made(signatureAlgorithm: .ecdsaWithSHA384))
        try expectAgreement(try made(subject: try DistinguishedName {
            CommonName(String(repeating: "n", count: 300))
            OrganizationName("Asterism")
        }))
        // The long subject makes the issuer differ from the subject: read, then refused as not self-issued.
        let notSelfIssued = try made(subject: try DistinguishedName { CommonName("someone else") })
        #expect(throws: ATLSError.badSelfSignature) { try TestEvidence.verifier.verify(certificateDER: notSelfIssued, nonce: .random(), at: now) }
    }

    @Test("every truncation, a trailing byte and a non-minimal length are unreadable, never a crash")
    func malformedFraming() throws {
        let der = try AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached).issue(nonce: .random(), now: now).certificateDER
        for length in 0..<der.count {
            #expect(throws: ATLSError.self) { try AttestedCertificateReader(der: Array(der.prefix(length))) }
        }
        #expect(isUnreadable(der + [0]))
        // The outer SEQUENCE's length re-encoded with one more length octet than needed.
        #expect(der[1] == 0x82)
        let padded = [0x30, 0x83, 0x00] + der[2...]
        #expect(isUnreadable(Array(padded)))
    }

    @Test("other keys, a compressed point, differing algorithms, a repeated extension and impossible times are refused by name")
    func refusals() throws {
        let p384 = P384.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("Constellation") }
        let p384Certificate = try serialize(Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(p384.publicKey), notValidBefore: now - 60,
            notValidAfter: now + 60, issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA384, extensions: Certificate.Extensions(),
            issuerPrivateKey: Certificate.PrivateKey(p384)
        ))
        #expect(isUnsupportedKey(p384Certificate))

        let valid = try made()
        // The uncompressed point's prefix 0x04 turned into 0x02: a compressed-point form.
        var compressed = valid
        let pointStart = try #require(find(Array(try AttestedCertificateReader(der: valid).publicKey), in: valid))
        compressed[pointStart] = 0x02
        #expect(isUnsupportedKey(compressed))

        // The outer algorithm changed to SHA-384 while the TBSCertificate says SHA-256.
        var mismatched = valid
        let algorithm: [UInt8] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
        let outer = try #require(findLast(algorithm, in: valid))
        mismatched[outer + algorithm.count - 1] = 0x03
        #expect(isUnreadable(mismatched))

        // The same extension twice, in a certificate otherwise well made and signed.
        let key = P256.Signing.PrivateKey()
        let item = AttestedCertificateDER.Extension(oid: [1, 3, 9900, 77, 1], value: [1])
        let tbs = try AttestedCertificateDER.tbsCertificate(serial: [1], notBefore: now - 60, notAfter: now + 60,
                                                            subjectPublicKeyInfo: Array(key.publicKey.derRepresentation), extensions: [item, item])
        let repeated = AttestedCertificateDER.certificate(tbs: tbs, signature: Array(try key.signature(for: tbs).derRepresentation))
        #expect(isUnreadable(repeated))
        let once = try AttestedCertificateDER.tbsCertificate(serial: [1], notBefore: now - 60, notAfter: now + 60,
                                                            subjectPublicKeyInfo: Array(key.publicKey.derRepresentation), extensions: [item])
        #expect(!isUnreadable(AttestedCertificateDER.certificate(tbs: once, signature: Array(try key.signature(for: once).derRepresentation))))

        // Month 13 in NotBefore (UTCTime YYMMDDHHMMSSZ: the month digits follow the year).
        var badTime = valid
        let utc = try #require(find([0x17, 0x0D], in: valid))
        badTime[utc + 4] = 0x31
        badTime[utc + 5] = 0x33
        #expect(isUnreadable(badTime))
    }

    @Test("a single changed byte anywhere in a certificate is refused")
    func everyByteMatters() throws {
        let nonce = ATLSNonce.random()
        let der = try AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached).issue(nonce: nonce, now: now).certificateDER
        #expect(throws: Never.self) { try TestEvidence.verifier.verify(certificateDER: der, nonce: nonce, at: now) }
        for index in stride(from: 0, to: der.count, by: 7) {
            var changed = der
            changed[index] ^= 0x01
            #expect(throws: ATLSError.self, "byte \(index) changed") { try TestEvidence.verifier.verify(certificateDER: changed, nonce: nonce, at: now) }
        }
    }

    @Test("dates convert both ways for every day of 1900 through 2100")
    func civilDays() {
        for days in Int64(-25_567)...Int64(47_482) {
            let (year, month, day) = AttestedCertificateDER.civilDate(daysSince1970: days)
            #expect(AttestedCertificateDER.daysSince1970(year: year, month: month, day: day) == days)
        }
    }

    // MARK: - helpers

    func isUnreadable(_ der: [UInt8]) -> Bool {
        do {
            _ = try AttestedCertificateReader(der: der)
            return false
        } catch {
            if case .certificateUnreadable = error { return true }
            return false
        }
    }

    func isUnsupportedKey(_ der: [UInt8]) -> Bool {
        do {
            _ = try AttestedCertificateReader(der: der)
            return false
        } catch {
            if case .unsupportedKey = error { return true }
            return false
        }
    }

    func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        return (0...(haystack.count - needle.count)).first { haystack[$0..<$0 + needle.count].elementsEqual(needle) }
    }

    func findLast(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        return (0...(haystack.count - needle.count)).last { haystack[$0..<$0 + needle.count].elementsEqual(needle) }
    }
}
