import KeydProtocol

/// How often one peer may use a request.
public enum OncePolicy: Sendable, Hashable {
    /// Any number of times.
    case unlimited
    /// Once per connection.
    case perConnection
    /// Once per keyd boot, across all connections.
    case perBoot
}

/// One row of the permission table: who may send a request, when, and how often.
public struct Permission: Sendable, Hashable {
    /// Peer classes allowed to send the request.
    public let peers: Set<PeerClass>
    /// Phases in which the request is allowed.
    public let phases: Set<Phase>
    /// How often it may be used.
    public let once: OncePolicy
}

/// The outcome of consulting the permission table.
public enum PermissionVerdict: Sendable, Hashable {
    /// The request may be performed.
    case allowed
    /// This peer class may never send it: answer `denied` and close.
    case denied
    /// Allowed peer, wrong phase: answer `wrongPhase` and keep the connection.
    case wrongPhase
    /// A once request repeated: answer `alreadyUsed` and close.
    case alreadyUsed

    /// The status keyd answers with when the verdict is not `allowed`.
    public var status: StatusCode {
        switch self {
        case .allowed: .ok
        case .denied: .denied
        case .wrongPhase: .wrongPhase
        case .alreadyUsed: .alreadyUsed
        }
    }
}

/// keyd's one permission table (request kind × peer class × phase × once), as in PROTOCOL.md.
///
/// - Important: this is the only place that decides which peer may send what; no uid check
///   appears anywhere else.
public enum PermissionTable {
    private static let all: Set<Phase> = Set(Phase.allCases)
    private static let trustdOnly: Set<PeerClass> = [.trustd]
    private static let adminOnly: Set<PeerClass> = [.admin]
    private static let both: Set<PeerClass> = [.trustd, .admin]

    /// The row for every request kind; exhaustive by construction.
    public static func permission(for kind: RequestKind) -> Permission {
        switch kind {
        case .hello: Permission(peers: both, phases: all, once: .perConnection)
        case .status: Permission(peers: both, phases: all, once: .unlimited)
        case .bootKeyGet: Permission(peers: trustdOnly, phases: all, once: .unlimited)
        case .evidenceIssue: Permission(peers: trustdOnly, phases: all, once: .unlimited)
        case .challengeIssue: Permission(peers: trustdOnly, phases: [.holdingKEK], once: .unlimited)
        case .keyRelease: Permission(peers: trustdOnly, phases: [.holdingKEK], once: .unlimited)
        case .envelopeAccept: Permission(peers: trustdOnly, phases: [.awaitingKEK], once: .perBoot)
        case .initAccept: Permission(peers: trustdOnly, phases: [.awaitingKEK], once: .perBoot)
        case .joinEvidenceIssue: Permission(peers: trustdOnly, phases: all, once: .unlimited)
        case .compatRelease: Permission(peers: trustdOnly, phases: [.holdingKEK], once: .unlimited)
        case .dataKeyRelease: Permission(peers: trustdOnly, phases: [.holdingKEK], once: .unlimited)
        case .dataKeyOpen: Permission(peers: trustdOnly, phases: all, once: .unlimited)
        case .diskInspect: Permission(peers: both, phases: all, once: .unlimited)
        case .diskFormat: Permission(peers: adminOnly, phases: all, once: .unlimited)
        case .diskBind: Permission(peers: adminOnly, phases: [.holdingKEK], once: .unlimited)
        case .diskOpen: Permission(peers: adminOnly, phases: [.holdingKEK], once: .unlimited)
        case .diskClose: Permission(peers: adminOnly, phases: all, once: .unlimited)
        case .diskReset: Permission(peers: adminOnly, phases: all, once: .unlimited)
        case .kekImport: Permission(peers: adminOnly, phases: [.awaitingKEK, .locked], once: .unlimited)
        case .kekLock: Permission(peers: adminOnly, phases: [.holdingKEK], once: .unlimited)
        case .auditRead: Permission(peers: adminOnly, phases: all, once: .unlimited)
        case .auditVerify: Permission(peers: adminOnly, phases: all, once: .unlimited)
        case .tpmStatus: Permission(peers: adminOnly, phases: all, once: .unlimited)
        case .tpmEvidence: Permission(peers: adminOnly, phases: all, once: .unlimited)
        // trustd relays the operator's pushed policy; keyd checks the pinned key's signature and the version.
        case .policySet: Permission(peers: both, phases: [.holdingKEK], once: .unlimited)
        case .policyGet: Permission(peers: adminOnly, phases: all, once: .unlimited)
        case .operatorKeyPin: Permission(peers: adminOnly, phases: [.awaitingKEK, .locked], once: .unlimited)
        }
    }

    /// Decides one request. Peer class is checked first, then once-use, then phase.
    public static func evaluate(
        _ kind: RequestKind,
        peer: PeerClass,
        phase: Phase,
        usedThisConnection: Bool,
        usedThisBoot: Bool
    ) -> PermissionVerdict {
        let row = permission(for: kind)
        guard row.peers.contains(peer) else { return .denied }
        switch row.once {
        case .unlimited: break
        case .perConnection: if usedThisConnection { return .alreadyUsed }
        case .perBoot: if usedThisBoot { return .alreadyUsed }
        }
        guard row.phases.contains(phase) else { return .wrongPhase }
        return .allowed
    }
}
