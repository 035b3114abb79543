/// How the bootstrap-token client retries: a timeout per call, bounded exponential backoff, an overall deadline.
public struct RetryPolicy: Sendable, Equatable {
    /// Longest one HTTP call (connect, TLS, request, answer) may take.
    public var perCallTimeout: Duration
    /// Longest the whole creation may take, retries and backoff included.
    public var deadline: Duration
    /// Wait after the first retryable failure; doubled after each further one.
    public var initialBackoff: Duration
    /// Longest wait between two attempts.
    public var maximumBackoff: Duration
    /// Fresh tokens tried after 409 Conflict before giving up.
    public var maximumConflicts: Int

    /// A policy; the defaults suit a control plane talking to its own API server.
    public init(
        perCallTimeout: Duration = .seconds(10),
        deadline: Duration = .seconds(60),
        initialBackoff: Duration = .milliseconds(200),
        maximumBackoff: Duration = .seconds(5),
        maximumConflicts: Int = 5
    ) {
        self.perCallTimeout = perCallTimeout
        self.deadline = deadline
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
        self.maximumConflicts = maximumConflicts
    }

    /// The wait after the `failures`-th consecutive retryable failure (1-based): initial × 2^(failures−1), capped.
    public func backoff(afterFailures failures: Int) -> Duration {
        var delay = initialBackoff
        for _ in 1..<max(failures, 1) {
            delay *= 2
            if delay >= maximumBackoff { return maximumBackoff }
        }
        return min(delay, maximumBackoff)
    }
}
