/// The nearest rank of percentile `p` (0...1) among `count` ordered samples, 1-based: the
/// smallest rank with at least a fraction `p` of the samples at or below it. Every percentile a
/// bench prints is this one (``SortedSamples``, and histograms that count by rank).
public func nearestRank(_ p: Double, of count: Int) -> Int {
    precondition((0...1).contains(p), "percentile \(p) outside 0...1")
    return max(1, min(count, Int((p * Double(count)).rounded(.up))))
}

/// Measured values sorted once, read by percentile.
public struct SortedSamples: Sendable {
    /// The values, ascending.
    public let values: [Double]

    /// Sorts `samples`.
    public init(_ samples: some Sequence<Double>) { values = samples.sorted() }

    /// The nearest-rank percentile `p` (0...1) (``nearestRank(_:of:)``); nan when there are no samples.
    public func percentile(_ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        return values[nearestRank(p, of: values.count) - 1]
    }

    /// The 50th percentile (for an even count, the lower of the two middle values).
    public var median: Double { percentile(0.5) }
    /// The smallest value; nan when there are none.
    public var minimum: Double { values.first ?? .nan }
    /// The largest value; nan when there are none.
    public var maximum: Double { values.last ?? .nan }
    /// The arithmetic mean; nan when there are none.
    public var mean: Double { values.reduce(0, +) / Double(values.count) }
}
