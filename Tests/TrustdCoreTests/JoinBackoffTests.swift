import Testing
import TrustdCore

@Suite("join backoff")
struct JoinBackoffTests {
    let backoff = JoinBackoff(initialMilliseconds: 250, maximumMilliseconds: 30_000)

    @Test("doubles per attempt, between half and all of the step")
    func doubles() {
        #expect(backoff.pauseMilliseconds(afterAttempt: 1, hintMilliseconds: nil, random: 0) == 125)
        #expect(backoff.pauseMilliseconds(afterAttempt: 1, hintMilliseconds: nil, random: 0.999_999) == 249)
        #expect(backoff.pauseMilliseconds(afterAttempt: 2, hintMilliseconds: nil, random: 0) == 250)
        #expect(backoff.pauseMilliseconds(afterAttempt: 3, hintMilliseconds: nil, random: 0) == 500)
    }

    @Test("never more than the cap, even after many attempts")
    func capped() {
        for attempt in [8, 9, 40, 1_000, Int.max] {
            let pause = backoff.pauseMilliseconds(afterAttempt: attempt, hintMilliseconds: nil, random: 1)
            #expect(pause <= 30_000 && pause >= 15_000, "attempt \(attempt): \(pause)")
        }
    }

    @Test("a larger server hint wins, jittered upward and capped; a smaller one does not shorten the pause")
    func hints() {
        #expect(backoff.pauseMilliseconds(afterAttempt: 1, hintMilliseconds: 2_000, random: 0) == 2_000)
        #expect(backoff.pauseMilliseconds(afterAttempt: 1, hintMilliseconds: 2_000, random: 0.5) == 2_200)
        #expect(backoff.pauseMilliseconds(afterAttempt: 1, hintMilliseconds: 90_000, random: 1) == 30_000)
        #expect(backoff.pauseMilliseconds(afterAttempt: 3, hintMilliseconds: 10, random: 0) == 500)
    }

    @Test("nonsense settings are clamped, not trusted")
    func clamped() {
        let odd = JoinBackoff(initialMilliseconds: 0, maximumMilliseconds: -5)
        #expect(odd.initialMilliseconds == 1 && odd.maximumMilliseconds == 1)
        #expect(odd.pauseMilliseconds(afterAttempt: 0, hintMilliseconds: nil, random: -3) == 0)
    }
}
