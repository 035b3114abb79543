import Testing

@testable import TrustdCore

/// Token buckets, the bounded source table and the in-flight/queue decisions, on a clock the tests move.
@Suite struct AdmissionTests {
    /// A moment on the tests' clock, in monotonic nanoseconds.
    let start: UInt64 = 5_000_000_000

    /// `milliseconds` later than ``start``.
    func at(_ milliseconds: UInt64) -> UInt64 { start + milliseconds * 1_000_000 }

    // MARK: SourceBuckets

    @Test func sourcesHaveTheirOwnBuckets() {
        var table = SourceBuckets(capacity: 8, ratePerSecond: 4, burst: 2)
        #expect(table.take(source: "10.0.0.1", at: start) == .granted)
        #expect(table.take(source: "10.0.0.1", at: start) == .granted)
        // Empty: the hint is one token's time, 1/4 s.
        #expect(table.take(source: "10.0.0.1", at: start) == .empty(retryAfter: .milliseconds(250)))
        // Another source is not limited by the first one's spending.
        #expect(table.take(source: "10.0.0.2", at: start) == .granted)
        #expect(table.count == 2)
        // The first source gets one token back after a quarter second, not two.
        #expect(table.take(source: "10.0.0.1", at: at(249)) != .granted)
        #expect(table.take(source: "10.0.0.1", at: at(250)) == .granted)
        #expect(table.take(source: "10.0.0.1", at: at(250)) != .granted)
        // A long pause refills to the burst, never beyond it.
        #expect(table.take(source: "10.0.0.1", at: at(60_000)) == .granted)
        #expect(table.take(source: "10.0.0.1", at: at(60_000)) == .granted)
        #expect(table.take(source: "10.0.0.1", at: at(60_000)) != .granted)
    }

    @Test func earlierInstantRefillsNothing() {
        var table = SourceBuckets(capacity: 8, ratePerSecond: 1, burst: 1)
        #expect(table.take(source: "a", at: at(5_000)) == .granted)
        // An instant read before the last update (another thread's) must not add tokens.
        #expect(table.take(source: "a", at: start) == .empty(retryAfter: .seconds(1)))
    }

