import KeydProtocol
import Testing

// Inputs of the FuzzFrameDecoder libFuzzer target (Tests/KeydFuzz): each finding it made, and the
// committed seed corpus, replayed the way the fuzzer runs them and held to exact outcomes.

/// What one decoder direction made of a fuzz input: each body's decoding, then the stream error.
struct DirectionOutcome: Equatable, Sendable {
    var frames: [Result<[UInt8], ProtocolError>] = []
    var streamError: ProtocolError?
}

/// One fuzz input and what both directions must make of it.
struct FuzzCase: Sendable, CustomTestStringConvertible {
    let name: String
    /// The file under Tests/KeydFuzz/Corpus/FuzzFrameDecoder holding the same bytes, for seeds.
    let seedFile: String?
    let input: [UInt8]
    let requests: [Result<RequestFrame, ProtocolError>]
    let requestStreamError: ProtocolError?
    let answers: [Result<AnswerFrame, ProtocolError>]
    let answerStreamError: ProtocolError?

    var testDescription: String { name }
}

/// FuzzFrameDecoder's reassembly: one read when `seed` is 0, else its seeded run of read sizes.
func fuzzReassemble(
    _ stream: ArraySlice<UInt8>,
    _ direction: FrameDecoder.Direction,
    seed: UInt8
) -> ([[UInt8]], ProtocolError?) {
    var decoder = FrameDecoder(direction, maxQueuedFrames: Int.max)
    var bodies: [[UInt8]] = []
    var state = UInt32(seed)
    var index = stream.startIndex
    while index < stream.endIndex {
        var size = stream.count
        if seed != 0 {
            state = state &* 1_103_515_245 &+ 12_345
            size = 1 + Int((state >> 16) % 97)
        }
        let end = min(index + size, stream.endIndex)
        do {
            try decoder.append(Array(stream[index..<end]))
        } catch {
            while let body = decoder.nextFrame() { bodies.append(body) }
            return (bodies, error)
        }
        index = end
        while let body = decoder.nextFrame() { bodies.append(body) }
    }
    return (bodies, nil)
}

private let frameLength = ProtocolError.frameLength(0, minimum: 0, maximum: 0)
private let truncated = ProtocolError.truncated(field: "", needed: 0, remaining: 0)
private let badValue = ProtocolError.badValue(field: "", "")
private let unknownKind = ProtocolError.unknownKind(0)
private let trailing = ProtocolError.trailingBytes(0, after: "")

private let hello = RequestFrame(sequence: 0, request: .hello(minVersion: 1, maxVersion: 1))
private let status = RequestFrame(sequence: 1, request: .status)
private let kekImport = RequestFrame(
    sequence: 2,
    request: .kekImport(
        KEKImportFields(masterSecret: SecretField(offset: 8, count: 16), salt: SecretField(offset: 26, count: 32))
    )
)

