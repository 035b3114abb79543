import KeydProtocol

/// The fixed limits of keyd's serving (PROTOCOL.md, "Connections" and "Limits").
public enum ServingLimits {
    /// Bytes keyd reads beyond the end of the frame it assembles: a peer's pipelined requests wait in its
    /// socket, not in keyd, except for what this many bytes hold.
    public static let readAhead = 256
    /// Frames one read can complete at most (every frame is at least 10 bytes).
    public static let maxDecodedAhead = readAhead / (Limits.lengthPrefixSize + Limits.minRequestBody) + 1
    /// Answers keyd holds unsent per connection beyond the socket buffer: it performs a peer's next request
    /// only once the previous answer is handed to the socket (or held for the audit commit, below).
    public static let unsentAnswers = 1
    /// Answers one connection may have waiting for their audit records' commit, at most.
    public static let heldAnswers = 32
    /// Bytes of answers one connection may have waiting for the audit commit, about.
    public static let heldAnswerBytes = 65_536
    /// Longest a staged audit record waits for others to share its fsync and TPM count.
    public static let auditCommitWindowMilliseconds = 4
    /// Records in one audit commit at most.
    public static let auditGroupRecords = 256
    /// trustd work per turn before keyd serves the admin socket again (the request in progress may overrun it).
    public static let turnMilliseconds = 10
}

/// How many connections keyd keeps open (PROTOCOL.md, "Connections"): each socket has its own budget,
/// so trustd can never take the admin's slots, and one uid may hold only part of the trustd socket's.
public struct ConnectionBudget: Sendable, Hashable {
    /// Connections open at once on the trustd socket.
    public let trustdSocket: Int
    /// Connections open at once on the trustd socket from one uid.
    public let perUID: Int
    /// Connections open at once on the admin socket.
    public let adminSocket: Int
    private var open: [ListenerRole: Int] = [:]
    private var openByUID: [UInt32: Int] = [:]

    /// A budget with nothing open.
    public init(trustdSocket: Int, perUID: Int, adminSocket: Int) {
        self.trustdSocket = trustdSocket
        self.perUID = perUID
        self.adminSocket = adminSocket
    }

    /// Connections open on `role`'s socket.
    public func openCount(_ role: ListenerRole) -> Int { open[role, default: 0] }

    /// Takes a slot for a connection from `uid` on `role`'s socket; false (nothing taken) when the
    /// socket's budget, or on the trustd socket the uid's share, is used up: the peer gets `busy`.
    public mutating func admit(_ role: ListenerRole, uid: UInt32) -> Bool {
        switch role {
        case .admin:
            guard openCount(.admin) < adminSocket else { return false }
        case .trustd:
            guard openCount(.trustd) < trustdSocket, openByUID[uid, default: 0] < perUID else { return false }
            openByUID[uid, default: 0] += 1
        }
        open[role, default: 0] += 1
        return true
    }

    /// Gives back the slot of a closed connection that `admit` took.
    public mutating func release(_ role: ListenerRole, uid: UInt32) {
        precondition(openCount(role) > 0, "released a \(role) slot that was never taken")
        open[role, default: 0] -= 1
        guard role == .trustd else { return }
        let held = openByUID[uid, default: 0]
        precondition(held > 0, "released a slot of uid \(uid) that holds none")
        openByUID[uid] = held == 1 ? nil : held - 1
    }
}

/// Why keyd closes a connection on a timer.
public enum ConnectionExpiry: Sendable, Hashable, CustomStringConvertible {
    /// A frame was started and not completed while keyd was reading it: a protocol violation.
    case frameIncomplete
    /// No complete first request arrived within the hello deadline: a protocol violation.
    case helloMissing
    /// Neither a request nor the reading of an answer for the idle deadline: routine, not audited.
    case idle

    public var description: String {
        switch self {
        case .frameIncomplete: "frame not completed in time"
        case .helloMissing: "hello not received in time"
        case .idle: "connection idle"
        }
    }
}

