import ATLS
import ATLSTransport
import AsterismProto
import AsterismTestSupport
import Attestation
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOPosix
import Synchronization
import Testing
import Trustd
import TrustdCore

/// Challenges that are random numbers: a JoinService double that never reaches a keyd.
struct RandomChallenges: ATLSChallengeSource {
    func challenge() throws -> ATLSChallenge { ATLSChallenge(id: ClusterSecret.random(16), nonce: .random()) }
}

/// A JoinService that misbehaves on purpose, served over real aTLS with its own software AK.
final class FaultyJoinService: Join_API.SimpleServiceProtocol, Sendable {
    enum Behaviour: Sendable {
        /// Every call fails UNAVAILABLE.
        case unavailable
        /// Every call fails RESOURCE_EXHAUSTED with `retry-after-ms`.
        case busy(retryAfterMilliseconds: Int)
        /// No call is ever answered.
        case hang
        /// Every call gets a ticket whose sealed keys are random bytes.
        case garbage
    }

    let behaviour: Behaviour
    private let calls = Mutex<[ContinuousClock.Instant]>([])
    /// Hung calls, and whether they were let go.
    private let hung = Mutex<(released: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(_ behaviour: Behaviour) { self.behaviour = behaviour }

    /// Lets every hung call end (the server's shutdown waits for its calls).
    func releaseHungCalls() {
        let waiters = hung.withLock { state in
            state.released = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// When each call arrived.
    var callTimes: [ContinuousClock.Instant] { calls.withLock { $0 } }

    func issueJoinTicket(
        request: Join_IssueJoinTicketRequest,
        context: ServerContext
    ) async throws -> Join_IssueJoinTicketResponse {
        calls.withLock { $0.append(.now) }
        switch behaviour {
        case .unavailable: throw RPCError(code: .unavailable, message: "down for maintenance")
        case .busy(let milliseconds):
            var metadata = Metadata()
            metadata.addString("\(milliseconds)", forKey: "retry-after-ms")
            throw RPCError(code: .resourceExhausted, message: "busy; retry later", metadata: metadata)
        case .hang:
            await withCheckedContinuation { continuation in
                let released = hung.withLock { state in
                    if !state.released { state.waiters.append(continuation) }
                    return state.released
                }
                if released { continuation.resume() }
            }
            throw RPCError(code: .unavailable, message: "released")
        case .garbage:
            var response = Join_IssueJoinTicketResponse()
            response.sealedKeys = Data(ClusterSecret.random(300))
            response.token = "abcdef.0123456789abcdef"
            return response
        }
    }

    func issueRejoinTicket(
        request: Join_IssueRejoinTicketRequest,
        context: ServerContext
    ) async throws -> Join_IssueRejoinTicketResponse {
        throw RPCError(code: .unimplemented, message: "not here")
    }
}

/// The join client against a JoinService that is slow, erroring, busy with retry hints, or answers
/// garbage: bounded attempts, the hint honoured, a clear error, no files, the disk left shut.
@Suite(.serialized, .needsSwtpm, .needsRoot) struct JoinClientFaultTests {
    let joiner: ReleaseNode
    let pool: NIOThreadPool
    let outputDirectory: String
    let serviceEvidence = SoftwareTPMEvidenceIssuer(format: .native)

    init() throws {
        joiner = try ReleaseNode()
        try joiner.formatStateDisk()
        pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        var template = Array("/tmp/trustd-fault-XXXXXX".utf8CString)
        outputDirectory = String(cString: mkdtemp(&template)!)
    }

    /// Runs `service` over aTLS and a join client with `callTimeout` and `maxAttempts` against it;
    /// returns the client's error.
    func join(
        _ service: FaultyJoinService,
        // Patient: under the full suite a handshake with a quote on swtpm has taken over 30 s.
        callTimeout: Duration = .seconds(120),
        maxAttempts: Int = 3
    ) async throws -> JoinClientError? {
        let atls = ATLSServer(
            configuration: .init(
                issuer: AttestedCertificateIssuer(evidence: serviceEvidence, keyMode: .cached),
                deferredClientCheck: ATLSDeferredClientCheck(challenges: RandomChallenges(), variants: [.asterismTPM]),
                handshakeTimeout: .seconds(90)
            ),
            threadPool: pool
        )
        let transport = atls.grpcTransport(host: "127.0.0.1", port: 0)
        var failure: JoinClientError?
        try await withGRPCServer(transport: transport, services: [service]) { _ in
            let port = try #require(await transport.listeningAddress?.ipv4).port
            let verifier = ATLSVerifier(validators: [
                NativeTPMDocumentValidator(
                    policy: TPMQuotePolicy(akTrust: AKTrust(allowedKeyDigests: [serviceEvidence.akDigest]))
                )
            ])
            let client = JoinClient(
                configuration: .init(
                    endpoints: [try HostPort.parse("127.0.0.1:\(port)", allowingNames: false).get()],
                    role: .worker,
                    nodeName: "worker-1",
                    serviceVerifier: verifier,
                    callTimeout: callTimeout,
                    deadline: .seconds(300),
                    backoff: JoinBackoff(initialMilliseconds: 10, maximumMilliseconds: 5_000),
                    maxAttempts: maxAttempts,
                    outputDirectory: outputDirectory
                ),
                keydSocketPath: joiner.keyd.socketPath,
                threadPool: pool,
                logger: Logger(label: "test.joinclient")
            )
            do throws(JoinClientError) {
                _ = try await client.join()
            } catch {
                failure = error
            }
            service.releaseHungCalls()
        }
        return failure
    }

    /// Nothing was written, and keyd never opened the disk.
    func expectNothingDone() throws {
        #expect(try FileManager.default.contentsOfDirectory(atPath: outputDirectory).isEmpty)
        let accepted = try joiner.auditRecords().filter {
            $0.contains("\"envelope.accept\"") && $0.contains("\"granted\"")
        }
        #expect(accepted.isEmpty, "\(accepted)")
    }

    @Test("an erroring service: every attempt made, then a clear error naming the last reason")
    func erroring() async throws {
        let service = FaultyJoinService(.unavailable)
        let failure = try await join(service)
        guard case .gaveUp(let attempts, let last)? = failure else {
            throw HarnessError("\(String(describing: failure))")
        }
        #expect(attempts == 3 && (1...3).contains(service.callTimes.count))
        #expect(last.contains("down for maintenance"), "\(last)")
        try expectNothingDone()
    }

    @Test("a busy service: the client waits at least the retry hint between attempts")
    func retryHintHonoured() async throws {
        let service = FaultyJoinService(.busy(retryAfterMilliseconds: 400))
        let failure = try await join(service)
        guard case .gaveUp(let attempts, _)? = failure else { throw HarnessError("\(String(describing: failure))") }
        #expect(attempts == 3)
        let times = service.callTimes
        #expect(times.count == 3)
        // Pauses only grow on a loaded machine, so the lower bound holds anywhere.
        for (earlier, later) in zip(times, times.dropFirst()) {
            #expect(later - earlier >= .milliseconds(400), "\(later - earlier)")
        }
        try expectNothingDone()
    }

    @Test("a service that never answers: each attempt ends at the call timeout")
    func slow() async throws {
        let service = FaultyJoinService(.hang)
        let started = ContinuousClock.now
        // 10 s: usually enough for a handshake on a loaded machine, so the call itself times out; a
        // handshake slower than that ends the attempt the same way, before the service sees a call.
        let failure = try await join(service, callTimeout: .seconds(10), maxAttempts: 2)
        guard case .gaveUp(let attempts, let last)? = failure else {
            throw HarnessError("\(String(describing: failure))")
        }
        #expect(attempts == 2 && (0...2).contains(service.callTimes.count))
        #expect(last.contains("deadlineExceeded"), "\(last)")
        #expect(ContinuousClock.now - started >= .seconds(20), "each attempt waited its whole call timeout")
        try expectNothingDone()
    }

    @Test("a ticket with garbage for keys: keyd refuses the envelope, no file is written")
    func garbageTicket() async throws {
        let failure = try await join(FaultyJoinService(.garbage))
        guard case .envelopeRefused(let detail)? = failure else { throw HarnessError("\(String(describing: failure))") }
        #expect(detail.contains("envelopeRejected") || detail.contains("malformed"), "\(detail)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outputDirectory).isEmpty)
    }
}