let fuzzCases: [FuzzCase] = [
    // Finding 1 (FuzzFrameDecoder, first run): the pipelined seed with the kek.import length
    // 0x3a changed to 0x2f. Read whole, three frames complete and then the leftover 0x22 bytes
    // form a bad prefix in the same append; the harness dropped the frames queued before the
    // error, so whole and chunked reads disagreed. Not a decoder bug: frames completed before a
    // failing append stay queued and must be taken out (the fuzzer and this replay now do).
    FuzzCase(
        name: "finding 1: frames queued before a bad prefix in the same read",
        seedFile: nil,
        input: [
            0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
            0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x40, 0x00,
            0x00, 0x00, 0x02, 0x00, 0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
            0x11, 0x11, 0x11, 0x11, 0x11, 0x00, 0x20, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
            0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
            0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
        ],
        requests: [.success(hello), .success(status), .failure(truncated)],
        requestStreamError: frameLength,
        answers: [.failure(badValue)],
        answerStreamError: frameLength
    ),
    // Finding 2 (FuzzFrameDecoder, second run): a connection error answer (kind 0xffff,
    // sequence 0xffffffff) with status ok and a 7-byte payload decoded, although PROTOCOL.md
    // gives it an empty payload and a closing status; re-encoding it lost the payload. Fixed in
    // AnswerFrame.decode: such an answer is malformed.
    FuzzCase(
        name: "finding 2: connection error answer with status ok and a payload",
        seedFile: nil,
        input: [
            0x00, 0x00, 0x00, 0x00, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x0e, 0xfb,
            0x03, 0x01, 0x00, 0x01, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda,
            0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda,
            0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda,
            0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0xda, 0x02, 0x00, 0x00, 0x80, 0x40, 0x00, 0x00,
        ],
        requests: [.failure(unknownKind)],
        requestStreamError: frameLength,
        answers: [.failure(trailing)],
        answerStreamError: frameLength
    ),
    // Finding 2, first sighting (the same bug, found by a 100-run smoke test): status ok and a
    // 4-byte payload on the connection error answer.
    FuzzCase(
        name: "finding 2b: connection error answer with status ok and 4 bytes",
        seedFile: nil,
        input: [0x03, 0x00, 0x00, 0x00, 0x0c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04],
        requests: [.failure(unknownKind)],
        requestStreamError: nil,
        answers: [.failure(trailing)],
        answerStreamError: nil
    ),
    // Finding 3 (FuzzFrameDecoder, first run after answers may exceed the request limit): the
    // prefix of an answer body of 131,072 bytes. The harness bounded bytesWanted by the request
    // limit in both directions and died on it. Not a decoder bug: an answer body may be up to
    // Limits.maxAnswerFrameLength; the harness now bounds each direction by its own limit. Kept
    // in the corpus as a seed.
    FuzzCase(
        name: "finding 3: an answer body above the request limit",
        seedFile: "answer-above-request-limit",
        input: [0x07, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        requests: [],
        requestStreamError: frameLength,
        answers: [],
        answerStreamError: nil
    ),
    // Seeds (Tests/KeydFuzz/make-seeds).
    FuzzCase(
        name: "seed hello",
        seedFile: "hello",
        input: [0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
        requests: [.success(hello)],
        requestStreamError: nil,
        answers: [.failure(badValue)],
        answerStreamError: nil
    ),
    FuzzCase(
        name: "seed status",
        seedFile: "status",
        input: [0x07, 0x00, 0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01],
        requests: [.success(status)],
        requestStreamError: nil,
        answers: [],
        answerStreamError: frameLength
    ),
    FuzzCase(
        name: "seed kek.import",
        seedFile: "kek-import",
        input: [
            0x2a, 0x00, 0x00, 0x00, 0x3a, 0x00, 0x40, 0x00, 0x00, 0x00, 0x02, 0x00, 0x10, 0x11, 0x11, 0x11,
            0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x00, 0x20, 0x22,
            0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
            0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
        ],
        requests: [.success(kekImport)],
        requestStreamError: nil,
        answers: [.failure(badValue)],
        answerStreamError: nil
    ),
    FuzzCase(
        name: "seed pipelined",
        seedFile: "pipelined",
        input: [
            0x01, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
            0x00, 0x00, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3a, 0x00, 0x40, 0x00,
            0x00, 0x00, 0x02, 0x00, 0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
            0x11, 0x11, 0x11, 0x11, 0x11, 0x00, 0x20, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
            0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
            0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
        ],
        requests: [.success(hello), .success(status), .success(kekImport)],
        requestStreamError: nil,
        answers: [.failure(badValue)],
        answerStreamError: frameLength
    ),
    FuzzCase(
        name: "seed answers",
        seedFile: "answers",
        input: [
            0x03, 0x00, 0x00, 0x00, 0x0c, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02,
            0x01, 0x00, 0x00, 0x00, 0x08, 0x80, 0x40, 0x00, 0x00, 0x00, 0x05, 0x00, 0x04,
        ],
        requests: [.failure(unknownKind), .failure(unknownKind)],
        requestStreamError: nil,
        answers: [
            .success(
                AnswerFrame(
                    kind: RequestKind.hello.rawValue,
                    sequence: 0,
                    status: .ok,
                    payload: [0x00, 0x01, 0x02, 0x01]
                )
            ),
            .success(AnswerFrame(kind: RequestKind.kekImport.rawValue, sequence: 5, status: .denied)),
        ],
        answerStreamError: nil
    ),
]

@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    @Test("requests: the decoder and the payload decoder give the recorded outcome", arguments: fuzzCases)
    func requests(_ testCase: FuzzCase) {
        let stream = testCase.input.dropFirst()
        let (bodies, error) = fuzzReassemble(stream, .requests, seed: 0)
        let chunked = fuzzReassemble(stream, .requests, seed: testCase.input[0])
        #expect(chunked.0 == bodies && chunked.1 == error, "chunked reads agree with one read")
        #expect(error == testCase.requestStreamError)
        #expect(error?.status == testCase.requestStreamError?.status)
        let decoded = bodies.map { body in Result { () throws(ProtocolError) in try RequestFrame.decode(body: body) } }
        #expect(decoded == testCase.requests)
        for case .success(let frame) in decoded where frame.request.kind != .kekImport {
            #expect(bodies.contains(stripPrefix(frame.encodeFrame())), "\(frame.request.kind) re-encodes to its bytes")
        }
    }

    @Test("answers: the decoder and the answer decoder give the recorded outcome", arguments: fuzzCases)
    func answers(_ testCase: FuzzCase) throws {
        let stream = testCase.input.dropFirst()
        let (bodies, error) = fuzzReassemble(stream, .answers, seed: 0)
        let chunked = fuzzReassemble(stream, .answers, seed: testCase.input[0])
        #expect(chunked.0 == bodies && chunked.1 == error, "chunked reads agree with one read")
        #expect(error == testCase.answerStreamError)
        let decoded = bodies.map { body in Result { () throws(ProtocolError) in try AnswerFrame.decode(body: body) } }
        #expect(decoded == testCase.answers)
        #expect(decoded.map { (try? $0.get())?.status } == testCase.answers.map { (try? $0.get())?.status })
        if case .success(let answer) = decoded.first, answer.kind == RequestKind.hello.rawValue {
            #expect(
                try answer.decodePayload(.hello, HelloAnswer.read)
                    == HelloAnswer(version: 1, peerClass: .admin, phase: .holdingKEK)
            )
        }
    }

    @Test("finding 3: the answer decoder wants the whole body of an answer above the request limit")
    func answerAboveRequestLimit() throws {
        let testCase = try #require(fuzzCases.first { $0.seedFile == "answer-above-request-limit" })
        var decoder = FrameDecoder(.answers)
        try decoder.append(Array(testCase.input.dropFirst()))
        // The prefix announces 131,072 bytes and 5 of them came with it.
        #expect(decoder.bytesWanted == 131_072 - 5)
        #expect(decoder.bytesWanted > Limits.maxFrameLength && decoder.bytesWanted <= Limits.maxAnswerFrameLength)
    }

    @Test("seed files match the inputs above", arguments: fuzzCases.filter { $0.seedFile != nil })
    func seedFiles(_ testCase: FuzzCase) throws {
        let name = try #require(testCase.seedFile)
        let bytes = readFile(sourceRoot() + "/Tests/KeydFuzz/Corpus/FuzzFrameDecoder/" + name)
        #expect(bytes == testCase.input, "rerun Tests/KeydFuzz/make-seeds or update this table")
    }
}
