import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// A FAKE standing in for kube-apiserver, which cannot be installed here: an HTTPS server on 127.0.0.1 (swift-nio,
/// NIOHTTP1, NIOSSL with a test CA) that serves only bootstrap-token Secrets in `kube-system` and enforces
/// `FakeAPIContract` on them (bearer authentication, routes, schema and encodings, 409 on an existing name).
/// Faults are injected on demand: status answers without a write, and slow answers after the write.
final class FakeAPIServer: Sendable {
    /// An injected misbehaviour, used by the next request.
    enum Fault: Sendable {
        /// Answer `status` with a Status object without doing anything.
        case status(Int)
        /// Do the request (a create is stored), then answer after `delay`: a client that gave up meanwhile finds
        /// its Secret already there.
        case slow(TimeAmount)
        /// Answer `status` with `message`, where `{token-secret}` and `{bearer}` become the request's token
        /// secret and presented bearer token, as a careless server might echo them.
        case echo(Int, String)
    }

    /// What the fake holds and has been asked.
    private struct State {
        var secrets: [String: [String: String]] = [:]
        var faults: [Fault] = []
        var permanentStatus: Int?
        var requests: [String] = []
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    /// The token a request must present.
    let bearerToken: String
    /// The port on 127.0.0.1.
    let port: Int
    private let state = Mutex(State())
    private let channel: NIOLockedChannel

    /// Starts a fake on an ephemeral loopback port, with `pki`'s server certificate.
    init(bearerToken: String, pki: TestPKI) async throws {
        self.bearerToken = bearerToken
        let tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(pki.serverCertificate)],
            privateKey: .privateKey(pki.serverKey)
        )
        let sslContext = try NIOSSLContext(configuration: tls)
        let box = NIOLockedChannel()
        channel = box
        let ready = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [box] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeAPIHandler(server: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = ready.localAddress!.port!
        box.set(server: self, channel: ready)
    }

    /// `https://127.0.0.1:<port>`.
    var url: String { "https://127.0.0.1:\(port)" }

    /// Closes the listening socket.
    func stop() async throws {
        try await channel.channel?.close()
        channel.set(server: nil, channel: nil)
    }

    /// Queues `faults` for the next requests, one each.
    func inject(_ faults: [Fault]) { state.withLock { $0.faults += faults } }

    /// Answers every request with `status` (nil: behave).
    func failAlways(_ status: Int?) { state.withLock { $0.permanentStatus = status } }

    /// Stores a Secret as if created earlier.
    func preload(name: String, values: [String: String]) { state.withLock { $0.secrets[name] = values } }

    /// The stored Secrets' values by name.
    var secrets: [String: [String: String]] { state.withLock { $0.secrets } }

    /// `METHOD path` of every request received, in order.
    var requests: [String] { state.withLock { $0.requests } }

    /// Returns once `count` requests have been received.
    func waitForRequests(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let reached = state.withLock { state in
                if state.requests.count >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if reached { continuation.resume() }
        }
    }

    /// The answer to `request` and how long to hold it back; wakes those waiting for this many requests.
    func handle(_ request: FakeAPIContract.Request) -> (FakeAPIContract.Response, TimeAmount?) {
        let (answer, woken) = state.withLock { state in
            state.requests.append("\(request.method) \(request.path)")
            let received = state.requests.count
            let woken = state.waiters.filter { $0.count <= received }.map(\.continuation)
            state.waiters.removeAll { $0.count <= received }
            return (Self.faultyAnswer(request, state: &state, bearerToken: bearerToken), woken)
        }
        for continuation in woken { continuation.resume() }
        return answer
    }

