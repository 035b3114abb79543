import Attestation
import FoundationEssentials

/// The one error type of ATLS: why an attested certificate was refused or could not be made.
/// Descriptions are for the local log; network peers only ever see a TLS alert.
public enum ATLSError: Error, Sendable, CustomStringConvertible, Equatable {
    /// A nonce is not 32 bytes, or its base64 form is not canonical standard base64.
    case invalidNonce(String)
    /// The peer sent no certificate.
    case noPeerCertificate
    /// The certificate does not parse as X.509.
    case certificateUnreadable(String)
    /// The certificate's key is not ECDSA P-256.
    case unsupportedKey(String)
    /// The certificate is not signed by its own key, or its issuer is not its subject.
    case badSelfSignature
    /// The validation time is before NotBefore.
    case notYetValid(notBefore: Date, now: Date)
    /// The validation time is after NotAfter.
    case expired(notAfter: Date, now: Date)
    /// No extension's OID has a configured validator; lists the extension OIDs present.
    case noAttestation(extensionOIDs: [String])
    /// The validator refused the evidence; the reason names the failed policies, the report (when the
    /// document parsed) holds every policy's result.
    case evidenceRefused(variant: String, reason: String, report: AttestationReport?)
    /// The evidence is valid but bound to another key than the certificate's.
    case userDataMismatch(expected: [UInt8], actual: [UInt8])
    /// Mutual aTLS: the server's certificate carries no nonce for the client to attest to.
    case serverNonceMissing
    /// This side could not make its own attested certificate (issuer or encoding failure).
    case issuingFailed(String)
    /// The handshake did not complete in time; the connection was closed.
    case handshakeTimeout(seconds: Double)

    public var description: String {
        switch self {
        case .invalidNonce(let detail): "invalid aTLS nonce: \(detail)"
        case .noPeerCertificate: "the peer presented no certificate"
        case .certificateUnreadable(let detail): "the peer's certificate does not parse: \(detail)"
        case .unsupportedKey(let detail): "the peer's certificate key is not ECDSA P-256: \(detail)"
        case .badSelfSignature: "the peer's certificate is not validly self-signed"
        case .notYetValid(let notBefore, let now):
            "the peer's certificate is not valid before \(notBefore) (now \(now))"
        case .expired(let notAfter, let now): "the peer's certificate expired at \(notAfter) (now \(now))"
        case .noAttestation(let oids):
            "the peer's certificate has no extension for a configured validator (extensions: \(oids.isEmpty ? "none" : oids.joined(separator: ", ")))"
        case .evidenceRefused(let variant, let reason, _): "the peer's \(variant) evidence was refused: \(reason)"
        case .userDataMismatch(let expected, let actual):
            "the evidence is bound to key hash \(hexString(actual)), not the certificate's key hash \(hexString(expected))"
        case .serverNonceMissing: "the server's certificate carries no nonce for the client's attestation"
        case .issuingFailed(let detail): "could not make the attested certificate: \(detail)"
        case .handshakeTimeout(let seconds): "the handshake did not complete within \(seconds) s"
        }
    }
}
