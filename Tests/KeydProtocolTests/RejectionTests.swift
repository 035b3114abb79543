import KeydProtocol
import Testing

/// A body keyd must refuse, and the error and status it must refuse it with.
struct RejectCase: Sendable, CustomTestStringConvertible {
    let name: String
    let body: [UInt8]
    let error: ProtocolError
    let status: StatusCode

    var testDescription: String { name }
}

private func kind(_ kind: RequestKind) -> UInt16 { kind.rawValue }

/// Writes a length-prefixed field with arbitrary bytes (the encoder checks no text rule).
private func raw(_ w: inout WireWriter, _ bytes: [UInt8]) { w.bytes(bytes, max: Int(UInt16.max)) }

private func evidenceBody(_ k: RequestKind, variant: UInt8, nonce: Int = 32, digest: Int = 32) -> [UInt8] {
    requestBody(kind: kind(k)) { w in
        w.u8(variant)
        w.fixed(pattern(nonce), count: nonce)
        w.fixed(pattern(digest), count: digest)
    }
}

private func keyReleaseBody(
    challengeID: Int = 16,
    uuid: [UInt8] = Array(sampleDiskUUID.utf8),
    role: UInt8 = 1
) -> [UInt8] {
    requestBody(kind: kind(.keyRelease)) { w in
        w.fixed(pattern(challengeID), count: challengeID)
        raw(&w, pattern(10))
        w.fixed(pattern(32), count: 32)
        w.fixed(pattern(32), count: 32)
        raw(&w, uuid)
        w.u8(role)
    }
}

private func deviceBody(_ device: [UInt8]) -> [UInt8] {
    requestBody(kind: kind(.diskInspect)) { raw(&$0, device) }
}

private func openBody(device: [UInt8] = Array("/dev/vdb".utf8), name: [UInt8]) -> [UInt8] {
    requestBody(kind: kind(.diskOpen)) { w in
        raw(&w, device)
        raw(&w, name)
    }
}

private func kekBody(master: Int, salt: Int) -> [UInt8] {
    requestBody(kind: kind(.kekImport)) { w in
        raw(&w, [UInt8](repeating: 0xAB, count: master))
        raw(&w, [UInt8](repeating: 0xCD, count: salt))
    }
}

private func auditReadBody(maxRecords: UInt16) -> [UInt8] {
    requestBody(kind: kind(.auditRead)) { w in
        w.u64(0)
        w.u16(maxRecords)
    }
}

private func helloBody(_ minVersion: UInt16, _ maxVersion: UInt16) -> [UInt8] {
    requestBody(kind: kind(.hello)) { w in
        w.u16(minVersion)
        w.u16(maxVersion)
    }
}

private let frameLength = ProtocolError.frameLength(0, minimum: 6, maximum: 65_536)
private let unknown = ProtocolError.unknownKind(0)
private let truncated = ProtocolError.truncated(field: "", needed: 0, remaining: 0)
private let badEnum = ProtocolError.badEnum(field: "", value: 0)
private let badText = ProtocolError.badText(field: "")
private let badValue = ProtocolError.badValue(field: "", "")
private let fieldLength = ProtocolError.fieldLength(field: "", length: 0, bounds: 0...0)
private let trailing = ProtocolError.trailingBytes(0, after: "")

private func reject(
    _ name: String,
    _ body: [UInt8],
    _ error: ProtocolError,
    _ status: StatusCode = .malformed
) -> RejectCase {
    RejectCase(name: name, body: body, error: error, status: status)
}

/// Invalid text bytes, each inside an otherwise valid absolute path.
private let badTextBytes: [(String, [UInt8])] = [
    ("NUL", Array("/dev/".utf8) + [0x00] + Array("vdb".utf8)),
    ("newline", Array("/dev/vdb".utf8) + [0x0A]),
    ("unit separator 0x1F", Array("/dev/".utf8) + [0x1F]),
    ("escape", Array("/dev/".utf8) + [0x1B] + Array("[2J".utf8)),
    ("DEL", Array("/dev/".utf8) + [0x7F]),
    ("invalid UTF-8 0xFF", Array("/dev/".utf8) + [0xFF]),
    ("invalid UTF-8 continuation", Array("/dev/".utf8) + [0xC3, 0x28]),
    ("overlong slash", Array("/dev/".utf8) + [0xC0, 0xAF]),
    ("UTF-16 surrogate", Array("/dev/".utf8) + [0xED, 0xA0, 0x80]),
    ("cut multi-byte sequence", Array("/dev/".utf8) + [0xE2, 0x82]),
]