    /// The answer under the injected faults, else the contract's.
    private static func faultyAnswer(
        _ request: FakeAPIContract.Request,
        state: inout State,
        bearerToken: String
    ) -> (FakeAPIContract.Response, TimeAmount?) {
        var delay: TimeAmount?
        if let status = state.permanentStatus { return (.failure(status, "InternalError", "injected"), nil) }
        if !state.faults.isEmpty {
            switch state.faults.removeFirst() {
            case .status(let status): return (.failure(status, "InternalError", "injected fault"), nil)
            case .slow(let amount): delay = amount
            case .echo(let status, let template): return (Self.echo(status, template, request), nil)
            }
        }
        return (Self.answer(request, bearerToken: bearerToken, secrets: &state.secrets), delay)
    }

    /// What the contract answers, storing a valid new Secret in `secrets`.
    static func answer(
        _ request: FakeAPIContract.Request,
        bearerToken: String,
        secrets: inout [String: [String: String]]
    ) -> FakeAPIContract.Response {
        if let refusal = FakeAPIContract.authenticate(request, bearerToken: bearerToken) { return refusal }
        switch FakeAPIContract.route(request) {
        case .failure(let failure):
            return failure.response
        case .success(.read(let name)):
            guard let values = secrets[name] else {
                return .failure(404, "NotFound", "secrets \"\(name)\" not found")
            }
            return .secret(200, name: name, data: values)
        case .success(.create):
            switch FakeAPIContract.validateSecret(request) {
            case .failure(let failure):
                return failure.response
            case .success(let secret):
                guard secrets[secret.name] == nil else {
                    return .failure(409, "AlreadyExists", "secrets \"\(secret.name)\" already exists")
                }
                secrets[secret.name] = secret.values
                return .secret(201, name: secret.name, data: secret.values)
            }
        }
    }

    /// A Status answer whose message echoes the request's token secret and bearer token.
    private static func echo(
        _ status: Int,
        _ template: String,
        _ request: FakeAPIContract.Request
    ) -> FakeAPIContract.Response {
        let object = (try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any]
        let secret = (object?["stringData"] as? [String: String])?["token-secret"] ?? ""
        let bearer = request.headers["authorization"].map { String($0.dropFirst("Bearer ".count)) } ?? ""
        let message = template.replacingOccurrences(of: "{token-secret}", with: secret)
            .replacingOccurrences(of: "{bearer}", with: bearer)
        return .failure(status, "Invalid", message)
    }
}

/// The server and its listening channel, set once the bind returned.
final class NIOLockedChannel: Sendable {
    private let value = Mutex<(FakeAPIServer?, Channel?)>((nil, nil))

    /// Sets both.
    func set(server: FakeAPIServer?, channel: Channel?) { value.withLock { $0 = (server, channel) } }

    /// The server, once started.
    var server: FakeAPIServer? { value.withLock { $0.0 } }

    /// The listening channel.
    var channel: Channel? { value.withLock { $0.1 } }
}

/// One connection's HTTP/1.1 exchanges: collects a request, asks the server, writes (maybe later) the answer.
final class FakeAPIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Largest body accepted (kube-apiserver's limit is larger; the Secrets here are small).
    static let maximumBodyBytes = 1 << 20

    private let server: NIOLockedChannel
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(server: NIOLockedChannel) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(var buffer):
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head, let server = server.server else { return context.close(promise: nil) }
            let request = FakeAPIContract.Request(
                method: head.method.rawValue,
                path: head.uri,
                headers: Dictionary(head.headers.map { ($0.name.lowercased(), $0.value) }) { first, _ in first },
                body: body
            )
            let (response, delay) =
                body.count > Self.maximumBodyBytes
                ? (.failure(413, "RequestEntityTooLarge", "body too large"), nil) : server.handle(request)
            let keepAlive = head.isKeepAlive
            let context = NIOLoopBound(context, eventLoop: context.eventLoop)
            let send = { Self.write(response, keepAlive: keepAlive, context: context.value) }
            if let delay {
                context.value.eventLoop.assumeIsolated().scheduleTask(in: delay, send)
            } else {
                send()
            }
        }
    }

    /// Writes `response` as a JSON answer.
    private static func write(_ response: FakeAPIContract.Response, keepAlive: Bool, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(response.body.count))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: response.status), headers: headers)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: response.body)))), promise: nil)
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
