import KeydCore

/// Admission control's pure decisions: per-source token buckets (KeydCore's ``TokenBucket``, in monotonic
/// nanoseconds) in a bounded table, and a bounded number of calls in flight with a bounded FIFO queue
/// behind them. Time is passed in, so tests drive it; the async shell (trustd's `AdmissionGate`) owns the
/// clock and the waiters.

/// Why a call was refused admission; the raw value is the metrics label.
public enum AdmissionRefusalReason: String, Sendable, CaseIterable {
    /// The calls in flight and the queue behind them are full.
    case queueFull = "queue_full"
    /// The caller's source address spent its token bucket.
    case sourceRate = "source_rate"
}

/// A refusal and when the caller should try again.
public struct AdmissionRefusal: Equatable, Sendable {
    /// Why the call was refused.
    public var reason: AdmissionRefusalReason
    /// When to try again, already clamped to ``AdmissionLimits/retryAfterRange``.
    public var retryAfter: Duration

    /// Creates a refusal.
    public init(reason: AdmissionRefusalReason, retryAfter: Duration) {
        self.reason = reason
        self.retryAfter = retryAfter
    }

    /// ``retryAfter`` in whole milliseconds, rounded up (the `retry-after-ms` hint).
    public var retryAfterMilliseconds: Int {
        let (seconds, attoseconds) = retryAfter.components
        return Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }
}

/// One token bucket per source (the peer's address without its port) in a table of at most `capacity`
/// sources; a new source beyond that evicts the least recently used one, so a flood of new source
/// addresses costs a bounded table, never more memory. An evicted source comes back with a full bucket.
public struct SourceBuckets: Sendable {
    /// What a call to ``take(source:at:)`` got.
    public enum Outcome: Equatable, Sendable {
        /// A token was taken.
        case granted
        /// The source's bucket is empty; one token's worth of time (`1 / ratePerSecond`) is the hint.
        case empty(retryAfter: Duration)
    }

    /// The most sources tracked.
    public let capacity: Int
    /// Each source's token rate.
    public let ratePerSecond: Int
    /// Each source's burst.
    public let burst: Int

    /// One tracked source, linked from the most recently used (`newest`) to the least (`oldest`).
    private struct Slot: Sendable {
        var source: String
        var bucket: TokenBucket
        var newer: Int
        var older: Int
    }
    private var slots: [Slot] = []
    private var index: [String: Int] = [:]
    private var newest = -1
    private var oldest = -1

    /// The most sources a table made from the configuration tracks.
    public static let defaultCapacity = 4096

    /// An empty table with the configuration's `source-rate-per-second` and `source-burst`.
    public init(sourcesOf configuration: TrustdConfiguration, capacity: Int = defaultCapacity) {
        self.init(
            capacity: capacity,
            ratePerSecond: configuration.sourceRatePerSecond,
            burst: configuration.sourceBurst
        )
    }

    /// An empty table.
    public init(capacity: Int, ratePerSecond: Int, burst: Int) {
        precondition(capacity >= 1, "source table capacity \(capacity) must be at least 1")
        precondition(ratePerSecond >= 1 && burst >= 1, "source bucket \(ratePerSecond)/s, burst \(burst)")
        self.capacity = capacity
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        slots.reserveCapacity(min(capacity, 1024))
    }

    /// Sources tracked now.
    public var count: Int { index.count }

    /// Whether `source` is tracked now.
    public func contains(_ source: String) -> Bool { index[source] != nil }

    /// Tracked sources from the most recently used to the least.
    public var sourcesByRecency: [String] {
        var result: [String] = []
        var cursor = newest
        while cursor >= 0 {
            result.append(slots[cursor].source)
            cursor = slots[cursor].older
        }
        return result
    }

    /// Takes a token from `source`'s bucket at `now` (monotonic nanoseconds), tracking the source (and
    /// evicting the least recently used one at the bound) when it is new.
    public mutating func take(source: String, at now: UInt64) -> Outcome {
        let slot: Int
        if let existing = index[source] {
            slot = existing
            unlink(slot)
        } else if slots.count < capacity {
            slot = slots.count
            slots.append(Slot(source: source, bucket: newBucket(now), newer: -1, older: -1))
            index[source] = slot
        } else {
            slot = oldest
            unlink(slot)
            index[slots[slot].source] = nil
            slots[slot].source = source
            slots[slot].bucket = newBucket(now)
            index[source] = slot
        }
        linkNewest(slot)
        guard slots[slot].bucket.hasToken(at: now) else {
            return .empty(retryAfter: .nanoseconds(Int64(slots[slot].bucket.cost)))
        }
        slots[slot].bucket.spend()
        return .granted
    }

    private func newBucket(_ now: UInt64) -> TokenBucket {
        TokenBucket(perSecond: ratePerSecond, burst: burst, now: now)
    }

    private mutating func unlink(_ slot: Int) {
        let (newer, older) = (slots[slot].newer, slots[slot].older)
        if newer >= 0 { slots[newer].older = older } else { newest = older }
        if older >= 0 { slots[older].newer = newer } else { oldest = newer }
        slots[slot].newer = -1
        slots[slot].older = -1
    }

