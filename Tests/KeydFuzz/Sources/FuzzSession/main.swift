// libFuzzer target: one keyd connection, from bytes to verdicts, as keyd's event loop drives it.
//
// Input: byte 0 picks the peer class, byte 1 the starting phase, byte 2 is unused (it chose a
// served set when the session knew one; kept so the corpus stays valid); the rest is a program of one-byte
// operations (see `Operation`) that send raw bytes or frames, change the phase, spend a
// once-per-boot request on another connection, or let a clock expire. Checks, each a `fatalError`:
// - a reply closes exactly when its status closes the connection, and `isClosed` agrees;
// - dispatch happens only after hello, never for hello, for a peer and phase the permission
//   table allows and a once request not yet used, with sequence = number of frames received;
// - ok comes only from hello, with this peer and phase in the payload; wrongPhase, denied,
//   alreadyUsed, helloRequired and sequenceError only where their rule holds; never unsupported
//   (which kinds keyd serves is the daemon's request table, answered after dispatch);
// - an answer carries the kind and sequence of the request it answers, or is the connection
//   error answer;
// - an expired clock answers the connection error `timeout` and closes, audited unless the connection
//   was idle.
// Once the session closes the input ends: feeding a closed session is a precondition in KeydCore.
import Glibc
import KeydCore
import KeydProtocol

/// `FUZZ_TRACE=1 FuzzSession input` prints each frame and verdict (stdout), to read what an input does.
let tracing = getenv("FUZZ_TRACE") != nil

func trace(_ line: @autoclosure () -> String) {
    if tracing { print(line()) }
}

/// Reads the fuzzer input front to back; reads past the end return nil.
struct Program {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    mutating func byte() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func take(_ count: Int) -> [UInt8] {
        let end = min(bytes.count, index + count)
        defer { index = end }
        return Array(bytes[index..<end])
    }
}

/// One step of the program, chosen by `opcode % 8`.
enum Operation: UInt8 {
    /// Next byte n, then n raw bytes appended to the stream.
    case rawBytes = 0
    /// Next byte n, then an n-byte body sent as one frame (any sequence).
    case rawFrame = 1
    /// As `rawFrame`, with the sequence field set to the next expected number.
    case rawFrameInSequence = 2
    /// Next byte picks a kind, the one after varies its payload: a well-formed request in sequence.
    case request = 3
    /// Next byte picks keyd's phase.
    case setPhase = 4
    /// Next byte picks a kind another connection used once this boot.
    case useOnOtherConnection = 5
    /// Next byte picks a clock (frame, hello, idle) that expires.
    case timeout = 6
    /// A well-formed request with the sequence from the next byte (often out of order).
    case requestOutOfSequence = 7
}

