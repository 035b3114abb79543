import KeydProtocol
import Testing

/// Encodes `payload` as an ok answer, decodes the frame and the payload again.
func answerRoundTrip<T: Equatable>(
    _ kind: RequestKind,
    sequence: UInt32,
    write: (inout WireWriter) -> Void,
    read: (inout WireReader) throws(ProtocolError) -> T
) throws -> (frame: AnswerFrame, value: T) {
    let body = stripPrefix(AnswerFrame.encode(answering: kind, sequence: sequence, status: .ok, write))
    #expect(body[0] & 0x80 != 0, "answer bit set on the wire")
    let frame = try AnswerFrame.decode(body: body)
    #expect(frame.kind == kind.rawValue)
    #expect(frame.sequence == sequence)
    #expect(frame.status == .ok)
    #expect(!frame.isConnectionError)
    return (frame, try frame.decodePayload(kind, read))
}

let helloAnswers: [HelloAnswer] =
    [.trustd, .admin].flatMap { peer in
        Phase.allCases.map { HelloAnswer(version: 1, peerClass: peer, phase: $0) }
    } + [HelloAnswer(version: .max, peerClass: .admin, phase: .locked)]

let statusAnswers: [StatusAnswer] = [
    StatusAnswer(
        protocolVersion: 1,
        phase: .awaitingKEK,
        peerClass: .trustd,
        uptimeSeconds: 0,
        requestsServed: 0,
        connections: 0,
        auditRecords: 0,
        auditHead: [UInt8](repeating: 0, count: 32),
        auditIntact: true,
        keydVersion: ""
    ),
    StatusAnswer(
        protocolVersion: 1,
        phase: .holdingKEK,
        peerClass: .admin,
        uptimeSeconds: 86_400,
        requestsServed: 12_345,
        connections: 1024,
        auditRecords: 77,
        auditHead: pattern(32),
        auditIntact: false,
        keydVersion: "0.1.0-dev+abc123"
    ),
    StatusAnswer(
        protocolVersion: .max,
        phase: .locked,
        peerClass: .admin,
        uptimeSeconds: .max,
        requestsServed: .max,
        connections: .max,
        auditRecords: .max,
        auditHead: pattern(32, start: 0xE0),
        auditIntact: true,
        keydVersion: String(repeating: "v", count: 32)
    ),
]

