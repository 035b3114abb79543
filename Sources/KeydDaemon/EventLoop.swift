import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// One accepted connection: its fixed identity, session state machine, decoder, clocks and outbox.
///
/// A class, so the loop mutates it in place instead of copying its buffers out of the table.
final class Connection {
    /// Why keyd reads no more of a peer; acted on once the requests decoded before it are answered.
    enum EndOfInput {
        /// The peer hung up (EOF).
        case hangUp
        /// A length prefix out of range.
        case badLength(ProtocolError)
    }

    let fd: FileDescriptor
    let identity: ConnectionIdentity
    /// The socket it arrived on, which decides its budget and its place in a turn.
    let role: ListenerRole
    var session: SessionStateMachine
    var decoder: FrameDecoder
    var timers: ConnectionTimers
    /// This connection's `evidence.issue` budget (used for trustd only).
    var evidenceBucket: TokenBucket
    /// Answer bytes not yet written.
    var outbox: [UInt8] = []
    /// Answers waiting for the audit group their records belong to, in order; moved to the outbox
    /// once the group is durable (PROTOCOL.md, "Audit log": group commit).
    var held: [HeldAnswer] = []
    /// Bytes in `held`.
    var heldBytes = 0
    var endOfInput: EndOfInput?
    /// Close once the outbox is flushed.
    var closeAfterFlush = false
    /// Closed and waiting to be dropped from the loop's lists.
    var closed = false

    init(
        fd: FileDescriptor,
        identity: ConnectionIdentity,
        role: ListenerRole,
        timers: ConnectionTimers,
        evidenceBucket: TokenBucket
    ) {
        self.fd = fd
        self.identity = identity
        self.role = role
        self.session = SessionStateMachine(peer: identity.peerClass)
        self.decoder = FrameDecoder(.requests, maxQueuedFrames: ServingLimits.maxDecodedAhead, wipe: SecureMemory.wipe)
        self.timers = timers
        self.evidenceBucket = evidenceBucket
    }

    /// keyd reads a peer only while nothing of it waits: no unsent answer, no decoded request, room
    /// among the answers held for the audit commit (backpressure).
    var wantsRead: Bool {
        !closed && !closeAfterFlush && endOfInput == nil && outbox.isEmpty && decoder.readyCount == 0 && mayHoldMore
    }

    /// A request (or the end of input) waits and the previous answer is written or held: the peer may
    /// have its turn.
    var hasWork: Bool {
        !closed && !closeAfterFlush && outbox.isEmpty && mayHoldMore && (decoder.readyCount > 0 || endOfInput != nil)
    }

    /// Whether another answer may wait for the audit commit.
    var mayHoldMore: Bool { held.count < ServingLimits.heldAnswers && heldBytes < ServingLimits.heldAnswerBytes }

    /// Nothing of this connection's is left to send.
    var drained: Bool { outbox.isEmpty && held.isEmpty }
}

/// An answer waiting for an audit group.
struct HeldAnswer {
    /// The group it waits for; nil when it waits only for the answers before it (order).
    let group: UInt64?
    /// The answer.
    let bytes: [UInt8]
    /// What is sent instead when its group cannot be made durable (`auditFailure`), or nil to send it anyway.
    let onAuditFailure: [UInt8]?
}

/// A count of routine events (busy refusals, idle closes) logged at most once a second, so that a
/// flood of them cannot flood the journal; they are not audited.
struct ThrottledCount {
    /// Events since the last log line.
    private(set) var pending = 0
    /// Events since keyd started.
    private(set) var total: UInt64 = 0
    private var lastLog: UInt64?

    /// Counts one event; returns true when a log line is due (and starts a new second).
    mutating func count(at now: UInt64) -> Bool {
        pending += 1
        total += 1
        guard lastLog.map({ now - $0 >= 1_000_000_000 }) ?? true else { return false }
        lastLog = now
        return true
    }

    /// Marks the pending events as logged.
    mutating func logged() { pending = 0 }
}

