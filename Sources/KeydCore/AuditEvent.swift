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
    /// A chain begins (record 0): its link, key, TPM counter, and why it begins.
    case auditChain
    /// keyd checked its log at start against the key and the TPM counter, and what it found.
    case auditCheck
    /// Routine trustd requests granted since the last summary, counted by request.
    case auditSummary
    /// A refusal repeated within the coalescing window: how often after the record of the first.
    case auditRepeated
    /// keyd refused an entry of its state directory that the host made (a symlink, a FIFO…) and moved it aside.
    case stateRejected
    /// keyd refused its stored trust state (operator key, policy) at start: rolled back, removed, forged.
    case trustCheck

    /// Every name, requests first in protocol order.
    public static let allCases: [AuditEvent] =
        RequestKind.allCases.map { .request($0) } + [
            .protocolViolation, .keydStart, .keydStop, .kekSeal, .kekUnseal, .auditChain, .auditCheck, .auditSummary,
            .auditRepeated, .stateRejected, .trustCheck,
        ]

    /// The name written into the record.
    public var description: String {
        switch self {
        case .request(let kind): kind.description
        case .protocolViolation: "protocol.violation"
        case .keydStart: "keyd.start"
        case .keydStop: "keyd.stop"
        case .kekSeal: "kek.seal"
        case .kekUnseal: "kek.unseal"
        case .auditChain: "audit.chain"
        case .auditCheck: "audit.check"
        case .auditSummary: "audit.summary"
        case .auditRepeated: "audit.repeated"
        case .stateRejected: "state.rejected"
        case .trustCheck: "trust.check"
        }
    }
}
