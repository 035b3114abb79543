import KeydProtocol
import Testing

/// Records every buffer a decoder wipes (address, size, bytes before the wipe), then zeroes it.
final class WipeRecorder {
    struct Call {
        let address: UnsafeMutableRawPointer?
        let bytes: [UInt8]
    }

    private(set) var calls: [Call] = []

    /// The closure to hand to `FrameDecoder(wipe:)`.
    var wipe: (UnsafeMutableRawBufferPointer) -> Void {
        { [self] buffer in
            calls.append(Call(address: buffer.baseAddress, bytes: Array(buffer)))
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
}

/// A stream of request frames of every kind, and the bodies it holds.
let decoderStream: (bytes: [UInt8], bodies: [[UInt8]]) = {
    var frames = requestCases.map { RequestFrame(sequence: $0.sequence, request: $0.request).encodeFrame() }
    frames.insert(kekImportFrame(sequence: 3, masterCount: 32, saltCount: 32).frame, at: 3)
    return (frames.flatMap { $0 }, frames.map(stripPrefix))
}()

/// Takes every ready frame out through `withNextFrame`.
func drain(_ decoder: inout FrameDecoder) -> [[UInt8]] {
    var bodies: [[UInt8]] = []
    while let body = decoder.withNextFrame({ Array($0) }) { bodies.append(body) }
    return bodies
}

/// How a stream is cut into reads.
enum Chunking: Sendable, CustomTestStringConvertible {
    case whole
    case byteByByte
    case random(seed: UInt64)
    /// The way keyd reads: never more than `bytesWanted`.
    case bytesWanted

    var testDescription: String {
        switch self {
        case .whole: "whole"
        case .byteByByte: "byte by byte"
        case .random(let seed): "random chunks, seed \(seed)"
        case .bytesWanted: "reads of bytesWanted"
        }
    }
}

let chunkings: [Chunking] = [.whole, .byteByByte, .bytesWanted] + (1...16).map { .random(seed: $0) }

@Suite("Frame decoder")
struct FrameDecoderTests {
    @Test("the same frames come out however the stream is cut", arguments: chunkings)
    func chunked(_ chunking: Chunking) throws {
        let (stream, bodies) = decoderStream
        var decoder = FrameDecoder(.requests)
        var out: [[UInt8]] = []
        var index = 0
        var rng = SeededGenerator(seed: { if case .random(let seed) = chunking { seed } else { 0 } }())
        while index < stream.count {
            let size: Int
            switch chunking {
            case .whole: size = stream.count
            case .byteByByte: size = 1
            case .random: size = Int.random(in: 1...300, using: &rng)
            case .bytesWanted: size = decoder.bytesWanted
            }
            let end = min(index + size, stream.count)
            let before = decoder.readyCount
            try decoder.append(Array(stream[index..<end]))
            if case .bytesWanted = chunking {
                #expect(decoder.readyCount - before <= 1, "a read of bytesWanted finished at most one frame")
            }
            index = end
            out += drain(&decoder)
        }
        #expect(out == bodies)
        #expect(!decoder.hasPartialFrame)
        #expect(decoder.bytesWanted == Limits.lengthPrefixSize)
    }

    @Test("many frames in one append queue up in order")
    func manyPerAppend() throws {
        let (stream, bodies) = decoderStream
        var decoder = FrameDecoder(.requests, maxQueuedFrames: bodies.count)
        try decoder.append(stream + stream.prefix(9))
        #expect(decoder.readyCount == bodies.count)
        #expect(decoder.hasPartialFrame)
        #expect(drain(&decoder) == bodies)
        try decoder.append(Array(stream.dropFirst(9)))
        let decoded = try drain(&decoder).map { try RequestFrame.decode(body: $0) }
        #expect(decoded.count == bodies.count)
        #expect(decoded.first == RequestFrame(sequence: 0, request: .hello(minVersion: 1, maxVersion: 1)))
    }

    @Test("more than maxQueuedFrames complete frames is an error, and the decoder stays failed")
    func queueLimit() throws {
        let frame = RequestFrame(sequence: 0, request: .status).encodeFrame()
        var decoder = FrameDecoder(.requests, maxQueuedFrames: 3)
        try decoder.append(frame + frame + frame)
        #expect(decoder.readyCount == 3)
        #expect(throws: ProtocolError.badValue(field: "stream", "")) { try decoder.append(frame) }
        #expect(decoder.readyCount == 3)
        #expect(drain(&decoder).count == 3)
        let error = #expect(throws: ProtocolError.self) { try decoder.append(frame) }
        #expect(error?.status == .malformed)
        #expect(decoder.readyCount == 0)
    }

    @Test("after a length error every append fails with the same error")
    func staysFailed() throws {
        var decoder = FrameDecoder(.requests)
        #expect(throws: ProtocolError.frameLength(0, minimum: 6, maximum: 65_536)) {
            try decoder.append(prefixBytes(0))
        }
        let valid = RequestFrame(sequence: 0, request: .status).encodeFrame()
        for _ in 0..<3 {
            let error = #expect(throws: ProtocolError.self) { try decoder.append(valid) }
            #expect(error?.status == .frameLength)
            #expect(error?.detail == "frame length 0 is below minimum 6")
        }
        #expect(decoder.readyCount == 0)
    }

    @Test("withNextFrame wipes the very buffer it handed out")
    func withNextFrameWipes() throws {
        let recorder = WipeRecorder()
        var decoder = FrameDecoder(.requests, wipe: recorder.wipe)
        let frame = kekImportFrame(sequence: 0, masterCount: 64, saltCount: 64)
        try decoder.append(frame.frame)
        var handed: (address: UnsafeRawPointer?, bytes: [UInt8])?
        let decoded = try decoder.withNextFrame { body in
            handed = (body.baseAddress, Array(body))
            return try RequestFrame.decode(body: body)
        }
        guard case .kekImport = decoded?.request else {
            Issue.record("expected kek.import")
            return
        }
        #expect(recorder.calls.count == 1)
        #expect(recorder.calls.first?.bytes == stripPrefix(frame.frame))
        let wipedAddress = recorder.calls.first?.address.map(UnsafeRawPointer.init)
        #expect(wipedAddress != nil && wipedAddress == handed?.address)
        #expect(decoder.withNextFrame { _ in true } == nil)
    }

    @Test("withNextFrame wipes even when the handler throws")
    func withNextFrameWipesOnThrow() throws {
        let recorder = WipeRecorder()
        var decoder = FrameDecoder(.requests, wipe: recorder.wipe)
        let body = requestBody(kind: RequestKind.kekImport.rawValue) {
            $0.u16(15)
            $0.fixed(pattern(15), count: 15)
        }
        try decoder.append(prefixBytes(UInt32(body.count)) + body)
        #expect(throws: ProtocolError.self) {
            _ = try decoder.withNextFrame { try RequestFrame.decode(body: $0) }
        }
        #expect(recorder.calls.map(\.bytes) == [body])
        #expect(decoder.readyCount == 0)
    }

