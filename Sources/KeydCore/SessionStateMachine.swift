import KeydProtocol

/// What an audit record of a session decision says; keyd adds time, peer and chain.
public struct SessionAudit: Sendable, Hashable {
    /// What the record is about: the request, or a protocol violation.
    public let event: AuditEvent
    /// Whether the request was granted.
    public let granted: Bool
    /// The status answered.
    public let status: StatusCode
    /// Non-secret context, in order.
    public let detail: [Pair]

    /// One detail entry.
    public struct Pair: Sendable, Hashable {
        public let key: String
        public let value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    /// Creates an audit note.
    public init(event: AuditEvent, granted: Bool, status: StatusCode, detail: [Pair]) {
        self.event = event
        self.granted = granted
        self.status = status
        self.detail = detail
    }
}

/// What keyd must do with one received frame.
public enum SessionVerdict: Sendable, Hashable {
    /// Perform the request and answer it with the same kind and sequence (never `hello`: the session
    /// answers it). The performer answers `unsupported` for a kind this keyd does not serve.
    case dispatch(RequestFrame)
    /// Send these answer bytes; close the connection afterwards when `close` is set.
    case reply(bytes: [UInt8], close: Bool, audit: SessionAudit?)
}

/// The state machine of one keyd connection: hello first, sequences in pairs, the permission
/// table on every request, and closing on any violation.
///
/// Pure: it sees frame bodies and returns verdicts; the keyd event loop carries them out.
/// Impossible transitions (feeding a closed session) are preconditions.
public struct SessionStateMachine: Sendable {
    private enum State: Sendable, Hashable {
        case awaitingHello
        case established(version: UInt16)
        case closed
    }

    private var state: State = .awaitingHello
    private var expectedSequence: UInt32 = 0
    private var usedThisConnection: Set<RequestKind> = []
    /// Who is on the other end.
    public let peer: PeerClass

    /// Starts a session for a peer classified from its credentials.
    public init(peer: PeerClass) {
        self.peer = peer
    }

    /// Whether the connection must be (or was) closed; no more frames may be fed.
    public var isClosed: Bool { state == .closed }

    /// The negotiated version, once hello succeeded.
    public var version: UInt16? {
        if case .established(let version) = state { return version }
        return nil
    }

    /// Decides one complete request body. The first check that fails decides (PROTOCOL.md, "Order of
    /// checks"): decoding, sequence, stranger, hello first, then the permission table (peer, once, phase).
    public mutating func receive(
        body: UnsafeRawBufferPointer,
        phase: Phase,
        usedThisBoot: Set<RequestKind>
    ) -> SessionVerdict {
        precondition(state != .closed, "frame fed to a closed session")
        let frame: RequestFrame
        do {
            frame = try RequestFrame.decode(body: body)
        } catch {
            return violation(error, header: RequestFrame.peekHeader(body: body))
        }
        let kind = frame.request.kind

        guard frame.sequence == expectedSequence else {
            return close(
                kind,
                frame.sequence,
                .sequenceError,
                detail: [
                    .init("request", kind.description), .init("sequence", "\(frame.sequence)"),
                    .init("expected", "\(expectedSequence)"),
                ]
            )
        }
        expectedSequence &+= 1

        // A stranger is denied whatever it sends first, hello or not.
        if peer == .stranger {
            return close(
                kind,
                frame.sequence,
                .denied,
                detail: [.init("request", kind.description), .init("phase", phase.description)]
            )
        }

        if case .awaitingHello = state, kind != .hello {
            return close(kind, frame.sequence, .helloRequired, detail: [.init("request", kind.description)])
        }

        let verdict = PermissionTable.evaluate(
            kind,
            peer: peer,
            phase: phase,
            usedThisConnection: usedThisConnection.contains(kind),
            usedThisBoot: usedThisBoot.contains(kind)
        )
        switch verdict {
        case .allowed:
            break
        case .denied, .alreadyUsed:
            return close(
                kind,
                frame.sequence,
                verdict.status,
                detail: [.init("request", kind.description), .init("phase", phase.description)]
            )
        case .wrongPhase:
            let audit = SessionAudit(
                event: .request(kind),
                granted: false,
                status: .wrongPhase,
                detail: [.init("phase", phase.description)]
            )
            return .reply(
                bytes: AnswerFrame.encodeStatus(answering: kind, sequence: frame.sequence, status: .wrongPhase),
                close: false,
                audit: audit
            )
        }
        // trustd never names a path: its disk requests act on the configured state disk (DiskTarget).
        if let device = DiskTarget.namedDevice(in: frame.request), !DiskTarget.mayName(device, peer: peer) {
            return close(
                kind,
                frame.sequence,
                .denied,
                detail: [
                    .init("request", kind.description), .init("device", device),
                    .init("reason", "trustd may not name a device path"),
                ]
            )
        }
        usedThisConnection.insert(kind)

        if case .hello(let minVersion, let maxVersion) = frame.request {
            return negotiate(frame.sequence, minVersion...maxVersion, phase: phase)
        }
        return .dispatch(frame)
    }

