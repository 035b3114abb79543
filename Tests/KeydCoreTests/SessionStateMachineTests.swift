import KeydProtocol
import KeydTestSamples
import Testing

@testable import KeydCore

/// Drives the session state machine with encoded frames and checks verdicts and answers.
@Suite struct SessionStateMachineTests {
    /// Strips the length prefix of an encoded frame.
    static func body(_ frame: [UInt8]) -> [UInt8] { Array(frame.dropFirst(4)) }

    static func feed(
        _ session: inout SessionStateMachine,
        _ request: Request,
        sequence: UInt32,
        phase: Phase = .awaitingKEK,
        usedThisBoot: Set<RequestKind> = []
    ) -> SessionVerdict {
        let bytes = body(RequestFrame(sequence: sequence, request: request).encodeFrame())
        return bytes.withUnsafeBytes { session.receive(body: $0, phase: phase, usedThisBoot: usedThisBoot) }
    }

    static func feedRaw(_ session: inout SessionStateMachine, _ body: [UInt8]) -> SessionVerdict {
        body.withUnsafeBytes { session.receive(body: $0, phase: .awaitingKEK, usedThisBoot: []) }
    }

    /// Decodes the answer bytes of a reply verdict.
    static func answer(_ verdict: SessionVerdict) -> (AnswerFrame, Bool, SessionAudit?)? {
        guard case .reply(let bytes, let close, let audit) = verdict else { return nil }
        guard let frame = try? AnswerFrame.decode(body: Array(bytes.dropFirst(4))) else { return nil }
        return (frame, close, audit)
    }

    static let hello = Request.hello(minVersion: 1, maxVersion: 1)

