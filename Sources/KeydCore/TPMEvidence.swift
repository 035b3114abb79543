import Crypto
import KeydProtocol

/// How evidence binds a verifier's nonce and the attested user data (PROTOCOL.md and
/// CONSTELLATION-WIRE.md, "Attestation binding"). keyd computes the qualifying data itself, so no
/// caller places arbitrary bytes in a quote.
public enum EvidenceBinding {
    /// Variant 1: `SHA-256("asterism-tpm-evidence-v1" || nonce || userDataDigest)`.
    public static func nativeQualifyingData(nonce: [UInt8], userDataDigest: [UInt8]) -> [UInt8] {
        precondition(nonce.count == 32 && userDataDigest.count == 32, "nonce and digest are 32 bytes")
        var hash = SHA256()
        hash.update(data: NativeEvidenceDocument.qualifyingDataLabel)
        hash.update(data: nonce)
        hash.update(data: userDataDigest)
        return Array(hash.finalize())
    }

    /// A quote's PCR digest: SHA-256 over the PCR values concatenated in selection order.
    public static func pcrDigest(_ values: [[UInt8]]) -> [UInt8] {
        var hash = SHA256()
        for value in values { hash.update(data: value) }
        return Array(hash.finalize())
    }

    /// Variant 2 (Constellation qemu-vtpm): `SHA-256(instanceInfo || SHA-256(userData || nonce))` with empty instance info.
    public static func constellationQualifyingData(nonce: [UInt8], userData: [UInt8]) -> [UInt8] {
        let extraData = Array(SHA256.hash(data: userData + nonce))
        return Array(SHA256.hash(data: extraData))
    }
}

/// Constellation's qemu-vtpm attestation document (CONSTELLATION-WIRE.md): Go `encoding/json` of
/// `{Attestation, InstanceInfo, UserData}` with go-tpm-tools' `attest.Attestation` inside.
public enum ConstellationVTPMDocument {
    /// The document as JSON text bytes. `pcrs` are SHA-256 values by index (`hash` 11).
    public static func encode(
        akPublic: [UInt8],
        attest: [UInt8],
        signature: [UInt8],
        pcrs: [(index: Int, value: [UInt8])],
        eventLog: [UInt8],
        userData: [UInt8]
    ) -> [UInt8] {
        // Go marshals map keys sorted as strings: "0", "1", "10", "11", …
        let sortedPCRs = pcrs.sorted { String($0.index) < String($1.index) }
        let pcrMembers = sortedPCRs.map { "\"\($0.index)\":\"\(Base64.encode($0.value))\"" }.joined(separator: ",")
        var attestation =
            "{\"ak_pub\":\"\(Base64.encode(akPublic))\",\"quotes\":[{\"quote\":\"\(Base64.encode(attest))\","
            + "\"raw_sig\":\"\(Base64.encode(signature))\",\"pcrs\":{\"hash\":11,\"pcrs\":{\(pcrMembers)}}}]"
        if !eventLog.isEmpty { attestation += ",\"event_log\":\"\(Base64.encode(eventLog))\"" }
        attestation += ",\"TeeAttestation\":null}"
        return Array(
            "{\"Attestation\":\(attestation),\"InstanceInfo\":null,\"UserData\":\"\(Base64.encode(userData))\"}".utf8
        )
    }
}

/// Standard base64 with padding (RFC 4648 §4).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Encodes `bytes`.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var iterator = bytes.makeIterator()
        while let first = iterator.next() {
            let second = iterator.next()
            let third = iterator.next()
            let chunk = UInt32(first) << 16 | UInt32(second ?? 0) << 8 | UInt32(third ?? 0)
            output.append(alphabet[Int(chunk >> 18 & 63)])
            output.append(alphabet[Int(chunk >> 12 & 63)])
            output.append(second == nil ? UInt8(ascii: "=") : alphabet[Int(chunk >> 6 & 63)])
            output.append(third == nil ? UInt8(ascii: "=") : alphabet[Int(chunk & 63)])
        }
        return String(decoding: output, as: UTF8.self)
    }
}

/// DER SubjectPublicKeyInfo and PEM of the attestation key, for `tpm.status` and tpm2_checkquote.
public enum SubjectPublicKeyInfo {
    /// The SPKI of an uncompressed P-256 point (`04 ‖ X ‖ Y`, 65 bytes).
    public static func der(p256Point point: [UInt8]) -> [UInt8] {
        precondition(point.count == 65 && point.first == 0x04, "uncompressed P-256 point")
        // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 0 unused bits }
        let algorithm: [UInt8] = [
            0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D,
            0x03, 0x01, 0x07,
        ]
        return tlv(0x30, algorithm + tlv(0x03, [0x00] + point))
    }

    /// The SPKI of an RSA key (big-endian modulus and exponent).
    public static func der(rsaModulus modulus: [UInt8], exponent: UInt32) -> [UInt8] {
        let algorithm: [UInt8] = [
            0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00,
        ]
        let exponentBytes = Array(withUnsafeBytes(of: exponent.bigEndian) { Array($0) }.drop { $0 == 0 })
        let key = tlv(0x30, tlv(0x02, unsignedInteger(modulus)) + tlv(0x02, unsignedInteger(exponentBytes)))
        return tlv(0x30, algorithm + tlv(0x03, [0x00] + key))
    }

    /// PEM `PUBLIC KEY` text of a DER SPKI, 64 characters a line.
    public static func pem(_ der: [UInt8]) -> String {
        let text = Array(Base64.encode(der))
        var lines = ["-----BEGIN PUBLIC KEY-----"]
        var start = 0
        while start < text.count {
            lines.append(String(text[start..<min(start + 64, text.count)]))
            start += 64
        }
        lines.append("-----END PUBLIC KEY-----")
        return lines.joined(separator: "\n") + "\n"
    }

    /// A DER INTEGER body for an unsigned big-endian number: no leading zeros, a 0 when the top bit is set.
    private static func unsignedInteger(_ bytes: [UInt8]) -> [UInt8] {
        let trimmed = Array(bytes.drop { $0 == 0 })
        guard let first = trimmed.first else { return [0] }
        return first & 0x80 != 0 ? [0] + trimmed : trimmed
    }

    /// Tag, DER length, value.
    private static func tlv(_ tag: UInt8, _ value: [UInt8]) -> [UInt8] {
        let count = value.count
        let length: [UInt8]
        switch count {
        case ..<0x80: length = [UInt8(count)]
        case ..<0x100: length = [0x81, UInt8(count)]
        default: length = [0x82, UInt8(count >> 8), UInt8(count & 0xFF)]
        }
        return [tag] + length + value
    }
}
