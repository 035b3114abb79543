#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A host and a TCP port as trustd's configuration and endpoint lists write them: `10.0.0.1:9090`,
/// `[fd00::1]:9090` (IPv6 always in brackets) or `node-1.example:30090`.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    /// What the host is.
    public enum Kind: Hashable, Sendable {
        /// A dotted-quad IPv4 address.
        case ipv4
        /// An IPv6 address (written in brackets, held without).
        case ipv6
        /// A DNS name.
        case name
    }

    /// Why a text is no host and port.
    public enum Problem: Error, Hashable, Sendable {
        /// Not `host:port`, the host no address (or name, where names are allowed), or IPv6 without brackets.
        case malformed
        /// The port is a number outside ``HostPort/portRange``.
        case portOutOfRange
    }

    /// Accepted ports.
    public static let portRange: ClosedRange<Int> = 1...65_535
    /// The longest DNS name in bytes.
    public static let maximumNameLength = 253

    /// The host, IPv6 without brackets.
    public let host: String
    /// The port.
    public let port: Int
    /// What the host is.
    public let kind: Kind

    /// A host and port already known to be valid (defaults in code).
    init(host: String, port: Int, kind: Kind) {
        self.host = host
        self.port = port
        self.kind = kind
    }

    /// `host:port`, IPv6 in brackets: the text ``parse(_:allowingNames:)`` reads back.
    public var description: String { kind == .ipv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Whether the host is `0.0.0.0` or `::`, every address of the machine.
    public var isUnspecified: Bool {
        switch kind {
        case .ipv4: return host == "0.0.0.0"
        case .ipv6: return Self.ipv6Bytes(host) == [UInt8](repeating: 0, count: 16)
        case .name: return false
        }
    }

    /// Whether a listener on `self` and one on `other` would want the same socket: the same port on
    /// the same host, or on every address.
    public func overlaps(_ other: HostPort) -> Bool {
        port == other.port && (isUnspecified || other.isUnspecified || (kind == other.kind && host == other.host))
    }

    /// Reads `host:port`; a DNS name is a host only when `allowingNames` (listen addresses take IP
    /// addresses only). A name is 1…253 bytes of labels of 1…63 letters, digits and inner `-`, whose
    /// last label is not all digits (so `10.0.0.256` is no name).
    public static func parse(_ text: String, allowingNames: Bool) -> Result<HostPort, Problem> {
        let host: Substring
        let portText: Substring
        let kind: Kind
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(.malformed) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), ipv6Bytes(String(host)) != nil else { return .failure(.malformed) }
            portText = rest.dropFirst()
            kind = .ipv6
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(.malformed) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if isIPv4(String(host)) {
                kind = .ipv4
            } else if allowingNames, isName(host) {
                kind = .name
            } else {
                return .failure(.malformed)
            }
        }
        guard !portText.isEmpty, portText.utf8.count <= 12, portText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let port = Int(portText)
        else { return .failure(.malformed) }
        guard portRange.contains(port) else { return .failure(.portOutOfRange) }
        return .success(HostPort(host: String(host), port: port, kind: kind))
    }

    /// The 16 bytes of an IPv6 address in text form, or nil.
    private static func ipv6Bytes(_ text: String) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: 16)
        let parsed = bytes.withUnsafeMutableBytes { inet_pton(AF_INET6, text, $0.baseAddress) }
        return parsed == 1 ? bytes : nil
    }

    /// Whether `text` is a dotted-quad IPv4 address (inet_pton: four decimal parts, no leading zeros).
    private static func isIPv4(_ text: String) -> Bool {
        var bytes = [UInt8](repeating: 0, count: 4)
        return bytes.withUnsafeMutableBytes { inet_pton(AF_INET, text, $0.baseAddress) } == 1
    }

    /// Whether `text` is a DNS name (see ``parse(_:allowingNames:)``).
    private static func isName(_ text: Substring) -> Bool {
        let bytes = Array(text.utf8)
        guard (1...maximumNameLength).contains(bytes.count) else { return false }
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
        }
        let labels = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        for label in labels {
            guard (1...63).contains(label.count), let first = label.first, let last = label.last,
                isAlphanumeric(first), isAlphanumeric(last),
                label.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") })
            else { return false }
        }
        return !(labels.last ?? []).allSatisfy { (0x30...0x39).contains($0) }
    }
}
