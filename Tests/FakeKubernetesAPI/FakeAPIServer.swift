import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SwiftASN1
import Synchronization
import X509

/// A FAKE standing in for kube-apiserver, which cannot be installed here: an HTTPS server on 127.0.0.1 (swift-nio,
/// NIOHTTP1, NIOSSL with a test CA) that serves only bootstrap-token Secrets in `kube-system` and enforces
/// `FakeAPIContract` on them (bearer or client-certificate authentication, routes, schema and encodings, 409 on an
/// existing name). Like kube-apiserver, the TLS layer asks for a client certificate but accepts any; a certificate
/// the test CA did not sign for client authentication leaves the request unauthenticated (401).
/// Faults are injected on demand: status answers without a write, and answers held back or dropped after the write.
final class FakeAPIServer: Sendable {
    /// An injected misbehaviour, used by the next request.
    enum Fault: Sendable {
        /// Answer `status` with a Status object without doing anything.
        case status(Int)
        /// Do the request (a create is stored), then hold the answer until `releaseHeldAnswers()` or `stop()`: a
        /// client that gives up meanwhile finds its Secret already there. Held by an event, not a delay, so the
        /// answer is late however slow the machine is.
        case held
        /// Do the request (a create is stored), then close the connection without answering.
        case dropAfterWrite
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
        var credentials: [String] = []
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
        var heldAnswers: [@Sendable () -> Void] = []
    }

    /// What the handler does with an answer.
    enum Delivery: Equatable {
        /// Write it now.
        case now
        /// Write it once released.
        case held
        /// Close the connection instead.
        case drop
    }

    /// The token a request must present.
    let bearerToken: String
    /// The port on 127.0.0.1.
    let port: Int
    private let state = Mutex(State())
    private let channels: FakeAPIChannels

