import KeydProtocol
import Testing

@testable import KeydCore

/// Connection budgets, the three connection clocks and the TPM work limiter (PROTOCOL.md, "Connections").
@Suite struct ConnectionLimitsTests {
    static let ms: UInt64 = 1_000_000
    static let limits = ConnectionTimers.Limits(
        helloMilliseconds: 2000,
        idleMilliseconds: 60_000,
        frameMilliseconds: 5000
    )

    /// What `admit` answers to `count` connections from `uid` on `role`'s socket, in order.
    static func admit(_ budget: inout ConnectionBudget, _ role: ListenerRole, uid: UInt32, _ count: Int) -> [Bool] {
        (0..<count).map { _ in budget.admit(role, uid: uid) }
    }

    @Test func trustdCanNeverTakeTheAdminSlots() {
        var budget = ConnectionBudget(trustdSocket: 3, perUID: 3, adminSocket: 2)
        let trustd = Self.admit(&budget, .trustd, uid: 990, 4)
        #expect(trustd == [true, true, true, false], "the trustd socket is full after 3")
        let otherUID = Self.admit(&budget, .trustd, uid: 991, 1)
        #expect(otherUID == [false], "full for every uid")
        let admin = Self.admit(&budget, .admin, uid: 0, 3)
        #expect(admin == [true, true, false], "the admin socket has its own 2 slots")
        budget.release(.trustd, uid: 990)
        let afterRelease = Self.admit(&budget, .trustd, uid: 991, 1)
        #expect(afterRelease == [true])
        #expect(budget.openCount(.trustd) == 3 && budget.openCount(.admin) == 2)
    }

    @Test func oneUIDHoldsOnlyItsShareOfTheTrustdSocket() {
        var budget = ConnectionBudget(trustdSocket: 10, perUID: 2, adminSocket: 1)
        let share = Self.admit(&budget, .trustd, uid: 990, 3)
        #expect(share == [true, true, false])
        let other = Self.admit(&budget, .trustd, uid: 65_534, 1)
        #expect(other == [true], "another uid still gets in")
        budget.release(.trustd, uid: 990)
        let again = Self.admit(&budget, .trustd, uid: 990, 1)
        #expect(again == [true])
        // The admin socket has no per-uid share.
        var admin = ConnectionBudget(trustdSocket: 1, perUID: 1, adminSocket: 3)
        let admins = Self.admit(&admin, .admin, uid: 0, 3)
        #expect(admins == [true, true, true])
    }

    @Test func helloMustArriveInTime() {
        var timers = ConnectionTimers(limits: Self.limits, acceptedAt: 1000 * Self.ms)
        #expect(timers.deadline == 3000 * Self.ms)
        #expect(timers.expiry(at: 2999 * Self.ms) == nil)
        #expect(timers.expiry(at: 3000 * Self.ms) == .helloMissing)
        timers.requestReceived(at: 2500 * Self.ms)
        #expect(timers.expiry(at: 3000 * Self.ms) == nil)
        #expect(timers.deadline == 62_500 * Self.ms, "only the idle clock runs")
    }

    @Test func idleMeansNoRequestAndNoAnswerTaken() {
        var timers = ConnectionTimers(limits: Self.limits, acceptedAt: 0)
        timers.requestReceived(at: 10 * Self.ms)
        #expect(timers.expiry(at: 60_010 * Self.ms) == .idle)
        timers.progressed(at: 30_000 * Self.ms)
        #expect(timers.expiry(at: 60_010 * Self.ms) == nil)
        #expect(timers.expiry(at: 90_000 * Self.ms) == .idle)
    }

    @Test func frameClockRunsOnlyWhileKeydReadsAPartialFrame() {
        var timers = ConnectionTimers(limits: Self.limits, acceptedAt: 0)
        timers.requestReceived(at: 0)
        // keyd reads, a frame is partial: the clock runs.
        timers.observe(reading: true, partialFrame: true, at: 1000 * Self.ms)
        #expect(timers.frameTime(at: 3000 * Self.ms) == 2000 * Self.ms)
        // keyd holds unsent answers and stops reading: the clock stands, however long.
        timers.observe(reading: false, partialFrame: true, at: 3000 * Self.ms)
        #expect(timers.frameTime(at: 50_000 * Self.ms) == 2000 * Self.ms)
        #expect(timers.expiry(at: 50_000 * Self.ms) == nil)
        // Reading again: it goes on from 2 s and expires 3 s later.
        timers.progressed(at: 50_000 * Self.ms)
        timers.observe(reading: true, partialFrame: true, at: 50_000 * Self.ms)
        #expect(timers.deadline == 53_000 * Self.ms)
        #expect(timers.expiry(at: 52_999 * Self.ms) == nil)
        #expect(timers.expiry(at: 53_000 * Self.ms) == .frameIncomplete)
    }

