import Attestation
import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@testable import ATLS

/// A peer's certificate read by swift-certificates with aTLS's checks on top: what it accepts, and what
/// it refuses by name (the strict refusals of the DER reader it replaced).
@Suite("peer certificates: swift-certificates' parse and the checks on top")
struct PeerCertificateTests {
    let now = Date()

    func serialize(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    /// ``made(anyKey:notBefore:notAfter:extensions:signatureAlgorithm:subject:)`` for a P-256 key.
    func made(
        key: P256.Signing.PrivateKey = P256.Signing.PrivateKey(),
        notBefore: Date? = nil,
        notAfter: Date? = nil,
        extensions: Certificate.Extensions = Certificate.Extensions(),
        signatureAlgorithm: Certificate.SignatureAlgorithm = .ecdsaWithSHA256,
        subject: DistinguishedName? = nil
    ) throws -> [UInt8] {
        try made(
            anyKey: Certificate.PrivateKey(key),
            notBefore: notBefore,
            notAfter: notAfter,
            extensions: extensions,
            signatureAlgorithm: signatureAlgorithm,
            subject: subject
        )
    }

    /// A certificate made by swift-certificates for `key`, self-signed, with these extensions and times.
    func made(
        anyKey key: Certificate.PrivateKey,
        notBefore: Date? = nil,
        notAfter: Date? = nil,
        extensions: Certificate.Extensions = Certificate.Extensions(),
        signatureAlgorithm: Certificate.SignatureAlgorithm,
        subject: DistinguishedName? = nil
    ) throws -> [UInt8] {
        let name = try DistinguishedName { CommonName("Constellation") }
        return try serialize(
            Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: key.publicKey,
                notValidBefore: notBefore ?? now - 60,
                notValidAfter: notAfter ?? now + 60,
                issuer: name,
                subject: subject ?? name,
                signatureAlgorithm: signatureAlgorithm,
                extensions: extensions,
                issuerPrivateKey: key
            )
        )
    }

    /// What `PeerCertificate` makes of `der`: the read key's SubjectPublicKeyInfo, or the refusal.
    func read(_ der: [UInt8]) -> Result<[UInt8], ATLSError> {
        do throws(ATLSError) {
            return .success(Array(try PeerCertificate(der: der).subjectPublicKeyInfo))
        } catch {
            return .failure(error)
        }
    }

    func isUnreadable(_ der: [UInt8]) -> Bool {
        if case .failure(.certificateUnreadable) = read(der) { true } else { false }
    }

    func isUnsupportedKey(_ der: [UInt8]) -> Bool {
        if case .failure(.unsupportedKey) = read(der) { true } else { false }
    }