let requestRejections: [RejectCase] =
    [
        reject("empty body", [], frameLength, .frameLength),
        reject("5-byte body", [0, 1, 0, 0, 0], frameLength, .frameLength),
        reject(
            "65537-byte body",
            requestBody(kind: kind(.policySet)) { $0.fixed(pattern(65_531), count: 65_531) },
            frameLength,
            .frameLength
        ),
    ]
    + [0x0000, 0x0004, 0x000F, 0x0019, 0x0026, 0x0049, 0x7FFF, 0x8001, 0x8002, 0xFFFF].map { (code: UInt16) in
        reject("unknown kind 0x\(String(code, radix: 16))", requestBody(kind: code), unknown, .unknownRequest)
    }
    + [
        reject(
            "evidence.issue nonce 31 bytes, no digest",
            evidenceBody(.evidenceIssue, variant: 1, nonce: 31, digest: 0),
            truncated
        ),
        reject("evidence.issue nonce 31 bytes", evidenceBody(.evidenceIssue, variant: 1, nonce: 31), truncated),
        reject("tpm.evidence digest 31 bytes", evidenceBody(.tpmEvidence, variant: 1, digest: 31), truncated),
        reject("key.release challengeID 15 bytes", keyReleaseBody(challengeID: 15), truncated),
        reject("hello without maxVersion", requestBody(kind: kind(.hello)) { $0.u16(1) }, truncated),
        reject(
            "audit.read firstRecord 7 bytes",
            requestBody(kind: kind(.auditRead)) { $0.fixed(pattern(7), count: 7) },
            truncated
        ),
        reject(
            "envelope.accept length cut",
            requestBody(kind: kind(.envelopeAccept)) {
                $0.u8(1)
                $0.u8(0)
            },
            truncated
        ),
        reject(
            "init.accept envelope shorter than its length",
            requestBody(kind: kind(.initAccept)) {
                $0.u16(10)
                $0.fixed(pattern(9), count: 9)
            },
            truncated
        ),
        reject("kek.import without salt", requestBody(kind: kind(.kekImport)) { raw(&$0, pattern(32)) }, truncated),
    ]
    + [
        (RequestKind.evidenceIssue, UInt8(0)), (.evidenceIssue, 3), (.evidenceIssue, 0xFF), (.tpmEvidence, 0),
        (.tpmEvidence, 3),
    ].map {
        reject("\($0.0) variant \($0.1)", evidenceBody($0.0, variant: $0.1), badEnum)
    }
    + [UInt8(0), 5, 0xFF].map { value in
        reject("challenge.issue purpose \(value)", requestBody(kind: kind(.challengeIssue)) { $0.u8(value) }, badEnum)
    }
    + [UInt8(0), 3].map { value in
        reject(
            "envelope.accept purpose \(value)",
            requestBody(kind: kind(.envelopeAccept)) {
                $0.u8(value)
                raw(&$0, [])
            },
            badEnum
        )
    }
    + [UInt8(0), 3].map { value in reject("key.release role \(value)", keyReleaseBody(role: value), badEnum) }
    + badTextBytes.map { reject("device with \($0.0)", deviceBody($0.1), badText) }
    + badTextBytes.map { reject("mapping name with \($0.0)", openBody(name: Array($0.1.dropFirst())), badText) }
    + [
        reject(
            "key.release diskUUID not UTF-8",
            keyReleaseBody(uuid: [0xFF] + Array(sampleDiskUUID.utf8.dropFirst())),
            badText
        ),
        reject("device relative", deviceBody(Array("dev/vdb".utf8)), badValue),
        reject("device ./", deviceBody(Array("./vdb".utf8)), badValue),
        reject("device 4097 bytes", deviceBody(Array(("/" + String(repeating: "d", count: 4096)).utf8)), fieldLength),
        reject(
            "disk.format device relative",
            requestBody(kind: kind(.diskFormat)) { raw(&$0, Array("vdb".utf8)) },
            badValue
        ),
        reject(
            "disk.bind device relative",
            requestBody(kind: kind(.diskBind)) { raw(&$0, Array("vdb".utf8)) },
            badValue
        ),
        reject(
            "disk.reset device relative",
            requestBody(kind: kind(.diskReset)) { raw(&$0, Array("vdb".utf8)) },
            badValue
        ),
        reject("disk.open device relative", openBody(device: Array("vdb".utf8), name: Array("state".utf8)), badValue),
    ]
    + ["a/b", "/", "..", ".", "a b", "état", "$(x)"].map { name in
        reject("mapping name \"\(name)\"", openBody(name: Array(name.utf8)), badValue)
    }
    + [
        reject("mapping name empty", openBody(name: []), fieldLength),
        reject("mapping name 65 bytes", openBody(name: Array(String(repeating: "n", count: 65).utf8)), fieldLength),
        reject(
            "disk.close mapping name ..",
            requestBody(kind: kind(.diskClose)) { raw(&$0, Array("..".utf8)) },
            badValue
        ),
    ]
    + [
        "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", "0f1e2d3c4b5a69788796a5b4c3d2e1f0abcd",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
        "0f1e2d3c-4b5a-6978-8796_a5b4c3d2e1f0", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",
    ].map { uuid in
        reject("diskUUID \(uuid)", keyReleaseBody(uuid: Array(uuid.utf8)), badValue)
    }
    + [
        reject("diskUUID empty", keyReleaseBody(uuid: []), fieldLength),
        reject("diskUUID 37 bytes", keyReleaseBody(uuid: Array((sampleDiskUUID + "0").utf8)), fieldLength),
        // Only a secret over its maximum is malformed; one under its minimum decodes (RequestCodecTests).
        reject("master secret 65 bytes", kekBody(master: 65, salt: 32), fieldLength),
        reject("master secret 65000 bytes", kekBody(master: 65_000, salt: 0), fieldLength),
        reject("salt 65 bytes", kekBody(master: 32, salt: 65), fieldLength),
        reject("salt 65 bytes after a short master secret", kekBody(master: 15, salt: 65), fieldLength),
        reject("audit.read maxRecords 0", auditReadBody(maxRecords: 0), fieldLength),
        reject("audit.read maxRecords 513", auditReadBody(maxRecords: 513), fieldLength),
        reject("audit.read maxRecords 65535", auditReadBody(maxRecords: .max), fieldLength),
        reject("hello 0...1", helloBody(0, 1), badValue),
        reject("hello 0...0", helloBody(0, 0), badValue),
        reject("hello 2...1", helloBody(2, 1), badValue),
        reject("hello 65535...1", helloBody(.max, 1), badValue),
        reject(
            "evidence 49153 bytes",
            requestBody(kind: kind(.keyRelease)) { w in
                w.fixed(pattern(16), count: 16)
                w.u16(49_153)
            },
            fieldLength
        ),
        reject("envelope 4097 bytes", requestBody(kind: kind(.initAccept)) { raw(&$0, pattern(4097)) }, fieldLength),
        reject(
            "dataKey.open data key ID field 256 bytes",
            requestBody(kind: kind(.dataKeyOpen)) { raw(&$0, pattern(256, start: 0x41)) },
            fieldLength
        ),
        reject(
            "dataKey.open envelope 1025 bytes",
            requestBody(kind: kind(.dataKeyOpen)) { w in
                raw(&w, Array("k".utf8))
                w.u8(32)
                raw(&w, pattern(1025))
            },
            fieldLength
        ),
        reject(
            "signed policy 16385 bytes",
            requestBody(kind: kind(.policySet)) { raw(&$0, pattern(16_385)) },
            fieldLength
        ),
    ]