    /// Decides a length prefix that was out of range (no body was read).
    public mutating func frameLengthViolation(_ error: ProtocolError) -> SessionVerdict {
        precondition(state != .closed, "violation fed to a closed session")
        return violation(error, header: nil)
    }

    /// Decides a connection whose clock expired: the connection error answer `timeout`, then close.
    /// A frame not completed or a hello not received in time is an audited violation; an idle close is
    /// routine and not audited.
    public mutating func expired(_ expiry: ConnectionExpiry) -> SessionVerdict {
        precondition(state != .closed, "expiry fed to a closed session")
        state = .closed
        let audit: SessionAudit? =
            switch expiry {
            case .frameIncomplete, .helloMissing:
                SessionAudit(
                    event: .protocolViolation,
                    granted: false,
                    status: .timeout,
                    detail: [.init("reason", expiry.description)]
                )
            case .idle: nil
            }
        return .reply(bytes: AnswerFrame.encodeConnectionError(.timeout), close: true, audit: audit)
    }

    /// Decides that keyd refuses the connection for lack of room: `busy` before anything is read.
    public mutating func refuseBusy() -> SessionVerdict {
        precondition(state != .closed, "busy fed to a closed session")
        state = .closed
        return .reply(bytes: AnswerFrame.encodeConnectionError(.busy), close: true, audit: nil)
    }

    private mutating func negotiate(_ sequence: UInt32, _ offered: ClosedRange<UInt16>, phase: Phase) -> SessionVerdict
    {
        guard let version = offered.clamped(to: Limits.supportedVersions).last,
            offered.overlaps(Limits.supportedVersions)
        else {
            return close(
                .hello,
                sequence,
                .versionUnsupported,
                detail: [.init("offered", "\(offered.lowerBound)...\(offered.upperBound)")]
            )
        }
        state = .established(version: version)
        let answer = HelloAnswer(version: version, peerClass: peer, phase: phase)
        return .reply(
            bytes: AnswerFrame.encode(answering: .hello, sequence: sequence, status: .ok, answer.write),
            close: false,
            audit: nil
        )
    }

    private mutating func close(
        _ kind: RequestKind,
        _ sequence: UInt32,
        _ status: StatusCode,
        detail: [SessionAudit.Pair]
    ) -> SessionVerdict {
        state = .closed
        let event: AuditEvent = status == .denied || status == .alreadyUsed ? .request(kind) : .protocolViolation
        var fullDetail = detail
        if event == .protocolViolation { fullDetail.insert(.init("reason", status.description), at: 0) }
        return .reply(
            bytes: AnswerFrame.encodeStatus(answering: kind, sequence: sequence, status: status),
            close: true,
            audit: SessionAudit(event: event, granted: false, status: status, detail: fullDetail)
        )
    }

    private mutating func violation(_ error: ProtocolError, header: (kind: UInt16, sequence: UInt32)?) -> SessionVerdict
    {
        state = .closed
        let audit = SessionAudit(
            event: .protocolViolation,
            granted: false,
            status: error.status,
            detail: [.init("reason", error.status.description), .init("error", error.detail)]
        )
        // Answer the request by kind and sequence when both are known and the kind exists.
        if let header, let kind = RequestKind(rawValue: header.kind), error.status != .frameLength {
            return .reply(
                bytes: AnswerFrame.encodeStatus(answering: kind, sequence: header.sequence, status: error.status),
                close: true,
                audit: audit
            )
        }
        return .reply(bytes: AnswerFrame.encodeConnectionError(error.status), close: true, audit: audit)
    }
}
