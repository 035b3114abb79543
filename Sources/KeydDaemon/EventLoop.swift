import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// One accepted connection: its fixed identity, session state machine, decoder and outbox.
///
/// A class, so the loop mutates it in place instead of copying its buffers out of the table.
final class Connection {
    let fd: FileDescriptor
    let identity: ConnectionIdentity
    var session: SessionStateMachine
    var decoder: FrameDecoder
    /// Answer bytes not yet written.
    var outbox: [UInt8] = []
    /// Close once the outbox is flushed.
    var closeAfterFlush = false
    /// When the current partial frame started (monotonic ns), for the frame timeout.
    var partialSince: UInt64?

    init(fd: FileDescriptor, identity: ConnectionIdentity, session: SessionStateMachine, decoder: FrameDecoder) {
        self.fd = fd
        self.identity = identity
        self.session = session
        self.decoder = decoder
    }
}

/// The single-threaded poll loop: accepts, reads frames, asks the session for a verdict,
/// performs dispatched requests through `KeydService`, writes answers, enforces timeouts.
final class EventLoop {
    private let listeners: [(listener: UnixListener, role: ListenerRole)]
    private let signals: SignalFD
    private let service: KeydService
    private let classifier: PeerClassifier
    private let maxConnections: Int
    private let frameTimeoutNanoseconds: UInt64
    private var connections: [Int32: Connection] = [:]
    private var pollSet: [pollfd] = []
    /// One read buffer for all connections; wiped after every read (it may hold secrets).
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: EventLoop.scratchSize, alignment: 16)
    /// Bytes read per call.
    static let scratchSize = 16_384
    /// Frames one read can complete at most (every frame is at least 10 bytes), so a peer that
    /// pipelines never overflows the decoder's queue: frames are processed after every read.
    static let maxQueuedFrames = scratchSize / (Limits.lengthPrefixSize + Limits.minRequestBody) + 1
    private var running = true

    init(
        listeners: [(listener: UnixListener, role: ListenerRole)],
        signals: SignalFD,
        service: KeydService,
        classifier: PeerClassifier,
        maxConnections: Int,
        frameTimeoutMilliseconds: Int
    ) {
        self.listeners = listeners
        self.signals = signals
        self.service = service
        self.classifier = classifier
        self.maxConnections = maxConnections
        self.frameTimeoutNanoseconds = UInt64(frameTimeoutMilliseconds) * 1_000_000
        scratch.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        SecureMemory.wipe(scratch)
        scratch.deallocate()
    }

    /// Serves until SIGTERM or SIGINT.
    func run() {
        while running {
            buildPollSet()
            let timeout = nextTimeoutMilliseconds()
            do {
                _ = try Poller.wait(&pollSet, timeoutMilliseconds: timeout)
            } catch {
                Log.error("Poll failed", ["error": "\(error)"])
                continue
            }
            handleEvents()
            expireSlowFrames()
            service.writeDueAuditRecords()
        }
        for fd in Array(connections.keys) { closeConnection(fd) }
    }

    private func buildPollSet() {
        pollSet.removeAll(keepingCapacity: true)
        pollSet.append(pollfd(fd: signals.fd.rawValue, events: Poller.readable, revents: 0))
        for (listener, _) in listeners {
            pollSet.append(pollfd(fd: listener.fd.rawValue, events: Poller.readable, revents: 0))
        }
        for (fd, connection) in connections {
            // Backpressure: read no more requests while answers wait to be written.
            let events = connection.outbox.isEmpty ? Poller.readable : Poller.writable
            pollSet.append(pollfd(fd: fd, events: events, revents: 0))
        }
    }

    private func nextTimeoutMilliseconds() -> Int32 {
        let now = MonotonicClock.nowNanoseconds()
        // The audit coalescer's next summary or repeat record is a deadline like any other.
        var earliest: UInt64? = service.auditDeadline
        for connection in connections.values {
            if let since = connection.partialSince {
                let deadline = since + frameTimeoutNanoseconds
                earliest = min(earliest ?? deadline, deadline)
            }
        }
        guard let earliest else { return -1 }
        if earliest <= now { return 0 }
        return Int32(clamping: (earliest - now) / 1_000_000 + 1)
    }

    private func handleEvents() {
        for index in pollSet.indices {
            let entry = pollSet[index]
            guard entry.revents != 0 else { continue }
            if index == 0 {
                handleSignal()
            } else if index <= listeners.count {
                acceptAll(listeners[index - 1])
            } else {
                handleConnection(entry.fd, revents: entry.revents)
            }
        }
    }

    private func handleSignal() {
        while let signal = try? signals.readSignal() {
            Log.notice("Received signal, shutting down", ["signal": "\(signal)"])
            running = false
        }
    }

    private func acceptAll(_ entry: (listener: UnixListener, role: ListenerRole)) {
        while true {
            let accepted: FileDescriptor?
            do {
                accepted = try entry.listener.accept()
            } catch {
                // EMFILE and friends: keep serving the connections we have.
                Log.warning("Accept failed", ["listener": entry.role.rawValue, "error": "\(error)"])
                return
            }
            guard let fd = accepted else { return }
            let credentials: PeerCredentials
            do {
                credentials = try PeerCredentials.read(from: fd)
            } catch {
                Log.warning("Peer credentials unreadable; closing", ["error": "\(error)"])
                try? fd.close()
                continue
            }
            // SO_PEERCRED is read once, here, and mapped to a class; nothing else looks at uids.
            let peerClass = classifier.classify(listener: entry.role, uid: credentials.uid, gid: credentials.gid)
            let identity = ConnectionIdentity(peerClass: peerClass, credentials: credentials)
            let connection = Connection(
                fd: fd,
                identity: identity,
                session: SessionStateMachine(peer: peerClass),
                decoder: FrameDecoder(.requests, maxQueuedFrames: Self.maxQueuedFrames, wipe: SecureMemory.wipe)
            )
            if connections.count >= maxConnections {
                if case .reply(let bytes, _, _) = connection.session.refuseBusy() {
                    _ = try? fd.write(bytes)
                }
                try? fd.close()
                Log.warning(
                    "Connection refused: limit reached",
                    ["connections.max": "\(maxConnections)", "peer.uid": "\(credentials.uid)"]
                )
                continue
            }
            connections[fd.rawValue] = connection
            service.connectionCount = connections.count
        }
    }

    private func handleConnection(_ raw: Int32, revents: Int16) {
        guard let connection = connections[raw] else { return }
        if revents & (Poller.error | Poller.invalid) != 0 {
            closeConnection(raw)
            return
        }
        if revents & Poller.writable != 0 || !connection.outbox.isEmpty {
            guard flush(connection) else {
                closeConnection(raw)
                return
            }
        }
        if revents & (Poller.readable | Poller.hangup) != 0, connection.outbox.isEmpty, !connection.closeAfterFlush {
            readFrames(connection)
        }
        if connection.closeAfterFlush && connection.outbox.isEmpty { closeConnection(raw) }
    }

    /// Reads what the socket holds (up to the scratch size), decodes every frame in it, and
    /// returns to poll after a short read, when the socket is most likely drained.
    private func readFrames(_ connection: Connection) {
        while !connection.closeAfterFlush && connection.outbox.isEmpty {
            let target = scratch
            let result: FileDescriptor.ReadResult
            do {
                result = try connection.fd.read(into: target)
            } catch {
                connection.closeAfterFlush = true
                return
            }
            switch result {
            case .wouldBlock:
                return
            case .eof:
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
                return
            case .bytes(let count):
                let received = UnsafeRawBufferPointer(rebasing: scratch[0..<count])
                if connection.partialSince == nil {
                    connection.partialSince = MonotonicClock.nowNanoseconds()
                }
                do {
                    try connection.decoder.append(received)
                } catch {
                    SecureMemory.wipe(UnsafeMutableRawBufferPointer(rebasing: scratch[0..<count]))
                    // Frames completed before the bad length prefix are answered first, so the
                    // outcome does not depend on how the bytes were split across reads.
                    processReadyFrames(connection)
                    if !connection.session.isClosed {
                        apply(connection.session.frameLengthViolation(error), to: connection, body: nil)
                    }
                    return
                }
                SecureMemory.wipe(UnsafeMutableRawBufferPointer(rebasing: scratch[0..<count]))
                processReadyFrames(connection)
                // Answers were queued: write them now rather than waiting for another poll round.
                if !connection.outbox.isEmpty && !flush(connection) {
                    connection.closeAfterFlush = true
                    connection.outbox.removeAll()
                    return
                }
                if count < target.count { return }
            }
        }
    }

    private func processReadyFrames(_ connection: Connection) {
        if !connection.decoder.hasPartialFrame { connection.partialSince = nil }
        while connection.decoder.readyCount > 0, !connection.session.isClosed {
            let phase = service.phase
            let used = service.usedThisBoot
            // nextFrame hands over the only reference to the body, so wiping it reaches the storage.
            guard var frame = connection.decoder.nextFrame() else { break }
            frame.withUnsafeBytes { body in
                let verdict = connection.session.receive(body: body, phase: phase, usedThisBoot: used)
                apply(verdict, to: connection, body: body)
            }
            SecureMemory.wipe(&frame)
        }
    }

    private func apply(_ verdict: SessionVerdict, to connection: Connection, body: UnsafeRawBufferPointer?) {
        switch verdict {
        case .dispatch(let frame):
            guard let body else { preconditionFailure("dispatch without a frame body") }
            connection.outbox += service.perform(frame, body: body, identity: connection.identity)
        case .reply(let bytes, let close, let audit):
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
            connection.outbox += bytes
            if close {
                connection.closeAfterFlush = true
                connection.decoder.wipeAll()
            }
        }
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
            case .bytes(let count): connection.outbox.removeFirst(count)
            }
        }
        return true
    }

    private func expireSlowFrames() {
        let now = MonotonicClock.nowNanoseconds()
        for (raw, connection) in connections {
            guard let since = connection.partialSince, now >= since + frameTimeoutNanoseconds,
                !connection.session.isClosed
            else { continue }
            apply(connection.session.timedOut(), to: connection, body: nil)
            connection.partialSince = nil
            _ = flush(connection)
            closeConnection(raw)
        }
    }

    private func closeConnection(_ raw: Int32) {
        guard let connection = connections.removeValue(forKey: raw) else { return }
        connection.decoder.wipeAll()
        try? connection.fd.close()
        service.connectionCount = connections.count
    }
}
