#if canImport(Glibc)
import Glibc
#endif

/// keyd's log: one line per event on stderr (the journal under systemd), metadata as dotted keys.
///
/// - Important: never pass key material, secret lengths are fine, secret bytes are not.
public enum Log {
    /// Severity, mapped to sd-daemon prefixes so the journal keeps the level.
    public enum Level: String, Sendable {
        case error = "<3>"
        case warning = "<4>"
        case notice = "<5>"
        case info = "<6>"
    }

    /// Writes one line: `<level>Message key=value …`.
    public static func write(_ level: Level, _ message: String, _ metadata: KeyValuePairs<String, String> = [:]) {
        var line = level.rawValue + message
        for (key, value) in metadata {
            line += " \(key)=\(quoted(value))"
        }
        raw(line + "\n")
    }

    /// Writes text to stderr as is (one write call, so lines from one process never interleave).
    public static func raw(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                offset += n
            }
        }
    }

    private static func quoted(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.utf8.contains { $0 <= 0x20 || $0 == UInt8(ascii: "\"") }
        guard needsQuotes else { return value }
        var result = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case _ where scalar.value < 0x20: result += "\\x" + String(scalar.value, radix: 16)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }

    public static func error(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) {
        write(.error, message, metadata)
    }
    public static func warning(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) {
        write(.warning, message, metadata)
    }
    public static func notice(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) {
        write(.notice, message, metadata)
    }
    public static func info(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) {
        write(.info, message, metadata)
    }
}
