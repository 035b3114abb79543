import ATLS
import ATLSTransport
import ArgumentParser
import Attestation
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

struct ATLSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "atls",
        abstract: "Attested TLS tools.",
        subcommands: [ATLSProbe.self]
    )
}

/// `asterism atls probe HOST:PORT`: one aTLS handshake with a fresh nonce; prints what the server proved.
struct ATLSProbe: ParsableCommand, OutcomeCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract:
            "Connect with a fresh nonce and verify the server's attested certificate; exit 0 when attested, 1 when refused, 2 on a usage or connection error."
    )

    @Argument(help: "The server, HOST:PORT (an IPv6 address in brackets).") var target: String
    @Option(
        name: .customLong("ak-digest"),
        help: "Trusted AK: hex SHA-256 of its DER SubjectPublicKeyInfo (repeatable)."
    ) var akDigest: [String] = []
    @Option(name: .long, help: "Expected PCR values, Constellation's measurements JSON.") var measurements: String?
    @Flag(
        name: .customLong("insecure-trust-document-ak"),
        help: "Trust the AK inside the evidence, unauthenticated (development only)."
    )
    var insecureTrustDocumentAK = false
    @Flag(
        name: .customLong("insecure-accept-dummy"),
        help: "Accept Constellation's dummy variant, which proves nothing (development only)."
    )
    var insecureAcceptDummy = false
    @Option(name: .long, help: "Highest TLS version to offer: 1.2 or 1.3.") var tls = "1.3"
    @Option(name: .long, help: "Seconds to wait for the connection and handshake.") var timeout = 10
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard ["1.2", "1.3"].contains(tls) else { throw ValidationError("--tls must be 1.2 or 1.3") }
        guard (1...300).contains(timeout) else { throw ValidationError("--timeout must be 1…300 seconds") }
        _ = try Self.split(target)
    }

    /// Host and port of `HOST:PORT` or `[V6]:PORT`.
    static func split(_ target: String) throws -> (String, Int) {
        guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]),
            (1...65535).contains(port)
        else {
            throw ValidationError("\(target) is not HOST:PORT")
        }
        var host = String(target[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("\(target) has no host") }
        return (host, port)
    }

    func outcome() -> Asterism.Outcome {
        do {
            let result = try probe()
            let text = output.json ? result.json() : result.text()
            return Asterism.Outcome(
                status: result.attested ? Asterism.ExitStatus.valid : Asterism.ExitStatus.refused,
                stdout: text,
                stderr: ""
            )
        } catch {
            let message = "asterism: \(target): \(error)\n"
            return Asterism.Outcome(status: Asterism.ExitStatus.error, stdout: "", stderr: message)
        }
    }

    private func verifier() throws -> ATLSVerifier {
        let trust = AKTrust(
            allowedKeyDigests: Set(try akDigest.map { try CLIInput.hex($0, "--ak-digest", count: 32) }),
            insecureTrustDocumentAK: insecureTrustDocumentAK
        )
        let policy = TPMQuotePolicy(
            akTrust: trust,
            measurements: try measurements.map { try Measurements(json: try CLIInput.file($0)) }
        )
        var validators: [any EvidenceValidator] = [
            NativeTPMDocumentValidator(policy: policy), ConstellationVTPMValidator(policy: policy),
        ]
        if insecureAcceptDummy { validators.append(DummyEvidence.Validator()) }
        return ATLSVerifier(validators: validators, insecureAcceptDummy: insecureAcceptDummy)
    }

    private func probe() throws -> ProbeResult {
        let (host, port) = try Self.split(target)
        var settings = ATLSTLSSettings()
        settings.maximumTLSVersion = tls == "1.2" ? .tlsv12 : .tlsv13
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        defer {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
        }
        let client = ATLSClient(configuration: .init(verifier: try verifier(), tls: settings), threadPool: pool)
        let handshake = group.next().makePromise(of: HandshakeWatcher.Result.self)
        let connection = ProbeConnectionBox()
        let connecting = ClientBootstrap(group: group)
            .connectTimeout(.seconds(Int64(timeout)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    connection.set(try client.addHandler(to: channel))
                    try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(promise: handshake))
                }
            }
            .connect(host: host, port: port)
        let channel: any Channel
        do {
            channel = try connecting.wait()
        } catch {
            handshake.fail(error)
            throw error
        }
        defer { channel.close(promise: nil) }
        channel.eventLoop.scheduleTask(in: .seconds(Int64(timeout))) { handshake.fail(ProbeTimeout(seconds: timeout)) }
        let negotiated = Result { try handshake.futureResult.wait() }
        guard let state = connection.get() else { throw ProbeTimeout(seconds: timeout) }
        if case .failure(let error as ProbeTimeout) = negotiated, state.peer == nil, state.failure == nil {
            throw error
        }
        return ProbeResult(
            target: target,
            nonce: state.sentNonce,
            peer: state.peer,
            failure: state.failure,
            negotiated: try? negotiated.get(),
            transportError: negotiated.failure.map { "\($0)" }
        )
    }
}

