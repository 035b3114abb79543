import FoundationEssentials

/// The 32 random bytes a verifier sends the attester: in the TLS SNI (client to server) or in a
/// CertificateRequest CA name and the server's certificate (server to client), as standard base64.
public struct ATLSNonce: Hashable, Sendable, CustomStringConvertible {
    /// The only accepted length.
    public static let byteCount = 32
    /// Length of the base64 form (32 bytes, padded).
    public static let base64Count = 44

    /// The nonce's bytes.
    public let bytes: [UInt8]

    /// A nonce from exactly 32 bytes.
    public init(bytes: [UInt8]) throws(ATLSError) {
        guard bytes.count == Self.byteCount else {
            throw .invalidNonce("\(bytes.count) bytes, need \(Self.byteCount)")
        }
        self.bytes = bytes
    }

    /// A nonce from its base64 form; only the canonical padded standard-base64 spelling of 32 bytes is read.
    public init(base64 text: String) throws(ATLSError) {
        guard text.utf8.count == Self.base64Count else {
            throw .invalidNonce("base64 form has \(text.utf8.count) characters, need \(Self.base64Count)")
        }
        guard let data = Data(base64Encoded: text), data.count == Self.byteCount, data.base64EncodedString() == text
        else {
            throw .invalidNonce("not the canonical standard base64 of \(Self.byteCount) bytes")
        }
        self.bytes = Array(data)
    }

    /// 32 bytes from the system's cryptographic random source.
    public static func random() -> ATLSNonce {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: byteCount)
        for index in stride(from: 0, to: byteCount, by: 8) {
            withUnsafeBytes(of: generator.next() as UInt64) { bytes.replaceSubrange(index..<index + 8, with: $0) }
        }
        return try! ATLSNonce(bytes: bytes)
    }

    /// Standard base64 with padding, as it travels in SNI and in names.
    public var base64: String { Data(bytes).base64EncodedString() }

    public var description: String { base64 }
}