/// A valid request body of `kind`, varied by `variant` where the payload has choices.
func sampleFrame(_ kind: RequestKind, sequence: UInt32, variant: UInt8) -> [UInt8] {
    let evidence = EvidenceRequest(
        variant: variant & 1 == 0 ? .native : .constellationQEMUVTPM,
        nonce: [UInt8](repeating: variant, count: 32),
        userDataDigest: [UInt8](repeating: 7, count: 32)
    )
    let request: Request
    switch kind {
    case .hello:
        // Not always a valid range: min 0 or min > max must be malformed.
        request = .hello(minVersion: UInt16(variant & 3), maxVersion: UInt16(variant >> 2 & 3))
    case .status: request = .status
    case .bootKeyGet: request = .bootKeyGet
    case .evidenceIssue: request = .evidenceIssue(evidence)
    case .challengeIssue:
        request = .challengeIssue(ChallengePurpose.allCases[Int(variant) % ChallengePurpose.allCases.count])
    case .keyRelease:
        request = .keyRelease(
            KeyReleaseRequest(
                challengeID: [UInt8](repeating: 1, count: 16),
                evidence: [UInt8](repeating: 2, count: Int(variant)),
                certificateKeyHash: [UInt8](repeating: 3, count: 32),
                bootPublicKey: [UInt8](repeating: 4, count: 32),
                diskUUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                role: variant & 1 == 0 ? .worker : .controlPlane
            )
        )
    case .envelopeAccept:
        request = .envelopeAccept(variant & 1 == 0 ? .join : .rejoin, envelope: [UInt8](repeating: 5, count: 48))
    case .initAccept:
        request = .initAccept(
            InitAcceptRequest(
                envelope: [UInt8](repeating: 6, count: 48),
                operatorKey: [1] + [UInt8](repeating: 7, count: 32),
                signedPolicy: [UInt8](repeating: 8, count: Int(variant))
            )
        )
    case .joinEvidenceIssue:
        request = .joinEvidenceIssue(
            JoinEvidenceRequest(
                nonce: evidence.nonce,
                certificateKeyHash: [UInt8](repeating: 3, count: 32),
                role: variant & 1 == 0 ? .worker : .controlPlane,
                nodeName: "node-\(variant)"
            )
        )
    case .compatRelease:
        request = .compatRelease(
            CompatReleaseRequest(
                challengeID: [UInt8](repeating: 1, count: 16),
                evidence: [UInt8](repeating: 2, count: Int(variant)),
                certificateKeyHash: [UInt8](repeating: 3, count: 32),
                diskUUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                role: .worker,
                nodeName: "node"
            )
        )
    case .dataKeyRelease:
        request = .dataKeyRelease(
            DataKeyReleaseRequest(
                challengeID: [UInt8](repeating: 1, count: 16),
                evidence: [UInt8](repeating: 2, count: Int(variant)),
                certificateKeyHash: [UInt8](repeating: 3, count: 32),
                bootPublicKey: [UInt8](repeating: 4, count: 32),
                diskUUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                role: .worker,
                nodeName: "node",
                dataKeyID: variant & 1 == 0 ? "k8s-\(variant)" : "../x",
                length: variant
            )
        )
    case .dataKeyOpen:
        request = .dataKeyOpen(
            DataKeyOpenRequest(dataKeyID: "k-\(variant)", length: variant, envelope: [UInt8](repeating: 5, count: 48))
        )
    case .policyGet: request = .policyGet
    case .operatorKeyPin: request = .operatorKeyPin(operatorKey: [UInt8](repeating: 1, count: 1 + Int(variant % 66)))
    case .diskInspect: request = .diskInspect(device: "/dev/vdb")
    case .diskFormat: request = .diskFormat(device: "/dev/vdb")
    case .diskBind: request = .diskBind(device: "/dev/vdb")
    case .diskOpen: request = .diskOpen(device: "/dev/vdb", mappingName: "state")
    case .diskClose: request = .diskClose(mappingName: "state")
    case .diskReset: request = .diskReset(device: "/dev/vdb")
    case .kekImport:
        let master = [UInt8](repeating: 0x11, count: 16 + Int(variant % 49))
        let salt = [UInt8](repeating: 0x22, count: 32)
        return master.withUnsafeBytes { m in
            salt.withUnsafeBytes { s in RequestFrame.encodeKEKImport(sequence: sequence, masterSecret: m, salt: s) }
        }
    case .kekLock: request = .kekLock
    case .auditRead: request = .auditRead(firstRecord: UInt64(variant), maxRecords: 1 + UInt16(variant))
    case .auditVerify: request = .auditVerify
    case .tpmStatus: request = .tpmStatus
    case .tpmEvidence: request = .tpmEvidence(evidence)
    case .policySet: request = .policySet(signedPolicy: [UInt8](repeating: 9, count: Int(variant)))
    }
    return RequestFrame(sequence: sequence, request: request).encodeFrame()
}

/// A length prefix followed by `body`.
func framed(_ body: [UInt8]) -> [UInt8] {
    let n = UInt32(body.count)
    return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + body
}

/// A finding: the session broke one of its rules.
func finding(_ message: String) -> Never {
    fatalError("session invariant broken: \(message)")
}

/// The answer inside reply bytes; a reply that does not decode is a finding.
func answer(in bytes: [UInt8]) -> AnswerFrame {
    guard bytes.count >= Limits.lengthPrefixSize else { finding("reply of \(bytes.count) bytes") }
    let length = bytes.prefix(4).reduce(0) { $0 << 8 | Int($1) }
    guard length == bytes.count - Limits.lengthPrefixSize else {
        finding("reply prefix \(length) for \(bytes.count) bytes")
    }
    do {
        return try AnswerFrame.decode(body: Array(bytes.dropFirst(Limits.lengthPrefixSize)))
    } catch {
        finding("reply does not decode: \(error)")
    }
}

/// One connection under test, with the model of what it may do.
struct Harness {
    var session: SessionStateMachine
    /// keyd's bound on frames one read decodes; one operation sends at most 259 bytes, as much as keyd reads.
    var decoder = FrameDecoder(.requests, maxQueuedFrames: ServingLimits.maxDecodedAhead)
    let peer: PeerClass
    var phase: Phase
    var usedThisBoot: Set<RequestKind> = []
    var usedThisConnection: Set<RequestKind> = []
    var framesReceived: UInt32 = 0
    var helloDone = false

    init(peer: PeerClass, phase: Phase) {
        self.peer = peer
        self.phase = phase
        session = SessionStateMachine(peer: peer)
    }

