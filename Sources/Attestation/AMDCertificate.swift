import Crypto
import FoundationEssentials
import SwiftASN1
import X509
import _CryptoExtras

/// An X.509 certificate of AMD's key hierarchy, read with SwiftASN1 because swift-certificates does not
/// accept RSASSA-PSS signatures, which AMD uses throughout (ARK, ASK and VCEK).
public struct AMDCertificate: Hashable, Sendable {
    /// RSASSA-PSS (1.2.840.113549.1.1.10).
    static let rsassaPSS: ASN1ObjectIdentifier = [1, 2, 840, 113_549, 1, 1, 10]
    /// AMD's VCEK extensions live under 1.3.6.1.4.1.3704.1.
    static func amdOID(_ tail: [UInt]) -> ASN1ObjectIdentifier {
        (try? ASN1ObjectIdentifier(elements: [1, 3, 6, 1, 4, 1, 3704, 1] + tail)) ?? [1]
    }

    public let der: [UInt8]
    /// The DER TBSCertificate, the bytes the issuer signed.
    let tbs: [UInt8]
    let signatureAlgorithm: ASN1ObjectIdentifier
    let signature: [UInt8]
    public let issuer: DistinguishedName
    public let subject: DistinguishedName
    public let notValidBefore: Date
    public let notValidAfter: Date
    public let publicKey: Certificate.PublicKey
    /// The DER SubjectPublicKeyInfo.
    public let subjectPublicKeyInfo: [UInt8]
    /// Extension values (the contents of extnValue) by OID.
    let extensions: [ASN1ObjectIdentifier: [UInt8]]

    /// Parses one DER certificate.
    public init(derEncoded input: some Collection<UInt8>) throws(AttestationError) {
        let all = Array(input)
        guard all.count <= 16_384 else { throw .lengthExceeded("certificate", length: all.count, limit: 16_384) }
        der = all
        do {
            let root = try DER.parse(all)
            (
                tbs, signatureAlgorithm, signature, issuer, subject, notValidBefore, notValidAfter, publicKey,
                subjectPublicKeyInfo, extensions
            ) =
                try DER.sequence(root, identifier: .sequence) { nodes in
                    guard let tbsNode = nodes.next(), let algorithmNode = nodes.next() else {
                        throw ASN1Error.invalidASN1Object(reason: "certificate lacks TBSCertificate or algorithm")
                    }
                    let algorithm = try DER.sequence(algorithmNode, identifier: .sequence) { fields in
                        let oid = try ASN1ObjectIdentifier(derEncoded: &fields)
                        while fields.next() != nil {}  // parameters: only RSASSA-PSS with SHA-384 verifies below
                        return oid
                    }
                    let bits = try ASN1BitString(derEncoded: &nodes)
                    let tbsFields = try Self.parseTBS(tbsNode)
                    return (
                        Array(tbsNode.encodedBytes), algorithm, Array(bits.bytes), tbsFields.0, tbsFields.1,
                        tbsFields.2,
                        tbsFields.3, tbsFields.4, tbsFields.5, tbsFields.6
                    )
                }
        } catch let error as AttestationError {
            throw error
        } catch {
            throw .invalidCertificate("certificate", "\(error)")
        }
    }

    private static func parseTBS(
        _ node: ASN1Node
    ) throws -> (
        DistinguishedName, DistinguishedName, Date, Date, Certificate.PublicKey, [UInt8],
        [ASN1ObjectIdentifier: [UInt8]]
    ) {
        try DER.sequence(node, identifier: .sequence) { nodes in
            _ = try DER.optionalExplicitlyTagged(&nodes, tagNumber: 0, tagClass: .contextSpecific) {
                try Int(derEncoded: $0)
            }
            _ = nodes.next()  // serialNumber
            _ = nodes.next()  // signature (repeated outside)
            let issuer = try DistinguishedName(derEncoded: try required(nodes.next(), "issuer"))
            let (notBefore, notAfter) = try DER.sequence(try required(nodes.next(), "validity"), identifier: .sequence)
            { times in
                (
                    try date(of: try required(times.next(), "notBefore")),
                    try date(of: try required(times.next(), "notAfter"))
                )
            }
            let subject = try DistinguishedName(derEncoded: try required(nodes.next(), "subject"))
            guard let keyNode = nodes.next() else {
                throw ASN1Error.invalidASN1Object(reason: "no subjectPublicKeyInfo")
            }
            let key = try Certificate.PublicKey(derEncoded: keyNode)
            var extensions: [ASN1ObjectIdentifier: [UInt8]] = [:]
            while let next = nodes.next() {
                guard next.identifier == ASN1Identifier(tagWithNumber: 3, tagClass: .contextSpecific) else { continue }
                guard case .constructed(let wrapped) = next.content, let list = wrapped.first(where: { _ in true })
                else {
                    throw ASN1Error.invalidASN1Object(reason: "bad extensions")
                }
                try DER.sequence(list, identifier: .sequence) { items in
                    while let item = items.next() {
                        let (oid, value) = try DER.sequence(item, identifier: .sequence) { fields in
                            let oid = try ASN1ObjectIdentifier(derEncoded: &fields)
                            guard var valueNode = fields.next() else {
                                throw ASN1Error.invalidASN1Object(reason: "extension without value")
                            }
                            if valueNode.identifier == .boolean, let following = fields.next() { valueNode = following }
                            return (oid, try ASN1OctetString(derEncoded: valueNode))
                        }
                        guard extensions[oid] == nil else {
                            throw ASN1Error.invalidASN1Object(reason: "duplicate extension \(oid)")
                        }
                        extensions[oid] = Array(value.bytes)
                    }
                }
            }
            return (issuer, subject, notBefore, notAfter, key, Array(keyNode.encodedBytes), extensions)
        }
    }