let answerRejections: [RejectCase] =
    [
        reject("empty answer", [], frameLength, .frameLength),
        reject("7-byte answer", [0x80, 1, 0, 0, 0, 0, 0], frameLength, .frameLength),
        reject(
            "262145-byte answer",
            answerBody(kind: 0x8002, status: 0, payload: pattern(262_137)),
            frameLength,
            .frameLength
        ),
        reject("kind 0x0001 without the answer bit", answerBody(kind: 0x0001, status: 0), badValue),
        reject("kind 0x7fff without the answer bit", answerBody(kind: 0x7FFF, sequence: .max, status: 2), badValue),
        reject("answer kind 0x8099 answers no request", answerBody(kind: 0x8099, status: 0), badValue),
        reject(
            "answer kind 0xffff with a request sequence",
            answerBody(kind: 0xFFFF, sequence: 0, status: 2),
            badValue
        ),
        reject(
            "connection error answer with a payload",
            answerBody(kind: 0xFFFF, sequence: .max, status: 8, payload: [0]),
            trailing
        ),
        reject(
            "connection error answer ok with a payload (fuzz finding 2)",
            answerBody(kind: 0xFFFF, sequence: .max, status: 0, payload: [0x00, 0x0e, 0xfb, 0x03, 0x01, 0x00, 0x01]),
            trailing
        ),
        reject("connection error answer ok", answerBody(kind: 0xFFFF, sequence: .max, status: 0), badValue),
        reject("connection error answer wrongPhase", answerBody(kind: 0xFFFF, sequence: .max, status: 5), badValue),
    ]
    // 13 is the retired kekPresent.
    + [UInt16(13), 19, 31, 43, 47, 58, 0x8000, 0xFFFF].map { status in
        reject("unknown status \(status)", answerBody(kind: 0x8002, status: status), badEnum)
    }
    + [StatusCode.unsupported, .denied, .wrongPhase, .internal, .diskNotInitialized].map { status in
        reject(
            "\(status) answer with a payload",
            answerBody(kind: 0x8002, status: status.rawValue, payload: [0]),
            trailing
        )
    }

