import GRPCCore
import Synchronization
import Testing
import Trustd
import TrustdCore

/// The async gate: waiters parked in order, refusals as sanitized statuses, cancellation of a waiter.
@Suite struct AdmissionGateTests {
    /// A gate whose load changes arrive on a stream the test reads.
    struct ObservedGate {
        let metrics = TrustdMetrics()
        let gate: AdmissionGate
        let loads: AsyncStream<Load>

        struct Load: Equatable, Sendable {
            var inFlight: Int
            var queued: Int
        }

        init(maxInFlight: Int, maxQueued: Int, burst: Int = 1000) {
            let (loads, continuation) = AsyncStream<Load>.makeStream()
            self.loads = loads
            gate = AdmissionGate(
                name: "test",
                limits: AdmissionLimits(maxInFlight: maxInFlight, maxQueued: maxQueued),
                sources: SourceBuckets(capacity: 16, ratePerSecond: 1, burst: burst),
                metrics: metrics,
                clock: { 0 },
                onLoadChange: { continuation.yield(Load(inFlight: $0, queued: $1)) }
            )
        }

        /// Waits for the gate to reach `load`.
        func wait(for load: Load, _ iterator: inout AsyncStream<Load>.Iterator) async {
            while let next = await iterator.next() {
                if next == load { return }
            }
        }
    }

    /// A latch a task waits on until the test opens it.
    final class Latch: Sendable {
        private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

        func wait() async {
            await withCheckedContinuation { continuation in
                let open = state.withLock { state -> Bool in
                    if !state.open { state.waiters.append(continuation) }
                    return state.open
                }
                if open { continuation.resume() }
            }
        }

        func open() {
            let waiters = state.withLock { state in
                state.open = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    /// What the admitted bodies did, in order.
    final class Recorder: Sendable {
        private let entries = Mutex<[Int]>([])
        func record(_ entry: Int) { entries.withLock { $0.append(entry) } }
        var all: [Int] { entries.withLock { $0 } }
    }

    @Test func queuedCallsRunInArrivalOrder() async throws {
        let observed = ObservedGate(maxInFlight: 1, maxQueued: 3)
        var loads = observed.loads.makeAsyncIterator()
        let latch = Latch()
        let order = Recorder()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await observed.gate.withAdmission(source: "a") {
                    await latch.wait()
                    order.record(0)
                }
            }
            await observed.wait(for: .init(inFlight: 1, queued: 0), &loads)
            for index in 1...3 {
                group.addTask {
                    try await observed.gate.withAdmission(source: "a") { order.record(index) }
                }
                // Each waiter is queued before the next one arrives, so the arrival order is known.
                await observed.wait(for: .init(inFlight: 1, queued: index), &loads)
            }
            latch.open()
            try await group.waitForAll()
        }
        #expect(order.all == [0, 1, 2, 3])
        #expect(observed.gate.load == (0, 0))
    }