    @Test("wipeAll wipes queued frames and the partial body, then starts afresh")
    func wipeAll() throws {
        let recorder = WipeRecorder()
        var decoder = FrameDecoder(.requests, wipe: recorder.wipe)
        let first = kekImportFrame(sequence: 0, masterCount: 16, saltCount: 32).frame
        let second = kekImportFrame(sequence: 1, masterCount: 64, saltCount: 64).frame
        let third = kekImportFrame(sequence: 2, masterCount: 40, saltCount: 40).frame
        try decoder.append(first + second + third.prefix(30))
        #expect(decoder.readyCount == 2)
        #expect(decoder.bytesWanted == third.count - 30)
        decoder.wipeAll()
        let wiped = recorder.calls.map(\.bytes)
        #expect(wiped.count == 3)
        #expect(wiped.contains(Array(third[4..<30])), "the partial body")
        #expect(wiped.contains(stripPrefix(first)) && wiped.contains(stripPrefix(second)))
        #expect(decoder.readyCount == 0 && !decoder.hasPartialFrame)
        #expect(decoder.bytesWanted == Limits.lengthPrefixSize)
        try decoder.append(first)
        #expect(drain(&decoder) == [stripPrefix(first)])
    }

    @Test("a frame body reaches exactly 65536 bytes")
    func largestFrame() throws {
        let body = requestBody(kind: RequestKind.policySet.rawValue) { $0.fixed(pattern(65_530), count: 65_530) }
        #expect(body.count == Limits.maxFrameLength)
        var decoder = FrameDecoder(.requests)
        try decoder.append(prefixBytes(UInt32(body.count)))
        #expect(decoder.bytesWanted == Limits.maxFrameLength)
        try decoder.append(body)
        #expect(drain(&decoder) == [body])
    }
}