/// Payloads of ok answers that their readers must refuse.
struct AnswerPayloadReject: Sendable, CustomTestStringConvertible {
    let name: String
    let kind: RequestKind
    let payload: [UInt8]
    let error: ProtocolError

    var testDescription: String { name }

    /// Runs the reader of `kind` over the payload.
    func decode() throws(ProtocolError) {
        let frame = AnswerFrame(kind: kind.rawValue, sequence: 0, status: .ok, payload: payload)
        switch kind {
        case .hello: _ = try frame.decodePayload(kind, HelloAnswer.read)
        case .status: _ = try frame.decodePayload(kind, StatusAnswer.read)
        case .auditRead: _ = try frame.decodePayload(kind, AuditReadAnswer.read)
        case .auditVerify: _ = try frame.decodePayload(kind, AuditVerifyAnswer.read)
        case .dataKeyOpen: _ = try frame.decodePayload(kind, DataKeyOpenAnswer.read)
        default: preconditionFailure("no typed answer for \(kind)")
        }
    }
}

private func statusPayload(intact: UInt8 = 1, version: [UInt8] = Array("1.0".utf8)) -> [UInt8] {
    var w = WireWriter()
    w.u16(1)
    w.u8(1)
    w.u8(2)
    w.u64(1)
    w.u64(2)
    w.u32(3)
    w.u64(4)
    w.fixed(pattern(32), count: 32)
    w.u8(intact)
    raw(&w, version)
    return w.bytes
}

private func verifyPayload(intact: UInt8 = 1, problem: UInt8 = 0) -> [UInt8] {
    var w = WireWriter()
    w.u8(intact)
    w.u64(3)
    w.u64(3)
    w.u8(problem)
    w.fixed(pattern(32), count: 32)
    return w.bytes
}