    /// Checks a verdict that closes with the connection error answer.
    func checkConnectionError(_ verdict: SessionVerdict, status: StatusCode) {
        guard case .reply(let bytes, let close, _) = verdict else { finding("\(status) dispatched a frame") }
        let answer = answer(in: bytes)
        guard close, session.isClosed, answer.isConnectionError, answer.status == status, answer.payload.isEmpty else {
            finding("\(status): close \(close), closed \(session.isClosed), answer \(answer)")
        }
    }

    /// Appends bytes as one read and hands each finished frame to the session, as keyd does.
    mutating func send(_ bytes: [UInt8]) {
        var failure: ProtocolError?
        do {
            try decoder.append(bytes)
        } catch {
            failure = error
        }
        // Frames completed before a bad length prefix are answered first, as keyd does.
        while !session.isClosed, let body = decoder.nextFrame() {
            receive(body)
        }
        if let failure, !session.isClosed {
            let verdict = session.frameLengthViolation(failure)
            checkConnectionError(verdict, status: failure.status)
        }
    }

    /// Feeds one frame body and checks the verdict against the model.
    mutating func receive(_ body: [UInt8]) {
        let expected = framesReceived
        framesReceived &+= 1
        let decoded: RequestFrame?
        let decodeError: ProtocolError?
        do {
            decoded = try RequestFrame.decode(body: body)
            decodeError = nil
        } catch {
            decoded = nil
            decodeError = error
        }
        let header = body.withUnsafeBytes { RequestFrame.peekHeader(body: $0) }
        let verdict = body.withUnsafeBytes { session.receive(body: $0, phase: phase, usedThisBoot: usedThisBoot) }
        trace(
            "frame \(expected) \(decoded.map { "\($0.request.kind) seq \($0.sequence)" } ?? "undecodable") as \(peer) in \(phase): \(verdict)"
        )

        switch verdict {
        case .dispatch(let frame):
            let kind = frame.request.kind
            let row = PermissionTable.permission(for: kind)
            guard frame == decoded else { finding("dispatched a frame that differs from its body") }
            guard frame.sequence == expected else {
                finding("dispatched sequence \(frame.sequence), expected \(expected)")
            }
            guard !session.isClosed else { finding("dispatch from a closed session") }
            guard helloDone, kind != .hello else { finding("dispatched \(kind) before or as hello") }
            guard peer != .stranger, row.peers.contains(peer) else { finding("dispatched \(kind) for peer \(peer)") }
            if let device = DiskTarget.namedDevice(in: frame.request), !DiskTarget.mayName(device, peer: peer) {
                finding("dispatched \(kind) naming \(device) for peer \(peer)")
            }
            guard row.phases.contains(phase) else { finding("dispatched \(kind) in phase \(phase)") }
            switch row.once {
            case .unlimited: break
            case .perConnection:
                guard !usedThisConnection.contains(kind) else { finding("dispatched \(kind) twice on one connection") }
            case .perBoot:
                guard !usedThisBoot.contains(kind) else { finding("dispatched \(kind) twice this boot") }
                usedThisBoot.insert(kind)
            }
            guard
                PermissionTable.evaluate(
                    kind,
                    peer: peer,
                    phase: phase,
                    usedThisConnection: usedThisConnection.contains(kind),
                    usedThisBoot: false
                ) == .allowed
            else { finding("dispatched \(kind) that the table refuses") }
            usedThisConnection.insert(kind)

        case .reply(let bytes, let close, let audit):
            let answer = answer(in: bytes)
            guard close == session.isClosed else { finding("reply close \(close), session closed \(session.isClosed)") }
            guard answer.status.closesConnection == close else {
                finding("status \(answer.status) with close \(close)")
            }
            guard answer.status == .ok || answer.payload.isEmpty else { finding("\(answer.status) with a payload") }
            if close, audit == nil { finding("closing reply \(answer.status) without an audit note") }
            if answer.isConnectionError {
                guard close else { finding("connection error answer that keeps the connection") }
            } else {
                guard let header, answer.kind == header.kind, answer.sequence == header.sequence else {
                    finding("answer \(answer.kind)/\(answer.sequence) to request \(String(describing: header))")
                }
            }
            guard let decoded else {
                guard close, answer.status == decodeError?.status else {
                    finding(
                        "undecodable frame answered \(answer.status), expected \(String(describing: decodeError?.status))"
                    )
                }
                return
            }
            let kind = decoded.request.kind
            let row = PermissionTable.permission(for: kind)
            switch answer.status {
            case .ok:
                guard case .hello(let minVersion, let maxVersion) = decoded.request, !helloDone,
                    decoded.sequence == expected
                else { finding("ok answer to \(kind)") }
                let hello: HelloAnswer
                do { hello = try answer.decodePayload(.hello, HelloAnswer.read) } catch {
                    finding("hello answer: \(error)")
                }
                guard hello.peerClass == peer, hello.phase == phase, (minVersion...maxVersion).contains(hello.version),
                    Limits.supportedVersions.contains(hello.version)
                else { finding("hello answer \(hello) for peer \(peer), phase \(phase)") }
                helloDone = true
                usedThisConnection.insert(kind)
            case .wrongPhase:
                guard helloDone, row.peers.contains(peer), !row.phases.contains(phase), decoded.sequence == expected
                else {
                    finding("wrongPhase answer to \(kind) in \(phase)")
                }
            case .denied:
                // A permitted peer is denied only for naming a device path it may not name (trustd).
                let namedPath =
                    DiskTarget.namedDevice(in: decoded.request).map { !DiskTarget.mayName($0, peer: peer) } ?? false
                guard !row.peers.contains(peer) || namedPath else {
                    finding("denied \(kind) to permitted peer \(peer)")
                }
            case .alreadyUsed:
                let used =
                    row.once == .perConnection
                    ? usedThisConnection.contains(kind)
                    : row.once == .perBoot ? usedThisBoot.contains(kind) : false
                guard used, row.peers.contains(peer) else {
                    finding("alreadyUsed for unused \(kind)")
                }
            case .helloRequired:
                guard !helloDone, kind != .hello, peer != .stranger else {
                    finding("helloRequired after hello or to a stranger")
                }
            case .sequenceError:
                guard decoded.sequence != expected else { finding("sequenceError for in-order \(decoded.sequence)") }
            case .versionUnsupported:
                guard case .hello(let minVersion, let maxVersion) = decoded.request,
                    !(minVersion...maxVersion).overlaps(Limits.supportedVersions)
                else { finding("versionUnsupported for \(decoded.request)") }
            default:
                finding("session answered \(answer.status) to \(kind)")
            }
            // Nothing but a dispatch or hello may be answered before hello, except by closing.
            if !helloDone, !close { finding("open reply \(answer.status) before hello") }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var program = Program(bytes: UnsafeRawBufferPointer(start: start, count: count))
    guard let peerByte = program.byte(), let phaseByte = program.byte(), program.byte() != nil else { return 0 }
    var harness = Harness(
        peer: PeerClass.allCases[Int(peerByte) % PeerClass.allCases.count],
        phase: Phase.allCases[Int(phaseByte) % Phase.allCases.count]
    )
    let kinds = RequestKind.allCases

    while !harness.session.isClosed, let opcode = program.byte() {
        switch Operation(rawValue: opcode % 8)! {
        case .rawBytes:
            harness.send(program.take(Int(program.byte() ?? 0)))
        case .rawFrame, .rawFrameInSequence:
            var body = program.take(Int(program.byte() ?? 0))
            if opcode % 8 == Operation.rawFrameInSequence.rawValue, body.count >= Limits.minRequestBody {
                let s = harness.framesReceived
                body.replaceSubrange(
                    2..<6,
                    with: [UInt8(s >> 24), UInt8(s >> 16 & 0xFF), UInt8(s >> 8 & 0xFF), UInt8(s & 0xFF)]
                )
            }
            harness.send(framed(body))
        case .request:
            let kind = kinds[Int(program.byte() ?? 0) % kinds.count]
            harness.send(sampleFrame(kind, sequence: harness.framesReceived, variant: program.byte() ?? 0))
        case .requestOutOfSequence:
            let kind = kinds[Int(program.byte() ?? 0) % kinds.count]
            harness.send(sampleFrame(kind, sequence: UInt32(program.byte() ?? 0), variant: program.byte() ?? 0))
        case .setPhase:
            harness.phase = Phase.allCases[Int(program.byte() ?? 0) % Phase.allCases.count]
        case .useOnOtherConnection:
            harness.usedThisBoot.insert(kinds[Int(program.byte() ?? 0) % kinds.count])
        case .timeout:
            let expiries: [ConnectionExpiry] = [.frameIncomplete, .helloMissing, .idle]
            let expiry = expiries[Int(program.byte() ?? 0) % expiries.count]
            let verdict = harness.session.expired(expiry)
            harness.checkConnectionError(verdict, status: .timeout)
            guard case .reply(_, _, let audit) = verdict, (audit == nil) == (expiry == .idle) else {
                finding("\(expiry) expired with audit \(String(describing: verdict))")
            }
        }
    }
    return 0
}
