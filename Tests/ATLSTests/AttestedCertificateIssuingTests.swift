import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@testable import ATLS

/// Attested certificates as swift-certificates writes them: every length form of the document, both
/// extensions, large OID arcs and times on both sides of UTCTime's range read back unchanged.
@Suite("attested certificates: issuing")
struct AttestedCertificateIssuingTests {
    let now = Date()

    private func serialize(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    @Test(
        "every length form, both extensions and large OID arcs read back as written, in canonical DER",
        arguments: [0, 1, 127, 128, 255, 256, 65_535, 65_536, AttestedCertificate.maxDocumentBytes]
    )
    func documentsReadBack(documentSize: Int) throws {
        let key = P256.Signing.PrivateKey()
        let document = (0..<documentSize).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let variants = [
            AttestationVariant.asterismTPM, .qemuVTPM,
            AttestationVariant(name: "big-arcs", oid: [2, 999, 1 << 40, 127, 128, 16_383, 16_384]),
        ]
        for variant in variants {
            for serverNonce in [nil, ATLSNonce.random()] {
                let der = try AttestedCertificate.make(
                    key: key,
                    variant: variant,
                    document: document,
                    serverNonce: serverNonce,
                    now: now
                )
                let parsed = try Certificate(derEncoded: der)
                #expect(try serialize(parsed) == der, "not canonical DER for \(variant.name), \(documentSize) bytes")
                var expected = [(oid: variant.oid, value: document)]
                if let serverNonce { expected.append((AttestedCertificate.serverNonceOID, serverNonce.bytes)) }
                #expect(
                    parsed.extensions.map(\.oid) == (try expected.map { try ASN1ObjectIdentifier(elements: $0.oid) })
                )
                #expect(parsed.extensions.map { Array($0.value) } == expected.map(\.value))
                #expect(parsed.extensions.allSatisfy { !$0.critical })
                #expect(parsed.publicKey.isValidSignature(parsed.signature, for: parsed))
                #expect(
                    try PeerCertificate(der: der).subjectPublicKeyInfo.elementsEqual(key.publicKey.derRepresentation)
                )
            }
        }
    }

    @Test("validity is ±2 h to the second, in UTCTime from 1950 through 2049 and GeneralizedTime outside")
    func times() throws {
        let key = P256.Signing.PrivateKey()
        var instants: [TimeInterval] = [
            -631_152_000, -631_152_001, -631_152_000 - 7200, 2_524_607_999, 2_524_608_000, 2_524_608_000 - 7200,
            951_827_696.5, 951_827_696.49,
            -0.4, -0.5, -1.5, 0, 86_399.6, 4_102_444_800, 253_402_293_599 - 7200, -2_208_988_800,
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            instants.append(TimeInterval(Int64.random(in: -2_208_988_800...7_258_118_400, using: &generator)) + 0.25)
        }
        for instant in instants {
            let notBefore = Date(timeIntervalSince1970: instant)
            let issued = notBefore + AttestedCertificate.validityMargin
            let der = try AttestedCertificate.make(key: key, variant: .asterismTPM, document: [1, 2, 3], now: issued)
            let parsed = try Certificate(derEncoded: der)
            #expect(abs(parsed.notValidBefore.timeIntervalSince(notBefore)) <= 0.5, "notBefore at \(instant)")
            #expect(
                abs(parsed.notValidAfter.timeIntervalSince(issued + AttestedCertificate.validityMargin)) <= 0.5,
                "notAfter at \(instant)"
            )
            #expect(
                try Self.timeTypes(parsed) == [
                    Self.timeType(notBefore), Self.timeType(issued + AttestedCertificate.validityMargin),
                ],
                "time types at \(instant)"
            )
        }
        // NotAfter in the year 10000 has no encoding.
        #expect(throws: ATLSError.self) {
            try AttestedCertificate.make(
                key: key,
                variant: .asterismTPM,
                document: [],
                now: Date(timeIntervalSince1970: 253_402_300_800)
            )
        }
    }

    /// UTCTime from 1950 through 2049 (RFC 5280 §4.1.2.5), GeneralizedTime otherwise.
    static func timeType(_ date: Date) -> ASN1Identifier {
        (-631_152_000.0..<2_524_608_000.0).contains(date.timeIntervalSince1970.rounded()) ? .utcTime : .generalizedTime
    }

    /// The tags of NotBefore and NotAfter in `certificate`'s TBSCertificate.
    static func timeTypes(_ certificate: Certificate) throws -> [ASN1Identifier] {
        // TBSCertificate: version, serialNumber, signature, issuer, validity (index 4), …
        guard case .constructed(let fields) = try DER.parse(certificate.tbsCertificateBytes).content,
            case .constructed(let times) = Array(fields)[4].content
        else { return [] }
        return times.map(\.identifier)
    }

    @Test("fresh keys are distinct, sign, and their key hash is the SubjectPublicKeyInfo's")
    func freshKeys() throws {
        let issuer = AttestedCertificateIssuer(
            evidence: SoftwareTPMEvidenceIssuer(format: .native),
            keyMode: .freshPerCertificate
        )
        let nonce = ATLSNonce.random()
        let credentials = try (0..<8).map { _ in try issuer.issue(nonce: nonce, now: now) }
        #expect(Set(credentials.map(\.keyHash)).count == credentials.count)
        for credential in credentials {
            #expect(credential.keyHash == AttestedCertificate.userData(for: credential.privateKey.publicKey))
            let certificate = try Certificate(derEncoded: credential.certificateDER)
            #expect(
                P256.Signing.PublicKey(certificate.publicKey)?.rawRepresentation
                    == credential.privateKey.publicKey.rawRepresentation
            )
            let signature = try credential.privateKey.signature(for: Array("probe".utf8))
            #expect(credential.privateKey.publicKey.isValidSignature(signature, for: Array("probe".utf8)))
        }
    }

    @Test("the nonce-name certificate is self-signed, valid like an attested one, and named CN=<base64 nonce>")
    func nonceNameCertificate() throws {
        let nonce = ATLSNonce.random()
        let der = try AttestedCertificate.nonceNameCertificate(nonce, now: now)
        let parsed = try Certificate(derEncoded: der)
        let name = try DistinguishedName { CommonName(nonce.base64) }
        #expect(parsed.subject == name && parsed.issuer == name)
        #expect(parsed.publicKey.isValidSignature(parsed.signature, for: parsed))
        #expect(parsed.extensions.isEmpty)
        #expect(abs(parsed.notValidBefore.timeIntervalSince(now) + AttestedCertificate.validityMargin) < 1)
        #expect(try serialize(parsed) == der)
        // One signing key per process: the names differ, the key does not.
        let other = try Certificate(derEncoded: try AttestedCertificate.nonceNameCertificate(.random(), now: now))
        #expect(other.publicKey == parsed.publicKey && other.subject != parsed.subject)
    }
}
