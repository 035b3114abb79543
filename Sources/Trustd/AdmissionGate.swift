import GRPCCore
import NIOCore
import Prometheus
import Synchronization
import TrustdCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Admission control in front of an expensive call (a key release, a TPM quote): the caller's source
/// token bucket first, then a bounded number of calls in flight with a bounded FIFO queue behind them.
/// A refusal is a sanitized `RESOURCE_EXHAUSTED` carrying `retry-after-ms`. The decisions are TrustdCore's
/// ``AdmissionState`` and ``SourceBuckets``; this class holds them under a lock with the waiters.
public final class AdmissionGate: Sendable {
    /// The metadata key of the retry hint on a refusal, in whole milliseconds.
    public static let retryAfterKey = "retry-after-ms"
    /// The message of every refusal; no internal detail.
    public static let refusalMessage = "busy; retry later"

    /// The gate's name in metrics (`service` label).
    public let name: String

    /// A queued call: waiting for its continuation to be stored, parked on it, or decided before that.
    private enum Waiter {
        case pending
        case waiting(CheckedContinuation<Void, any Error>)
        case admitted
        case cancelled
    }

    private struct State {
        var admission: AdmissionState
        var sources: SourceBuckets
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
    }

    /// What `enter` decided under the lock.
    private enum Entry {
        case admitted
        case queued(UInt64)
        case refused(AdmissionRefusal)
    }

    private let state: Mutex<State>
    /// Monotonic nanoseconds for the source buckets.
    private let clock: @Sendable () -> UInt64
    private let rejections: [AdmissionRefusalReason: Counter]
    private let inFlight: Gauge
    private let queued: Gauge
    private let onLoadChange: (@Sendable (_ inFlight: Int, _ queued: Int) -> Void)?

    /// A gate with `limits`, per-source `sources` buckets read at `clock` (monotonic nanoseconds), and its
    /// metrics in `metrics` under `name`; `onLoadChange` sees every change of the calls in flight and
    /// queued (in order, under the lock).
    public init(
        name: String,
        limits: AdmissionLimits,
        sources: SourceBuckets,
        metrics: TrustdMetrics,
        clock: @escaping @Sendable () -> UInt64 = AdmissionGate.monotonicNanoseconds,
        onLoadChange: (@Sendable (_ inFlight: Int, _ queued: Int) -> Void)? = nil
    ) {
        self.name = name
        self.clock = clock
        self.onLoadChange = onLoadChange
        state = Mutex(State(admission: AdmissionState(limits: limits), sources: sources))
        var rejections: [AdmissionRefusalReason: Counter] = [:]
        for reason in AdmissionRefusalReason.allCases {
            rejections[reason] = metrics.admissionRejections(service: name, reason: reason)
        }
        self.rejections = rejections
        inFlight = metrics.admissionInFlight(service: name)
        queued = metrics.admissionQueued(service: name)
        inFlight.set(Int64(0))
        queued.set(Int64(0))
    }

    /// Calls running now and calls waiting now.
    public var load: (inFlight: Int, queued: Int) {
        state.withLock { ($0.admission.inFlight, $0.admission.queued) }
    }

    /// Runs `body` once admitted for `source` (an ``AdmissionSource`` key); waits in the queue when every
    /// slot is busy. Throws `RESOURCE_EXHAUSTED` with `retry-after-ms` when the source's bucket is empty
    /// or the queue is full, and `CancellationError` when the task is cancelled while queued (its place
    /// is given up at once).
    public func withAdmission<T: Sendable>(source: String, _ body: @Sendable () async throws -> T) async throws -> T {
        try await enter(source: source)
        let started = ContinuousClock.now
        defer { leave(serviceTime: ContinuousClock.now - started) }
        return try await body()
    }

