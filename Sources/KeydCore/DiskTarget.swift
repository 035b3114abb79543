import KeydProtocol

/// Which device a disk request acts on.
///
/// An empty `device` field means the state disk keyd's configuration names (`state-disk-device`).
/// The admin may also name any absolute path. trustd never names a path: it parses the network,
/// and a path of its choosing would let it probe the host's files or point keyd at a FIFO. A
/// trustd request that names one is `denied` and its connection closed (PROTOCOL.md).
public enum DiskTarget {
    /// The device field of a disk request, or nil for a request without one.
    public static func namedDevice(in request: Request) -> String? {
        switch request {
        case .diskInspect(let device), .diskFormat(let device), .diskBind(let device), .diskReset(let device),
            .diskOpen(let device, _):
            return device
        case .hello, .status, .bootKeyGet, .evidenceIssue, .challengeIssue, .keyRelease, .envelopeAccept,
            .initAccept, .diskClose, .kekImport, .kekLock, .auditRead, .auditVerify, .tpmStatus, .tpmEvidence,
            .policySet, .joinEvidenceIssue, .compatRelease, .dataKeyRelease, .dataKeyOpen, .policyGet, .operatorKeyPin:
            return nil
        }
    }

    /// Whether `peer` may send a disk request whose device field is `device`: the admin always,
    /// trustd only with an empty field.
    public static func mayName(_ device: String, peer: PeerClass) -> Bool {
        device.isEmpty || peer == .admin
    }

    /// The path a permitted request acts on: `device`, or the configured state disk when `device`
    /// is empty; nil when it is empty and no state disk is configured.
    public static func resolve(_ device: String, configured: String?) -> String? {
        device.isEmpty ? configured : device
    }
}