    @Test(
        "certificates of other shapes are read: GeneralizedTime, critical and several extensions, SHA-384, a long name"
    )
    func otherShapes() throws {
        let key = P256.Signing.PrivateKey()
        let shapes = [
            // 2050 and later are GeneralizedTime; before 1950 as well.
            try made(
                key: key,
                notBefore: Date(timeIntervalSince1970: -1_000_000_000),
                notAfter: Date(timeIntervalSince1970: 2_600_000_000)
            ),
            // UTCTime's century boundary: 49 is 2049, 50 is 1950.
            try made(
                key: key,
                notBefore: Date(timeIntervalSince1970: -631_152_000),
                notAfter: Date(timeIntervalSince1970: 2_524_607_999)
            ),
            try made(
                key: key,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    SubjectAlternativeNames([.dnsName("node.example")])
                    Certificate.Extension(oid: [1, 3, 9900, 77, 1], critical: false, value: [1, 2, 3])
                }
            ),
            try made(key: key, signatureAlgorithm: .ecdsaWithSHA384),
            try made(key: key, signatureAlgorithm: .ecdsaWithSHA512),
        ]
        for der in shapes {
            #expect(try read(der).get() == Array(key.publicKey.derRepresentation))
            #expect(try PeerCertificate(der: der).isSelfSigned)
        }
        // A subject other than the issuer is read, then refused as not self-issued.
        let notSelfIssued = try made(
            subject: try DistinguishedName {
                CommonName(String(repeating: "n", count: 300))
                OrganizationName("Asterism")
            }
        )
        #expect(throws: Never.self) { try read(notSelfIssued).get() }
        #expect(throws: ATLSError.badSelfSignature) {
            try TestEvidence.verifier.verify(certificateDER: notSelfIssued, nonce: .random(), at: now)
        }
    }

    @Test("every truncation, a trailing byte and a non-minimal length are unreadable, never a crash")
    func malformedFraming() throws {
        let der = try AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached).issue(
            nonce: .random(),
            now: now
        ).certificateDER
        for length in 0..<der.count {
            #expect(isUnreadable(Array(der.prefix(length))), "\(length) bytes")
        }
        #expect(isUnreadable(der + [0]))
        // The outer SEQUENCE's length re-encoded with one more length octet than needed.
        #expect(der[1] == 0x82)
        #expect(isUnreadable(Array([0x30, 0x83, 0x00] + der[2...])))
    }

    @Test("the reassembly the refusal tests use keeps a certificate valid")
    func reassemblyKeepsValid() throws {
        let key = P256.Signing.PrivateKey()
        let der = try Reassembled.certificate(try Reassembled.fields(try made(key: key)), key: key)
        #expect(try read(der).get() == Array(key.publicKey.derRepresentation))
        #expect(try PeerCertificate(der: der).isSelfSigned)
    }

    @Test(
        "other keys, other algorithms, a compressed point and a non-canonical SubjectPublicKeyInfo are refused by name"
    )
    func keyRefusals() throws {
        #expect(
            isUnsupportedKey(
                try made(
                    anyKey: Certificate.PrivateKey(P384.Signing.PrivateKey()),
                    signatureAlgorithm: .ecdsaWithSHA384
                )
            )
        )
        #expect(
            isUnsupportedKey(
                try made(anyKey: Certificate.PrivateKey(Curve25519.Signing.PrivateKey()), signatureAlgorithm: .ed25519)
            )
        )

        // A P-256 key whose y is even, so that a BIT STRING declaring one unused bit is still valid DER.
        var key = P256.Signing.PrivateKey()
        while key.publicKey.x963Representation.last! & 1 != 0 { key = P256.Signing.PrivateKey() }
        let fields = try Reassembled.fields(try made(key: key))
        let point = Array(key.publicKey.x963Representation)
        // The same key and algorithm, its BIT STRING declaring an unused bit: swift-certificates reads the
        // key, the canonical re-encoding differs, so the key hash would depend on who computes it.
        var nonCanonical = fields
        nonCanonical[6] = try Reassembled.subjectPublicKeyInfo(point, unusedBits: 1)
        #expect(
            try Certificate(derEncoded: try Reassembled.certificate(nonCanonical, key: key)).publicKey
                == Certificate.PublicKey(key.publicKey)
        )
        #expect(isUnreadable(try Reassembled.certificate(nonCanonical, key: key)))
        // The compressed form of the point.
        var compressed = fields
        compressed[6] = try Reassembled.subjectPublicKeyInfo([0x02] + point[1...32], unusedBits: 0)
        #expect(read(try Reassembled.certificate(compressed, key: key)).isFailure)
        // A curve swift-certificates does not know (secp256k1).
        var otherCurve = fields
        otherCurve[6] = try Reassembled.subjectPublicKeyInfo(point, unusedBits: 0, curve: [1, 3, 132, 0, 10])
        #expect(isUnsupportedKey(try Reassembled.certificate(otherCurve, key: key)))
        // The canonical form, rebuilt the same way, is read.
        var canonical = fields
        canonical[6] = try Reassembled.subjectPublicKeyInfo(point, unusedBits: 0)
        #expect(
            try read(try Reassembled.certificate(canonical, key: key)).get() == Array(key.publicKey.derRepresentation)
        )
    }

    @Test(
        "differing inner and outer algorithms, parameters on ECDSA, a repeated extension and impossible times are refused"
    )
    func structureRefusals() throws {
        let key = P256.Signing.PrivateKey()
        let fields = try Reassembled.fields(try made(key: key))
        // The TBSCertificate says SHA-384, the outer algorithm SHA-256 (and the signature is SHA-256's): only
        // the comparison of the two catches it.
        var inner = fields
        inner[2] = Reassembled.ecdsaWithSHA384
        let mismatched = try Reassembled.certificate(inner, key: key)
        let parsed = try Certificate(derEncoded: mismatched)
        #expect(parsed.publicKey.isValidSignature(parsed.signature, for: parsed))
        #expect(isUnreadable(mismatched))
        // ecdsa-with-SHA256 with a NULL parameter, inside and out.
        let withNull: [UInt8] = [0x30, 0x0C, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02, 0x05, 0x00]
        var nulls = fields
        nulls[2] = withNull
        #expect(read(try Reassembled.certificate(nulls, key: key, outerAlgorithm: withNull)).isFailure)

        // The same extension twice, in a certificate otherwise well made and signed.
        let item = Certificate.Extension(oid: [1, 3, 9900, 77, 1], critical: false, value: [1])
        var repeated = fields
        repeated.append(try Reassembled.extensions([item, item]))
        #expect(isUnreadable(try Reassembled.certificate(repeated, key: key)))
        var once = fields
        once.append(try Reassembled.extensions([item]))
        #expect(!isUnreadable(try Reassembled.certificate(once, key: key)))

        // Month 13 in NotBefore (UTCTime YYMMDDHHMMSSZ: the month digits follow the year).
        var badTime = fields
        #expect(badTime[4][2] == 0x17)
        badTime[4][2 + 2 + 2] = 0x31
        badTime[4][2 + 2 + 3] = 0x33
        #expect(isUnreadable(try Reassembled.certificate(badTime, key: key)))
    }

    @Test("a single changed byte anywhere in an attested certificate is refused")
    func everyByteMatters() throws {
        let nonce = ATLSNonce.random()
        let der = try AttestedCertificateIssuer(evidence: TestEvidence.native, keyMode: .cached).issue(
            nonce: nonce,
            now: now
        ).certificateDER
        #expect(throws: Never.self) { try TestEvidence.verifier.verify(certificateDER: der, nonce: nonce, at: now) }
        for index in stride(from: 0, to: der.count, by: 7) {
            var changed = der
            changed[index] ^= 0x01
            #expect(throws: ATLSError.self, "byte \(index) changed") {
                try TestEvidence.verifier.verify(certificateDER: changed, nonce: nonce, at: now)
            }
        }
    }
}

