import ArgumentParser
import KeydClient
import KeydProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why keydctl failed on its own side: a bad input file (secret, signed policy, operator key), an audit log
/// that is not intact, an answer keydctl cannot read, or keyd's refusal explained for one request.
///
/// - Important: No message holds a byte of the secret file: only paths, member names, offsets and lengths.
public struct KeydctlError: Error, Hashable, CustomStringConvertible, Sendable {
    private enum Code: Hashable, Sendable {
        case cannotOpen
        case cannotRead
        case fileTooLarge
        case fileEmpty
        case notAnObject
        case unexpectedByte
        case unterminatedString
        case backslash
        case controlCharacter
        case unknownMember
        case duplicateMember(String)
        case missingMember(String)
        case valueNotString(String)
        case trailingBytes
        case base64Character(String)
        case base64Length(String)
        case base64Padding(String)
        case secretLength(String, Int)
        case auditNotIntact
        case badDocument
        case cannotWrite
        case notRegularFile
        case invalidSignedPolicy
        case invalidPolicy
        case invalidOperatorKey
        case badAnswer
        case refused(StatusCode)
    }

    private let code: Code
    /// Human-readable text; never contains secret bytes.
    public let description: String

    private init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }

    /// The exit status this failure ends keydctl with (see ``Keydctl`` for the table).
    public var exitCode: Int32 {
        switch code {
        case .auditNotIntact, .refused: ExitStatus.refused
        case .badDocument, .badAnswer: ExitStatus.unreachable
        default: ExitStatus.badInput
        }
    }

    /// keyd answered with a document keydctl cannot take apart.
    public static func badDocument(_ detail: String) -> KeydctlError {
        KeydctlError(.badDocument, "keyd's evidence document is malformed: \(detail)")
    }

    /// An output file could not be written.
    public static func cannotWrite(path: String, _ detail: String) -> KeydctlError {
        KeydctlError(.cannotWrite, "cannot write \(path): \(detail)")
    }

    /// The secret file could not be opened.
    public static func cannotOpen(path: String, errno: Int32) -> KeydctlError {
        KeydctlError(
            .cannotOpen,
            "cannot open secret file \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        )
    }

    /// Reading the secret file failed.
    public static func cannotRead(path: String, errno: Int32) -> KeydctlError {
        KeydctlError(
            .cannotRead,
            "cannot read secret file \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        )
    }

    /// The secret file is longer than `limit` bytes.
    public static func fileTooLarge(limit: Int) -> KeydctlError {
        KeydctlError(.fileTooLarge, "secret file exceeds limit \(limit) bytes")
    }

    /// The secret file holds no bytes.
    public static func fileEmpty() -> KeydctlError {
        KeydctlError(.fileEmpty, "secret file is empty; expected {\"key\":\"<base64>\",\"salt\":\"<base64>\"}")
    }

    /// The file does not start with `{` after whitespace.
    public static func notAnObject(offset: Int) -> KeydctlError {
        KeydctlError(.notAnObject, "secret file is not a JSON object: expected '{' at offset \(offset)")
    }

    /// A structural byte was not what the grammar allows at `offset`.
    public static func unexpectedByte(offset: Int, expected: String) -> KeydctlError {
        KeydctlError(.unexpectedByte, "secret file: expected \(expected) at offset \(offset)")
    }

    /// A string starting at `offset` has no closing quote.
    public static func unterminatedString(offset: Int) -> KeydctlError {
        KeydctlError(.unterminatedString, "secret file: string starting at offset \(offset) is not terminated")
    }

    /// A backslash escape, which base64 and the two member names never need.
    public static func backslash(offset: Int) -> KeydctlError {
        KeydctlError(.backslash, "secret file: backslash at offset \(offset); escapes are not accepted")
    }

    /// A raw control character inside a string.
    public static func controlCharacter(offset: Int) -> KeydctlError {
        KeydctlError(.controlCharacter, "secret file: control character at offset \(offset) inside a string")
    }

    /// A member other than `key` and `salt`; its name is not echoed, it could be pasted secret text.
    public static func unknownMember(offset: Int) -> KeydctlError {
        KeydctlError(.unknownMember, "secret file: member at offset \(offset) is neither \"key\" nor \"salt\"")
    }

    /// `key` or `salt` appears twice.
    public static func duplicateMember(_ name: String, offset: Int) -> KeydctlError {
        KeydctlError(.duplicateMember(name), "secret file: member \"\(name)\" appears again at offset \(offset)")
    }

    /// `key` or `salt` is absent.
    public static func missingMember(_ name: String) -> KeydctlError {
        KeydctlError(.missingMember(name), "secret file: member \"\(name)\" is missing")
    }

    /// The value of `key` or `salt` is not a JSON string.
    public static func valueNotString(_ name: String, offset: Int) -> KeydctlError {
        KeydctlError(.valueNotString(name), "secret file: value of \"\(name)\" at offset \(offset) is not a string")
    }

    /// Bytes other than whitespace follow the object.
    public static func trailingBytes(_ count: Int, offset: Int) -> KeydctlError {
        KeydctlError(.trailingBytes, "secret file: \(count) bytes after the object at offset \(offset)")
    }

    /// A byte outside the standard base64 alphabet (whitespace included) inside a value.
    public static func base64Character(_ name: String, offset: Int) -> KeydctlError {
        KeydctlError(
            .base64Character(name),
            "secret file: \"\(name)\" has a byte outside the standard base64 alphabet at offset \(offset)"
        )
    }

    /// A base64 text whose length is not a multiple of 4 (padding missing).
    public static func base64Length(_ name: String, length: Int) -> KeydctlError {
        KeydctlError(
            .base64Length(name),
            "secret file: \"\(name)\" base64 text of \(length) characters is not a multiple of 4 (padding is required)"
        )
    }

    /// `=` anywhere but the last one or two places.
    public static func base64Padding(_ name: String, offset: Int) -> KeydctlError {
        KeydctlError(.base64Padding(name), "secret file: \"\(name)\" has misplaced base64 padding at offset \(offset)")
    }

    /// A decoded `key` or `salt` outside the lengths keyd accepts.
    public static func secretLength(_ name: String, length: Int, bounds: ClosedRange<Int>) -> KeydctlError {
        let limit =
            length < bounds.lowerBound ? "below minimum \(bounds.lowerBound)" : "exceeds maximum \(bounds.upperBound)"
        return KeydctlError(.secretLength(name, length), "secret file: \"\(name)\" is \(length) bytes, \(limit)")
    }

    // MARK: input files that are not secret (signed policy, operator key)

    /// The `what` ("signed policy file") at `path` could not be opened.
    public static func cannotOpen(_ what: String, path: String, errno: Int32) -> KeydctlError {
        KeydctlError(.cannotOpen, "cannot open \(what) \(path): \(String(cString: strerror(errno))) (errno \(errno))")
    }

    /// Reading the `what` at `path` failed.
    public static func cannotRead(_ what: String, path: String, errno: Int32) -> KeydctlError {
        KeydctlError(.cannotRead, "cannot read \(what) \(path): \(String(cString: strerror(errno))) (errno \(errno))")
    }

    /// The `what` at `path` is a directory, FIFO, device or socket; nothing was read.
    public static func notRegularFile(_ what: String, path: String) -> KeydctlError {
        KeydctlError(.notRegularFile, "\(what) \(path) is not a regular file (directory, FIFO, device or socket)")
    }

    /// The `what` at `path` is `size` bytes (nil: more than `limit` were read), over `limit`.
    public static func fileTooLarge(_ what: String, path: String, size: Int?, limit: Int) -> KeydctlError {
        let length = size.map { "is \($0) bytes" } ?? "holds more than \(limit) bytes"
        return KeydctlError(.fileTooLarge, "\(what) \(path) \(length), exceeds limit \(limit)")
    }

    /// The `what` at `path` holds no bytes.
    public static func fileEmpty(_ what: String, path: String) -> KeydctlError {
        KeydctlError(.fileEmpty, "\(what) \(path) is empty")
    }

    /// The signed policy file does not parse; `detail` names the member (KeydCore's message).
    public static func invalidSignedPolicy(path: String, _ detail: String) -> KeydctlError {
        KeydctlError(
            .invalidSignedPolicy,
            "\(path): \(detail); expected {\"policy\":\"<base64>\",\"signature\":\"<base64>\"}"
        )
    }

    /// The policy inside a signed policy file does not parse; `detail` names the member and the limit.
    public static func invalidPolicy(path: String, _ detail: String) -> KeydctlError {
        KeydctlError(.invalidPolicy, "\(path): \(detail)")
    }

    /// The operator key file holds no key keyd takes; `detail` says why.
    public static func invalidOperatorKey(path: String, _ detail: String) -> KeydctlError {
        KeydctlError(.invalidOperatorKey, "\(path): \(detail)")
    }

    // MARK: keyd's answers

    /// keyd answered `request` with a value keydctl cannot read (`detail` names it).
    public static func badAnswer(_ request: RequestKind, _ detail: String) -> KeydctlError {
        KeydctlError(.badAnswer, "keyd's \(request) answer does not parse: \(detail)")
    }

    /// keyd refused `request` with `status`; `explanation` is what the status means for this request.
    public static func refused(_ status: StatusCode, request: RequestKind, explanation: String) -> KeydctlError {
        KeydctlError(.refused(status), "keyd refused \(request): \(status) (\(explanation))")
    }

    /// `audit verify` found a problem in the log.
    public static func auditNotIntact(_ answer: AuditVerifyAnswer) -> KeydctlError {
        KeydctlError(
            .auditNotIntact,
            "audit log is not intact: \(answer.problem) at record \(answer.firstBadRecord) of \(answer.records)"
        )
    }

    public static func == (lhs: KeydctlError, rhs: KeydctlError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}

/// keydctl's documented exit statuses.
public enum ExitStatus {
    /// Success.
    public static let success: Int32 = 0
    /// keyd refused the request (any status but ok), or `audit verify` found a problem.
    public static let refused: Int32 = 1
    /// keyd unreachable, or the connection or protocol failed.
    public static let unreachable: Int32 = 2
    /// Unreadable or invalid input file (secret, signed policy, operator key).
    public static let badInput: Int32 = 3
    /// Command-line usage error (ArgumentParser's validation exit status).
    public static let usage: Int32 = 64

    /// The status a failure ends keydctl with.
    public static func code(for error: any Error) -> Int32 {
        switch error {
        case let error as KeydctlError:
            return error.exitCode
        case let error as KeydClientError:
            if error.refusal != nil { return refused }
            // invalidArgument: a secret keyd would not take; the file was bad input.
            if error == KeydClientError.invalidArgument("") { return badInput }
            return unreachable
        default:
            // ArgumentParser's own errors: 64 for usage, 0 for --help, ExitCode as given.
            return Keydctl.exitCode(for: error).rawValue
        }
    }
}
