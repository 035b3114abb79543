import Attestation
import FoundationEssentials

/// The parts of an X.509 certificate that the aTLS verifier reads, located in the certificate's DER
/// without copying (RFC 5280 §4.1). Strict DER: definite minimal lengths, nothing after the
/// certificate, the inner signature algorithm equal to the outer one. Only ECDSA P-256 keys with a
/// named curve and an uncompressed point, signed with ECDSA over SHA-256, -384 or -512, are read;
/// anything else is `unsupportedKey` or `certificateUnreadable`.
struct AttestedCertificateReader {
    /// The hash ECDSA signed the TBSCertificate with.
    enum SignatureHash { case sha256, sha384, sha512 }

    /// The TBSCertificate, tag and length included: the signed bytes.
    let tbs: ArraySlice<UInt8>
    /// The signature's hash.
    let signatureHash: SignatureHash
    /// The ECDSA-Sig-Value (DER SEQUENCE of r and s) inside the signature BIT STRING.
    let signature: ArraySlice<UInt8>
    /// The issuer and subject Names, tag and length included.
    let issuer: ArraySlice<UInt8>
    let subject: ArraySlice<UInt8>
    /// NotBefore and NotAfter.
    let notBefore: Date
    let notAfter: Date
    /// The SubjectPublicKeyInfo, tag and length included; canonical for P-256, so its SHA-256 is the user data.
    let subjectPublicKeyInfo: ArraySlice<UInt8>
    /// The public key, `0x04 || X || Y`.
    let publicKey: ArraySlice<UInt8>
    /// The extensions in order: the OBJECT IDENTIFIER's content octets and the extension value.
    let extensions: [(oid: ArraySlice<UInt8>, value: ArraySlice<UInt8>)]

    /// The most extensions a certificate may carry here.
    static let maxExtensions = 64

    /// id-ecPublicKey and prime256v1, the only key algorithm read.
    private static let ecP256Algorithm: [UInt8] = [
        0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07,
    ]
    /// ecdsa-with-SHA256/384/512 (RFC 5758: no parameters).
    private static let ecdsaAlgorithms: [([UInt8], SignatureHash)] = [
        ([0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02], .sha256),
        ([0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03], .sha384),
        ([0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04], .sha512),
    ]