let auditReadAnswers: [AuditReadAnswer] = [
    AuditReadAnswer(totalRecords: 0, records: []),
    AuditReadAnswer(
        totalRecords: 3,
        records: [#"{"seq":0,"event":"keyd.start"}"#, #"{"seq":1,"event":"hello","peer":"ünïcode"}"#]
    ),
    AuditReadAnswer(totalRecords: .max, records: [String(repeating: "r", count: Limits.maxAuditRecord)]),
    AuditReadAnswer(
        totalRecords: 512,
        records: Array(repeating: String(repeating: "x", count: 100), count: Int(Limits.maxAuditRecordsPerRead))
    ),
]

let auditVerifyAnswers: [AuditVerifyAnswer] =
    [AuditVerifyAnswer(intact: true, records: 10, firstBadRecord: 10, problem: .none, headHash: pattern(32))]
    + AuditProblemCode.allCases.filter { $0 != .none }.map {
        AuditVerifyAnswer(intact: false, records: 10, firstBadRecord: 4, problem: $0, headHash: pattern(32, start: 8))
    }

@Suite("Answer codec")
struct AnswerCodecTests {
    @Test("hello answer round trip", arguments: helloAnswers)
    func hello(_ answer: HelloAnswer) throws {
        let (_, value) = try answerRoundTrip(.hello, sequence: 0, write: answer.write, read: HelloAnswer.read)
        #expect(value == answer)
    }

    @Test("status answer round trip", arguments: statusAnswers)
    func status(_ answer: StatusAnswer) throws {
        let (frame, value) = try answerRoundTrip(.status, sequence: 5, write: answer.write, read: StatusAnswer.read)
        #expect(value == answer)
        #expect(
            frame.payload.count == 2 + 1 + 1 + 8 + 8 + 4 + 8 + 32 + 1 + 2 + answer.keydVersion.utf8.count + 1 + 1 + 8
                + 32 + 1
        )
    }

    @Test("audit.read answer round trip", arguments: auditReadAnswers)
    func auditRead(_ answer: AuditReadAnswer) throws {
        let (frame, value) = try answerRoundTrip(
            .auditRead,
            sequence: 9,
            write: answer.write,
            read: AuditReadAnswer.read
        )
        #expect(value == answer)
        let recordBytes = answer.records.reduce(0) { $0 + AuditReadAnswer.encodedSize(ofRecord: $1.utf8.count) }
        #expect(frame.payload.count == 8 + 2 + recordBytes)
        // keyd sizes its answers with `overhead`: the whole frame is overhead plus the records.
        #expect(
            Limits.lengthPrefixSize + Limits.minAnswerBody + frame.payload.count == AuditReadAnswer.overhead
                + recordBytes
        )
    }

    @Test("audit.verify answer round trip", arguments: auditVerifyAnswers)
    func auditVerify(_ answer: AuditVerifyAnswer) throws {
        let (_, value) = try answerRoundTrip(
            .auditVerify,
            sequence: .max,
            write: answer.write,
            read: AuditVerifyAnswer.read
        )
        #expect(value == answer)
    }

    @Test("a status-only answer carries no payload", arguments: StatusCode.allCases)
    func statusOnly(status: StatusCode) throws {
        // The payload writer is ignored unless the status is ok.
        let body = stripPrefix(AnswerFrame.encode(answering: .kekImport, sequence: 77, status: status) { $0.u64(.max) })
        let frame = try AnswerFrame.decode(body: body)
        #expect(
            frame
                == AnswerFrame(
                    kind: RequestKind.kekImport.rawValue,
                    sequence: 77,
                    status: status,
                    payload: status == .ok ? [UInt8](repeating: 0xFF, count: 8) : []
                )
        )
        let statusOnly = stripPrefix(AnswerFrame.encodeStatus(answering: .kekLock, sequence: 1, status: status))
        #expect(statusOnly.count == Limits.minAnswerBody)
        #expect(try AnswerFrame.decode(body: statusOnly).status == status)
    }

    @Test("the connection error answer", arguments: StatusCode.allCases.filter(\.closesConnection))
    func connectionError(status: StatusCode) throws {
        let body = stripPrefix(AnswerFrame.encodeConnectionError(status))
        #expect(
            body == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, UInt8(status.rawValue >> 8), UInt8(status.rawValue & 0xFF)]
        )
        let frame = try AnswerFrame.decode(body: body)
        #expect(frame.isConnectionError)
        #expect(frame.status == status)
        #expect(frame.payload.isEmpty)
    }

    @Test("a payload decoder must read the payload to its end")
    func payloadTrailingBytes() throws {
        let body = stripPrefix(
            AnswerFrame.encode(answering: .hello, sequence: 0, status: .ok) { w in
                HelloAnswer(version: 1, peerClass: .admin, phase: .holdingKEK).write(&w)
                w.u8(0)
            }
        )
        let frame = try AnswerFrame.decode(body: body)
        #expect(throws: ProtocolError.trailingBytes(1, after: "hello answer")) {
            try frame.decodePayload(.hello, HelloAnswer.read)
        }
    }
}

extension HelloAnswer: CustomTestStringConvertible {
    public var testDescription: String { "version \(version) \(peerClass) \(phase)" }
}

extension StatusAnswer: CustomTestStringConvertible {
    public var testDescription: String { "\(phase) \(peerClass) version \"\(keydVersion)\"" }
}

extension AuditReadAnswer: CustomTestStringConvertible {
    public var testDescription: String { "total \(totalRecords), \(records.count) records" }
}

extension AuditVerifyAnswer: CustomTestStringConvertible {
    public var testDescription: String { "intact \(intact), problem \(problem)" }
}
