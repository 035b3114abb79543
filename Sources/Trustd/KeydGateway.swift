import KeydClient
import KeydProtocol
import NIOCore
import NIOPosix
import Synchronization

/// trustd's only way to keyd: a bounded pool of connections to keyd's trustd socket, used from a
/// thread pool (KeydConnection blocks), so async callers never block a cooperative thread. A connection
/// that failed is dropped, never reused; the next call opens a new one.
public final class KeydGateway: Sendable {
    /// keyd's trustd socket.
    public let socketPath: String
    /// Most connections kept open (and calls run at once); keyd's per-uid budget must be larger.
    public let maxConnections: Int
    /// Per-call socket timeout.
    public let timeoutMilliseconds: Int
    private let pool: NIOThreadPool
    private let idle = Mutex<[KeydConnectionBox]>([])
    private let slots: AsyncSemaphore
    /// Called with every round trip's duration in seconds (for the keyd latency histogram).
    private let observe: @Sendable (Double) -> Void

    public init(
        socketPath: String,
        maxConnections: Int = 16,
        timeoutMilliseconds: Int = 10_000,
        observe: @escaping @Sendable (Double) -> Void = { _ in }
    ) {
        self.socketPath = socketPath
        self.maxConnections = maxConnections
        self.timeoutMilliseconds = timeoutMilliseconds
        self.observe = observe
        pool = NIOThreadPool(numberOfThreads: maxConnections)
        pool.start()
        slots = AsyncSemaphore(maxConnections)
    }

    /// Stops the thread pool and closes the idle connections.
    public func shutdown() async {
        try? await pool.shutdownGracefully()
        for box in idle.withLock({ list in
            defer { list = [] }
            return list
        }) { box.connection.close() }
    }

    /// Runs `body` with a connection on the pool; a thrown error drops the connection. A pooled connection
    /// that fails without an answer (keyd restarted while it sat idle) is replaced by a fresh one once.
    public func call<T: Sendable>(_ body: @escaping @Sendable (KeydConnection) throws -> T) async throws -> T {
        try await slots.acquire()
        defer { slots.release() }
        let path = socketPath
        let timeout = timeoutMilliseconds
        let observe = self.observe
        return try await pool.runIfActive { [self] in
            var pooled = idle.withLock { $0.popLast() }
            while true {
                let reused = pooled != nil
                let box = try pooled ?? KeydConnectionBox(KeydConnection(path: path, timeoutMilliseconds: timeout))
                pooled = nil
                let started = ContinuousClock.now
                do {
                    let result = try body(box.connection)
                    observe((ContinuousClock.now - started).seconds)
                    idle.withLock { $0.append(box) }
                    return result
                } catch let error as KeydClientError
                    where error.refusal != nil && !(error.refusal?.closesConnection ?? true)
                {
                    // keyd answered with a status and kept the connection: it stays usable.
                    observe((ContinuousClock.now - started).seconds)
                    idle.withLock { $0.append(box) }
                    throw error
                } catch let error as KeydClientError where reused && error.refusal == nil && !error.isUnreachable {
                    // The idle connection died with the keyd it was made to; the next try opens a new one.
                    box.connection.close()
                    continue
                } catch {
                    box.connection.close()
                    throw error
                }
            }
        }
    }

    /// `challenge.issue` for `purpose`.
    public func challenge(_ purpose: ChallengePurpose) async throws -> ChallengeAnswer {
        try await call { try $0.challenge(purpose) }
    }
}

/// A connection moved between threads; only one thread uses it at a time (the pool hands it out).
final class KeydConnectionBox: @unchecked Sendable {
    let connection: KeydConnection
    init(_ connection: KeydConnection) { self.connection = connection }
}

/// A counting semaphore for async callers (FIFO waiters).
final class AsyncSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(available: count)) }

    func acquire() async throws {
        try Task.checkCancellation()
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
