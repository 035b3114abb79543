import Glibc
import KeydProtocol

/// The one error of KeydPlatform: a failed system call (with its errno) or a refused environment.
///
/// Equality and hashing use the ``code`` only (with the errno or TPM response code it carries);
/// callers decide on the code, and the call, context and detail are for people.
public struct SystemError: Error, Hashable, CustomStringConvertible, Sendable {
    /// What failed, as a caller decides on it.
    public enum Code: Hashable, Sendable {
        /// A system call (or libcryptsetup, which reports errnos) failed with this errno.
        case errno(Int32)
        /// A file is larger than the caller allows.
        case fileTooLarge
        /// Something the call may not replace exists at the path.
        case refusedExistingFile
        /// The entry is not of the type the call needs (a symlink, FIFO or device where a regular file belongs).
        case unexpectedFileType
        /// A file name is not one plain path component.
        case invalidFileName
        /// A Unix socket path does not fit `sun_path`.
        case pathTooLong
        /// An environment variable or a named setting is malformed.
        case invalidEnvironment
        /// A passed descriptor is not a listening Unix stream socket.
        case notListeningUnixSocket
        /// A read-back after a change did not show the intended state, or a TPM answer was unusable.
        case verificationFailed
        /// A LUKS magic is present but no header loads as LUKS2.
        case luks2HeaderUnreadable
        /// A libtss2 call failed with this response code.
        case tpm(UInt32)
    }

    /// What failed.
    public let code: Code
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

    /// The TSS2 response code of a failed TPM call, or nil when the failure did not come from the TPM stack.
    public var tpmResponseCode: UInt32? {
        if case .tpm(let value) = code { return value }
        return nil
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
        SystemError(
            .fileTooLarge,
            call: "readWholeFile",
            context: path,
            detail: "file size \(size) exceeds limit \(limit)"
        )
    }

    /// Something other than what the call may replace already exists at the path.
    public static func refusedExistingFile(call: String, path: String, found: String) -> SystemError {
        SystemError(.refusedExistingFile, call: call, context: path, detail: "refusing to replace existing \(found)")
    }

    /// The entry at `path` is a `found` where the call needs a `expected`; nothing was followed or opened.
    public static func unexpectedFileType(call: String, path: String, found: String, expected: String) -> SystemError {
        SystemError(
            .unexpectedFileType,
            call: call,
            context: path,
            detail: "found a \(found), expected a \(expected); refused"
        )
    }

    /// `name` is not one plain path component of `directory` (empty, `.`, `..`, or with `/` or NUL).
    public static func invalidFileName(_ name: String, in directory: String) -> SystemError {
        SystemError(
            .invalidFileName,
            call: "checkName",
            context: directory,
            detail: "file name \(quotedForMessage(name)) is not one plain path component"
        )
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

// MARK: - libcryptsetup

extension SystemError {
    /// A libcryptsetup call returned the negative errno `code`; the detail says what that means
    /// for a LUKS2 device. Compares equal to ``errno(_:call:context:)`` with `-code`.
    ///
    /// - Note: `EPERM` from a keyslot operation means no keyslot opens with the key. A damaged
    ///   keyslot area cannot be told apart from a wrong key, and the message says so.
    public static func cryptsetup(_ code: Int32, call: String, context: String = "") -> SystemError {
        let value = code < 0 ? -code : code
        let meaning: String
        switch value {
        case EPERM:
            meaning = "no keyslot opens with this key (wrong key, or a damaged keyslot area: they look the same)"
        case EINVAL: meaning = "invalid argument, or not a LUKS2 device"
        case ENOENT: meaning = "no such device, keyslot or token"
        case EBUSY: meaning = "device busy (mapped, mounted or locked)"
        case ENOTBLK: meaning = "not a block device or regular file"
        default: meaning = errorString(value)
        }
        return SystemError(.errno(value), call: call, context: context, detail: "\(meaning) (errno \(value))")
    }

    /// A device shows a LUKS magic, but no header of it loads as LUKS2 (both headers damaged, or LUKS1).
    public static func luks2HeaderUnreadable(path: String, _ detail: String) -> SystemError {
        SystemError(.luks2HeaderUnreadable, call: "crypt_load", context: path, detail: detail)
    }
}

/// strerror as a Swift string.
internal func errorString(_ value: Int32) -> String {
    guard let message = strerror(value) else { return "Unknown error \(value)" }
    return String(cString: message)
}

// MARK: - libtss2

extension SystemError {
    /// A libtss2 call returned `rc`; the detail is libtss2's own decoding (layer and meaning).
    /// Compares equal to another TPM error with the same response code.
    public static func tpm(_ rc: UInt32, call: String, context: String = "") -> SystemError {
        SystemError(
            .tpm(rc),
            call: call,
            context: context,
            detail: "\(TPMResponse.describe(rc)) (TPM rc 0x\(String(rc, radix: 16)))"
        )
    }

    /// A TPM answer that libtss2 accepted but keyd cannot use (wrong size, unexpected key).
    public static func tpmUnexpected(call: String, _ detail: String) -> SystemError {
        SystemError(.verificationFailed, call: call, context: "", detail: detail)
    }
}
