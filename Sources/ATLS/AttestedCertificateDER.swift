import FoundationEssentials

/// DER for the one certificate layout aTLS issues (see ``AttestedCertificate``), written directly:
/// every length is known before a byte is written, so the TBSCertificate is built once, in one
/// buffer, and signed as is. Building it with swift-certificates' `Certificate` and serializing it
/// again cost about as much as the ECDSA signature itself on every handshake. The output is exactly
/// what swift-certificates writes for the same fields (a test parses and re-serializes it).
enum AttestedCertificateDER {
    /// AlgorithmIdentifier ecdsa-with-SHA256 (1.2.840.10045.4.3.2), without parameters.
    static let ecdsaWithSHA256: [UInt8] = [0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]
    /// `[0] EXPLICIT INTEGER 2`: version v3.
    static let version3: [UInt8] = [0xA0, 0x03, 0x02, 0x01, 0x02]
    /// Name `CN=Constellation`.
    static let name: [UInt8] = commonName(AttestedCertificate.commonName)

    /// Name `CN=<text>`, the CN as UTF8String, as swift-certificates' `CommonName` writes it.
    static func commonName(_ text: String) -> [UInt8] {
        let attribute = [0x06, 0x03, 0x55, 0x04, 0x03] + tlv(0x0C, Array(text.utf8))
        return tlv(0x30, tlv(0x31, tlv(0x30, attribute)))
    }

    /// One extension to encode: OID arcs, non-critical, and its value.
    struct Extension {
        let oid: [UInt]
        let value: [UInt8]
    }

    /// The DER TBSCertificate, issued by and to `name`. `serial` is a positive INTEGER's minimal content
    /// bytes and `subjectPublicKeyInfo` the key's DER SubjectPublicKeyInfo.
    static func tbsCertificate(
        serial: [UInt8], notBefore: Date, notAfter: Date, subjectPublicKeyInfo: [UInt8], extensions: [Extension], name: [UInt8] = name
    ) throws(ATLSError) -> [UInt8] {
        let validity = tlv(0x30, try time(notBefore) + time(notAfter))
        var extensionFields: [(oid: [UInt8], value: [UInt8])] = []
        extensionFields.reserveCapacity(extensions.count)
        var extensionsLength = 0
        for item in extensions {
            let oid = try objectIdentifier(item.oid)
            extensionsLength += tlvSize(oid.count + tlvSize(item.value.count))
            extensionFields.append((oid, item.value))
        }
        let extensionsField = tlvSize(tlvSize(extensionsLength))
        let contentLength = version3.count + tlvSize(serial.count) + ecdsaWithSHA256.count + 2 * name.count + validity.count
            + subjectPublicKeyInfo.count + (extensions.isEmpty ? 0 : extensionsField)

        var out: [UInt8] = []
        out.reserveCapacity(tlvSize(contentLength))
        appendHeader(0x30, contentLength, to: &out)
        out += version3
        appendHeader(0x02, serial.count, to: &out)
        out += serial
        out += ecdsaWithSHA256
        out += name
        out += validity
        out += name
        out += subjectPublicKeyInfo
        if !extensions.isEmpty {
            appendHeader(0xA3, tlvSize(extensionsLength), to: &out)
            appendHeader(0x30, extensionsLength, to: &out)
            for field in extensionFields {
                appendHeader(0x30, field.oid.count + tlvSize(field.value.count), to: &out)
                out += field.oid  // `critical` is FALSE, the default, so DER leaves it out
                appendHeader(0x04, field.value.count, to: &out)
                out += field.value
            }
        }
        return out
    }

    /// The DER Certificate: the TBSCertificate, the algorithm, and the DER ECDSA-Sig-Value as a BIT STRING.
    static func certificate(tbs: [UInt8], signature: [UInt8]) -> [UInt8] {
        let bitString = 1 + signature.count
        let contentLength = tbs.count + ecdsaWithSHA256.count + tlvSize(bitString)
        var out: [UInt8] = []
        out.reserveCapacity(tlvSize(contentLength))
        appendHeader(0x30, contentLength, to: &out)
        out += tbs
        out += ecdsaWithSHA256
        appendHeader(0x03, bitString, to: &out)
        out.append(0)  // no unused bits
        out += signature
        return out
    }

