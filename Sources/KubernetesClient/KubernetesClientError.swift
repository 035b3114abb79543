import Foundation

/// Why a bootstrap token could not be created. Texts carry no token secret and no bearer token: messages from
/// the API server go through `KubernetesClientError.sanitize` first.
public enum KubernetesClientError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The configuration is unusable (bad URL, empty credentials); `field` names what, `problem` why.
    case invalidConfiguration(field: String, problem: String)
    /// The kubeconfig is unusable: `field` (a path such as `users[admin].user.exec`) at `line` of the file, and why.
    case invalidKubeconfig(field: String, line: Int?, problem: String)
    /// The bearer-token, kubeconfig, or a file a kubeconfig names, at `path` could not be read or is unusable.
    case credentialsUnreadable(path: String, problem: String)
    /// 401 or 403: the API server refused the credentials or the permission. Final.
    case unauthorized(status: Int, reason: String)
    /// Another 4xx (422 Invalid, 400 BadRequest, 404, ...): the API server refused the request. Final.
    case rejected(status: Int, reason: String)
    /// 409 on every one of `attempts` fresh token ids: something else is creating these names.
    case conflictsExhausted(attempts: Int)
    /// The TLS handshake failed: the API server's certificate is not trusted, or it refused the client
    /// certificate. Final.
    case tlsHandshakeFailed(reason: String)
    /// The overall deadline passed after `attempts` tries; `lastFailure` is the last retryable failure.
    case deadlineExceeded(deadline: Duration, attempts: Int, lastFailure: String)
    /// The calling task was cancelled.
    case cancelled

    public var description: String {
        switch self {
        case .invalidConfiguration(let field, let problem):
            "Kubernetes client configuration: \(field): \(problem)"
        case .invalidKubeconfig(let field, let line, let problem):
            "kubeconfig\(line.map { " line \($0)" } ?? ""): \(field): \(problem)"
        case .credentialsUnreadable(let path, let problem):
            "Kubernetes credentials at \(path): \(problem)"
        case .unauthorized(let status, let reason):
            "API server refused the credentials (HTTP \(status)): \(reason)"
        case .rejected(let status, let reason):
            "API server rejected the bootstrap-token Secret (HTTP \(status)): \(reason)"
        case .conflictsExhausted(let attempts):
            "every one of \(attempts) bootstrap token ids already existed (HTTP 409)"
        case .tlsHandshakeFailed(let reason):
            "TLS handshake with the API server failed: \(reason)"
        case .deadlineExceeded(let deadline, let attempts, let lastFailure):
            "no bootstrap token within the deadline of \(deadline) after \(attempts) attempts; last: \(lastFailure)"
        case .cancelled:
            "bootstrap-token creation cancelled"
        }
    }

    /// Longest server message kept in an error.
    public static let maximumReasonLength = 200

    /// `text` with every occurrence of each of `secrets` replaced by `<redacted>`, characters outside printable
    /// ASCII replaced by `?`, cut to `maximumReasonLength`.
    public static func sanitize(_ text: String, hiding secrets: [String]) -> String {
        var result = text
        for secret in secrets where !secret.isEmpty {
            result = result.replacingOccurrences(of: secret, with: "<redacted>")
        }
        let printable = String(
            String.UnicodeScalarView(result.unicodeScalars.map { (0x20...0x7E).contains($0.value) ? $0 : "?" })
        )
        return printable.count > maximumReasonLength ? String(printable.prefix(maximumReasonLength)) + "..." : printable
    }
}
