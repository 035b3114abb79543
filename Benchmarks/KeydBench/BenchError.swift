#if canImport(Glibc)
import Glibc
#endif

/// Why the benchmark could not run: a bad argument, the environment, or keyd itself.
struct BenchError: Error, Hashable, CustomStringConvertible {
    private enum Code: Hashable {
        case usage
        case system
        case keydFailed
        case echoFailed
    }

    private let code: Code
    /// Human-readable text.
    let description: String

    private init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }

    /// Equality on the failure kind only.
    static func == (lhs: BenchError, rhs: BenchError) -> Bool { lhs.code == rhs.code }

    /// Hashes the failure kind only.
    func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// A command-line mistake.
    static func usage(_ message: String) -> BenchError { BenchError(.usage, message) }

    /// A system call failed; names the call, the object and the errno.
    static func system(_ call: String, _ object: String, errno: Int32) -> BenchError {
        BenchError(.system, "\(call) \(object): \(String(cString: strerror(errno))) (errno \(errno))")
    }

    /// keyd did not start, died, or answered wrongly.
    static func keydFailed(_ message: String) -> BenchError { BenchError(.keydFailed, message) }

    /// The in-process echo baseline failed.
    static func echoFailed(_ message: String) -> BenchError { BenchError(.echoFailed, message) }
}