    /// A complete OBJECT IDENTIFIER TLV.
    static func objectIdentifier(_ arcs: [UInt]) throws(ATLSError) -> [UInt8] {
        guard arcs.count >= 2, arcs[0] <= 2, arcs[0] == 2 || arcs[1] < 40 else {
            throw .issuingFailed("OID \(arcs.map(String.init).joined(separator: ".")) is not encodable")
        }
        var content: [UInt8] = []
        let (first, overflow) = (arcs[0] * 40).addingReportingOverflow(arcs[1])
        guard !overflow else { throw .issuingFailed("OID arc too large") }
        for arc in [first] + arcs.dropFirst(2) {
            var groups: [UInt8] = [UInt8(arc & 0x7F)]
            var rest = arc >> 7
            while rest > 0 {
                groups.append(UInt8(rest & 0x7F) | 0x80)
                rest >>= 7
            }
            content += groups.reversed()
        }
        return tlv(0x06, content)
    }

    /// A Time as RFC 5280 wants it: UTCTime for 1950 through 2049, GeneralizedTime otherwise, whole
    /// seconds rounded to nearest as swift-certificates does.
    static func time(_ date: Date) throws(ATLSError) -> [UInt8] {
        let seconds = date.timeIntervalSince1970.rounded()
        guard seconds.isFinite, abs(seconds) < 1e15 else { throw .issuingFailed("time \(date) is not encodable") }
        let timestamp = Int64(seconds)
        let days = timestamp >= 0 ? timestamp / 86_400 : (timestamp - 86_399) / 86_400
        let secondOfDay = Int(timestamp - days * 86_400)
        let (year, month, day) = civilDate(daysSince1970: days)
        guard (0...9999).contains(year) else { throw .issuingFailed("year \(year) is not encodable") }
        let clock = [month, day, secondOfDay / 3600, secondOfDay / 60 % 60, secondOfDay % 60]
        if (1950..<2050).contains(year) {
            return tlv(0x17, digits(year % 100, 2) + clock.flatMap { digits($0, 2) } + [0x5A])
        }
        return tlv(0x18, digits(year, 4) + clock.flatMap { digits($0, 2) } + [0x5A])
    }

    /// Year, month and day of the proleptic Gregorian calendar for days since 1970-01-01
    /// (H. Hinnant's `civil_from_days`).
    static func civilDate(daysSince1970 days: Int64) -> (year: Int, month: Int, day: Int) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (Int(year), Int(month), Int(day))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    static func daysSince1970(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * Int64(month > 2 ? month - 3 : month + 9) + 2) / 5 + Int64(day) - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    private static func digits(_ value: Int, _ count: Int) -> [UInt8] {
        var value = value
        var out = [UInt8](repeating: 0x30, count: count)
        for index in stride(from: count - 1, through: 0, by: -1) {
            out[index] = 0x30 + UInt8(value % 10)
            value /= 10
        }
        return out
    }

    /// Bytes a TLV with `length` content bytes takes.
    static func tlvSize(_ length: Int) -> Int { 1 + lengthSize(length) + length }

    private static func lengthSize(_ length: Int) -> Int {
        length < 0x80 ? 1 : 1 + (Int.bitWidth - length.leadingZeroBitCount + 7) / 8
    }

    private static func appendHeader(_ tag: UInt8, _ length: Int, to out: inout [UInt8]) {
        out.append(tag)
        guard length >= 0x80 else {
            out.append(UInt8(length))
            return
        }
        let count = lengthSize(length) - 1
        out.append(0x80 | UInt8(count))
        for index in stride(from: count - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: length >> (8 * index))) }
    }

    private static func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(tlvSize(content.count))
        appendHeader(tag, content.count, to: &out)
        out += content
        return out
    }
}