    @Test func evictsTheLeastRecentlyUsedAtTheBound() {
        var table = SourceBuckets(capacity: 3, ratePerSecond: 1, burst: 1)
        for source in ["a", "b", "c"] { #expect(table.take(source: source, at: start) == .granted) }
        #expect(table.sourcesByRecency == ["c", "b", "a"])
        // Using "a" again makes "b" the least recently used.
        #expect(table.take(source: "a", at: start) != .granted)
        #expect(table.sourcesByRecency == ["a", "c", "b"])
        #expect(table.take(source: "d", at: start) == .granted)
        #expect(table.count == 3)
        #expect(!table.contains("b"))
        #expect(table.sourcesByRecency == ["d", "a", "c"])
        // "a" kept its spent bucket; "b" comes back as a new source with a full one.
        #expect(table.take(source: "a", at: start) != .granted)
        #expect(table.take(source: "b", at: start) == .granted)
        #expect(!table.contains("c"))
        #expect(table.sourcesByRecency == ["b", "a", "d"])
    }

    @Test func floodOfNewSourcesStaysBounded() {
        var table = SourceBuckets(capacity: 100, ratePerSecond: 1, burst: 1)
        for n in 0..<10_000 { #expect(table.take(source: "198.51.100.\(n)", at: start) == .granted) }
        #expect(table.count == 100)
        // The most recent 100 sources are the ones kept, newest first.
        #expect(table.sourcesByRecency == (9_900..<10_000).reversed().map { "198.51.100.\($0)" })
    }

    @Test func capacityOneReplacesTheOnlySource() {
        var table = SourceBuckets(capacity: 1, ratePerSecond: 1, burst: 1)
        #expect(table.take(source: "a", at: start) == .granted)
        #expect(table.take(source: "a", at: start) != .granted)
        #expect(table.take(source: "b", at: start) == .granted)
        #expect(table.sourcesByRecency == ["b"])
    }

    // MARK: AdmissionState

    @Test func admitsUpToTheLimitThenQueuesThenRefuses() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 2, maxQueued: 2))
        #expect(state.arrive(1) == .admitted)
        #expect(state.arrive(2) == .admitted)
        #expect(state.arrive(3) == .queued)
        #expect(state.arrive(4) == .queued)
        #expect(state.inFlight == 2)
        #expect(state.queued == 2)
        // Full: refused with the time two queued calls take on two slots at the first guess of 100 ms,
        // (2 + 1) × 100 ms / 2 = 150 ms.
        #expect(state.arrive(5) == .refused(retryAfter: .milliseconds(150)))
        #expect(state.queued == 2)
    }

    @Test func finishAdmitsWaitersInArrivalOrder() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 1, maxQueued: 3))
        #expect(state.arrive(10) == .admitted)
        #expect(state.arrive(11) == .queued)
        #expect(state.arrive(12) == .queued)
        #expect(state.finish(serviceTime: .milliseconds(100)) == 11)
        #expect(state.inFlight == 1)
        #expect(state.finish(serviceTime: .milliseconds(100)) == 12)
        #expect(state.finish(serviceTime: .milliseconds(100)) == nil)
        #expect(state.inFlight == 0)
        #expect(state.queued == 0)
    }

    @Test func newcomerWaitsBehindTheQueue() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 1, maxQueued: 2))
        #expect(state.arrive(1) == .admitted)
        #expect(state.arrive(2) == .queued)
        // 1 finishes and 2 takes its slot; 3 arriving now must not jump ahead of anyone.
        #expect(state.finish(serviceTime: .zero) == 2)
        #expect(state.arrive(3) == .queued)
    }

    @Test func cancelledWaiterIsSkipped() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 1, maxQueued: 2))
        #expect(state.arrive(1) == .admitted)
        #expect(state.arrive(2) == .queued)
        #expect(state.arrive(3) == .queued)
        let cancelled = state.cancel(2)
        let cancelledAgain = state.cancel(2)
        #expect(cancelled)
        #expect(!state.isQueued(2))
        #expect(!cancelledAgain)
        // The freed place is usable at once.
        #expect(state.arrive(4) == .queued)
        #expect(state.finish(serviceTime: .zero) == 3)
        #expect(state.finish(serviceTime: .zero) == 4)
        #expect(state.finish(serviceTime: .zero) == nil)
    }

    @Test func cancelOfAnAdmittedCallIsRefused() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 1, maxQueued: 1))
        #expect(state.arrive(1) == .admitted)
        let cancelled = state.cancel(1)
        #expect(!cancelled)
        #expect(state.inFlight == 1)
    }

    @Test func noQueueRefusesWhenSlotsAreBusy() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 1, maxQueued: 0))
        #expect(state.arrive(1) == .admitted)
        #expect(state.arrive(2) == .refused(retryAfter: .milliseconds(100)))
        #expect(state.finish(serviceTime: .milliseconds(50)) == nil)
        #expect(state.arrive(3) == .admitted)
    }

    @Test func manyCancellationsKeepTheQueueBounded() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 1, maxQueued: 4))
        #expect(state.arrive(0) == .admitted)
        for id in UInt64(1)...10_000 {
            #expect(state.arrive(id) == .queued)
            let cancelled = state.cancel(id)
            #expect(cancelled)
        }
        #expect(state.queued == 0)
        #expect(state.arrive(20_000) == .queued)
        #expect(state.finish(serviceTime: .zero) == 20_000)
    }

    @Test func serviceTimeEstimateFollowsObservedCalls() {
        var state = AdmissionState(limits: AdmissionLimits(maxInFlight: 1, maxQueued: 0))
        #expect(state.serviceTimeEstimate == .milliseconds(100))
        for _ in 0..<100 {
            #expect(state.arrive(1) == .admitted)
            _ = state.finish(serviceTime: .seconds(2))
        }
        // Converged on 2 s (within a millisecond after 100 samples at weight 0.2).
        let error = state.serviceTimeEstimate - .seconds(2)
        #expect(error > .milliseconds(-1) && error < .milliseconds(1))
        #expect(state.arrive(1) == .admitted)
        guard case .refused(let hint) = state.arrive(2) else {
            Issue.record("a full gate without a queue admitted a call")
            return
        }
        #expect(hint > .milliseconds(1_990) && hint <= .seconds(2))
    }

    @Test(arguments: [
        // A fast service with a short queue: the lower bound.
        (Duration.milliseconds(1), 0, Duration.milliseconds(100)),
        // A slow service with a long queue: the upper bound.
        (Duration.seconds(5), 100, Duration.seconds(10)),
        // In between: (3 + 1) × 500 ms / 2 slots = 1 s.
        (Duration.milliseconds(500), 3, Duration.seconds(1)),
    ])
    func retryHintIsClamped(serviceTime: Duration, queued: Int, expected: Duration) {
        let limits = AdmissionLimits(maxInFlight: 2, maxQueued: queued, initialServiceTime: serviceTime)
        var state = AdmissionState(limits: limits)
        #expect(state.arrive(0) == .admitted)
        #expect(state.arrive(1) == .admitted)
        for id in 0..<queued { #expect(state.arrive(UInt64(100 + id)) == .queued) }
        #expect(state.arrive(99) == .refused(retryAfter: expected))
    }

    @Test func retryAfterMillisecondsRoundsUp() {
        #expect(AdmissionRefusal(reason: .queueFull, retryAfter: .milliseconds(150)).retryAfterMilliseconds == 150)
        #expect(AdmissionRefusal(reason: .sourceRate, retryAfter: .microseconds(100_001)).retryAfterMilliseconds == 101)
        #expect(AdmissionRefusal(reason: .sourceRate, retryAfter: .seconds(10)).retryAfterMilliseconds == 10_000)
    }

    @Test func limitsComeFromTheConfiguration() throws {
        var configuration = TrustdConfiguration()
        configuration.maxReleasesInFlight = 7
        configuration.releaseQueueLength = 70
        let limits = AdmissionLimits(releasesOf: configuration)
        #expect(limits.maxInFlight == 7)
        #expect(limits.maxQueued == 70)
        #expect(limits.clampedRetryAfter(.zero) == .milliseconds(100))
        #expect(limits.clampedRetryAfter(.seconds(60)) == .seconds(10))
        configuration.sourceRatePerSecond = 3
        configuration.sourceBurst = 5
        let sources = SourceBuckets(sourcesOf: configuration)
        #expect(sources.ratePerSecond == 3 && sources.burst == 5)
        #expect(sources.capacity == SourceBuckets.defaultCapacity)
    }
}