    /// Waits for a slot, or throws the refusal.
    private func enter(source: String) async throws {
        try Task.checkCancellation()
        let entry = state.withLock { state -> Entry in
            if case .empty(let wait) = state.sources.take(source: source, at: clock()) {
                let hint = state.admission.limits.clampedRetryAfter(wait)
                return .refused(AdmissionRefusal(reason: .sourceRate, retryAfter: hint))
            }
            let id = state.nextID
            state.nextID &+= 1
            switch state.admission.arrive(id) {
            case .admitted:
                published(state.admission)
                return .admitted
            case .queued:
                state.waiters[id] = .pending
                published(state.admission)
                return .queued(id)
            case .refused(let retryAfter):
                return .refused(AdmissionRefusal(reason: .queueFull, retryAfter: retryAfter))
            }
        }
        switch entry {
        case .admitted:
            return
        case .refused(let refusal):
            rejections[refusal.reason]?.increment()
            throw Self.refusalError(retryAfterMilliseconds: refusal.retryAfterMilliseconds)
        case .queued(let id):
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let decided = state.withLock { state -> Result<Void, any Error>? in
                        switch state.waiters[id] {
                        case .pending:
                            state.waiters[id] = .waiting(continuation)
                            return nil
                        case .admitted:
                            state.waiters[id] = nil
                            return .success(())
                        case .cancelled:
                            state.waiters[id] = nil
                            return .failure(CancellationError())
                        case .waiting, nil:
                            preconditionFailure("admission waiter \(id) parked twice or unknown")
                        }
                    }
                    if let decided { continuation.resume(with: decided) }
                }
            } onCancel: {
                cancel(id)
            }
        }
    }

    /// Gives up waiter `id`'s place, unless it was admitted already (then it runs and leaves as usual).
    private func cancel(_ id: UInt64) {
        let parked = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard state.admission.cancel(id) else { return nil }
            published(state.admission)
            switch state.waiters.removeValue(forKey: id) {
            case .waiting(let continuation):
                return continuation
            case .pending:
                state.waiters[id] = .cancelled
                return nil
            case .admitted, .cancelled, nil:
                preconditionFailure("admission waiter \(id) was queued but not pending")
            }
        }
        parked?.resume(throwing: CancellationError())
    }

    /// Frees the slot of a call that took `serviceTime` and wakes the first waiter.
    private func leave(serviceTime: Duration) {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            let admitted = state.admission.finish(serviceTime: serviceTime)
            published(state.admission)
            guard let id = admitted else { return nil }
            switch state.waiters[id] {
            case .waiting(let continuation):
                state.waiters[id] = nil
                return continuation
            case .pending:
                state.waiters[id] = .admitted
                return nil
            case .admitted, .cancelled, nil:
                preconditionFailure("admission waiter \(id) admitted twice or after cancellation")
            }
        }
        next?.resume()
    }

    /// The origin of ``monotonicNanoseconds()``.
    private static let epoch = ContinuousClock.now

    /// Nanoseconds on the continuous clock since this process first asked.
    public static func monotonicNanoseconds() -> UInt64 {
        let origin = epoch  // read first: the lazy origin must not come after the instant
        let (seconds, attoseconds) = (ContinuousClock.now - origin).components
        return UInt64(max(seconds, 0)) * 1_000_000_000 + UInt64(max(attoseconds, 0) / 1_000_000_000)
    }

    /// Sets the gauges and tells the observer; called under the lock after every change.
    private func published(_ admission: AdmissionState) {
        inFlight.set(Int64(admission.inFlight))
        queued.set(Int64(admission.queued))
        onLoadChange?(admission.inFlight, admission.queued)
    }

    /// The sanitized gRPC status of a refusal: `RESOURCE_EXHAUSTED`, ``refusalMessage`` and the hint.
    public static func refusalError(retryAfterMilliseconds: Int) -> RPCError {
        var metadata = Metadata()
        metadata.addString(String(retryAfterMilliseconds), forKey: retryAfterKey)
        return RPCError(code: .resourceExhausted, message: refusalMessage, metadata: metadata)
    }

    /// The retry hint in milliseconds `error` carries (`RESOURCE_EXHAUSTED` with a `retry-after-ms` in
    /// 1...3,600,000), or nil; for clients that honour it.
    public static func retryAfterMilliseconds(of error: RPCError) -> Int? {
        guard error.code == .resourceExhausted else { return nil }
        var values = error.metadata[stringValues: retryAfterKey].makeIterator()
        guard let text = values.next(), let milliseconds = Int(text), (1...3_600_000).contains(milliseconds) else {
            return nil
        }
        return milliseconds
    }
}

/// The key a caller is rate-limited under: its IP address without the port. IPv4 addresses (and IPv4
/// mapped into IPv6) count alone; IPv6 addresses count by their /64, since one host is commonly handed a
/// whole /64. Anything else (Unix sockets, in-process transports) shares one key.
public enum AdmissionSource {
    /// The key of everything that is not an IP peer.
    public static let nonIP = "non-ip"

    /// The key of a gRPC peer description: `ipv4:198.51.100.7:5000`, `ipv6:[2001:db8::1]:5000`.
    public static func key(grpcPeer peer: String) -> String {
        if peer.hasPrefix("ipv4:"), let colon = peer.lastIndex(of: ":"),
            colon > peer.index(peer.startIndex, offsetBy: 4)
        {
            return key(ipAddress: String(peer[peer.index(peer.startIndex, offsetBy: 5)..<colon]))
        }
        if peer.hasPrefix("ipv6:["), let close = peer.lastIndex(of: "]") {
            let open = peer.index(peer.startIndex, offsetBy: 6)
            guard open <= close else { return nonIP }
            return key(ipAddress: String(peer[open..<close]))
        }
        return nonIP
    }

    /// The key of a NIO socket address.
    public static func key(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress else { return nonIP }
        return key(ipAddress: ip)
    }

    /// The key of an IP address in text form (a `%zone` suffix is ignored); ``nonIP`` when it is none.
    public static func key(ipAddress text: String) -> String {
        let address = String(text.prefix { $0 != "%" })
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 { return format(AF_INET, withUnsafeBytes(of: v4) { Array($0) }) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return nonIP }
        var bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
            return format(AF_INET, Array(bytes[12...]))
        }
        for index in 8..<16 { bytes[index] = 0 }
        return format(AF_INET6, bytes) + "/64"
    }

    /// `inet_ntop` of an address in network byte order (4 or 16 bytes).
    private static func format(_ family: Int32, _ address: [UInt8]) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let written = address.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }
        precondition(written != nil, "inet_ntop of a parsed address failed")
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// JoinService stands behind an admission gate.
extension AdmissionGate: RequestAdmission {}