    private mutating func linkNewest(_ slot: Int) {
        slots[slot].older = newest
        slots[slot].newer = -1
        if newest >= 0 { slots[newest].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}

/// The limits of one ``AdmissionState``.
public struct AdmissionLimits: Equatable, Sendable {
    /// Calls run at once.
    public var maxInFlight: Int
    /// Calls waiting for a slot, first come first served; 0 refuses at once when every slot is busy.
    public var maxQueued: Int
    /// Bounds of the retry hint given with a refusal.
    public var retryAfterRange: ClosedRange<Duration>
    /// The service time assumed until calls have been observed.
    public var initialServiceTime: Duration

    /// Limits with the default hint bounds (100 ms to 10 s) and a 100 ms first service-time guess.
    public init(
        maxInFlight: Int,
        maxQueued: Int,
        retryAfterRange: ClosedRange<Duration> = Duration.milliseconds(100)...Duration.seconds(10),
        initialServiceTime: Duration = .milliseconds(100)
    ) {
        precondition(maxInFlight >= 1, "admission maxInFlight \(maxInFlight) must be at least 1")
        precondition(maxQueued >= 0, "admission maxQueued \(maxQueued) must not be negative")
        precondition(retryAfterRange.lowerBound > .zero, "retry hints must be positive")
        self.maxInFlight = maxInFlight
        self.maxQueued = maxQueued
        self.retryAfterRange = retryAfterRange
        self.initialServiceTime = initialServiceTime
    }

    /// JoinService's release limits from trustd's configuration.
    public init(releasesOf configuration: TrustdConfiguration) {
        self.init(maxInFlight: configuration.maxReleasesInFlight, maxQueued: configuration.releaseQueueLength)
    }

    /// VerificationService's limits in front of the TPM, which quotes one at a time (50–100 ms each):
    /// two quotes in flight, 64 waiting (a few seconds of work), a 100 ms first guess.
    public static let verification = AdmissionLimits(maxInFlight: 2, maxQueued: 64)

    /// `duration` clamped to ``retryAfterRange``.
    public func clampedRetryAfter(_ duration: Duration) -> Duration {
        min(max(duration, retryAfterRange.lowerBound), retryAfterRange.upperBound)
    }
}

/// A bounded number of calls in flight and a bounded FIFO queue of waiters (named by ids the caller
/// picks); beyond both, a refusal with a retry hint from the queue's length and the observed service time.
public struct AdmissionState: Sendable {
    /// What ``arrive(_:)`` decided.
    public enum Decision: Equatable, Sendable {
        /// The call runs now; it must call ``finish(serviceTime:)`` when done.
        case admitted
        /// The call waits; a later ``finish(serviceTime:)`` returns its id when it may run.
        case queued
        /// The call is refused; it should come back after `retryAfter`.
        case refused(retryAfter: Duration)
    }

    /// The limits.
    public let limits: AdmissionLimits
    /// Calls running now.
    public private(set) var inFlight = 0
    /// The average service time in seconds, weighted towards recent calls.
    private var serviceSeconds: Double
    /// Waiter ids in arrival order from `head`; cancelled ones stay until skipped or compacted.
    private var queue: [UInt64] = []
    private var head = 0
    /// The ids still waiting.
    private var waiting: Set<UInt64> = []

    /// The weight of the newest service time in ``serviceTimeEstimate``.
    static let estimateWeight = 0.2

    /// No call in flight, none queued.
    public init(limits: AdmissionLimits) {
        self.limits = limits
        serviceSeconds = limits.initialServiceTime.inSeconds
    }

    /// Calls waiting now.
    public var queued: Int { waiting.count }

    /// The average service time, weighted towards recent calls.
    public var serviceTimeEstimate: Duration { .roundedToMicroseconds(serviceSeconds) }

    /// Whether `id` is waiting.
    public func isQueued(_ id: UInt64) -> Bool { waiting.contains(id) }

    /// The hint for a refused caller: the time the queue ahead of it takes to drain
    /// (`(queued + 1) × serviceTimeEstimate / maxInFlight`), clamped.
    public var retryAfter: Duration {
        let drain = serviceSeconds * Double(waiting.count + 1) / Double(limits.maxInFlight)
        return limits.clampedRetryAfter(.roundedToMicroseconds(drain))
    }

    /// A new call `id` (unique among those waiting): runs, waits, or is refused.
    public mutating func arrive(_ id: UInt64) -> Decision {
        precondition(!waiting.contains(id), "admission id \(id) is already waiting")
        if inFlight < limits.maxInFlight && waiting.isEmpty {
            inFlight += 1
            return .admitted
        }
        guard waiting.count < limits.maxQueued else { return .refused(retryAfter: retryAfter) }
        queue.append(id)
        waiting.insert(id)
        return .queued
    }

    /// Removes a waiting call (its caller gave up); false when `id` is not waiting (already admitted or
    /// never queued).
    public mutating func cancel(_ id: UInt64) -> Bool {
        guard waiting.remove(id) != nil else { return false }
        // Cancelled ids stay in `queue` until skipped; compact before they outnumber the live ones.
        if queue.count - head > 2 * max(limits.maxQueued, 8) {
            queue = queue[head...].filter { waiting.contains($0) }
            head = 0
        }
        return true
    }

    /// A call finished after `serviceTime`: frees its slot and admits the first waiter, whose id it returns.
    public mutating func finish(serviceTime: Duration) -> UInt64? {
        precondition(inFlight > 0, "admission finish without a call in flight")
        inFlight -= 1
        let sample = max(serviceTime, .zero).inSeconds
        serviceSeconds = serviceSeconds * (1 - Self.estimateWeight) + sample * Self.estimateWeight
        while head < queue.count {
            let id = queue[head]
            head += 1
            guard waiting.remove(id) != nil else { continue }
            if head >= 64 && head * 2 >= queue.count {
                queue.removeFirst(head)
                head = 0
            }
            inFlight += 1
            return id
        }
        queue.removeAll(keepingCapacity: true)
        head = 0
        return nil
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    fileprivate var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// `seconds` to the nearest microsecond (so computed hints compare exactly with literal durations).
    fileprivate static func roundedToMicroseconds(_ seconds: Double) -> Duration {
        .microseconds(Int64((seconds * 1e6).rounded()))
    }
}
