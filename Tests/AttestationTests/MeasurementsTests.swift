import Attestation
import Testing

struct MeasurementsTests {
    static let a = String(repeating: "aa", count: 32)
    static let b = String(repeating: "bb", count: 32)
    static let c48 = String(repeating: "cc", count: 48)

    /// JSON, the actual PCR values, then per listed index: (index, outcome).
    static let cases: [(String, [Int: String], [(Int, PolicyResult.Outcome)])] = [
        ("{\"4\": \"\(a)\"}", [4: a], [(4, .passed)]),
        ("{\"4\": \"\(a)\"}", [4: b], [(4, .failed)]),
        ("{\"4\": {\"expected\": \"\(a)\", \"warnOnly\": true}}", [4: b], [(4, .warned)]),
        ("{\"4\": {\"expected\": \"\(a)\", \"warnOnly\": false}}", [4: b], [(4, .failed)]),
        ("{\"4\": {\"expected\": \"\(a)\"}}", [:], [(4, .failed)]),
        ("{\"9\": {\"expected\": \"\(a)\", \"warnOnly\": true}}", [:], [(9, .warned)]),
        (
            "{\"4\": \"\(a)\", \"15\": \"\(b)\", \"8\": {\"expected\": \"\(a.uppercased())\", \"warnOnly\": true}}",
            [4: a, 8: a, 15: a, 2: b],
            [(4, .passed), (8, .passed), (15, .failed)]
        ),
        ("{\"11\": \"\(c48)\"}", [11: c48], [(11, .passed)]),
        ("{}", [0: a], []),
    ]

    @Test("comparison per index", arguments: cases)
    func comparison(json: String, actual: [Int: String], expected: [(Int, PolicyResult.Outcome)]) throws {
        let measurements = try Measurements(json: Array(json.utf8))
        let results = measurements.results(for: actual.mapValues { bytes(fromHex: $0)! })
        #expect(results.map(\.policy) == expected.map { "measurements.pcr[\($0.0)]" })
        #expect(results.map(\.outcome) == expected.map(\.1))
        for (result, item) in zip(measurements.compare(actual.mapValues { bytes(fromHex: $0)! }), expected) {
            #expect(result.index == item.0)
            #expect(result.enforced == (measurements.entries[item.0]?.warnOnly == false))
        }
    }

    @Test(
        "malformed measurements are refused",
        arguments: [
            "[]", "{\"24\": \"\(a)\"}", "{\"-1\": \"\(a)\"}", "{\"04\": \"\(a)\"}", "{\"4\": \"abc\"}",
            "{\"4\": \"\(String(repeating: "aa", count: 20))\"}",
            "{\"4\": {\"warnOnly\": true}}", "{\"4\": 5}", "not json",
        ]
    )
    func malformed(json: String) {
        #expect(throws: AttestationError.self) { try Measurements(json: Array(json.utf8)) }
    }
}
