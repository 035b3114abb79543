@testable import ATLS
import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@Suite("aTLS certificate DER: the hand-written encoder against swift-certificates")
struct AttestedCertificateDERTests {
    let now = Date()

    /// swift-certificates' own TBSCertificate for the same fields as `parsed`, with `extensions`.
    private func referenceTBS(
        like parsed: Certificate, key: P256.Signing.PrivateKey, notBefore: Date, notAfter: Date, extensions: [(oid: [UInt], value: [UInt8])]
    ) throws -> [UInt8] {
        var reference = Certificate.Extensions()
        for item in extensions {
            try reference.append(Certificate.Extension(oid: ASN1ObjectIdentifier(elements: item.oid), critical: false, value: item.value[...]))
        }
        let name = try DistinguishedName { CommonName("Constellation") }
        let certificate = try Certificate(
            version: .v3, serialNumber: parsed.serialNumber, publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: notBefore, notValidAfter: notAfter, issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: reference, issuerPrivateKey: Certificate.PrivateKey(key)
        )
        return Array(certificate.tbsCertificateBytes)
    }

    private func serialize(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    @Test(
        "every length form, both extensions and large OID arcs come out as swift-certificates writes them",
        arguments: [0, 1, 100, 127, 128, 200, 255, 256, 1500, 65_535, 65_536, AttestedCertificate.maxDocumentBytes]
    )
    func matchesSwiftCertificates(documentSize: Int) throws {
        let key = P256.Signing.PrivateKey()
        let document = (0..<documentSize).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let variants = [AttestationVariant.asterismTPM, .qemuVTPM, AttestationVariant(name: "big-arcs", oid: [2, 999, 1 << 40, 127, 128, 16_383, 16_384])]
        for variant in variants {
            for serverNonce in [nil, ATLSNonce.random()] {
                let der = try AttestedCertificate.make(key: key, variant: variant, document: document, serverNonce: serverNonce, now: now)
                let parsed = try Certificate(derEncoded: der)
                #expect(try serialize(parsed) == der, "not canonical DER for \(variant.name), \(documentSize) bytes")
                var extensions = [(oid: variant.oid, value: document)]
                if let serverNonce { extensions.append((AttestedCertificate.serverNonceOID, serverNonce.bytes)) }
                let reference = try referenceTBS(
                    like: parsed, key: key, notBefore: now - AttestedCertificate.validityMargin, notAfter: now + AttestedCertificate.validityMargin,
                    extensions: extensions
                )
                #expect(Array(parsed.tbsCertificateBytes) == reference, "TBSCertificate differs for \(variant.name), \(documentSize) bytes")
                #expect(parsed.publicKey.isValidSignature(parsed.signature, for: parsed))
                #expect(P256.Signing.PublicKey(parsed.publicKey)?.rawRepresentation == key.publicKey.rawRepresentation)
            }
        }
    }

    @Test("times: UTCTime from 1950 through 2049, GeneralizedTime outside, whole seconds rounded as swift-certificates does")
    func times() throws {
        let key = P256.Signing.PrivateKey()
        var instants: [TimeInterval] = [
            -631_152_000, -631_152_001, -631_152_000 - 7200, 2_524_607_999, 2_524_608_000, 2_524_608_000 - 7200, 951_827_696.5, 951_827_696.49,
            -0.4, -0.5, -1.5, 0, 86_399.6, 4_102_444_800, 253_402_293_599 - 7200, -2_208_988_800,
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 { instants.append(TimeInterval(Int64.random(in: -2_208_988_800...7_258_118_400, using: &generator)) + 0.25) }
        for instant in instants {
            let notBefore = Date(timeIntervalSince1970: instant)
            let issued = notBefore + AttestedCertificate.validityMargin
            let der = try AttestedCertificate.make(key: key, variant: .asterismTPM, document: [1, 2, 3], now: issued)
            let parsed = try Certificate(derEncoded: der)
            #expect(try serialize(parsed) == der)
            let reference = try referenceTBS(
                like: parsed, key: key, notBefore: issued - AttestedCertificate.validityMargin, notAfter: issued + AttestedCertificate.validityMargin,
                extensions: [(AttestationVariant.asterismTPM.oid, [1, 2, 3])]
            )
            #expect(Array(parsed.tbsCertificateBytes) == reference, "validity differs at \(instant)")
        }
        #expect(throws: ATLSError.self) { try AttestedCertificateDER.time(Date(timeIntervalSince1970: 253_402_300_800)) }
    }

    @Test("OIDs encode as SwiftASN1 encodes them; unencodable arcs are refused")
    func objectIdentifiers() throws {
        for arcs: [UInt] in [[1, 3, 9900, 77, 1], [1, 2, 840, 10045, 4, 3, 2], [2, 5, 29, 19], [2, 999, 3], [0, 39], [1, 3, 6, 1, 4, 1, 311, 21, 20]] {
            var serializer = DER.Serializer()
            try serializer.serialize(try ASN1ObjectIdentifier(elements: arcs))
            #expect(try AttestedCertificateDER.objectIdentifier(arcs) == serializer.serializedBytes)
        }
        for bad: [UInt] in [[], [1], [3, 1], [1, 40], [0, 40]] {
            #expect(throws: ATLSError.self) { try AttestedCertificateDER.objectIdentifier(bad) }
        }
    }

    @Test("fresh keys are distinct, sign, and their key hash is the SubjectPublicKeyInfo's")
    func freshKeys() throws {
        let issuer = AttestedCertificateIssuer(evidence: SoftwareTPMEvidenceIssuer(format: .native), keyMode: .freshPerCertificate)
        let nonce = ATLSNonce.random()
        let credentials = try (0..<8).map { _ in try issuer.issue(nonce: nonce, now: now) }
        #expect(Set(credentials.map(\.keyHash)).count == credentials.count)
        for credential in credentials {
            #expect(credential.keyHash == AttestedCertificate.userData(for: credential.privateKey.publicKey))
            let certificate = try Certificate(derEncoded: credential.certificateDER)
            #expect(P256.Signing.PublicKey(certificate.publicKey)?.rawRepresentation == credential.privateKey.publicKey.rawRepresentation)
            let signature = try credential.privateKey.signature(for: Array("probe".utf8))
            #expect(credential.privateKey.publicKey.isValidSignature(signature, for: Array("probe".utf8)))
        }
    }

    @Test("the nonce-name certificate is self-signed, valid like an attested one, and named CN=<base64 nonce> as swift-certificates writes it")
    func nonceNameCertificate() throws {
        let nonce = ATLSNonce.random()
        let der = try AttestedCertificate.nonceNameCertificate(nonce, now: now)
        let parsed = try Certificate(derEncoded: der)
        let name = try DistinguishedName { CommonName(nonce.base64) }
        #expect(parsed.subject == name && parsed.issuer == name)
        #expect(parsed.publicKey.isValidSignature(parsed.signature, for: parsed))
        #expect(parsed.extensions.isEmpty)
        #expect(abs(parsed.notValidBefore.timeIntervalSince(now) + AttestedCertificate.validityMargin) < 1)
        var serializer = DER.Serializer()
        try serializer.serialize(name)
        #expect(AttestedCertificateDER.commonName(nonce.base64) == serializer.serializedBytes)
        #expect(try serialize(parsed) == der)
    }
}