/// A length prefix and the decoding direction it is read in.
struct PrefixCase: Sendable, CustomTestStringConvertible {
    let length: UInt32
    let direction: FrameDecoder.Direction

    var bounds: ClosedRange<Int> {
        direction == .requests
            ? Limits.minRequestBody...Limits.maxFrameLength : Limits.minAnswerBody...Limits.maxAnswerFrameLength
    }

    var testDescription: String { "\(direction == .requests ? "request" : "answer") length \(length)" }
}

let badPrefixes: [PrefixCase] =
    [0, 5, 65_537, 0x4000_0000, 0xFFFF_FFFF].map { PrefixCase(length: $0, direction: .requests) }
    + [0, 6, 7, 262_145, 0xFFFF_FFFF].map { PrefixCase(length: $0, direction: .answers) }

let goodPrefixes: [PrefixCase] =
    [6, 7, 8, 65_536].map { PrefixCase(length: $0, direction: .requests) }
    + [8, 65_536].map { PrefixCase(length: $0, direction: .answers) }

@Suite("Length prefix")
struct LengthPrefixTests {
    @Test("out-of-range prefixes are refused by Frame.bodyLength", arguments: badPrefixes)
    func bodyLength(_ testCase: PrefixCase) {
        let b = prefixBytes(testCase.length)
        let error = #expect(throws: ProtocolError.self) {
            try Frame.bodyLength(prefix: b[0], b[1], b[2], b[3], bounds: testCase.bounds)
        }
        #expect(error?.status == .frameLength)
        #expect(error?.detail.contains("\(testCase.length)") == true)
    }

    @Test("the decoder refuses them on the fourth byte, having buffered nothing", arguments: badPrefixes)
    func decoderAfterFourBytes(_ testCase: PrefixCase) {
        let recorder = WipeRecorder()
        var decoder = FrameDecoder(testCase.direction, wipe: recorder.wipe)
        let b = prefixBytes(testCase.length)
        for i in 0..<3 {
            #expect(throws: Never.self) { try decoder.append([b[i]]) }
            #expect(decoder.bytesWanted == 3 - i)
        }
        let error = #expect(throws: ProtocolError.self) { try decoder.append([b[3]]) }
        #expect(error?.status == .frameLength)
        #expect(decoder.bytesWanted == 0, "no body length was accepted")
        #expect(decoder.readyCount == 0)
        decoder.wipeAll()
        #expect(recorder.calls.allSatisfy { $0.bytes.isEmpty }, "no body byte was buffered")
    }

    @Test("bytes after a bad prefix in the same read are not buffered", arguments: badPrefixes)
    func decoderSameRead(_ testCase: PrefixCase) {
        let recorder = WipeRecorder()
        var decoder = FrameDecoder(testCase.direction, wipe: recorder.wipe)
        #expect(throws: ProtocolError.frameLength(0, minimum: 0, maximum: 0)) {
            try decoder.append(prefixBytes(testCase.length) + pattern(1000))
        }
        #expect(decoder.readyCount == 0)
        decoder.wipeAll()
        #expect(recorder.calls.allSatisfy { $0.bytes.isEmpty })
    }

    @Test("in-range prefixes are accepted and ask for exactly the body", arguments: goodPrefixes)
    func accepted(_ testCase: PrefixCase) throws {
        let b = prefixBytes(testCase.length)
        #expect(try Frame.bodyLength(prefix: b[0], b[1], b[2], b[3], bounds: testCase.bounds) == Int(testCase.length))
        var decoder = FrameDecoder(testCase.direction)
        try decoder.append(b)
        #expect(decoder.bytesWanted == Int(testCase.length))
        #expect(decoder.hasPartialFrame)
    }
}
