import KeydCore
import KeydProtocol
import Testing

/// Single use, lifetime, bounded size with the oldest evicted first, and the reason a later use gets.
@Suite struct ChallengeTableTests {
    static let second: UInt64 = 1_000_000_000

    /// The ID numbered `n`.
    static func id(_ n: Int) -> ChallengeID {
        ChallengeID((0..<16).map { UInt8(truncatingIfNeeded: n >> (8 * ($0 % 4))) ^ UInt8($0) })!
    }

    static func nonce(_ n: Int) -> [UInt8] { [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: 32) }

    @Test func aChallengeIsUsedOnce() throws {
        var table = ChallengeTable(capacity: 4)
        table.issue(id: Self.id(1), nonce: Self.nonce(1), purpose: .join, now: 0, lifetime: 60 * Self.second)
        let challenge = try table.consume(Self.id(1), now: 59 * Self.second).get()
        #expect(challenge.nonce == Self.nonce(1) && challenge.purpose == .join)
        #expect(table.consume(Self.id(1), now: 59 * Self.second) == .failure(.used))
        #expect(table.outstanding == 0)
    }

    @Test func anExpiredChallengeIsConsumedAndRefused() {
        var table = ChallengeTable(capacity: 4)
        table.issue(id: Self.id(1), nonce: Self.nonce(1), purpose: .join, now: 10, lifetime: Self.second)
        #expect(table.consume(Self.id(1), now: 10 + Self.second + 1) == .failure(.expired))
        #expect(table.consume(Self.id(1), now: 0) == .failure(.expired))
    }

    @Test func unknownIDs() {
        var table = ChallengeTable(capacity: 4)
        #expect(table.consume(Self.id(9), now: 0) == .failure(.unknown))
        #expect(ChallengeID([UInt8](repeating: 0, count: 15)) == nil)
        #expect(ChallengeID([UInt8](repeating: 0, count: 17)) == nil)
    }

    @Test func theOldestIsEvictedFirstAndSaysSo() throws {
        var table = ChallengeTable(capacity: 3)
        for n in 1...3 {
            #expect(
                table.issue(id: Self.id(n), nonce: Self.nonce(n), purpose: .join, now: 0, lifetime: Self.second) == nil
            )
        }
        // Using 2 frees its slot, but the next issue takes the oldest slot (1's), in issue order.
        _ = try table.consume(Self.id(2), now: 0).get()
        let evicted = table.issue(id: Self.id(4), nonce: Self.nonce(4), purpose: .join, now: 0, lifetime: Self.second)
        #expect(evicted?.id == Self.id(1))
        #expect(table.issue(id: Self.id(5), nonce: Self.nonce(5), purpose: .join, now: 0, lifetime: Self.second) == nil)
        #expect(
            table.issue(id: Self.id(6), nonce: Self.nonce(6), purpose: .join, now: 0, lifetime: Self.second)?.id
                == Self.id(3)
        )
        #expect(table.consume(Self.id(1), now: 0) == .failure(.evicted))
        #expect(table.consume(Self.id(3), now: 0) == .failure(.evicted))
        #expect(table.consume(Self.id(1), now: 0).map(\.id) == .failure(.evicted), "a refused use changes nothing")
        #expect(try table.consume(Self.id(4), now: 0).get().nonce == Self.nonce(4))
        #expect(table.outstanding == 2)
    }

    @Test func aFloodKeepsFixedSizeAndForgetsOldReasons() {
        var table = ChallengeTable(capacity: 64)
        for n in 0..<100_000 {
            table.issue(id: Self.id(n), nonce: Self.nonce(n), purpose: .join, now: UInt64(n), lifetime: Self.second)
        }
        #expect(table.outstanding == 64)
        #expect(table.consume(Self.id(99_999), now: 100_000).map(\.nonce) == .success(Self.nonce(99_999)))
        #expect(table.consume(Self.id(99_900), now: 100_000) == .failure(.evicted))
        // Beyond the remembered reasons, an evicted challenge is simply unknown.
        #expect(table.consume(Self.id(10), now: 100_000) == .failure(.unknown))
    }

    @Test(arguments: [
        (ChallengeTable.Refusal.unknown, StatusCode.challengeUnknown),
        (.used, .challengeUnknown),
        (.evicted, .challengeEvicted),
        (.expired, .challengeExpired),
    ])
    func refusalStatuses(refusal: ChallengeTable.Refusal, status: StatusCode) {
        #expect(refusal.status == status && !refusal.reason.isEmpty)
    }

    @Test func idRoundTrip() {
        let bytes = (0..<16).map { UInt8($0 * 17) }
        #expect(ChallengeID(bytes)?.bytes == bytes)
        #expect(ChallengeID(bytes)?.description == "00112233445566778899aabbccddeeff")
    }
}