extension Result {
    var isFailure: Bool { if case .failure = self { true } else { false } }
}

/// Certificates of shapes Asterism never issues, assembled with SwiftASN1 from another certificate's
/// TBSCertificate fields and signed again, so that only the changed field can explain a refusal.
enum Reassembled {
    static let ecdsaWithSHA256: [UInt8] = [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
    static let ecdsaWithSHA384: [UInt8] = [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03]

    /// The TBSCertificate fields of `der`, each as DER: version, serialNumber, signature, issuer, validity,
    /// subject, subjectPublicKeyInfo, then the extensions when present.
    static func fields(_ der: [UInt8]) throws -> [[UInt8]] {
        guard
            case .constructed(let fields) = try DER.parse(try Certificate(derEncoded: der).tbsCertificateBytes).content
        else { return [] }
        return fields.map { Array($0.encodedBytes) }
    }

    /// `fields` as a TBSCertificate signed by `key` (ECDSA with SHA-256), under `outerAlgorithm`.
    static func certificate(
        _ fields: [[UInt8]],
        key: P256.Signing.PrivateKey,
        outerAlgorithm: [UInt8] = ecdsaWithSHA256
    ) throws -> [UInt8] {
        var tbs = DER.Serializer()
        tbs.appendConstructedNode(identifier: .sequence) { coder in
            for field in fields { coder.serializeRawBytes(field) }
        }
        let signature = try key.signature(for: tbs.serializedBytes)
        var certificate = DER.Serializer()
        try certificate.appendConstructedNode(identifier: .sequence) { coder in
            coder.serializeRawBytes(tbs.serializedBytes)
            coder.serializeRawBytes(outerAlgorithm)
            try coder.serialize(ASN1BitString(bytes: Array(signature.derRepresentation)[...]))
        }
        return certificate.serializedBytes
    }

    /// A SubjectPublicKeyInfo of id-ecPublicKey on `curve` (P-256 unless given) whose BIT STRING holds `point`
    /// and declares `unusedBits`.
    static func subjectPublicKeyInfo(
        _ point: [UInt8],
        unusedBits: Int,
        curve: [UInt] = [1, 2, 840, 10045, 3, 1, 7]
    ) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.appendConstructedNode(identifier: .sequence) { coder in
            try coder.appendConstructedNode(identifier: .sequence) { algorithm in
                try algorithm.serialize(ASN1ObjectIdentifier(elements: [1, 2, 840, 10045, 2, 1]))
                try algorithm.serialize(ASN1ObjectIdentifier(elements: curve))
            }
            try coder.serialize(ASN1BitString(bytes: point[...], paddingBits: unusedBits))
        }
        return serializer.serializedBytes
    }

    /// The `[3] EXPLICIT Extensions` field holding `items` in order.
    static func extensions(_ items: [Certificate.Extension]) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(explicitlyTaggedWithTagNumber: 3, tagClass: .contextSpecific) { coder in
            try coder.serializeSequenceOf(items)
        }
        return serializer.serializedBytes
    }
}
