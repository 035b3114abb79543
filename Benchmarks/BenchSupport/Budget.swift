import Synchronization

/// The operations a timed mode may still start: at most `limit`, and none once `seconds` passed since
/// ``start()``, whichever comes first. Shared by the mode's threads or tasks.
public final class Budget: Sendable {
    /// The most operations the mode starts.
    public let limit: Int
    /// The mode's time limit in seconds.
    public let seconds: Double
    /// When the time is up (monotonic ns); 0 until ``start()``, so nothing is claimed before it.
    private let deadline = Atomic<UInt64>(0)
    private let claimed = Atomic<Int>(0)

    /// A budget of `limit` operations or `seconds` from ``start()``.
    public init(limit: Int, seconds: Double) {
        self.limit = limit
        self.seconds = seconds
    }

    /// Starts the clock.
    public func start() { deadline.store(monotonicNanoseconds() + UInt64(seconds * 1e9), ordering: .releasing) }

    /// Takes one operation from the budget; false once `limit` were taken or the time is up.
    public func claim() -> Bool {
        guard monotonicNanoseconds() < deadline.load(ordering: .acquiring) else { return false }
        return claimed.add(1, ordering: .relaxed).oldValue < limit
    }

    /// Which limit ended the mode, naming the count's option (`--releases`).
    public func stoppedBy(countOption: String) -> String {
        claimed.load(ordering: .relaxed) >= limit
            ? "stopped after \(countOption) \(limit)" : "stopped at the --seconds \(fixed(seconds, 0)) limit"
    }
}
