/// The pause between join attempts: exponential from `initial`, capped at `maximum`, with "equal
/// jitter" (half the step fixed, half random) so a fleet that booted together spreads out; a server's
/// retry hint, when larger, wins (still capped, still jittered upward by up to a fifth).
public struct JoinBackoff: Sendable, Equatable {
    /// The first step.
    public let initialMilliseconds: Int
    /// The largest pause.
    public let maximumMilliseconds: Int

    public init(initialMilliseconds: Int, maximumMilliseconds: Int) {
        self.initialMilliseconds = max(1, initialMilliseconds)
        self.maximumMilliseconds = max(self.initialMilliseconds, maximumMilliseconds)
    }

    /// The pause after failed attempt number `attempt` (1-based), with `hintMilliseconds` from the
    /// server if it sent one and `random` uniform in 0..<1.
    public func pauseMilliseconds(afterAttempt attempt: Int, hintMilliseconds: Int?, random: Double) -> Int {
        let doublings = min(max(attempt - 1, 0), 30)
        let step = min(maximumMilliseconds, initialMilliseconds << doublings)
        let jittered = step / 2 + Int(Double(step - step / 2) * min(max(random, 0), 1))
        guard let hint = hintMilliseconds, hint > jittered else { return jittered }
        let capped = min(hint, maximumMilliseconds)
        return min(maximumMilliseconds, capped + Int(Double(capped) * 0.2 * min(max(random, 0), 1)))
    }
}
