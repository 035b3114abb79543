import AsterismProto
import AsterismTestSupport
import Attestation
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
import Trustd
import TrustdCore

/// Evidence made in memory by a software AK (AsterismTestSupport's issuer, native documents) bound as
/// trustd's keyd source binds it, with a random stand-in boot key. Counts its calls.
final class FakeAttestationSource: AttestationSource {
    let issuer = SoftwareTPMEvidenceIssuer(format: .native)
    let bootPublicKey = (0..<32).map { _ in UInt8.random(in: 0...255) }
    private let count = Atomic<Int>(0)

    /// Calls made so far.
    var calls: Int { count.load(ordering: .relaxed) }

    /// The validator that trusts exactly this source's AK.
    var validator: NativeTPMDocumentValidator {
        NativeTPMDocumentValidator(policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [issuer.akDigest])))
    }

    func attestation(
        nonce: [UInt8],
        binding: Verify_AttestationBinding
    ) async throws -> (document: [UInt8], bootPublicKey: [UInt8]) {
        count.wrappingAdd(1, ordering: .relaxed)
        switch binding {
        case .sealedV1:
            let digest = VerificationUserData.sealedV1(bootPublicKey: bootPublicKey)
            return (try issuer.issue(userData: digest, nonce: nonce), bootPublicKey)
        default:
            return (try issuer.issue(userData: VerificationUserData.constellation, nonce: nonce), [])
        }
    }
}

/// A source whose calls wait until the test opens it: the test sees each call start and decides when
/// they finish, without timing.
final class GatedAttestationSource: AttestationSource {
    let inner = FakeAttestationSource()
    private struct State {
        var open = false
        var started = 0
        var parked: [CheckedContinuation<Void, Never>] = []
        var watchers: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }
    private let state = Mutex(State())

    func attestation(
        nonce: [UInt8],
        binding: Verify_AttestationBinding
    ) async throws -> (document: [UInt8], bootPublicKey: [UInt8]) {
        await withCheckedContinuation { continuation in
            let (open, ready) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                state.started += 1
                let started = state.started
                let ready = state.watchers.filter { $0.count <= started }.map(\.continuation)
                state.watchers.removeAll { $0.count <= started }
                if !state.open { state.parked.append(continuation) }
                return (state.open, ready)
            }
            for watcher in ready { watcher.resume() }
            if open { continuation.resume() }
        }
        return try await inner.attestation(nonce: nonce, binding: binding)
    }

    /// Returns once `count` calls have started.
    func waitUntilStarted(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                guard state.started < count else { return true }
                state.watchers.append((count, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Lets every parked call and every later one through.
    func open() {
        let parked = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.parked = [] }
            return state.parked
        }
        for continuation in parked { continuation.resume() }
    }
}

/// A 32-byte random nonce.
func randomNonce() -> [UInt8] { (0..<32).map { _ in UInt8.random(in: 0...255) } }

/// A GetAttestation request for `nonce` and `binding`.
func attestationRequest(
    _ nonce: [UInt8] = randomNonce(),
    binding: Verify_AttestationBinding = .constellation
) -> Verify_GetAttestationRequest {
    var request = Verify_GetAttestationRequest()
    request.nonce = Data(nonce)
    request.binding = binding
    return request
}

/// A listener a test starts on a loopback port and closes at its end.
protocol TestListener {
    var localAddress: NIOCore.SocketAddress? { get }
    func close() async
}

extension VerificationHTTPServer: TestListener {}
extension MetricsHTTPServer: TestListener {}

/// Runs `body` with `listener`'s port, then closes it (also when `body` throws).
func serving(_ listener: some TestListener, _ body: (Int) async throws -> Void) async throws {
    let port = try #require(listener.localAddress?.port)
    do {
        try await body(port)
    } catch {
        await listener.close()
        throw error
    }
    await listener.close()
}

/// The event loops of every server and client in these tests: their own, so that other suites running
/// at the same time (the full suite runs hundreds of tests at once) cannot hold them.
let testEventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 2)

/// Deadlines far beyond what any test waits, so a loaded machine never trips them by accident; the
/// tests of the deadlines set their own.
let patientLimits = HTTPListenerLimits(requestTimeout: .seconds(300), answerTimeout: .seconds(300))