    @Test func aCompletedFrameStartsTheClockOver() {
        var timers = ConnectionTimers(limits: Self.limits, acceptedAt: 0)
        timers.observe(reading: true, partialFrame: true, at: 0)
        timers.requestReceived(at: 4000 * Self.ms)
        timers.observe(reading: true, partialFrame: true, at: 4000 * Self.ms)
        #expect(timers.frameTime(at: 6000 * Self.ms) == 2000 * Self.ms)
        timers.observe(reading: true, partialFrame: false, at: 6000 * Self.ms)
        #expect(timers.frameTime(at: 9000 * Self.ms) == 0)
        #expect(timers.expiry(at: 20_000 * Self.ms) == nil)
    }

    @Test func aViolationExpiresBeforeIdle() {
        let short = ConnectionTimers.Limits(helloMilliseconds: 100, idleMilliseconds: 1000, frameMilliseconds: 100)
        var timers = ConnectionTimers(limits: short, acceptedAt: 0)
        timers.observe(reading: true, partialFrame: true, at: 0)
        #expect(timers.expiry(at: 5000 * Self.ms) == .frameIncomplete)
        timers.observe(reading: false, partialFrame: false, at: 0)
        #expect(timers.expiry(at: 5000 * Self.ms) == .helloMissing)
    }

    /// Takes tokens from `bucket` at `now` until it has none; how many it gave.
    static func drain(_ bucket: inout TokenBucket, at now: UInt64) -> Int {
        var spent = 0
        while bucket.hasToken(at: now) {
            bucket.spend()
            spent += 1
        }
        return spent
    }

    @Test func tokenBucketAllowsItsBurstThenItsRate() {
        var bucket = TokenBucket(perSecond: 4, burst: 2, now: 0)
        let burst = Self.drain(&bucket, at: 0)
        #expect(burst == 2)
        let early = Self.drain(&bucket, at: 249 * Self.ms)
        #expect(early == 0, "a token every 250 ms")
        let onTime = Self.drain(&bucket, at: 250 * Self.ms)
        #expect(onTime == 1)
        let afterPause = Self.drain(&bucket, at: 100_000 * Self.ms)
        #expect(afterPause == 2, "a long pause refills to the burst, not beyond")
    }

    @Test func evidenceTakesATokenFromTheConnectionAndTheUID() {
        var limiter = TPMWorkLimiter(
            perConnection: .init(perSecond: 1, burst: 2),
            perUID: .init(perSecond: 1, burst: 3)
        )
        var first = limiter.connectionBucket(at: 0)
        var second = limiter.connectionBucket(at: 0)
        var other = limiter.connectionBucket(at: 0)
        let onFirst = (0..<3).map { _ in limiter.admit(uid: 990, connection: &first, at: 0) }
        #expect(onFirst == [true, true, false], "the connection's burst of 2 is spent")
        let onSecond = (0..<2).map { _ in limiter.admit(uid: 990, connection: &second, at: 0) }
        #expect(onSecond == [true, false], "the uid's burst of 3 is spent")
        let otherUID = limiter.admit(uid: 991, connection: &other, at: 0)
        #expect(otherUID, "another uid has its own bucket")
        // A refused request took no token: after one second each bucket has exactly one more.
        let secondLater = limiter.admit(uid: 990, connection: &second, at: 1000 * Self.ms)
        let firstLater = limiter.admit(uid: 990, connection: &first, at: 1000 * Self.ms)
        #expect(secondLater && !firstLater)
    }

    @Test func onlyTrustdsTPMWorkIsLimited() {
        for kind in RequestKind.allCases {
            #expect(
                TPMWorkLimiter.limits(kind, from: .trustd) == [.evidenceIssue, .joinEvidenceIssue].contains(kind),
                "\(kind)"
            )
            #expect(!TPMWorkLimiter.limits(kind, from: .admin), "\(kind)")
        }
    }
}