/// The three clocks of one connection (PROTOCOL.md, "Connections"), in monotonic nanoseconds:
///
/// - hello: from accept until the first complete request arrives;
/// - idle: since the last progress (a request received or performed, answer bytes taken by the peer);
/// - frame: how long keyd has been reading a frame that is not complete. It runs only while keyd reads
///   this peer, so a peer whose answers keyd has not yet sent (backpressure) is never timed for them.
public struct ConnectionTimers: Sendable, Hashable {
    /// The deadlines, in nanoseconds.
    public struct Limits: Sendable, Hashable {
        /// From accept to the first complete request.
        public var hello: UInt64
        /// Without progress.
        public var idle: UInt64
        /// To complete a frame while keyd reads it.
        public var frame: UInt64

        /// Limits from milliseconds, as the configuration gives them.
        public init(helloMilliseconds: Int, idleMilliseconds: Int, frameMilliseconds: Int) {
            hello = UInt64(helloMilliseconds) * 1_000_000
            idle = UInt64(idleMilliseconds) * 1_000_000
            frame = UInt64(frameMilliseconds) * 1_000_000
        }
    }

    /// The deadlines this connection runs under.
    public let limits: Limits
    /// When hello is due; nil once the first complete request arrived.
    private var helloDue: UInt64?
    private var lastProgress: UInt64
    /// Reading time spent on the current partial frame before the frame clock last stopped.
    private var frameSpent: UInt64 = 0
    /// Since when the frame clock runs (keyd reading, a frame partial); nil while it stands.
    private var frameRunningSince: UInt64?

    /// Clocks for a connection accepted at `now`.
    public init(limits: Limits, acceptedAt now: UInt64) {
        self.limits = limits
        helloDue = now + limits.hello
        lastProgress = now
    }

    /// A complete request arrived: hello is no longer due, the frame clock starts over for the next one.
    public mutating func requestReceived(at now: UInt64) {
        helloDue = nil
        lastProgress = now
        frameSpent = 0
        if frameRunningSince != nil { frameRunningSince = now }
    }

    /// keyd performed a request of this peer, or the peer took answer bytes.
    public mutating func progressed(at now: UInt64) {
        lastProgress = now
    }

    /// Tells the frame clock whether keyd is reading this peer and whether a frame is partial; it runs
    /// only when both hold, stands still while keyd does not read, and resets when no frame is partial.
    public mutating func observe(reading: Bool, partialFrame: Bool, at now: UInt64) {
        guard partialFrame else {
            frameSpent = 0
            frameRunningSince = nil
            return
        }
        if reading {
            if frameRunningSince == nil { frameRunningSince = now }
        } else if let since = frameRunningSince {
            frameSpent += now - min(since, now)
            frameRunningSince = nil
        }
    }

    /// The frame clock's reading (time keyd spent reading the current partial frame).
    public func frameTime(at now: UInt64) -> UInt64 {
        frameSpent + (frameRunningSince.map { now - min($0, now) } ?? 0)
    }

    /// The earliest moment one of the clocks expires (the idle clock always runs).
    public var deadline: UInt64 {
        var earliest = lastProgress + limits.idle
        if let helloDue { earliest = min(earliest, helloDue) }
        if let since = frameRunningSince {
            earliest = min(earliest, since + (limits.frame - min(frameSpent, limits.frame)))
        }
        return earliest
    }

    /// The clock that expired at `now`, if any; a violation (frame, hello) before a routine idle close.
    public func expiry(at now: UInt64) -> ConnectionExpiry? {
        if frameRunningSince != nil, frameTime(at: now) >= limits.frame { return .frameIncomplete }
        if let helloDue, now >= helloDue { return .helloMissing }
        if now >= lastProgress + limits.idle { return .idle }
        return nil
    }
}

/// A token bucket in monotonic nanoseconds: `burst` tokens at most, one more every `1 / perSecond` s.
public struct TokenBucket: Sendable, Hashable {
    /// Nanoseconds of credit one token costs.
    public let cost: UInt64
    /// Most credit the bucket holds (`burst` tokens).
    public let capacity: UInt64
    private var credit: UInt64
    private var updated: UInt64