    /// Starts a fake on an ephemeral loopback port, with `pki`'s server certificate; client certificates must chain
    /// to `pki`'s CA.
    init(bearerToken: String, pki: TestPKI) async throws {
        self.bearerToken = bearerToken
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(pki.serverCertificate)],
            privateKey: .privateKey(pki.serverKey)
        )
        // Ask for a client certificate, never require one (kube-apiserver's tls.RequestClientCert).
        tls.certificateVerification = .optionalVerification
        tls.trustRoots = .certificates([pki.caCertificate])
        let sslContext = try NIOSSLContext(configuration: tls)
        let clientCA = pki.ca
        let box = FakeAPIChannels()
        channels = box
        let ready = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [box] channel in
                box.add(connection: channel)
                return channel.eventLoop.makeCompletedFuture {
                    let tlsHandler = NIOSSLServerHandler(context: sslContext) { presented, promise in
                        Task { promise.succeed(await Self.authenticateCertificate(presented, ca: clientCA)) }
                    }
                    try channel.pipeline.syncOperations.addHandler(tlsHandler)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FakeAPIHandler(server: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = ready.localAddress!.port!
        box.set(server: self, listener: ready)
    }

    /// The handshake's verdict on a client certificate: always accepted, carrying the chain to `ca` only when the
    /// contract's x509 check passes, so the request handler can tell an authenticated client from another.
    private static func authenticateCertificate(
        _ presented: [NIOSSLCertificate],
        ca: Certificate
    ) async -> NIOSSLVerificationResultWithMetadata {
        let chain = await FakeAPIContract.verifyClientCertificate(presented, ca: ca)
        let converted = chain.flatMap { certificates in
            try? certificates.map { certificate in
                var serializer = DER.Serializer()
                try serializer.serialize(certificate)
                return try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
            }
        }
        return .certificateVerified(VerificationMetadata(converted.map { NIOSSL.ValidatedCertificateChain($0) }))
    }

    /// `https://127.0.0.1:<port>`.
    var url: String { "https://127.0.0.1:\(port)" }

    /// Closes the listening socket and every connection; held answers are dropped.
    func stop() async throws {
        let (listener, connections) = channels.takeAll()
        state.withLock { $0.heldAnswers = [] }
        for connection in connections { try? await connection.close() }
        try await listener?.close()
    }

    /// Writes every held answer now.
    func releaseHeldAnswers() {
        let held = state.withLock { state in
            defer { state.heldAnswers = [] }
            return state.heldAnswers
        }
        for send in held { send() }
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

    /// What each request presented, in order: `x509 <subject>` for a verified client certificate, else `bearer`
    /// (right or wrong) or `none`.
    var credentials: [String] { state.withLock { $0.credentials } }

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

    /// The answer to `request` and how to deliver it; wakes those waiting for this many requests. A held answer is
    /// kept as `deliverLater` before anyone is woken, so a release right after the wake-up finds it.
    func handle(
        _ request: FakeAPIContract.Request,
        deliverLater: @escaping @Sendable (FakeAPIContract.Response) -> Void
    ) -> (FakeAPIContract.Response, Delivery) {
        let (answer, woken) = state.withLock { state in
            state.requests.append("\(request.method) \(request.path)")
            state.credentials.append(
                request.clientSubject.map { "x509 \($0)" }
                    ?? (request.headers["authorization"] == nil ? "none" : "bearer")
            )
            let received = state.requests.count
            let woken = state.waiters.filter { $0.count <= received }.map(\.continuation)
            state.waiters.removeAll { $0.count <= received }
            let answer = Self.faultyAnswer(request, state: &state, bearerToken: bearerToken)
            if answer.1 == .held { state.heldAnswers.append { deliverLater(answer.0) } }
            return (answer, woken)
        }
        for continuation in woken { continuation.resume() }
        return answer
    }

    /// The answer under the injected faults, else the contract's.
    private static func faultyAnswer(
        _ request: FakeAPIContract.Request,
        state: inout State,
        bearerToken: String
    ) -> (FakeAPIContract.Response, Delivery) {
        var delivery = Delivery.now
        if let status = state.permanentStatus { return (.failure(status, "InternalError", "injected"), .now) }
        if !state.faults.isEmpty {
            switch state.faults.removeFirst() {
            case .status(let status): return (.failure(status, "InternalError", "injected fault"), .now)
            case .held: delivery = .held
            case .dropAfterWrite: delivery = .drop
            case .echo(let status, let template): return (Self.echo(status, template, request), .now)
            }
        }
        return (Self.answer(request, bearerToken: bearerToken, secrets: &state.secrets), delivery)
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

/// The server, its listening channel (set once the bind returned) and the connections it accepted.
final class FakeAPIChannels: Sendable {
    private struct Channels {
        var server: FakeAPIServer?
        var listener: Channel?
        var connections: [ObjectIdentifier: Channel] = [:]
    }

    private let value = Mutex(Channels())

    /// Sets the server and its listening channel.
    func set(server: FakeAPIServer, listener: Channel) {
        value.withLock {
            $0.server = server
            $0.listener = listener
        }
    }

    /// Tracks `connection` until it closes.
    func add(connection: Channel) {
        let key = ObjectIdentifier(connection)
        value.withLock { $0.connections[key] = connection }
        connection.closeFuture.whenComplete { [self] _ in _ = value.withLock { $0.connections.removeValue(forKey: key) }
        }
    }

    /// The server, once started and until stopped.
    var server: FakeAPIServer? { value.withLock { $0.server } }

    /// Forgets the server; returns the listening channel and the open connections.
    func takeAll() -> (listener: Channel?, connections: [Channel]) {
        value.withLock { channels in
            defer { channels = Channels() }
            return (channels.listener, Array(channels.connections.values))
        }
    }
}

/// One connection's HTTP/1.1 exchanges: collects a request, asks the server, writes (maybe later) the answer.
final class FakeAPIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Largest body accepted (kube-apiserver's limit is larger; the Secrets here are small).
    static let maximumBodyBytes = 1 << 20

    private let server: FakeAPIChannels
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(server: FakeAPIChannels) { self.server = server }

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
                body: body,
                clientSubject: Self.clientSubject(context)
            )
            let keepAlive = head.isKeepAlive
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            let (response, delivery) =
                body.count > Self.maximumBodyBytes
                ? (.failure(413, "RequestEntityTooLarge", "body too large"), .now)
                : server.handle(request) { late in
                    eventLoop.execute { Self.write(late, keepAlive: keepAlive, context: bound.value) }
                }
            switch delivery {
            case .now:
                Self.write(response, keepAlive: keepAlive, context: context)
            case .drop:
                context.close(promise: nil)
            case .held:
                break  // Kept by the server until released.
            }
        }
    }

    /// The subject of the client certificate the handshake verified, if any.
    private static func clientSubject(_ context: ChannelHandlerContext) -> String? {
        guard let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
            let leaf = tls.peerValidatedCertificateChain?.leaf,
            let certificate = try? Certificate(derEncoded: leaf.toDERBytes())
        else { return nil }
        return certificate.subject.description
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
