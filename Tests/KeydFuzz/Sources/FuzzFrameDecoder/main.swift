// libFuzzer target: keyd's frame decoder and both payload decoders.
//
// Input: byte 0 chooses how the rest is cut into reads (0: one read; otherwise a seeded run of
// sizes 1...97); the rest is a byte stream as a peer would send it. Checks, each a `fatalError`
// (a finding) when broken:
// - the decoder gives the same frames and the same error however the stream is cut;
// - every frame body is within the length bounds of its direction;
// - a request that decodes re-encodes to the very same bytes, and decode(encode(x)) == x
//   (kek.import too: its secret fields must point inside the body);
// - a request that fails names a status that closes the connection;
// - an answer that decodes re-encodes to the same bytes when its payload type is known.
import KeydProtocol

/// What a decoder made of a stream: the frame bodies, then the error that stopped it, if any.
struct Outcome: Equatable {
    var bodies: [[UInt8]] = []
    var error: ProtocolError?
}

/// The longest body `direction` allows: a request 65,536 bytes, an answer 262,144 (PROTOCOL.md).
func maxBody(_ direction: FrameDecoder.Direction) -> Int {
    switch direction {
    case .requests: Limits.maxFrameLength
    case .answers: Limits.maxAnswerFrameLength
    }
}

/// Feeds `stream` to a new decoder, in one read when `seed` is 0, else in seeded chunk sizes.
func reassemble(_ stream: UnsafeRawBufferPointer, _ direction: FrameDecoder.Direction, seed: UInt8) -> Outcome {
    var decoder = FrameDecoder(direction, maxQueuedFrames: Int.max)
    var outcome = Outcome()
    var state = UInt32(seed)
    var index = 0
    while index < stream.count {
        var size = stream.count
        if seed != 0 {
            state = state &* 1_103_515_245 &+ 12_345
            size = 1 + Int((state >> 16) % 97)
        }
        let end = min(index + size, stream.count)
        do {
            try decoder.append(UnsafeRawBufferPointer(rebasing: stream[index..<end]))
        } catch {
            // Frames completed earlier in the same read stay queued; the error comes after them.
            while let body = decoder.nextFrame() { outcome.bodies.append(body) }
            outcome.error = error
            break
        }
        index = end
        guard decoder.bytesWanted > 0, decoder.bytesWanted <= maxBody(direction) else {
            fatalError("\(direction): bytesWanted \(decoder.bytesWanted) outside 1...\(maxBody(direction))")
        }
        while let body = decoder.nextFrame() { outcome.bodies.append(body) }
    }
    return outcome
}

/// Decodes one request body and checks that encoding gives the same bytes back.
func checkRequest(_ body: [UInt8]) {
    guard (Limits.minRequestBody...maxBody(.requests)).contains(body.count) else {
        fatalError("decoder handed out a request body of \(body.count) bytes")
    }
    let frame: RequestFrame
    do {
        frame = try RequestFrame.decode(body: body)
    } catch {
        guard error.status.closesConnection, [.malformed, .unknownRequest].contains(error.status) else {
            fatalError("request error \(error) maps to status \(error.status)")
        }
        return
    }
    guard let header = body.withUnsafeBytes({ RequestFrame.peekHeader(body: $0) }),
        header.kind == frame.request.kind.rawValue, header.sequence == frame.sequence
    else { fatalError("peekHeader disagrees with decode for \(frame.request.kind)") }

    let again: [UInt8]
    if case .kekImport(let fields) = frame.request {
        for field in [fields.masterSecret, fields.salt] {
            guard field.offset >= 0, field.count >= 0, field.offset + field.count <= body.count else {
                fatalError("kek.import field \(field) outside a body of \(body.count) bytes")
            }
        }
        again = body.withUnsafeBytes { raw in
            RequestFrame.encodeKEKImport(
                sequence: frame.sequence,
                masterSecret: UnsafeRawBufferPointer(
                    rebasing: raw[fields.masterSecret.offset..<(fields.masterSecret.offset + fields.masterSecret.count)]
                ),
                salt: UnsafeRawBufferPointer(
                    rebasing: raw[fields.salt.offset..<(fields.salt.offset + fields.salt.count)]
                )
            )
        }
    } else {
        again = frame.encodeFrame()
        guard (try? RequestFrame.decode(body: Array(again.dropFirst(Limits.lengthPrefixSize)))) == frame else {
            fatalError("decode(encode(x)) != x for \(frame.request.kind)")
        }
    }
    guard again.dropFirst(Limits.lengthPrefixSize).elementsEqual(body) else {
        fatalError("\(frame.request.kind) re-encodes to different bytes")
    }
}

/// Decodes one answer body and, where the payload type is known, checks the re-encoding.
func checkAnswer(_ body: [UInt8]) {
    guard (Limits.minAnswerBody...maxBody(.answers)).contains(body.count) else {
        fatalError("decoder handed out an answer body of \(body.count) bytes")
    }
    guard let frame = try? AnswerFrame.decode(body: body) else { return }
    let again: [UInt8]
    if frame.isConnectionError {
        again = AnswerFrame.encodeConnectionError(frame.status)
    } else if let kind = RequestKind(rawValue: frame.kind) {
        guard frame.status == .ok else {
            again = AnswerFrame.encodeStatus(answering: kind, sequence: frame.sequence, status: frame.status)
            guard again.dropFirst(Limits.lengthPrefixSize).elementsEqual(body) else {
                fatalError("\(frame.status) answer to \(kind) re-encodes to different bytes")
            }
            return
        }
        let write: ((inout WireWriter) -> Void)?
        switch kind {
        case .hello: write = (try? frame.decodePayload(kind, HelloAnswer.read))?.write
        case .status: write = (try? frame.decodePayload(kind, StatusAnswer.read))?.write
        case .auditRead: write = (try? frame.decodePayload(kind, AuditReadAnswer.read))?.write
        case .auditVerify: write = (try? frame.decodePayload(kind, AuditVerifyAnswer.read))?.write
        default: write = nil
        }
        guard let write else { return }
        again = AnswerFrame.encode(answering: kind, sequence: frame.sequence, status: .ok, write)
    } else {
        return
    }
    guard again.dropFirst(Limits.lengthPrefixSize).elementsEqual(body) else {
        fatalError("answer of kind 0x\(String(frame.kind, radix: 16)) re-encodes to different bytes")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: start, count: count)
    let stream = UnsafeRawBufferPointer(rebasing: input[1...])
    for direction in [FrameDecoder.Direction.requests, .answers] {
        let whole = reassemble(stream, direction, seed: 0)
        let chunked = reassemble(stream, direction, seed: input[0])
        guard whole == chunked, whole.error?.detail == chunked.error?.detail else {
            fatalError(
                "\(direction): \(whole.bodies.count) frames whole, \(chunked.bodies.count) chunked, errors \(String(describing: whole.error)) / \(String(describing: chunked.error))"
            )
        }
        if let error = whole.error, error.status != .frameLength {
            fatalError("\(direction): stream error \(error) is not a frame length error")
        }
        for body in whole.bodies {
            switch direction {
            case .requests: checkRequest(body)
            case .answers: checkAnswer(body)
            }
        }
    }
    return 0
}
