import KeydCore

/// A node's set-up, in its fixed order: a ticket from a JoinService, keyd accepting its envelope, PCR 15
/// marked with the cluster ID, the state disk opened, the node's join files written, kubeadm run.
/// The progress is a small persisted file (``NodeSetUpState``); after a crash at any step,
/// ``NodeSetUp/resume(from:observing:)`` decides from that file and from what can be observed again
/// (keyd's boot key, the join files, kubeadm's completion marker) what to do next.
public enum NodeSetUpStep: UInt8, CaseIterable, Comparable, Sendable, CustomStringConvertible {
    case ticketReceived = 1
    case envelopeAccepted = 2
    case pcr15Marked = 3
    case diskOpened = 4
    case nodeStateWritten = 5
    case kubeadmDone = 6

    public static func < (lhs: NodeSetUpStep, rhs: NodeSetUpStep) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The name the state file uses.
    public var description: String {
        switch self {
        case .ticketReceived: "ticket-received"
        case .envelopeAccepted: "envelope-accepted"
        case .pcr15Marked: "pcr15-marked"
        case .diskOpened: "disk-opened"
        case .nodeStateWritten: "node-state-written"
        case .kubeadmDone: "kubeadm-done"
        }
    }

    /// The step after this one, nil after the last.
    public var next: NodeSetUpStep? { NodeSetUpStep(rawValue: rawValue + 1) }
}

/// Why a set-up cannot go on: its state file is unreadable or contradicts what is observed. The message
/// names the file's field or the contradicting fact; nothing restarts silently.
public struct NodeSetUpError: Error, Hashable, CustomStringConvertible, Sendable {
    public enum Code: Hashable, Sendable {
        /// The state file is not one this version wrote (garbled, unknown field, out of bounds).
        case garbled
        /// The state file says a step was done that observation contradicts.
        case contradiction
        /// Reading or writing the state file failed.
        case io
    }

    public let code: Code
    public let description: String

    static func garbled(_ detail: String) -> NodeSetUpError {
        NodeSetUpError(code: .garbled, description: "node set-up state is garbled: \(detail)")
    }

    static func contradiction(_ detail: String) -> NodeSetUpError {
        NodeSetUpError(code: .contradiction, description: "node set-up state contradicts the node: \(detail)")
    }

    /// The state file could not be read or written; `detail` names it and the errno.
    public static func io(_ detail: String) -> NodeSetUpError {
        NodeSetUpError(code: .io, description: "node set-up state: \(detail)")
    }

    public static func == (lhs: NodeSetUpError, rhs: NodeSetUpError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}

/// The persisted progress of this keyd boot's set-up. Text, one `key=value` per line after a version
/// line, every key exactly once, at most ``maximumBytes``.
public struct NodeSetUpState: Hashable, Sendable {
    /// The state file's first line.
    public static let header = "asterism-node-setup v1"
    /// The state file's largest size.
    public static let maximumBytes = 1024

    /// keyd's boot public key this progress belongs to (a keyd restart is a new boot: the disk key and
    /// the PCR 15 mark are gone, or must be confirmed again).
    public var keydBootKey: [UInt8]
    /// Whether this boot's ticket is a join (new node) or a rejoin.
    public var kind: JoinTicketKind
    /// The last step done, nil before the first.
    public var completed: NodeSetUpStep?
    /// The cluster ID PCR 15 was marked with (32 bytes), empty before.
    public var clusterID: [UInt8]

    public init(keydBootKey: [UInt8], kind: JoinTicketKind, completed: NodeSetUpStep? = nil, clusterID: [UInt8] = []) {
        self.keydBootKey = keydBootKey
        self.kind = kind
        self.completed = completed
        self.clusterID = clusterID
    }

    /// The step the set-up does next, nil when every step is done.
    public var nextStep: NodeSetUpStep? { completed.map(\.next) ?? .ticketReceived }

    /// This state with `step` done; steps go in their fixed order only (a skip is a bug in the caller).
    public func recording(_ step: NodeSetUpStep, clusterID: [UInt8]? = nil) -> NodeSetUpState {
        precondition(step == nextStep, "node set-up step \(step) recorded after \(String(describing: completed))")
        precondition(step != .pcr15Marked || clusterID?.count == 32, "PCR 15 is marked with a 32-byte cluster ID")
        var next = self
        next.completed = step
        if let clusterID { next.clusterID = clusterID }
        return next
    }

    /// The file's bytes.
    public var encoded: [UInt8] {
        let lines = [
            Self.header, "keyd-boot-key=\(lowercaseHex(keydBootKey))", "kind=\(kind == .join ? "join" : "rejoin")",
            "completed=\(completed?.description ?? "none")", "cluster-id=\(lowercaseHex(clusterID))",
        ]
        return Array((lines.joined(separator: "\n") + "\n").utf8)
    }