struct ProbeTimeout: Error, CustomStringConvertible {
    let seconds: Int
    var description: String { "no aTLS handshake within \(seconds) s" }
}

/// Holds the probe's one connection state across threads.
final class ProbeConnectionBox: Sendable {
    private let connection = Mutex<ATLSConnection?>(nil)
    func set(_ value: ATLSConnection) { connection.withLock { $0 = value } }
    func get() -> ATLSConnection? { connection.withLock { $0 } }
}

/// Completes with the TLS version and ALPN protocol when the handshake completes, or with the error.
final class HandshakeWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    struct Result: Sendable {
        let version: TLSVersion?
        let alpn: String?
    }
    struct Closed: Error, CustomStringConvertible { var description: String { "the server closed the connection" } }
    let promise: EventLoopPromise<Result>
    init(promise: EventLoopPromise<Result>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted(let alpn) = event {
            let version = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).tlsVersion
            promise.succeed(Result(version: version ?? nil, alpn: alpn))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) { promise.fail(Closed()) }
}

/// What the probe found, in text and JSON.
struct ProbeResult {
    let target: String
    let nonce: ATLSNonce?
    let peer: ATLSPeerIdentity?
    let failure: ATLSError?
    let negotiated: HandshakeWatcher.Result?
    let transportError: String?

    /// The server's certificate verified (a later refusal of this probe's missing client certificate by a
    /// mutual server does not change what the server proved).
    var attested: Bool { peer != nil && failure == nil }

    var versionName: String? {
        switch negotiated?.version {
        case .tlsv13?: "TLSv1.3"
        case .tlsv12?: "TLSv1.2"
        case nil: nil
        default: "older than TLSv1.2"
        }
    }

    func text() -> String {
        var lines = ["atls probe \(target): \(attested ? "ATTESTED" : "REFUSED")"]
        if let peer, attested {
            lines.append("  variant   \(peer.variant)")
            lines.append("  key hash  \(hexString(peer.keyHash))")
            if peer.isInsecure { lines.append("  INSECURE  the proof rests on a development-only setting") }
        }
        if let failure { lines.append("  reason    \(failure)") }
        if let versionName { lines.append("  tls       \(versionName), alpn \(negotiated?.alpn ?? "none")") }
        if peer != nil, negotiated == nil, let transportError {
            lines.append(
                "  note      the handshake did not finish after the server's certificate verified (\(transportError)); a mutual server wants a client certificate"
            )
        } else if peer == nil, failure == nil, let transportError {
            lines.append("  reason    \(transportError)")
        }
        if let nonce { lines.append("  nonce     \(nonce.base64)") }
        if let report = peer?.evidence.report ?? refusedReport {
            lines.append(
                contentsOf: ReportRendering.text(report).split(separator: "\n", omittingEmptySubsequences: false)
                    .dropLast().map { "  " + $0 }
            )
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private var refusedReport: AttestationReport? {
        if case .evidenceRefused(_, _, let report)? = failure { return report }
        return nil
    }

    func json() -> String {
        struct Output: Encodable {
            let target: String
            let attested: Bool
            let variant: String?
            let oid: String?
            let keyHash: String?
            let insecure: Bool?
            let refusal: String?
            let tlsVersion: String?
            let alpn: String?
            let nonce: String?
            let report: AttestationReport?
        }
        let output = Output(
            target: target,
            attested: attested,
            variant: peer?.variant.name,
            oid: peer?.variant.dottedOID,
            keyHash: peer.map { hexString($0.keyHash) },
            insecure: peer?.isInsecure,
            refusal: failure.map { "\($0)" } ?? (peer == nil ? transportError : nil),
            tlsVersion: versionName,
            alpn: negotiated?.alpn,
            nonce: nonce?.base64,
            report: peer?.evidence.report ?? refusedReport
        )
        return ReportRendering.json(encoding: output)
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