let answerPayloadRejections: [AnswerPayloadReject] = [
    AnswerPayloadReject(name: "hello peerClass 0 (stranger)", kind: .hello, payload: [0, 1, 0, 0], error: badEnum),
    AnswerPayloadReject(name: "hello peerClass 3", kind: .hello, payload: [0, 1, 3, 0], error: badEnum),
    AnswerPayloadReject(name: "hello phase 3", kind: .hello, payload: [0, 1, 1, 3], error: badEnum),
    AnswerPayloadReject(name: "hello 3 bytes", kind: .hello, payload: [0, 1, 1], error: truncated),
    AnswerPayloadReject(name: "status auditIntact 2", kind: .status, payload: statusPayload(intact: 2), error: badEnum),
    AnswerPayloadReject(
        name: "status keydVersion 33 bytes",
        kind: .status,
        payload: statusPayload(version: pattern(33, start: 0x41)),
        error: fieldLength
    ),
    AnswerPayloadReject(
        name: "status keydVersion with NUL",
        kind: .status,
        payload: statusPayload(version: [0x31, 0]),
        error: badText
    ),
    AnswerPayloadReject(
        name: "audit.verify intact 2",
        kind: .auditVerify,
        payload: verifyPayload(intact: 2),
        error: badEnum
    ),
    AnswerPayloadReject(
        name: "audit.verify problem 7",
        kind: .auditVerify,
        payload: verifyPayload(problem: 7),
        error: badEnum
    ),
    AnswerPayloadReject(
        name: "audit.verify trailing byte",
        kind: .auditVerify,
        payload: verifyPayload() + [0],
        error: trailing
    ),
    AnswerPayloadReject(
        name: "audit.read count 513",
        kind: .auditRead,
        payload: [0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x01],
        error: fieldLength
    ),
    AnswerPayloadReject(
        name: "audit.read count 2, one record",
        kind: .auditRead,
        payload: [0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 2, 0x7B, 0x7D],
        error: truncated
    ),
    AnswerPayloadReject(
        name: "audit.read record with newline",
        kind: .auditRead,
        payload: [0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 3, 0x7B, 0x7D, 0x0A],
        error: badText
    ),
    AnswerPayloadReject(
        name: "dataKey.open key of 15 bytes",
        kind: .dataKeyOpen,
        payload: [0, 15] + pattern(15),
        error: fieldLength
    ),
    AnswerPayloadReject(
        name: "dataKey.open key of 65 bytes",
        kind: .dataKeyOpen,
        payload: [0, 65] + pattern(65),
        error: fieldLength
    ),
]

@Suite("Rejections")
struct RejectionTests {
    @Test("requests keyd must refuse", arguments: requestRejections)
    func request(_ testCase: RejectCase) {
        let error = requestError(testCase.body)
        #expect(error == testCase.error, "got \(error.map(\.detail) ?? "no error")")
        #expect(error?.status == testCase.status)
        #expect(testCase.status.closesConnection)
    }

    @Test("answers a client must refuse", arguments: answerRejections)
    func answer(_ testCase: RejectCase) {
        let error = answerError(testCase.body)
        #expect(error == testCase.error, "got \(error.map(\.detail) ?? "no error")")
        #expect(error?.status == testCase.status)
    }

    @Test("answer payloads a client must refuse", arguments: answerPayloadRejections)
    func answerPayload(_ testCase: AnswerPayloadReject) {
        #expect(throws: testCase.error) { try testCase.decode() }
    }

    @Test("a byte after the last field is refused", arguments: RequestKind.allCases)
    func trailingByte(kind: RequestKind) throws {
        let body = try sampleBody(kind) + [0]
        let error = requestError(body)
        #expect(error == trailing, "got \(error.map(\.detail) ?? "no error")")
        #expect(error?.status == .malformed)
        #expect(error?.detail == "\(kind): 1 trailing bytes after the last field")
    }

    @Test("every cut body is refused", arguments: RequestKind.allCases)
    func cutBody(kind: RequestKind) throws {
        let body = try sampleBody(kind)
        for count in 0..<body.count {
            let error = requestError(Array(body.prefix(count)))
            #expect(error == (count < Limits.minRequestBody ? frameLength : truncated), "cut at \(count)")
        }
    }

    @Test("messages name the value and the limit, never secret bytes")
    func messages() {
        #expect(requestError(kekBody(master: 65, salt: 32))?.detail == "masterSecret: length 65 outside 0...64")
        #expect(requestError(kekBody(master: 32, salt: 65))?.detail == "salt: length 65 outside 0...64")
        #expect(requestError(requestBody(kind: 0x0099))?.detail == "unknown request kind 0x99")
        #expect(requestError([1])?.detail == "frame length 1 is below minimum 6")
        #expect(
            ProtocolError.frameLength(70_000, minimum: 6, maximum: 65_536).description
                == "frame length 70000 exceeds limit 65536"
        )
    }
}

/// The encoded body of the round-trip sample of `kind` (kek.import with 16- and 32-byte secrets).
func sampleBody(_ kind: RequestKind) throws -> [UInt8] {
    if kind == .kekImport { return stripPrefix(kekImportFrame(sequence: 0, masterCount: 16, saltCount: 32).frame) }
    let sample = try #require(requestCases.first { $0.request.kind == kind })
    return stripPrefix(RequestFrame(sequence: 0, request: sample.request).encodeFrame())
}
