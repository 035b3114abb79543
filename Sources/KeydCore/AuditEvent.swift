import KeydProtocol

/// The closed list of audit event names: the `event` field of every audit record (PROTOCOL.md,
/// "Audit log"). The log is a contract with whoever reads it, so no name is spelled anywhere else.
public enum AuditEvent: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// A request decided by keyd (granted or refused), named as on the wire: `kek.import`, `disk.bind`.
    case request(RequestKind)
    /// A peer broke the protocol (malformed, oversized, out of sequence, timed out); it was disconnected.
    case protocolViolation
    /// keyd started (version, socket activation, TPM facts).
    case keydStart
    /// keyd stopped on SIGTERM or SIGINT.
    case keydStop
    /// keyd sealed an imported KEK to the TPM (or could not).
    case kekSeal
    /// keyd unsealed the stored KEK at start (or could not).
    case kekUnseal

    /// Every name, requests first in protocol order.
    public static let allCases: [AuditEvent] =
        RequestKind.allCases.map { .request($0) } + [.protocolViolation, .keydStart, .keydStop, .kekSeal, .kekUnseal]

    /// The name written into the record.
    public var description: String {
        switch self {
        case .request(let kind): kind.description
        case .protocolViolation: "protocol.violation"
        case .keydStart: "keyd.start"
        case .keydStop: "keyd.stop"
        case .kekSeal: "kek.seal"
        case .kekUnseal: "kek.unseal"
        }
    }
}