    /// A full bucket at `now`.
    public init(perSecond: Int, burst: Int, now: UInt64) {
        precondition(perSecond > 0 && burst > 0, "token bucket \(perSecond)/s, burst \(burst)")
        cost = 1_000_000_000 / UInt64(perSecond)
        capacity = cost * UInt64(burst)
        credit = capacity
        updated = now
    }

    /// Whether a token is available at `now` (refilling first).
    public mutating func hasToken(at now: UInt64) -> Bool {
        if now > updated {
            credit = min(capacity, credit + (now - updated))
            updated = now
        }
        return credit >= cost
    }

    /// Spends a token that ``hasToken(at:)`` just found.
    public mutating func spend() {
        precondition(credit >= cost, "spent a token the bucket does not hold")
        credit -= cost
    }
}

/// How much TPM work trustd may ask for (PROTOCOL.md, "Rate limits"): each `evidence.issue` takes a
/// token from its connection's bucket and from its uid's; without both, the answer is `rateLimited`
/// and the connection stays open. Admin requests are never limited.
public struct TPMWorkLimiter: Sendable {
    /// A bucket's refill rate and size.
    public struct Rate: Sendable, Hashable {
        /// Tokens added per second.
        public var perSecond: Int
        /// Most tokens held (requests allowed at once after a pause).
        public var burst: Int

        /// Creates a rate.
        public init(perSecond: Int, burst: Int) {
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    /// Each connection's rate.
    public let perConnection: Rate
    /// Each uid's rate, across its connections.
    public let perUID: Rate
    private var uidBuckets: [UInt32: TokenBucket] = [:]

    /// A limiter with every bucket full.
    public init(perConnection: Rate, perUID: Rate) {
        self.perConnection = perConnection
        self.perUID = perUID
    }

    /// Whether `kind` from `peer` is rate-limited: TPM work that trustd asks for.
    public static func limits(_ kind: RequestKind, from peer: PeerClass) -> Bool {
        peer == .trustd && (kind == .evidenceIssue || kind == .joinEvidenceIssue)
    }

    /// A full bucket for a connection accepted at `now`.
    public func connectionBucket(at now: UInt64) -> TokenBucket {
        TokenBucket(perSecond: perConnection.perSecond, burst: perConnection.burst, now: now)
    }

    /// Takes a token from `connection` and from `uid`'s bucket when both have one; false takes none.
    public mutating func admit(uid: UInt32, connection: inout TokenBucket, at now: UInt64) -> Bool {
        var shared = uidBuckets[uid] ?? TokenBucket(perSecond: perUID.perSecond, burst: perUID.burst, now: now)
        defer { uidBuckets[uid] = shared }
        guard connection.hasToken(at: now), shared.hasToken(at: now) else { return false }
        connection.spend()
        shared.spend()
        return true
    }
}

extension KeydConfiguration {
    /// The connection budgets this configuration sets.
    public var connectionBudget: ConnectionBudget {
        ConnectionBudget(trustdSocket: maxConnections, perUID: maxConnectionsPerUID, adminSocket: maxAdminConnections)
    }

    /// The hello, idle and frame deadlines this configuration sets.
    public var connectionTimerLimits: ConnectionTimers.Limits {
        ConnectionTimers.Limits(
            helloMilliseconds: helloTimeoutMilliseconds,
            idleMilliseconds: idleTimeoutMilliseconds,
            frameMilliseconds: frameTimeoutMilliseconds
        )
    }

    /// The TPM work limiter this configuration sets, every bucket full.
    public var tpmWorkLimiter: TPMWorkLimiter {
        TPMWorkLimiter(
            perConnection: .init(perSecond: evidencePerSecondPerConnection, burst: evidenceBurstPerConnection),
            perUID: .init(perSecond: evidencePerSecond, burst: evidenceBurst)
        )
    }
}
