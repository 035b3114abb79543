import KeydProtocol

/// One audit record as keyd proposes it, before the coalescer decides what reaches the log.
public struct AuditNote: Sendable {
    /// What happened.
    public var event: AuditEvent
    /// Whether it was granted.
    public var granted: Bool
    /// The status answered.
    public var status: StatusCode
    /// Who asked.
    public var peer: AuditPeer
    /// Non-secret context, in order.
    public var detail: [(key: String, value: String)]

    /// Makes a note.
    public init(
        event: AuditEvent,
        granted: Bool,
        status: StatusCode,
        peer: AuditPeer,
        detail: [(key: String, value: String)]
    ) {
        self.event = event
        self.granted = granted
        self.status = status
        self.peer = peer
        self.detail = detail
    }
}

/// Keeps the audit log about decisions, not traffic: trustd's routine requests granted (status,
/// evidence, the state disk's header, boot key, challenges) are counted and written as one
/// `audit.summary` per interval; a refusal of an untrusted peer (trustd, a stranger) that repeats
/// (same event, status and peer) within the window is written once, and the repeats as one
/// `audit.repeated` when the window ends. The admin's refusals are all written.
///
/// Key decisions (KEK, disk re-key and open, key release, the policy) are never counted away. Pure: the caller
/// passes monotonic nanoseconds and writes what ``due(now:)`` hands back.
public struct AuditCoalescer: Sendable {
    /// trustd's requests that are counted, not recorded one by one, when granted.
    public static let routine: Set<RequestKind> = [
        .status, .evidenceIssue, .diskInspect, .bootKeyGet, .challengeIssue, .joinEvidenceIssue,
    ]
    /// Key decisions: every refusal is written, never folded into an `audit.repeated`.
    public static let keyDecisions: Set<RequestKind> = [
        .keyRelease, .compatRelease, .envelopeAccept, .initAccept, .policySet, .dataKeyRelease, .dataKeyOpen,
    ]

    /// What to do with one note.
    public enum Disposition: Sendable, Hashable {
        /// Write it now.
        case write
        /// A routine request: counted in the next summary.
        case counted
        /// A repeat of a refusal written within the window: counted in its `audit.repeated`.
        case suppressed
    }

    /// What makes two refusals the same.
    private struct RefusalKey: Hashable {
        var event: AuditEvent
        var status: StatusCode
        var peerClass: AuditPeerClass
        var uid: UInt32
    }

    /// A refusal written, and its repeats since.
    private struct Repeats {
        var firstSeen: UInt64
        var peer: AuditPeer
        var count: UInt64 = 0
    }

    /// How long identical refusals are folded into one record.
    public let window: UInt64
    /// How often routine counts are written.
    public let summaryInterval: UInt64
    private var refusals: [RefusalKey: Repeats] = [:]
    private var counts: [RequestKind: UInt64] = [:]
    private var countsSince: UInt64?

    /// A coalescer folding refusals for `windowNanoseconds` and summarizing every `summaryNanoseconds`.
    public init(windowNanoseconds: UInt64 = 60_000_000_000, summaryNanoseconds: UInt64 = 600_000_000_000) {
        window = windowNanoseconds
        summaryInterval = summaryNanoseconds
    }

    /// Decides `note` at `now`.
    public mutating func disposition(of note: AuditNote, now: UInt64) -> Disposition {
        if note.granted {
            guard note.peer.peerClass == .trustd, case .request(let kind) = note.event, Self.routine.contains(kind)
            else {
                return .write
            }
            counts[kind, default: 0] += 1
            if countsSince == nil { countsSince = now }
            return .counted
        }
        guard note.peer.peerClass == .trustd || note.peer.peerClass == .stranger else { return .write }
        if case .request(let kind) = note.event, Self.keyDecisions.contains(kind) { return .write }
        let key = RefusalKey(event: note.event, status: note.status, peerClass: note.peer.peerClass, uid: note.peer.uid)
        if var seen = refusals[key], now < seen.firstSeen + window {
            seen.count += 1
            refusals[key] = seen
            return .suppressed
        }
        refusals[key] = Repeats(firstSeen: now, peer: note.peer)
        return .write
    }

    /// The records due at `now`: `audit.repeated` for windows that ended with repeats, and
    /// `audit.summary` when the interval since the first counted request has passed.
    public mutating func due(now: UInt64, keyd: AuditPeer) -> [AuditNote] {
        var notes: [AuditNote] = []
        for (key, seen) in refusals where now >= seen.firstSeen + window {
            if seen.count > 0 { notes.append(Self.repeated(key, seen, now: now)) }
            refusals[key] = nil
        }
        if let since = countsSince, now >= since + summaryInterval {
            notes.append(summary(keyd: keyd, now: now, since: since))
        }
        return notes
    }

    /// Everything pending, at once (keyd is stopping).
    public mutating func flush(now: UInt64, keyd: AuditPeer) -> [AuditNote] {
        var notes: [AuditNote] = []
        for (key, seen) in refusals where seen.count > 0 { notes.append(Self.repeated(key, seen, now: now)) }
        refusals.removeAll()
        if let since = countsSince { notes.append(summary(keyd: keyd, now: now, since: since)) }
        return notes
    }

    /// When ``due(now:keyd:)`` will next have something to hand back, or nil.
    public var nextDeadline: UInt64? {
        let windows = refusals.values.filter { $0.count > 0 }.map { $0.firstSeen + window }
        let summary = countsSince.map { $0 + summaryInterval }
        return (windows + [summary].compactMap { $0 }).min()
    }

    /// The requests counted and not yet summarized, by kind.
    public var pendingCounts: [RequestKind: UInt64] { counts }

    private static func repeated(_ key: RefusalKey, _ seen: Repeats, now: UInt64) -> AuditNote {
        AuditNote(
            event: .auditRepeated,
            granted: false,
            status: key.status,
            peer: seen.peer,
            detail: [
                ("event", key.event.description), ("repeats", "\(seen.count)"),
                ("seconds", "\((now - seen.firstSeen) / 1_000_000_000)"),
            ]
        )
    }

    private mutating func summary(keyd: AuditPeer, now: UInt64, since: UInt64) -> AuditNote {
        let detail = counts.sorted { $0.key.rawValue < $1.key.rawValue }.map {
            (key: $0.key.description, value: "\($0.value)")
        }
        counts.removeAll()
        countsSince = nil
        return AuditNote(
            event: .auditSummary,
            granted: true,
            status: .ok,
            peer: keyd,
            detail: detail + [("seconds", "\((now - since) / 1_000_000_000)")]
        )
    }
}