/// The single-threaded poll loop (PROTOCOL.md, "Connections"): accepts within each socket's budget,
/// reads, and serves in turns: every admin connection first, then trustd's connections round-robin,
/// one request each per turn, until the turn's time is spent; then it enforces the deadlines.
final class EventLoop {
    private let listeners: [(listener: UnixListener, role: ListenerRole)]
    private let signals: SignalFD
    private let service: KeydService
    private let classifier: PeerClassifier
    private var budget: ConnectionBudget
    private let timerLimits: ConnectionTimers.Limits
    private var limiter: TPMWorkLimiter
    /// Admin-socket connections, served first in every turn.
    private var adminConnections: [Connection] = []
    /// trustd-socket connections, served round-robin from `trustdCursor`.
    private var trustdConnections: [Connection] = []
    private var trustdCursor = 0
    private var closedSinceReap = false
    private var pollSet: [pollfd] = []
    /// The admin listener and admin connections, polled without waiting between trustd's requests.
    private var adminPollSet: [pollfd] = []
    /// The connection behind each poll entry after the signal and listener entries.
    private var polled: [Connection] = []
    /// Whether some connection has work, so that the next poll must not wait.
    private var pendingWork = false
    private var earliestDeadline: UInt64?
    private var busyRefusals = ThrottledCount()
    /// When the staged audit records began to wait (monotonic ns), for the commit window.
    private var stagedSince: UInt64?
    /// The audit group whose answers were last released.
    private var releasedGroup: UInt64 = 0
    private var idleCloses = ThrottledCount()
    /// One read buffer for all connections; wiped after every read (it may hold secrets).
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: EventLoop.scratchSize, alignment: 16)
    private var running = true

    /// Most bytes one read takes (a large frame body is read in pieces of this size).
    static let scratchSize = 16_384
    /// trustd work per turn before keyd looks at the admin socket again (one request may overrun it).
    static let turnNanoseconds = UInt64(ServingLimits.turnMilliseconds) * 1_000_000
    /// Connections accepted per socket per turn.
    static let acceptsPerTurn = 64
    /// Longest a staged audit record waits for others to share its commit.
    static let commitWindowNanoseconds = UInt64(ServingLimits.auditCommitWindowMilliseconds) * 1_000_000

    init(
        listeners: [(listener: UnixListener, role: ListenerRole)],
        signals: SignalFD,
        service: KeydService,
        classifier: PeerClassifier,
        configuration: KeydConfiguration
    ) {
        // The admin socket is accepted from first in every turn.
        self.listeners = listeners.sorted { $0.role == .admin && $1.role != .admin }
        self.signals = signals
        self.service = service
        self.classifier = classifier
        self.budget = configuration.connectionBudget
        self.timerLimits = configuration.connectionTimerLimits
        self.limiter = configuration.tpmWorkLimiter
        scratch.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        SecureMemory.wipe(scratch)
        scratch.deallocate()
    }

    /// Serves until SIGTERM or SIGINT.
    func run() {
        while running {
            let now = MonotonicClock.nowNanoseconds()
            buildPollSet(now: now)
            let ready: Int
            do {
                ready = try Poller.wait(&pollSet, timeoutMilliseconds: pollTimeout(now: now))
            } catch {
                Log.error("Poll failed", ["error": "\(error)"])
                continue
            }
            let hadWork = pendingWork
            let turn = MonotonicClock.nowNanoseconds()
            handleSignals()
            acceptConnections()
            transfer()
            serveTurn(started: turn)
            expireDeadlines(turnStarted: turn)
            service.writeDueAuditRecords()
            commitAuditIfDue(idle: ready == 0 && !hadWork)
            releaseHeldAnswers()
            reapClosed()
        }
        service.commitAudit()
        releaseHeldAnswers()
        for connection in adminConnections + trustdConnections {
            _ = flush(connection)
            close(connection)
        }
    }

    /// Commits the staged audit records when nothing more is arriving right now (`idle`), when the
    /// first of them has waited the commit window, or when the group is full: records that arrive
    /// together share one fsync and one TPM count.
    private func commitAuditIfDue(idle: Bool) {
        let staged = service.stagedAuditRecords
        guard staged > 0 else {
            stagedSince = nil
            return
        }
        let now = MonotonicClock.nowNanoseconds()
        let since = stagedSince ?? now
        stagedSince = since
        guard idle || staged >= ServingLimits.auditGroupRecords || now - since >= Self.commitWindowNanoseconds else {
            return
        }
        service.commitAudit()
        stagedSince = nil
    }

    /// Moves the held answers whose audit group is decided to the outbox (an `auditFailure` answer for
    /// a group that failed) and writes them.
    private func releaseHeldAnswers() {
        let open = service.openAuditGroup
        guard open != releasedGroup else { return }
        releasedGroup = open
        for connection in adminConnections + trustdConnections where !connection.closed && !connection.held.isEmpty {
            var released = 0
            for answer in connection.held {
                if let group = answer.group {
                    guard group < open else { break }
                    let failed = service.auditGroupFailed(group)
                    connection.outbox += failed ? (answer.onAuditFailure ?? answer.bytes) : answer.bytes
                } else {
                    connection.outbox += answer.bytes
                }
                connection.heldBytes -= answer.bytes.count
                released += 1
            }
            connection.held.removeFirst(released)
            if !flush(connection) {
                close(connection)
            } else if connection.closeAfterFlush && connection.drained {
                close(connection)
            }
        }
        service.forgetFailedAuditGroups()
    }

    /// Sends `bytes` (the answer to a request, or a session reply) or holds it for the audit group it
    /// staged a record in (`group` and staged count read before the answer was made), or behind
    /// answers already held.
    private func deliver(
        _ bytes: [UInt8],
        to connection: Connection,
        stagedBefore: (group: UInt64, count: Int),
        onAuditFailure: [UInt8]?
    ) {
        let group = service.openAuditGroup
        let count = service.stagedAuditRecords
        let staged = count > 0 && (group != stagedBefore.group || count > stagedBefore.count)
        guard staged || !connection.held.isEmpty else {
            connection.outbox += bytes
            return
        }
        connection.held.append(HeldAnswer(group: staged ? group : nil, bytes: bytes, onAuditFailure: onAuditFailure))
        connection.heldBytes += bytes.count
    }

    /// The audit group and staged count now, to tell whether an answer staged a record.
    private var auditMark: (group: UInt64, count: Int) { (service.openAuditGroup, service.stagedAuditRecords) }

    private func buildPollSet(now: UInt64) {
        pollSet.removeAll(keepingCapacity: true)
        polled.removeAll(keepingCapacity: true)
        pendingWork = false
        // The audit coalescer's next summary or repeat record is a deadline like a connection's.
        earliestDeadline = service.auditDeadline
        pollSet.append(pollfd(fd: signals.fd.rawValue, events: Poller.readable, revents: 0))
        for (listener, _) in listeners {
            pollSet.append(pollfd(fd: listener.fd.rawValue, events: Poller.readable, revents: 0))
        }
        for connection in adminConnections + trustdConnections where !connection.closed {
            let reading = connection.wantsRead
            connection.timers.observe(reading: reading, partialFrame: connection.decoder.hasPartialFrame, at: now)
            var events: Int16 = reading ? Poller.readable : 0
            if !connection.outbox.isEmpty { events |= Poller.writable }
            pollSet.append(pollfd(fd: connection.fd.rawValue, events: events, revents: 0))
            polled.append(connection)
            if connection.hasWork { pendingWork = true }
            let deadline = connection.timers.deadline
            earliestDeadline = min(earliestDeadline ?? deadline, deadline)
        }
    }

    private func pollTimeout(now: UInt64) -> Int32 {
        // Staged audit records: look once more for requests that arrive together, then commit.
        if pendingWork || service.stagedAuditRecords > 0 { return 0 }
        guard let earliestDeadline else { return -1 }
        if earliestDeadline <= now { return 0 }
        return Int32(clamping: (earliestDeadline - now) / 1_000_000 + 1)
    }

    private func handleSignals() {
        guard pollSet[0].revents != 0 else { return }
        while let signal = try? signals.readSignal() {
            Log.notice("Received signal, shutting down", ["signal": "\(signal)"])
            running = false
        }
    }

    private func acceptConnections() {
        for (index, entry) in listeners.enumerated() where pollSet[1 + index].revents != 0 {
            for _ in 0..<Self.acceptsPerTurn {
                guard accept(entry) else { break }
            }
        }
    }

    /// Accepts one connection from `entry`; false when none waits (or accept failed).
    private func accept(_ entry: (listener: UnixListener, role: ListenerRole)) -> Bool {
        let accepted: FileDescriptor?
        do {
            accepted = try entry.listener.accept()
        } catch {
            // EMFILE and friends: keep serving the connections we have.
            Log.warning("Accept failed", ["listener": entry.role.rawValue, "error": "\(error)"])
            return false
        }
        guard let fd = accepted else { return false }
        let credentials: PeerCredentials
        do {
            credentials = try PeerCredentials.read(from: fd)
        } catch {
            Log.warning("Peer credentials unreadable; closing", ["error": "\(error)"])
            try? fd.close()
            return true
        }
        // SO_PEERCRED is read once, here, and mapped to a class; nothing else looks at uids.
        let peerClass = classifier.classify(listener: entry.role, uid: credentials.uid, gid: credentials.gid)
        let now = MonotonicClock.nowNanoseconds()
        guard budget.admit(entry.role, uid: credentials.uid) else {
            // `busy` before anything is read; a full budget is a state, not a decision: counted, not audited.
            var session = SessionStateMachine(peer: peerClass)
            if case .reply(let bytes, _, _) = session.refuseBusy() { _ = try? fd.write(bytes) }
            try? fd.close()
            if busyRefusals.count(at: now) {
                Log.warning(
                    "Connections refused busy: budget full",
                    [
                        "listener": entry.role.rawValue, "refused": "\(busyRefusals.pending)",
                        "refused.total": "\(busyRefusals.total)", "peer.uid": "\(credentials.uid)",
                        "connections.open": "\(budget.openCount(entry.role))",
                    ]
                )
                busyRefusals.logged()
            }
            return true
        }
        let connection = Connection(
            fd: fd,
            identity: ConnectionIdentity(peerClass: peerClass, credentials: credentials),
            role: entry.role,
            timers: ConnectionTimers(limits: timerLimits, acceptedAt: now),
            evidenceBucket: limiter.connectionBucket(at: now)
        )
        switch entry.role {
        case .admin: adminConnections.append(connection)
        case .trustd: trustdConnections.append(connection)
        }
        service.connectionCount += 1
        return true
    }

    /// Writes pending answers and reads (one read each) from the connections poll found ready.
    private func transfer() {
        let first = 1 + listeners.count
        for (offset, connection) in polled.enumerated() {
            let revents = pollSet[first + offset].revents
            guard revents != 0, !connection.closed else { continue }
            if revents & (Poller.error | Poller.invalid) != 0 {
                close(connection)
                continue
            }
            if !connection.outbox.isEmpty, !flush(connection) {
                close(connection)
                continue
            }
            if revents & (Poller.readable | Poller.hangup) != 0, connection.wantsRead { read(connection) }
            if connection.closeAfterFlush && connection.drained { close(connection) }
        }
    }

    /// One read of at most the rest of the current frame plus `ServingLimits.readAhead` bytes.
    private func read(_ connection: Connection) {
        let size = min(Self.scratchSize, max(connection.decoder.bytesWanted, ServingLimits.readAhead))
        let target = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<size])
        let result: FileDescriptor.ReadResult
        do {
            result = try connection.fd.read(into: target)
        } catch {
            close(connection)
            return
        }
        switch result {
        case .wouldBlock:
            return
        case .eof:
            connection.endOfInput = .hangUp
        case .bytes(let count):
            let received = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<count])
            let queued = connection.decoder.readyCount
            do {
                try connection.decoder.append(UnsafeRawBufferPointer(received))
            } catch {
                // Frames completed before the bad length prefix are answered first, so the outcome
                // does not depend on how the bytes were split across reads.
                connection.endOfInput = .badLength(error)
            }
            SecureMemory.wipe(received)
            if connection.decoder.readyCount > queued {
                connection.timers.requestReceived(at: MonotonicClock.nowNanoseconds())
            }
        }
    }

    /// Serves one request (or the end of input) of every admin connection, then of trustd's
    /// connections round-robin until the turn's time is spent or the admin socket has something
    /// waiting; the next turn starts with the admin socket and goes on with trustd from there.
    private func serveTurn(started: UInt64) {
        for connection in adminConnections where connection.hasWork { serveOne(connection) }
        let count = trustdConnections.count
        guard count > 0 else { return }
        var index = trustdCursor % count
        for _ in 0..<count {
            let connection = trustdConnections[index]
            index = (index + 1) % count
            guard connection.hasWork else { continue }
            serveOne(connection)
            if MonotonicClock.nowNanoseconds() - started >= Self.turnNanoseconds || adminIsWaiting() { break }
        }
        trustdCursor = index
    }

    /// Whether a connection waits on the admin socket or an admin connection has bytes to read: one
    /// poll(2) over the admin descriptors that does not wait, between two of trustd's requests.
    private func adminIsWaiting() -> Bool {
        adminPollSet.removeAll(keepingCapacity: true)
        for (listener, role) in listeners where role == .admin {
            adminPollSet.append(pollfd(fd: listener.fd.rawValue, events: Poller.readable, revents: 0))
        }
        for connection in adminConnections where connection.wantsRead {
            adminPollSet.append(pollfd(fd: connection.fd.rawValue, events: Poller.readable, revents: 0))
        }
        return ((try? Poller.wait(&adminPollSet, timeoutMilliseconds: 0)) ?? 0) > 0
    }

    private func serveOne(_ connection: Connection) {
        if var frame = connection.decoder.nextFrame() {
            // nextFrame hands over the only reference to the body, so wiping it reaches the storage.
            connection.timers.progressed(at: MonotonicClock.nowNanoseconds())
            frame.withUnsafeBytes { body in
                let verdict = connection.session.receive(
                    body: body,
                    phase: service.phase,
                    usedThisBoot: service.usedThisBoot
                )
                apply(verdict, to: connection, body: body)
            }
            SecureMemory.wipe(&frame)
        } else if let end = connection.endOfInput {
            switch end {
            case .hangUp:
                if connection.decoder.hasPartialFrame {
                    service.audit(
                        SessionAudit(
                            event: .protocolViolation,
                            granted: false,
                            status: .malformed,
                            detail: [.init("reason", "peer disconnected mid-frame")]
                        ),
                        identity: connection.identity
                    )
                }
                connection.closeAfterFlush = true
            case .badLength(let error):
                apply(connection.session.frameLengthViolation(error), to: connection, body: nil)
            }
        }
        // Write the answer now rather than waiting for another poll round.
        if !connection.outbox.isEmpty, !flush(connection) {
            close(connection)
        } else if connection.closeAfterFlush && connection.drained {
            close(connection)
        }
    }

    private func apply(_ verdict: SessionVerdict, to connection: Connection, body: UnsafeRawBufferPointer?) {
        switch verdict {
        case .dispatch(let frame):
            guard let body else { preconditionFailure("dispatch without a frame body") }
            if TPMWorkLimiter.limits(frame.request.kind, from: connection.identity.peerClass),
                !limiter.admit(
                    uid: connection.identity.credentials.uid,
                    connection: &connection.evidenceBucket,
                    at: MonotonicClock.nowNanoseconds()
                )
            {
                let mark = auditMark
                let refusal = refuseRateLimited(frame, identity: connection.identity)
                deliver(refusal, to: connection, stagedBefore: mark, onAuditFailure: nil)
            } else {
                let mark = auditMark
                let answer = service.perform(frame, body: body, identity: connection.identity)
                let failure = AnswerFrame.encodeStatus(
                    answering: frame.request.kind,
                    sequence: frame.sequence,
                    status: .auditFailure
                )
                deliver(answer, to: connection, stagedBefore: mark, onAuditFailure: failure)
            }
        case .reply(let bytes, let close, let audit):
            let mark = auditMark
            if let audit {
                service.audit(audit, identity: connection.identity)
                if close {
                    Log.warning(
                        "Peer refused or broke the protocol; connection closed",
                        [
                            "peer.class": "\(connection.identity.peerClass)",
                            "peer.uid": "\(connection.identity.credentials.uid)",
                            "peer.pid": "\(connection.identity.credentials.pid)", "status": "\(audit.status)",
                        ]
                    )
                }
            }
            deliver(bytes, to: connection, stagedBefore: mark, onAuditFailure: nil)
            if close {
                connection.closeAfterFlush = true
                connection.decoder.wipeAll()
            }
        }
    }

    /// Answers TPM work over the peer's rate `rateLimited` (the connection stays open), audited as a refusal.
    private func refuseRateLimited(_ frame: RequestFrame, identity: ConnectionIdentity) -> [UInt8] {
        let kind = frame.request.kind
        service.audit(
            SessionAudit(
                event: .request(kind),
                granted: false,
                status: .rateLimited,
                detail: [
                    .init("perConnection", "\(limiter.perConnection.perSecond)/s burst \(limiter.perConnection.burst)"),
                    .init("perUID", "\(limiter.perUID.perSecond)/s burst \(limiter.perUID.burst)"),
                ]
            ),
            identity: identity
        )
        return AnswerFrame.encodeStatus(answering: kind, sequence: frame.sequence, status: .rateLimited)
    }

    /// Writes as much of the outbox as the socket takes; false when the peer is gone.
    private func flush(_ connection: Connection) -> Bool {
        while !connection.outbox.isEmpty {
            let result: FileDescriptor.WriteResult
            do {
                result = try connection.fd.write(connection.outbox)
            } catch {
                return false
            }
            switch result {
            case .wouldBlock: return true
            case .bytes(let count):
                connection.outbox.removeFirst(count)
                connection.timers.progressed(at: MonotonicClock.nowNanoseconds())
            }
        }
        // An evidence answer's storage is not kept for the connection's lifetime.
        if connection.outbox.capacity > Self.scratchSize { connection.outbox = [] }
        return true
    }

    /// Closes connections whose clock expired, within what is left of the turn (at least one each turn).
    /// Bytes that had arrived count: a connection is read once more before a frame or hello deadline.
    private func expireDeadlines(turnStarted: UInt64) {
        var handled = 0
        for connection in adminConnections + trustdConnections where !connection.closed {
            let now = MonotonicClock.nowNanoseconds()
            if handled > 0, now - turnStarted >= Self.turnNanoseconds { return }
            guard var expiry = connection.timers.expiry(at: now), !connection.closeAfterFlush else { continue }
            if expiry != .idle, connection.wantsRead {
                read(connection)
                // A hang-up or a bad length prefix that was waiting is answered by the next turn instead.
                guard !connection.closed, connection.endOfInput == nil, let still = connection.timers.expiry(at: now)
                else { continue }
                expiry = still
            }
            // A peer with a request waiting is not idle: keyd has not served it yet.
            if expiry == .idle, connection.hasWork { continue }
            handled += 1
            apply(connection.session.expired(expiry), to: connection, body: nil)
            if expiry == .idle, idleCloses.count(at: now) {
                Log.info(
                    "Idle connections closed",
                    ["closed": "\(idleCloses.pending)", "closed.total": "\(idleCloses.total)"]
                )
                idleCloses.logged()
            }
            if connection.held.isEmpty {
                _ = flush(connection)
                close(connection)
            } else {
                // The answer waits for its audit record's commit; the release closes the connection.
                connection.closeAfterFlush = true
            }
        }
    }

    private func close(_ connection: Connection) {
        guard !connection.closed else { return }
        connection.closed = true
        connection.decoder.wipeAll()
        connection.outbox.removeAll()
        connection.held.removeAll()
        connection.heldBytes = 0
        try? connection.fd.close()
        budget.release(connection.role, uid: connection.identity.credentials.uid)
        service.connectionCount -= 1
        closedSinceReap = true
    }

    /// Drops closed connections from the lists, keeping the round-robin position.
    private func reapClosed() {
        guard closedSinceReap else { return }
        closedSinceReap = false
        adminConnections.removeAll { $0.closed }
        let closedBeforeCursor = trustdConnections.prefix(trustdCursor).filter(\.closed).count
        trustdConnections.removeAll { $0.closed }
        trustdCursor -= closedBeforeCursor
    }
}