    @Test func fullQueueIsRefusedWithHint() async throws {
        let observed = ObservedGate(maxInFlight: 1, maxQueued: 1)
        var loads = observed.loads.makeAsyncIterator()
        let latch = Latch()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await observed.gate.withAdmission(source: "a") { await latch.wait() } }
            group.addTask { try await observed.gate.withAdmission(source: "b") {} }
            await observed.wait(for: .init(inFlight: 1, queued: 1), &loads)
            let error = await #expect(throws: RPCError.self) {
                try await observed.gate.withAdmission(source: "c") { Issue.record("a refused call ran") }
            }
            #expect(error?.code == .resourceExhausted)
            #expect(error?.message == AdmissionGate.refusalMessage)
            // The first guess of 100 ms per call, one waiting ahead, one slot: (1 + 1) × 100 ms.
            #expect(error.flatMap(AdmissionGate.retryAfterMilliseconds(of:)) == 200)
            latch.open()
            try await group.waitForAll()
        }
        let exposition = String(decoding: observed.metrics.exposition(), as: UTF8.self)
        #expect(sample(#"trustd_admission_rejections_total{service="test",reason="queue_full"}"#, in: exposition) == 1)
        #expect(sample(#"trustd_admission_rejections_total{service="test",reason="source_rate"}"#, in: exposition) == 0)
        #expect(sample(#"trustd_admission_in_flight{service="test"}"#, in: exposition) == 0)
    }

    @Test func cancelledWaiterGivesUpItsPlace() async throws {
        let observed = ObservedGate(maxInFlight: 1, maxQueued: 1)
        var loads = observed.loads.makeAsyncIterator()
        let latch = Latch()
        let ran = Recorder()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await observed.gate.withAdmission(source: "a") { await latch.wait() } }
            await observed.wait(for: .init(inFlight: 1, queued: 0), &loads)
            let waiter = Task {
                try await observed.gate.withAdmission(source: "b") { ran.record(1) }
            }
            await observed.wait(for: .init(inFlight: 1, queued: 1), &loads)
            waiter.cancel()
            await #expect(throws: CancellationError.self) { try await waiter.value }
            #expect(observed.gate.load == (1, 0))
            // The place is free again: a new waiter queues instead of being refused.
            group.addTask { try await observed.gate.withAdmission(source: "c") {} }
            await observed.wait(for: .init(inFlight: 1, queued: 1), &loads)
            latch.open()
            try await group.waitForAll()
        }
        #expect(ran.all.isEmpty)
        #expect(observed.gate.load == (0, 0))
    }

    @Test func alreadyCancelledTaskIsNotAdmitted() async throws {
        let observed = ObservedGate(maxInFlight: 1, maxQueued: 1)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await observed.gate.withAdmission(source: "a") { 1 }
        }
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(observed.gate.load == (0, 0))
    }

    @Test func sourceOverItsBurstIsRefusedOthersAreNot() async throws {
        let observed = ObservedGate(maxInFlight: 4, maxQueued: 4, burst: 2)
        for _ in 0..<2 { try await observed.gate.withAdmission(source: "10.0.0.1") {} }
        let error = await #expect(throws: RPCError.self) {
            try await observed.gate.withAdmission(source: "10.0.0.1") { Issue.record("a refused call ran") }
        }
        #expect(error?.code == .resourceExhausted)
        // One token's time at one token a second.
        #expect(error.flatMap(AdmissionGate.retryAfterMilliseconds(of:)) == 1000)
        try await observed.gate.withAdmission(source: "10.0.0.2") {}
        let exposition = String(decoding: observed.metrics.exposition(), as: UTF8.self)
        #expect(sample(#"trustd_admission_rejections_total{service="test",reason="source_rate"}"#, in: exposition) == 1)
    }

    @Test func bodyErrorFreesTheSlot() async throws {
        struct Failure: Error {}
        let observed = ObservedGate(maxInFlight: 1, maxQueued: 0)
        await #expect(throws: Failure.self) { try await observed.gate.withAdmission(source: "a") { throw Failure() } }
        #expect(observed.gate.load == (0, 0))
        #expect(try await observed.gate.withAdmission(source: "a") { 42 } == 42)
    }

    @Test func defaultClockNeverGoesBack() {
        // The first read sets the origin (it once came after the instant and trapped on a negative value).
        let first = AdmissionGate.monotonicNanoseconds()
        let second = AdmissionGate.monotonicNanoseconds()
        #expect(second >= first)
    }

    @Test func retryHintIsReadOnlyFromResourceExhausted() {
        var metadata = Metadata()
        metadata.addString("250", forKey: AdmissionGate.retryAfterKey)
        #expect(
            AdmissionGate.retryAfterMilliseconds(
                of: RPCError(code: .resourceExhausted, message: "", metadata: metadata)
            )
                == 250
        )
        #expect(
            AdmissionGate.retryAfterMilliseconds(of: RPCError(code: .unavailable, message: "", metadata: metadata))
                == nil
        )
        var bogus = Metadata()
        bogus.addString("-5", forKey: AdmissionGate.retryAfterKey)
        #expect(
            AdmissionGate.retryAfterMilliseconds(of: RPCError(code: .resourceExhausted, message: "", metadata: bogus))
                == nil
        )
    }

    @Test(arguments: [
        ("ipv4:198.51.100.7:5000", "198.51.100.7"),
        ("ipv6:[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2::9]:443", "2001:db8:1:2::/64"),
        ("ipv6:[::ffff:192.0.2.1]:80", "192.0.2.1"),
        ("ipv6:[fe80::1%eth0]:80", "fe80::/64"),
        ("unix:/run/trustd.sock", AdmissionSource.nonIP),
        ("in-process:1", AdmissionSource.nonIP),
        ("ipv4:not-an-address:1", AdmissionSource.nonIP),
        ("ipv6:]", AdmissionSource.nonIP),
    ])
    func sourceKeyOfAPeer(peer: String, key: String) {
        #expect(AdmissionSource.key(grpcPeer: peer) == key)
    }
}
