import Glibc

/// The one error of KeydPlatform: a failed system call (with its errno) or a refused environment.
///
/// Equality and hashing use the code only (and the errno for system-call failures), so tests can
/// compare against a factory's result; the call, context and detail are for people.
public struct SystemError: Error, Hashable, CustomStringConvertible, Sendable {
    private enum Code: Hashable, Sendable {
        case errno(Int32)
        case fileTooLarge
        case refusedExistingFile
        case pathTooLong
        case invalidEnvironment
        case notListeningUnixSocket
        case verificationFailed
    }

    private let code: Code
    /// The operation that failed, usually the system call's name (`bind`, `accept4`).
    public let call: String
    /// What the operation worked on, such as a path or a descriptor; may be empty.
    public let context: String
    /// What went wrong, naming the value and the limit; never contains secret bytes.
    public let detail: String

    private init(_ code: Code, call: String, context: String, detail: String) {
        self.code = code
        self.call = call
        self.context = context
        self.detail = detail
    }

    /// The errno of a failed system call, or 0 when the failure did not come from one.
    public var errno: Int32 {
        if case .errno(let value) = code { return value }
        return 0
    }

    /// For example `bind(/run/keyd/keyd.sock): Address already in use (errno 98)`.
    public var description: String {
        context.isEmpty ? "\(call): \(detail)" : "\(call)(\(context)): \(detail)"
    }

    public static func == (lhs: SystemError, rhs: SystemError) -> Bool { lhs.code == rhs.code }

    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// A system call failed with `errno`.
    public static func errno(_ value: Int32, call: String, context: String = "") -> SystemError {
        SystemError(.errno(value), call: call, context: context, detail: "\(errorString(value)) (errno \(value))")
    }

    /// A file is larger than the caller allows.
    public static func fileTooLarge(path: String, size: Int, limit: Int) -> SystemError {
        SystemError(.fileTooLarge, call: "readWholeFile", context: path, detail: "file size \(size) exceeds limit \(limit)")
    }

    /// Something other than what the call may replace already exists at the path.
    public static func refusedExistingFile(call: String, path: String, found: String) -> SystemError {
        SystemError(.refusedExistingFile, call: call, context: path, detail: "refusing to replace existing \(found)")
    }

    /// A Unix socket path does not fit `sun_path`.
    public static func pathTooLong(call: String, path: String, length: Int, limit: Int) -> SystemError {
        SystemError(.pathTooLong, call: call, context: path, detail: "path length \(length) exceeds limit \(limit)")
    }

    /// An environment variable (LISTEN_*, NOTIFY_SOCKET) is malformed or inconsistent.
    public static func invalidEnvironment(variable: String, _ detail: String) -> SystemError {
        SystemError(.invalidEnvironment, call: "environment", context: variable, detail: detail)
    }

    /// A descriptor handed over by the service manager is not a listening Unix stream socket.
    public static func notListeningUnixSocket(fd: Int32, _ detail: String) -> SystemError {
        SystemError(.notListeningUnixSocket, call: "validateListeningUnixSocket", context: "fd \(fd)", detail: detail)
    }

    /// A read-back after a privilege change did not show the intended state.
    public static func verificationFailed(call: String, _ detail: String) -> SystemError {
        SystemError(.verificationFailed, call: call, context: "", detail: detail)
    }
}

/// strerror as a Swift string.
internal func errorString(_ value: Int32) -> String {
    guard let message = strerror(value) else { return "Unknown error \(value)" }
    return String(cString: message)
}