/// A logger that drops everything (the services log through swift-log; the tests check answers).
let quietLogger = Logger(label: "trustd-tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// A VerificationService over `source` with its own gate and metrics. Time stands still for the gate's
/// source buckets, so a spent bucket stays spent however slowly a loaded machine runs the test.
struct VerificationFixture {
    let metrics = TrustdMetrics()
    let gate: AdmissionGate
    let service: VerificationService

    init(
        source: any AttestationSource,
        limits: AdmissionLimits = AdmissionLimits(maxInFlight: 4, maxQueued: 16),
        ratePerSecond: Int = 1000,
        burst: Int = 1000
    ) {
        gate = AdmissionGate(
            name: "verification",
            limits: limits,
            sources: SourceBuckets(capacity: 64, ratePerSecond: ratePerSecond, burst: burst),
            metrics: metrics,
            clock: { 0 }
        )
        service = VerificationService(source: source, gate: gate, metrics: metrics, logger: quietLogger)
    }

    /// Runs `body` with a plaintext gRPC server of the service on a loopback port and a client to it.
    func withGRPC(_ body: @Sendable (Verify_API.Client<HTTP2ClientTransport.Posix>) async throws -> Void) async throws {
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: "127.0.0.1", port: 0),
            transportSecurity: .plaintext,
            eventLoopGroup: testEventLoops
        )
        try await withGRPCServer(transport: transport, services: [service]) { _ in
            let address = try #require(try await transport.listeningAddress.ipv4)
            let client = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: address.port),
                transportSecurity: .plaintext,
                eventLoopGroup: testEventLoops
            )
            try await withGRPCClient(transport: client) { grpc in
                try await body(Verify_API.Client(wrapping: grpc))
            }
        }
    }

    /// Runs `body` with the HTTP form of the service on a loopback port.
    func withHTTP(
        limits: HTTPListenerLimits = patientLimits,
        _ body: @Sendable (Int) async throws -> Void
    ) async throws {
        let server = try await VerificationHTTPServer.bind(
            host: "127.0.0.1",
            port: 0,
            service: service,
            metrics: metrics,
            limits: limits,
            group: testEventLoops
        )
        try await serving(server, body)
    }
}

/// A parsed HTTP/1.1 answer.
struct RawHTTPAnswer {
    var status: Int
    var headers: [String: String]
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }
}

/// Sends `request` as it is over a new TCP connection from `localHost` to 127.0.0.1:`port` and reads
/// until the server closes: what a client on the wire sees, no HTTP library in between.
func rawHTTP(
    port: Int,
    _ request: String,
    localHost: String = "127.0.0.1",
    halfClose: Bool = false
) async throws -> RawHTTPAnswer {
    try parseHTTPAnswer(try await rawBytes(port: port, request, localHost: localHost, halfClose: halfClose))
}

/// Sends `request` over a new TCP connection (then shuts the sending side when `halfClose`) and returns
/// every byte the server sends before it closes.
func rawBytes(
    port: Int,
    _ request: String,
    localHost: String = "127.0.0.1",
    halfClose: Bool = false
) async throws -> [UInt8] {
    let channel = try await ClientBootstrap(group: testEventLoops)
        .bind(to: try SocketAddress(ipAddress: localHost, port: 0))
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(isOutboundHalfClosureEnabled: true)
                )
            }
        }
    var received: [UInt8] = []
    try await channel.executeThenClose { inbound, outbound in
        do {
            try await outbound.write(ByteBuffer(string: request))
        } catch ChannelError.ioOnClosedChannel {
            // The server closed first (its deadline, its connection cap): nothing to read.
            return
        }
        if halfClose { outbound.finish() }
        do {
            for try await chunk in inbound { received += chunk.readableBytesView }
        } catch let error as IOError where error.errnoCode == ECONNRESET {
            // A request sent after the server's deadline closed the connection (a loaded machine can hold
            // the test between connect and write) is answered with a reset; what came before still counts,
            // and an answer cut short fails to parse.
        }
    }
    return received
}

/// Splits an HTTP/1.1 answer into status, headers (names lowercased) and body.
func parseHTTPAnswer(_ bytes: [UInt8]) throws -> RawHTTPAnswer {
    let separator: [UInt8] = Array("\r\n\r\n".utf8)
    let end = try #require(bytes.firstRange(of: separator), "no end of headers in \(bytes.count) bytes")
    let lines = String(decoding: bytes[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
    let statusLine = lines[0].split(separator: " ")
    #expect(statusLine.first == "HTTP/1.1")
    let status = try #require(Int(statusLine[1]))
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        let parts = line.split(separator: ":", maxSplits: 1)
        headers[parts[0].lowercased()] = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
    }
    return RawHTTPAnswer(status: status, headers: headers, body: Array(bytes[end.upperBound...]))
}

/// Base64url with padding (Go's `base64.URLEncoding`) of `bytes`.
func base64URL(_ bytes: [UInt8]) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
}

/// The value of the Prometheus sample `series` (name and labels as rendered) in `exposition`.
func sample(_ series: String, in exposition: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}