    /// Reads `der`.
    /// - Throws: ``ATLSError/certificateUnreadable(_:)`` naming the field, or ``ATLSError/unsupportedKey(_:)``.
    init(der: [UInt8]) throws(ATLSError) {
        var outer = DERCursor(der[...])
        var certificate = try outer.cursor(of: 0x30, "Certificate")
        guard outer.isAtEnd else { throw .certificateUnreadable("\(outer.remaining) bytes after the certificate") }
        let tbsElement = try certificate.element(0x30, "TBSCertificate")
        let outerAlgorithm = try certificate.element(0x30, "signatureAlgorithm")
        var signatureBits = try certificate.cursor(of: 0x03, "signatureValue")
        guard certificate.isAtEnd else { throw .certificateUnreadable("data after signatureValue") }
        guard let hash = Self.ecdsaAlgorithms.first(where: { $0.0.elementsEqual(outerAlgorithm) })?.1 else {
            throw .unsupportedKey("signature algorithm \(Self.describe(algorithm: outerAlgorithm)), not ECDSA with SHA-2")
        }
        guard signatureBits.take(byte: 0x00) else { throw .certificateUnreadable("signatureValue has unused bits") }

        var tbs = DERCursor(tbsElement)
        _ = try tbs.header(0x30, "TBSCertificate")
        if tbs.peek == 0xA0 {
            var version = try tbs.cursor(of: 0xA0, "version")
            let value = try version.contents(of: 0x02, "version")
            guard version.isAtEnd, value.count == 1, value.first! <= 2 else { throw .certificateUnreadable("version is not v1, v2 or v3") }
        }
        let serial = try tbs.contents(of: 0x02, "serialNumber")
        guard !serial.isEmpty, serial.count <= 21 else { throw .certificateUnreadable("serialNumber of \(serial.count) bytes") }
        guard try tbs.element(0x30, "signature").elementsEqual(outerAlgorithm) else {
            throw .certificateUnreadable("the TBSCertificate's signature algorithm differs from the certificate's")
        }
        issuer = try tbs.element(0x30, "issuer")
        var validity = try tbs.cursor(of: 0x30, "validity")
        notBefore = try validity.time("notBefore")
        notAfter = try validity.time("notAfter")
        guard validity.isAtEnd else { throw .certificateUnreadable("data after notAfter") }
        subject = try tbs.element(0x30, "subject")
        subjectPublicKeyInfo = try tbs.element(0x30, "subjectPublicKeyInfo")
        var spki = DERCursor(subjectPublicKeyInfo)
        var spkiContents = try spki.cursor(of: 0x30, "subjectPublicKeyInfo")
        let keyAlgorithm = try spkiContents.element(0x30, "subjectPublicKeyInfo.algorithm")
        guard keyAlgorithm.elementsEqual(Self.ecP256Algorithm) else {
            throw .unsupportedKey("key algorithm \(Self.describe(algorithm: keyAlgorithm))")
        }
        var keyBits = try spkiContents.cursor(of: 0x03, "subjectPublicKey")
        guard spkiContents.isAtEnd, keyBits.take(byte: 0x00) else { throw .certificateUnreadable("subjectPublicKey is malformed") }
        guard keyBits.remaining == 65, keyBits.peek == 0x04 else {
            throw .unsupportedKey("a P-256 point of \(keyBits.remaining) bytes; only the uncompressed 65-byte form is read")
        }
        publicKey = keyBits.rest
        if tbs.peek == 0x81 { _ = try tbs.element(0x81, "issuerUniqueID") }
        if tbs.peek == 0x82 { _ = try tbs.element(0x82, "subjectUniqueID") }
        var extensions: [(oid: ArraySlice<UInt8>, value: ArraySlice<UInt8>)] = []
        if tbs.peek == 0xA3 {
            var wrapper = try tbs.cursor(of: 0xA3, "extensions")
            var list = try wrapper.cursor(of: 0x30, "extensions")
            guard wrapper.isAtEnd else { throw .certificateUnreadable("data after the extensions") }
            while !list.isAtEnd {
                guard extensions.count < Self.maxExtensions else { throw .certificateUnreadable("more than \(Self.maxExtensions) extensions") }
                var item = try list.cursor(of: 0x30, "extension")
                let oid = try item.contents(of: 0x06, "extension OID")
                guard !oid.isEmpty, oid.last! & 0x80 == 0 else { throw .certificateUnreadable("an extension OID is malformed") }
                if item.peek == 0x01 {
                    let critical = try item.contents(of: 0x01, "extension critical flag")
                    guard critical.count == 1, critical.first == 0x00 || critical.first == 0xFF else {
                        throw .certificateUnreadable("an extension's critical flag is not a BOOLEAN")
                    }
                }
                let value = try item.contents(of: 0x04, "extension value")
                guard item.isAtEnd else { throw .certificateUnreadable("data after an extension value") }
                guard !extensions.contains(where: { $0.oid.elementsEqual(oid) }) else {
                    throw .certificateUnreadable("extension \(Self.dotted(oid)) appears twice")
                }
                extensions.append((oid, value))
            }
        }
        guard tbs.isAtEnd else { throw .certificateUnreadable("data after the TBSCertificate's last field") }
        self.tbs = tbsElement
        self.signatureHash = hash
        self.signature = signatureBits.rest
        self.extensions = extensions
    }

    /// The dotted form of an OBJECT IDENTIFIER's content octets (for messages).
    static func dotted(_ content: ArraySlice<UInt8>) -> String {
        var arcs: [UInt64] = []
        var value: UInt64 = 0
        for byte in content {
            guard value >> 57 == 0 else { return "(oversized OID)" }
            value = value << 7 | UInt64(byte & 0x7F)
            if byte & 0x80 == 0 {
                if arcs.isEmpty {
                    let first = min(value / 40, 2)
                    arcs += [first, value - first * 40]
                } else {
                    arcs.append(value)
                }
                value = 0
            }
        }
        return arcs.map(String.init).joined(separator: ".")
    }

    /// An AlgorithmIdentifier by its OID, for messages.
    private static func describe(algorithm: ArraySlice<UInt8>) -> String {
        var cursor = DERCursor(algorithm)
        guard var contents = try? cursor.cursor(of: 0x30, "algorithm"), let oid = try? contents.contents(of: 0x06, "algorithm") else {
            return "(unreadable)"
        }
        return dotted(oid) + (contents.isAtEnd ? "" : " with parameters")
    }
}

/// A forward reader of DER elements over a byte slice; every read checks its bounds.
struct DERCursor {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    var isAtEnd: Bool { bytes.isEmpty }
    var remaining: Int { bytes.count }
    /// The next byte (the next element's tag), nil at the end.
    var peek: UInt8? { bytes.first }
    /// Everything not yet read.
    var rest: ArraySlice<UInt8> { bytes }