    private static func required(_ node: ASN1Node?, _ what: String) throws -> ASN1Node {
        guard let node else { throw ASN1Error.invalidASN1Object(reason: "certificate lacks \(what)") }
        return node
    }

    private static func date(of node: ASN1Node) throws -> Date {
        let parts: (Int, Int, Int, Int, Int, Int)
        switch node.identifier {
        case .utcTime:
            let time = try UTCTime(derEncoded: node)
            parts = (time.year, time.month, time.day, time.hours, time.minutes, time.seconds)
        case .generalizedTime:
            let time = try GeneralizedTime(derEncoded: node)
            parts = (time.year, time.month, time.day, time.hours, time.minutes, time.seconds)
        default:
            throw ASN1Error.unexpectedFieldType(node.identifier)
        }
        return Date(timeIntervalSince1970: TimeInterval(unixSeconds(parts)))
    }

    /// Seconds since 1970 of a proleptic Gregorian UTC date (days-from-civil).
    static func unixSeconds(_ p: (year: Int, month: Int, day: Int, hours: Int, minutes: Int, seconds: Int)) -> Int {
        let y = p.month <= 2 ? p.year - 1 : p.year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (p.month + 9) % 12
        let doy = (153 * mp + 2) / 5 + p.day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return days * 86_400 + p.hours * 3_600 + p.minutes * 60 + p.seconds
    }

    /// Parses every certificate of a PEM bundle, in order.
    public static func pemBundle(_ text: String) throws(AttestationError) -> [AMDCertificate] {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw .invalidCertificate("PEM bundle", "\(error)")
        }
        var certificates: [AMDCertificate] = []
        for document in documents where document.discriminator == "CERTIFICATE" {
            certificates.append(try AMDCertificate(derEncoded: document.derBytes))
        }
        return certificates
    }

    /// A DER or PEM certificate.
    public static func derOrPEM(_ bytes: [UInt8]) throws(AttestationError) -> AMDCertificate {
        if bytes.first == 0x30 { return try AMDCertificate(derEncoded: bytes) }
        guard let first = try pemBundle(String(decoding: bytes, as: UTF8.self)).first else {
            throw .invalidCertificate("certificate", "no PEM CERTIFICATE block")
        }
        return first
    }

    /// Whether `issuer`'s RSA key made this certificate's RSASSA-PSS (SHA-384, MGF1-SHA-384, salt 48) signature.
    func isSigned(by issuer: AMDCertificate) -> Bool {
        guard signatureAlgorithm == Self.rsassaPSS, let key = _RSA.Signing.PublicKey(issuer.publicKey) else {
            return false
        }
        return key.isValidSignature(
            _RSA.Signing.RSASignature(rawRepresentation: signature),
            for: SHA384.hash(data: tbs),
            padding: .PSS
        )
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo.
    public var keyDigest: [UInt8] { Array(SHA256.hash(data: subjectPublicKeyInfo)) }

    /// An AMD extension's integer value.
    func amdInteger(_ tail: UInt...) -> Int? {
        guard let value = extensions[Self.amdOID(tail)] else { return nil }
        return try? Int(derEncoded: value[...])
    }

    /// The productName extension (IA5String).
    var productName: String? {
        guard let value = extensions[Self.amdOID([2])] else { return nil }
        if let text = try? ASN1IA5String(derEncoded: value[...]) { return String(text) }
        return String(decoding: value, as: UTF8.self)
    }

    /// The hwID extension: the chip ID, as an OCTET STRING or raw 64 bytes.
    var hardwareID: [UInt8]? {
        guard let value = extensions[Self.amdOID([4])] else { return nil }
        if let octets = try? ASN1OctetString(derEncoded: value[...]) { return Array(octets.bytes) }
        return value
    }
}
