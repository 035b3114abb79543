import KeydProtocol

/// A challenge's 16-byte ID as a value (two words), so the table hashes it without an allocation.
public struct ChallengeID: Sendable, Hashable, CustomStringConvertible {
    /// The ID's first and last eight bytes, big-endian.
    public let high: UInt64
    public let low: UInt64

    /// The ID in `bytes`, or nil when it is not exactly 16 bytes.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        high = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        low = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The 16 bytes.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }

    /// Lowercase hex, for audit records (an ID is not secret: it names a challenge, the nonce proves nothing alone).
    public var description: String { lowercaseHex(bytes) }
}

/// One challenge keyd issued: single use, valid for a lifetime from its issue.
public struct Challenge: Sendable, Hashable {
    /// Its ID.
    public let id: ChallengeID
    /// The 32-byte nonce the joining node's evidence must bind.
    public let nonce: [UInt8]
    /// What it was issued for.
    public let purpose: ChallengePurpose
    /// Monotonic nanoseconds after which it is expired.
    public let expires: UInt64
}

/// The outstanding challenges: at most `capacity`, the oldest evicted first when a new one needs its
/// slot, each usable once. Challenges that left the table (used, evicted, expired) are remembered,
/// at most `capacity` of them, so that a later use is answered with the reason. Pure: time and
/// randomness are passed in, so a flood of issues costs fixed memory.
public struct ChallengeTable: Sendable {
    /// Why a challenge cannot be used.
    public enum Refusal: Error, Sendable, Hashable {
        /// Never issued, or forgotten long ago.
        case unknown
        /// Used before (whatever that use's outcome).
        case used
        /// Evicted by newer ones before it was used.
        case evicted
        /// Its lifetime passed.
        case expired

        /// The status a request using it is answered.
        public var status: StatusCode {
            switch self {
            case .unknown, .used: .challengeUnknown
            case .evicted: .challengeEvicted
            case .expired: .challengeExpired
            }
        }

        /// The reason for an audit record.
        public var reason: String {
            switch self {
            case .unknown: "no such challenge"
            case .used: "challenge already used"
            case .evicted: "challenge evicted by newer ones before it was used"
            case .expired: "challenge lifetime passed"
            }
        }
    }

    /// Outstanding challenges at most.
    public let capacity: Int
    /// Slots in issue order: the slot a new challenge takes held the one issued `capacity` issues ago.
    private var slots: [Challenge?]
    private var next = 0
    private var index: [ChallengeID: Int] = [:]
    /// Challenges that left the table, with why, in a ring of `capacity`.
    private var retired: [(id: ChallengeID, refusal: Refusal)?]
    private var nextRetired = 0
    private var retiredIndex: [ChallengeID: Int] = [:]

    /// An empty table for at most `capacity` outstanding challenges.
    public init(capacity: Int) {
        precondition(capacity > 0, "a challenge table needs room for one")
        self.capacity = capacity
        slots = Array(repeating: nil, count: capacity)
        retired = Array(repeating: nil, count: capacity)
    }

    /// Challenges outstanding (some may have expired unnoticed).
    public var outstanding: Int { index.count }

    /// Adds a challenge with `id` and `nonce` (fresh random bytes from the caller) valid until
    /// `now + lifetime`; returns the challenge evicted to make room, if any. An ID already in use is a
    /// caller bug (random 128-bit IDs do not collide) and traps.
    @discardableResult
    public mutating func issue(
        id: ChallengeID,
        nonce: [UInt8],
        purpose: ChallengePurpose,
        now: UInt64,
        lifetime: UInt64
    ) -> Challenge? {
        precondition(nonce.count == 32, "challenge nonce of \(nonce.count) bytes")
        precondition(index[id] == nil, "challenge ID issued twice")
        let evicted = slots[next]
        if let evicted {
            index[evicted.id] = nil
            retire(evicted.id, .evicted)
        }
        retiredIndex[id].map { retired[$0] = nil }
        retiredIndex[id] = nil
        slots[next] = Challenge(id: id, nonce: nonce, purpose: purpose, expires: now &+ lifetime)
        index[id] = next
        next = (next + 1) % capacity
        return evicted
    }

    /// Takes challenge `id` out of the table: it is used up whatever the request's outcome.
    public mutating func consume(_ id: ChallengeID, now: UInt64) -> Result<Challenge, Refusal> {
        guard let slot = index[id], let challenge = slots[slot] else {
            return .failure(retiredIndex[id].flatMap { retired[$0]?.refusal } ?? .unknown)
        }
        slots[slot] = nil
        index[id] = nil
        if now > challenge.expires {
            retire(id, .expired)
            return .failure(.expired)
        }
        retire(id, .used)
        return .success(challenge)
    }

    /// Remembers why `id` left the table, forgetting the oldest such note when the ring is full.
    private mutating func retire(_ id: ChallengeID, _ refusal: Refusal) {
        if let old = retired[nextRetired] { retiredIndex[old.id] = nil }
        retired[nextRetired] = (id, refusal)
        retiredIndex[id] = nextRetired
        nextRetired = (nextRetired + 1) % capacity
    }
}