    /// Parses a state file strictly: the header, then exactly the four keys, values in bounds.
    public init(parsing bytes: [UInt8]) throws(NodeSetUpError) {
        guard bytes.count <= Self.maximumBytes else {
            throw .garbled("\(bytes.count) bytes, over \(Self.maximumBytes)")
        }
        guard let text = String(validating: bytes, as: UTF8.self), text.hasSuffix("\n") else {
            throw .garbled("not UTF-8 text ending in a newline")
        }
        let lines = text.dropLast().split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.first == Substring(Self.header) else { throw .garbled("the first line is not \(Self.header)") }
        var fields: [String: Substring] = [:]
        for line in lines.dropFirst() {
            guard let equals = line.firstIndex(of: "=") else { throw .garbled("a line has no '='") }
            let key = String(line[..<equals])
            guard ["keyd-boot-key", "kind", "completed", "cluster-id"].contains(key) else {
                throw .garbled("unknown key \(key.prefix(32))")
            }
            guard fields.updateValue(line[line.index(after: equals)...], forKey: key) == nil else {
                throw .garbled("\(key) is set twice")
            }
        }
        guard fields.count == 4 else { throw .garbled("\(4 - fields.count) of its 4 keys are missing") }
        guard let bootKey = Self.hex(fields["keyd-boot-key"]!), bootKey.count == 32 else {
            throw .garbled("keyd-boot-key is not 64 hex digits")
        }
        guard let clusterID = Self.hex(fields["cluster-id"]!), clusterID.isEmpty || clusterID.count == 32 else {
            throw .garbled("cluster-id is neither empty nor 64 hex digits")
        }
        switch fields["kind"]! {
        case "join": kind = .join
        case "rejoin": kind = .rejoin
        default: throw .garbled("kind is neither join nor rejoin")
        }
        let completedText = fields["completed"]!
        if completedText == "none" {
            completed = nil
        } else if let step = NodeSetUpStep.allCases.first(where: { $0.description == completedText }) {
            completed = step
        } else {
            throw .garbled("completed names no step")
        }
        guard (completed ?? .ticketReceived) < .pcr15Marked || clusterID.count == 32 else {
            throw .garbled("PCR 15 is marked but cluster-id is empty")
        }
        keydBootKey = bootKey
        self.clusterID = clusterID
    }

    /// Lowercase hex digits as bytes; nil when malformed.
    private static func hex(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0, digits.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        else { return nil }
        return stride(from: 0, to: digits.count, by: 2).map {
            UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)!
        }
    }
}

/// What can be observed of the node after a crash, without the state file.
public struct NodeSetUpObservations: Hashable, Sendable {
    /// keyd's current boot public key (`bootKey.get`): a different one than the state file's means keyd
    /// restarted since, and this boot's keyd steps are to be done again.
    public var keydBootKey: [UInt8]
    /// Whether the join client's files (kubeadm join material) are in the output directory.
    public var joinMaterialPresent: Bool
    /// Whether kubeadm's completion marker is present (kubeadm joined on an earlier run).
    public var kubeadmCompleted: Bool
    /// Whether a kubeadm program is configured (without one the set-up ends once the files are written).
    public var kubeadmConfigured: Bool

    public init(keydBootKey: [UInt8], joinMaterialPresent: Bool, kubeadmCompleted: Bool, kubeadmConfigured: Bool) {
        self.keydBootKey = keydBootKey
        self.joinMaterialPresent = joinMaterialPresent
        self.kubeadmCompleted = kubeadmCompleted
        self.kubeadmConfigured = kubeadmConfigured
    }
}

/// Join or rejoin.
public enum JoinTicketKind: String, Sendable, CustomStringConvertible {
    case join
    case rejoin
    public var description: String { rawValue }
}

/// What the set-up does next.
public enum NodeSetUpAction: Hashable, Sendable {
    /// Ask a JoinService for a ticket of this kind and go through the keyd steps (and, for a join,
    /// write the node's files); the ticket exists only in memory, so any keyd step not done this boot
    /// starts again from here.
    case requestTicket(JoinTicketKind)
    /// Run `kubeadm join` with the written join material.
    case runKubeadm
    /// Every step is done.
    case done
}

/// The set-up's decisions. Pure: the caller observes and persists.
public enum NodeSetUp {
    /// The next action after a (re)start, and the state to persist before taking it.
    /// - Parameters:
    ///   - persisted: the state file's content, nil when there is none.
    ///   - observed: what the node shows now.
    /// - Throws: ``NodeSetUpError/Code/contradiction`` when the file claims a step the node shows undone
    ///   (files or kubeadm's marker gone): the operator decides, nothing is redone silently.
    public static func resume(
        from persisted: NodeSetUpState?,
        observing observed: NodeSetUpObservations
    ) throws(NodeSetUpError) -> (state: NodeSetUpState, action: NodeSetUpAction) {
        let kind: JoinTicketKind = observed.joinMaterialPresent ? .rejoin : .join
        let fresh = NodeSetUpState(keydBootKey: observed.keydBootKey, kind: kind)
        guard var state = persisted, state.keydBootKey == observed.keydBootKey else {
            // No file, or a file from an earlier keyd boot: keyd's steps are this boot's to do.
            return (fresh, .requestTicket(kind))
        }
        let completed = state.completed ?? .ticketReceived
        if state.completed != nil, completed >= .nodeStateWritten, !observed.joinMaterialPresent {
            throw .contradiction("the join files were written this boot but are gone")
        }
        if state.completed == .kubeadmDone, !observed.kubeadmCompleted {
            throw .contradiction("kubeadm completed this boot but its marker is gone")
        }
        guard let done = state.completed, done >= .diskOpened else {
            // The ticket (and its envelope) died with the process: ask again.
            return (fresh, .requestTicket(kind))
        }
        if done == .diskOpened {
            guard observed.joinMaterialPresent else {
                // A join's material came with the ticket and was lost before it was written: a new ticket.
                return (fresh, .requestTicket(.join))
            }
            state = state.recording(.nodeStateWritten)
        }
        if state.completed == .nodeStateWritten, observed.kubeadmCompleted {
            state = state.recording(.kubeadmDone)
        }
        if state.completed == .kubeadmDone || !observed.kubeadmConfigured { return (state, .done) }
        return (state, .runKubeadm)
    }
}