    /// Consumes `byte` when it is next.
    mutating func take(byte: UInt8) -> Bool {
        guard bytes.first == byte else { return false }
        bytes.removeFirst()
        return true
    }

    /// Reads a tag `tag` and a minimal definite length, leaving the content next; returns the content length.
    mutating func header(_ tag: UInt8, _ field: String) throws(ATLSError) -> Int {
        guard let found = bytes.first else { throw .certificateUnreadable("\(field) is missing") }
        guard found == tag else { throw .certificateUnreadable("\(field): expected tag 0x\(hexString([tag])), found 0x\(hexString([found]))") }
        var index = bytes.index(after: bytes.startIndex)
        guard index < bytes.endIndex else { throw .certificateUnreadable("\(field) has no length") }
        let first = bytes[index]
        index += 1
        var length: Int
        if first < 0x80 {
            length = Int(first)
        } else {
            let count = Int(first & 0x7F)
            guard count >= 1, count <= 3, bytes.endIndex - index >= count else { throw .certificateUnreadable("\(field) has an unsupported length") }
            length = 0
            for offset in 0..<count { length = length << 8 | Int(bytes[index + offset]) }
            index += count
            // DER: the shortest form, no leading zero octet.
            guard length >= 0x80, length >> (8 * (count - 1)) != 0 else { throw .certificateUnreadable("\(field) has a non-minimal length") }
        }
        guard bytes.endIndex - index >= length else { throw .certificateUnreadable("\(field) is truncated") }
        bytes = bytes[index...]
        return length
    }

    /// A cursor over the content of the next element, which must have `tag`.
    mutating func cursor(of tag: UInt8, _ field: String) throws(ATLSError) -> DERCursor {
        DERCursor(try contentBytes(of: tag, field))
    }

    /// The content bytes of the next element, which must have `tag`.
    mutating func contents(of tag: UInt8, _ field: String) throws(ATLSError) -> ArraySlice<UInt8> {
        try contentBytes(of: tag, field)
    }

    /// The whole next element (tag, length and content), which must have `tag`.
    mutating func element(_ tag: UInt8, _ field: String) throws(ATLSError) -> ArraySlice<UInt8> {
        let original = bytes
        let length = try header(tag, field)
        let end = bytes.startIndex + length
        bytes = bytes[end...]
        return original[original.startIndex..<end]
    }

    /// A UTCTime or GeneralizedTime in RFC 5280's form (seconds, `Z`).
    mutating func time(_ field: String) throws(ATLSError) -> Date {
        let digitsCount: Int
        let text: ArraySlice<UInt8>
        switch bytes.first {
        case 0x17: text = try contentBytes(of: 0x17, field); digitsCount = 12
        case 0x18: text = try contentBytes(of: 0x18, field); digitsCount = 14
        default: throw .certificateUnreadable("\(field) is not a UTCTime or GeneralizedTime")
        }
        guard text.count == digitsCount + 1, text.last == 0x5A, text.dropLast().allSatisfy({ (0x30...0x39).contains($0) }) else {
            throw .certificateUnreadable("\(field) is not in the form YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ")
        }
        let digits = text.dropLast().map { Int($0 - 0x30) }
        func number(_ at: Int, _ count: Int) -> Int { digits[at..<at + count].reduce(0) { $0 * 10 + $1 } }
        var year: Int
        var at: Int
        if digitsCount == 12 {
            year = number(0, 2)
            year += year < 50 ? 2000 : 1900
            at = 2
        } else {
            year = number(0, 4)
            at = 4
        }
        let (month, day, hour, minute, second) = (number(at, 2), number(at + 2, 2), number(at + 4, 2), number(at + 6, 2), number(at + 8, 2))
        let monthDays = [31, year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard (1...12).contains(month), (1...monthDays[month - 1]).contains(day), hour < 24, minute < 60, second < 60 else {
            throw .certificateUnreadable("\(field) is not a valid date and time")
        }
        let days = AttestedCertificateDER.daysSince1970(year: year, month: month, day: day)
        return Date(timeIntervalSince1970: TimeInterval(days * 86_400 + Int64(hour * 3600 + minute * 60 + second)))
    }

    private mutating func contentBytes(of tag: UInt8, _ field: String) throws(ATLSError) -> ArraySlice<UInt8> {
        let length = try header(tag, field)
        let content = bytes.prefix(length)
        bytes = bytes.dropFirst(length)
        return content
    }
}