    @Test func helloNegotiatesAndAnswersPeerAndPhase() throws {
        var session = SessionStateMachine(peer: .admin)
        let (frame, close, audit) = try #require(
            Self.answer(Self.feed(&session, Self.hello, sequence: 0, phase: .holdingKEK))
        )
        #expect(frame.status == .ok && !close && audit == nil)
        let hello = try frame.decodePayload(.hello, HelloAnswer.read)
        #expect(hello == HelloAnswer(version: 1, peerClass: .admin, phase: .holdingKEK))
        #expect(session.version == 1)
    }

    @Test func permittedRequestIsDispatchedWithItsSequence() {
        var session = SessionStateMachine(peer: .admin)
        _ = Self.feed(&session, Self.hello, sequence: 0)
        #expect(Self.feed(&session, .status, sequence: 1) == .dispatch(RequestFrame(sequence: 1, request: .status)))
        #expect(
            Self.feed(&session, .auditVerify, sequence: 2)
                == .dispatch(RequestFrame(sequence: 2, request: .auditVerify))
        )
    }

    @Test func everyPermittedKindButHelloIsDispatched() {
        // Whether keyd serves a kind is the daemon's request table (KeydService.perform), not the session's.
        for kind in RequestKind.allCases where kind != .hello {
            let row = PermissionTable.permission(for: kind)
            guard let peer = [PeerClass.admin, .trustd].first(where: row.peers.contains), let phase = row.phases.first
            else { continue }
            var session = SessionStateMachine(peer: peer)
            _ = Self.feed(&session, Self.hello, sequence: 0)
            let request = RequestSamples.request(kind)
            #expect(
                Self.feed(&session, request, sequence: 1, phase: phase)
                    == .dispatch(RequestFrame(sequence: 1, request: request)),
                "\(kind)"
            )
        }
    }

    /// Cases that must close the connection with the given status and an audit record.
    struct Closing: Sendable, CustomTestStringConvertible {
        let name: String
        let peer: PeerClass
        let frames: [[UInt8]]
        let status: StatusCode
        var testDescription: String { name }
    }

    static func frame(_ request: Request, _ sequence: UInt32) -> [UInt8] {
        body(RequestFrame(sequence: sequence, request: request).encodeFrame())
    }

    static let closing: [Closing] = [
        Closing(name: "first request is not hello", peer: .admin, frames: [frame(.status, 0)], status: .helloRequired),
        Closing(name: "second hello", peer: .admin, frames: [frame(hello, 0), frame(hello, 1)], status: .alreadyUsed),
        Closing(
            name: "sequence skips",
            peer: .admin,
            frames: [frame(hello, 0), frame(.status, 2)],
            status: .sequenceError
        ),
        Closing(name: "sequence starts at 1", peer: .admin, frames: [frame(hello, 1)], status: .sequenceError),
        Closing(name: "stranger hello", peer: .stranger, frames: [frame(hello, 0)], status: .denied),
        Closing(name: "stranger skips hello", peer: .stranger, frames: [frame(.status, 0)], status: .denied),
        Closing(
            name: "trustd asks for admin request",
            peer: .trustd,
            frames: [frame(hello, 0), frame(.kekLock, 1)],
            status: .denied
        ),
        Closing(
            name: "trustd names a device path",
            peer: .trustd,
            frames: [frame(hello, 0), frame(.diskInspect(device: "/tmp/f"), 1)],
            status: .denied
        ),
        Closing(
            name: "admin asks for trustd request",
            peer: .admin,
            frames: [frame(hello, 0), frame(.bootKeyGet, 1)],
            status: .denied
        ),
        Closing(
            name: "no common version",
            peer: .admin,
            frames: [frame(.hello(minVersion: 2, maxVersion: 9), 0)],
            status: .versionUnsupported
        ),
        Closing(
            name: "unknown kind",
            peer: .admin,
            frames: [frame(hello, 0), [0x7F, 0x00, 0, 0, 0, 1]],
            status: .unknownRequest
        ),
        Closing(
            name: "trailing byte",
            peer: .admin,
            frames: [frame(hello, 0), frame(.status, 1) + [0]],
            status: .malformed
        ),
        Closing(name: "truncated hello", peer: .admin, frames: [[0, 1, 0, 0, 0, 0, 0]], status: .malformed),
    ]

    @Test(arguments: closing)
    func violationsCloseWithStatusAndAudit(_ testCase: Closing) throws {
        var session = SessionStateMachine(peer: testCase.peer)
        var last: SessionVerdict?
        for frame in testCase.frames { last = Self.feedRaw(&session, frame) }
        let verdict = try #require(last)
        let (answer, close, audit) = try #require(Self.answer(verdict))
        #expect(answer.status == testCase.status)
        #expect(close)
        #expect(session.isClosed)
        #expect(audit?.status == testCase.status)
        #expect(audit?.granted == false)
    }

    @Test func wrongPhaseKeepsTheConnectionAndIsAudited() throws {
        var session = SessionStateMachine(peer: .admin)
        _ = Self.feed(&session, Self.hello, sequence: 0)
        let (answer, close, audit) = try #require(
            Self.answer(Self.feed(&session, .kekLock, sequence: 1, phase: .awaitingKEK))
        )
        #expect(answer.status == .wrongPhase && !close && !session.isClosed)
        #expect(audit?.event == .request(.kekLock))
        #expect(
            Self.feed(&session, .kekLock, sequence: 2, phase: .holdingKEK)
                == .dispatch(RequestFrame(sequence: 2, request: .kekLock))
        )
    }

    @Test func trustdDiskRequestsActOnTheConfiguredDiskOnly() throws {
        var trustd = SessionStateMachine(peer: .trustd)
        _ = Self.feed(&trustd, Self.hello, sequence: 0)
        #expect(
            Self.feed(&trustd, .diskInspect(device: ""), sequence: 1)
                == .dispatch(RequestFrame(sequence: 1, request: .diskInspect(device: "")))
        )
        // Any path at all, the configured one included, is refused: trustd never names a path.
        let (answer, close, audit) = try #require(
            Self.answer(Self.feed(&trustd, .diskInspect(device: "/dev/vdb"), sequence: 2))
        )
        #expect(answer.status == .denied && close && trustd.isClosed)
        #expect(audit?.event == .request(.diskInspect) && audit?.granted == false)
        #expect(audit?.detail.contains(.init("device", "/dev/vdb")) == true)

        var admin = SessionStateMachine(peer: .admin)
        _ = Self.feed(&admin, Self.hello, sequence: 0)
        for (sequence, device) in [(UInt32(1), "/dev/vdb"), (2, "")] {
            #expect(
                Self.feed(&admin, .diskInspect(device: device), sequence: sequence)
                    == .dispatch(RequestFrame(sequence: sequence, request: .diskInspect(device: device)))
            )
        }
    }

    @Test func diskTargets() {
        #expect(DiskTarget.resolve("", configured: "/dev/vdb") == "/dev/vdb")
        #expect(DiskTarget.resolve("", configured: nil) == nil)
        #expect(DiskTarget.resolve("/dev/vdc", configured: "/dev/vdb") == "/dev/vdc")
        #expect(DiskTarget.mayName("", peer: .trustd) && DiskTarget.mayName("/dev/vdb", peer: .admin))
        #expect(!DiskTarget.mayName("/dev/vdb", peer: .trustd) && !DiskTarget.mayName("/x", peer: .stranger))
        #expect(DiskTarget.namedDevice(in: .diskOpen(device: "/dev/vdb", mappingName: "state")) == "/dev/vdb")
        #expect(DiskTarget.namedDevice(in: .diskClose(mappingName: "state")) == nil)
    }

    @Test func perBootRequestRefusedOnceUsed() throws {
        var session = SessionStateMachine(peer: .trustd)
        _ = Self.feed(&session, Self.hello, sequence: 0)
        let (answer, close, _) = try #require(
            Self.answer(
                Self.feed(
                    &session,
                    .initAccept(InitAcceptRequest(envelope: [1, 2], operatorKey: [1], signedPolicy: [1])),
                    sequence: 1,
                    usedThisBoot: [.initAccept]
                )
            )
        )
        #expect(answer.status == .alreadyUsed && close)
    }

    @Test func frameLengthViolationAnswersConnectionError() throws {
        var session = SessionStateMachine(peer: .admin)
        let error = ProtocolError.frameLength(1 << 30, minimum: 6, maximum: Limits.maxFrameLength)
        let (answer, close, audit) = try #require(Self.answer(session.frameLengthViolation(error)))
        #expect(answer.isConnectionError && answer.status == .frameLength && close)
        #expect(audit?.detail.contains(.init("error", "frame length 1073741824 exceeds limit 65536")) == true)
    }

    @Test(arguments: [ConnectionExpiry.frameIncomplete, .helloMissing, .idle])
    func expiryAnswersConnectionErrorTimeout(_ expiry: ConnectionExpiry) throws {
        var session = SessionStateMachine(peer: .trustd)
        let (answer, close, audit) = try #require(Self.answer(session.expired(expiry)))
        #expect(answer.isConnectionError && answer.status == .timeout && close && session.isClosed)
        // A frame or hello not in time is a violation; an idle close is routine and not audited.
        if expiry == .idle {
            #expect(audit == nil)
        } else {
            #expect(audit?.event == .protocolViolation && audit?.status == .timeout)
            #expect(audit?.detail == [.init("reason", expiry.description)])
        }
    }

    /// Requests where two or more checks fail: the first in PROTOCOL.md's "Order of checks" decides.
    struct CheckOrder: Sendable, CustomTestStringConvertible {
        let name: String
        let peer: PeerClass
        let phase: Phase
        let usedThisBoot: Set<RequestKind>
        let frames: [[UInt8]]
        let status: StatusCode
        var testDescription: String { name }

        init(
            _ name: String,
            _ peer: PeerClass,
            phase: Phase = .awaitingKEK,
            usedThisBoot: Set<RequestKind> = [],
            _ frames: [[UInt8]],
            _ status: StatusCode
        ) {
            self.name = name
            self.peer = peer
            self.phase = phase
            self.usedThisBoot = usedThisBoot
            self.frames = frames
            self.status = status
        }
    }

    static let checkOrder: [CheckOrder] = [
        CheckOrder("decode before sequence", .admin, [frame(hello, 0), frame(.status, 7) + [0]], .malformed),
        CheckOrder("unknown kind before hello", .admin, [[0x7F, 0x00, 0, 0, 0, 0]], .unknownRequest),
        CheckOrder("unknown kind from a stranger", .stranger, [[0x7F, 0x00, 0, 0, 0, 0]], .unknownRequest),
        CheckOrder(
            "second hello with an empty range: decode before once",
            .admin,
            [frame(hello, 0), requestBody(.hello, 1, [0, 2, 0, 1])],
            .malformed
        ),
        CheckOrder("hello starting at 0 is malformed", .trustd, [requestBody(.hello, 0, [0, 0, 0, 1])], .malformed),
        CheckOrder("sequence before stranger", .stranger, [frame(hello, 3)], .sequenceError),
        CheckOrder("sequence before hello first", .admin, [frame(.status, 1)], .sequenceError),
        CheckOrder("stranger before hello first", .stranger, [frame(.kekLock, 0)], .denied),
        CheckOrder("hello first before peer", .trustd, [frame(.kekLock, 0)], .helloRequired),
        CheckOrder("hello first before phase", .admin, phase: .awaitingKEK, [frame(.kekLock, 0)], .helloRequired),
        CheckOrder(
            "peer before once",
            .admin,
            usedThisBoot: [.initAccept],
            [
                frame(hello, 0),
                frame(.initAccept(InitAcceptRequest(envelope: [1], operatorKey: [1], signedPolicy: [1])), 1),
            ],
            .denied
        ),
        CheckOrder(
            "once before phase",
            .trustd,
            phase: .holdingKEK,
            usedThisBoot: [.initAccept],
            [
                frame(hello, 0),
                frame(.initAccept(InitAcceptRequest(envelope: [1], operatorKey: [1], signedPolicy: [1])), 1),
            ],
            .alreadyUsed
        ),
        CheckOrder("peer before phase", .trustd, phase: .awaitingKEK, [frame(hello, 0), frame(.kekLock, 1)], .denied),
        CheckOrder(
            "kek.import while a KEK is held is wrongPhase",
            .admin,
            phase: .holdingKEK,
            [frame(hello, 0), kekImportBody(sequence: 1)],
            .wrongPhase
        ),
    ]

    /// A request body with a raw payload (for payloads the encoder refuses to write).
    static func requestBody(_ kind: RequestKind, _ sequence: UInt32, _ payload: [UInt8]) -> [UInt8] {
        let prefix = body(RequestFrame(sequence: sequence, request: .status).encodeFrame())
        return [UInt8(kind.rawValue >> 8), UInt8(kind.rawValue & 0xFF)] + prefix.dropFirst(2) + payload
    }

    static func kekImportBody(sequence: UInt32) -> [UInt8] {
        let secret = [UInt8](repeating: 0x42, count: 32)
        return body(
            secret.withUnsafeBytes { s in RequestFrame.encodeKEKImport(sequence: sequence, masterSecret: s, salt: s) }
        )
    }

    @Test(arguments: checkOrder)
    func firstFailingCheckDecides(_ testCase: CheckOrder) throws {
        var session = SessionStateMachine(peer: testCase.peer)
        var last: SessionVerdict?
        for frame in testCase.frames {
            last = frame.withUnsafeBytes {
                session.receive(body: $0, phase: testCase.phase, usedThisBoot: testCase.usedThisBoot)
            }
        }
        let verdict = try #require(last)
        let (answer, close, audit) = try #require(Self.answer(verdict))
        #expect(answer.status == testCase.status)
        #expect(close == testCase.status.closesConnection && session.isClosed == close)
        #expect(audit?.status == testCase.status && audit?.granted == false)
    }

    @Test func kekImportDispatchCarriesPositionsNotBytes() {
        var session = SessionStateMachine(peer: .admin)
        _ = Self.feed(&session, Self.hello, sequence: 0)
        let master = [UInt8](repeating: 0xAA, count: 32)
        let salt = [UInt8](repeating: 0xBB, count: 32)
        let frame = master.withUnsafeBytes { m in
            salt.withUnsafeBytes { s in RequestFrame.encodeKEKImport(sequence: 1, masterSecret: m, salt: s) }
        }
        let verdict = Self.feedRaw(&session, Self.body(frame))
        guard case .dispatch(let decoded) = verdict, case .kekImport(let fields) = decoded.request else {
            Issue.record("expected kek.import dispatch, got \(verdict)")
            return
        }
        let body = Self.body(frame)
        #expect(
            Array(body[fields.masterSecret.offset..<(fields.masterSecret.offset + fields.masterSecret.count)]) == master
        )
        #expect(Array(body[fields.salt.offset..<(fields.salt.offset + fields.salt.count)]) == salt)
    }
}
