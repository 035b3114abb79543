import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// The limits of trustd's small HTTP listeners (VerificationService's HTTP form, `/metrics`).
public struct HTTPListenerLimits: Sendable {
    /// Most bytes a connection may send: the request line and headers of its one request.
    public var maxRequestBytes: Int
    /// Time a connection has to send its whole request head.
    public var requestTimeout: TimeAmount
    /// Time the answer may take once the request is in (admission queue and keyd included).
    public var answerTimeout: TimeAmount
    /// Connections open at once; more are closed as they are accepted.
    public var maxConnections: Int

    /// 8 KiB requests, 10 s to send one, 30 s to answer, 256 connections.
    public init(
        maxRequestBytes: Int = 8192,
        requestTimeout: TimeAmount = .seconds(10),
        answerTimeout: TimeAmount = .seconds(30),
        maxConnections: Int = 256
    ) {
        self.maxRequestBytes = maxRequestBytes
        self.requestTimeout = requestTimeout
        self.answerTimeout = answerTimeout
        self.maxConnections = maxConnections
    }
}

/// One HTTP answer: status, extra headers, body. `Content-Length` and `Connection: close` are added.
struct HTTPAnswer: Sendable {
    var status: HTTPResponseStatus
    var headers: [(String, String)] = []
    var body: [UInt8] = []

    /// A short `text/plain` answer (Go's `http.Error` form: the message and a newline).
    static func text(_ status: HTTPResponseStatus, _ message: String, headers: [(String, String)] = []) -> HTTPAnswer {
        HTTPAnswer(
            status: status,
            headers: [("Content-Type", "text/plain; charset=utf-8")] + headers,
            body: Array((message + "\n").utf8)
        )
    }
}

/// An HTTP/1.1 listener that answers exactly one request per connection and closes it: the request head
/// bounded in bytes and in time, the number of connections bounded, the answer produced by an async
/// `respond` that is cancelled when the client goes away.
final class BoundedHTTPServer: Sendable {
    /// Makes the answer to one request head from the peer at the address.
    typealias Respond = @Sendable (HTTPRequestHead, SocketAddress?) async -> HTTPAnswer

    private let channel: any Channel
    private let connections: ConnectionCount

    private init(channel: any Channel, connections: ConnectionCount) {
        self.channel = channel
        self.connections = connections
    }

    /// The bound address (the port when 0 was asked for).
    var localAddress: SocketAddress? { channel.localAddress }

    /// Binds `host:port` and starts accepting.
    static func bind(
        host: String,
        port: Int,
        limits: HTTPListenerLimits,
        connections: Gauge?,
        group: any EventLoopGroup,
        respond: @escaping Respond
    ) async throws -> BoundedHTTPServer {
        let open = ConnectionCount()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A client may shut its side once its request is sent; it still gets the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                guard open.enter(limit: limits.maxConnections) else {
                    return channel.close()
                }
                connections?.increment()
                channel.closeFuture.whenComplete { _ in
                    open.leave()
                    connections?.decrement()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(RequestSizeLimitHandler(maxBytes: limits.maxRequestBytes))
                    try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try pipeline.addHandler(OneExchangeHandler(limits: limits, respond: respond))
                }
            }
            .bind(host: host, port: port)
            .get()
        return BoundedHTTPServer(channel: channel, connections: open)
    }

    /// Stops accepting; connections in progress finish on their own deadlines.
    func close() async {
        try? await channel.close()
    }

    /// Serves until graceful shutdown (ServiceLifecycle) or cancellation: closes the listener, then waits
    /// for the open connections to finish (each within its request and answer deadlines) unless cancelled.
    func run() async {
        let channel = self.channel
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                try? await channel.closeFuture.get()
            } onCancel: {
                channel.close(promise: nil)
            }
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
        await connections.waitUntilIdle()
    }
}

/// Connections open on one listener, and the waiters for none to be left.
private final class ConnectionCount: Sendable {
    private struct State {
        var open = 0
        var idleWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }
    private let state = Mutex(State())

    /// Counts a new connection; false (and not counted) at `limit`.
    func enter(limit: Int) -> Bool {
        state.withLock { state in
            guard state.open < limit else { return false }
            state.open += 1
            return true
        }
    }

    /// A connection closed; wakes the waiters when it was the last.
    func leave() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open -= 1
            guard state.open == 0 else { return [] }
            defer { state.idleWaiters = [:] }
            return Array(state.idleWaiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns when no connection is open, or at once when the task is cancelled.
    func waitUntilIdle() async {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let idle = state.withLock { state -> Bool in
                    guard state.open > 0 && !Task.isCancelled else { return true }
                    state.idleWaiters[id] = continuation
                    return false
                }
                if idle { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.idleWaiters.removeValue(forKey: id) }?.resume()
        }
    }
}

/// Ahead of the HTTP decoder: stops a connection that sends more than `maxBytes` (one request head per
/// connection, so this bounds the request line and headers). It answers 431 and shuts its output, then
/// discards what still comes until the client closes or the request deadline does, so the client reads
/// the answer instead of a reset.
private final class RequestSizeLimitHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let answer =
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        + "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 25\r\nConnection: close\r\n\r\n"
        + "request header too large\n"

    private let maxBytes: Int
    private var received = 0
    private var exceeded = false

    init(maxBytes: Int) { self.maxBytes = maxBytes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !exceeded else { return }
        received += unwrapInboundIn(data).readableBytes
        guard received <= maxBytes else {
            exceeded = true
            let buffer = context.channel.allocator.buffer(string: Self.answer)
            context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in
                context.close(mode: .output, promise: nil)
            }
            return
        }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // After a 431 the client's end of input ends the connection.
        if exceeded, event as? ChannelEvent == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Reads one request, answers it through `respond`, closes the connection. The request head must
/// arrive within `requestTimeout`, the answer within `answerTimeout`; a closed connection cancels `respond`.
private final class OneExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let limits: HTTPListenerLimits
    private let respond: BoundedHTTPServer.Respond
    private var head: HTTPRequestHead?
    private var answering: Task<Void, Never>?
    private var deadline: Scheduled<Void>?
    private var done = false

    init(limits: HTTPListenerLimits, respond: @escaping BoundedHTTPServer.Respond) {
        self.limits = limits
        self.respond = respond
    }

    func handlerAdded(context: ChannelHandlerContext) {
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: limits.requestTimeout) {
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
        case .body:
            break
        case .end:
            guard let head else { return }
            done = true
            deadline?.cancel()
            deadline = context.eventLoop.assumeIsolated().scheduleTask(in: limits.answerTimeout) {
                context.close(promise: nil)
            }
            let promise = context.eventLoop.makePromise(of: HTTPAnswer.self)
            let respond = self.respond
            let peer = context.channel.remoteAddress
            answering = Task { promise.succeed(await respond(head, peer)) }
            promise.futureResult.assumeIsolated().whenSuccess { answer in
                self.write(answer, context: context)
            }
        }
    }

    private func write(_ answer: HTTPAnswer, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        deadline?.cancel()
        var headers = HTTPHeaders(answer.headers)
        headers.replaceOrAdd(name: "Content-Length", value: String(answer.body.count))
        headers.replaceOrAdd(name: "Connection", value: "close")
        let responseHead = HTTPResponseHead(version: .http1_1, status: answer.status, headers: headers)
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        if !answer.body.isEmpty {
            let body = context.channel.allocator.buffer(bytes: answer.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client shut its side: without a whole request there is nothing to answer.
        if event as? ChannelEvent == .inputClosed && !done {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        answering?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
