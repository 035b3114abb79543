import ATLS
import ATLSTransport
import Attestation
import Crypto
import FoundationEssentials
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import KeydCore
import KeydProtocol
import Logging
import NIOPosix
import ServiceLifecycle
import SwiftASN1
import Synchronization
import TrustdCore
import X509

#if canImport(Glibc)
import Glibc
#endif

/// Why trustd cannot start: a file it needs is missing or wrong. The message names the file and the key.
public struct TrustdStartError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// trustd: the services its configuration asks for, run as one swift-service-lifecycle group. A control
/// plane serves JoinService (aTLS gRPC, sealed release through keyd); a node with join endpoints joins
/// (or, with join material from an earlier boot, rejoins) at start. `READY=1` goes to the service
/// manager once every listener is bound and the join is done; SIGTERM or SIGINT stop accepting, let
/// in-flight calls finish within `shutdown-grace-seconds`, and end the process.
public struct TrustdDaemon: Sendable {
    public let configuration: TrustdConfiguration
    public let logger: Logger

    public init(configuration: TrustdConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs until SIGTERM/SIGINT, or until a service fails (a failed join ends trustd with an error,
    /// for the service manager to restart it).
    public func run() async throws {
        let configuration = self.configuration
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        let metrics = TrustdMetrics()
        let keyd = KeydGateway(
            socketPath: configuration.keydSocket,
            maxConnections: min(configuration.maxReleasesInFlight, 64),
            observe: { metrics.keydRoundTripSeconds.record($0) }
        )
        // Signalled when an Init or Recover made keyd hold the cluster's KEK: a rejoin in progress stops.
        let keyHeld = CompletionSignal()
        // Every file the configuration names is read before anything binds: a wrong one is exit status 2.
        let join = try JoinRunner(
            configuration: configuration,
            pool: pool,
            keyd: keyd,
            keyHeld: keyHeld,
            logger: logger
        )
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var readiness: [@Sendable () async throws -> Void] = []
        var shutdowns: [@Sendable () async -> Void] = [{ await keyd.shutdown() }]
        if configuration.constellationCompatibility {
            logger.warning(
                "constellation-compatibility is on: keyd answers Constellation's bootstrapper with plain keys"
            )
        }

        if configuration.role == .controlPlane {
            let material: any JoinMaterialSource
            if configuration.apiServerAdvertise == nil, configuration.kubernetesCAFile == nil,
                configuration.kubernetesCredentials == nil
            {
                logger.warning(
                    "No Kubernetes configured (api-server-advertise, kubernetes-ca-file, credentials): JoinService hands out keys only, no bootstrap token"
                )
                material = KeysOnlyMaterial()
            } else if configuration.kubeadmPath != nil || configuration.kubeadmHandoff {
                // The first control plane's kubeadm init writes the CA and the credentials after start.
                let deferred = DeferredJoinMaterial(
                    configuration: configuration,
                    logger: logger.with(label: "kubernetes")
                )
                shutdowns.append { await deferred.shutdown() }
                material = deferred
            } else {
                let kubernetes = try JoinServiceMaterial(
                    configuration: configuration,
                    logger: logger.with(label: "kubernetes")
                )
                shutdowns.append { await kubernetes.tokens.shutdown() }
                material = kubernetes
            }
            let atls = ATLSServer(
                configuration: .init(
                    issuer: AttestedCertificateIssuer(
                        evidence: KeydEvidenceIssuer(socketPath: configuration.keydSocket, format: .native),
                        keyMode: .cached
                    ),
                    deferredClientCheck: ATLSDeferredClientCheck(
                        challenges: KeydChallengeSource(socketPath: configuration.keydSocket),
                        variants: configuration.constellationCompatibility ? [.asterismTPM, .qemuVTPM] : [.asterismTPM]
                    ),
                    handshakeTimeout: .milliseconds(Int64(configuration.handshakeTimeoutMilliseconds))
                ),
                threadPool: pool
            )
            let transport = atls.grpcTransport(host: configuration.joinListen.host, port: configuration.joinListen.port)
            let gate = AdmissionGate(
                name: "join",
                limits: AdmissionLimits(releasesOf: configuration),
                sources: SourceBuckets(sourcesOf: configuration),
                metrics: metrics
            )
            let service = JoinService(
                keyd: keyd,
                peers: atls.peers,
                material: material,
                admission: gate,
                constellationCompatibility: configuration.constellationCompatibility,
                logger: logger.with(label: "joinservice"),
                observe: { outcome in
                    if let reason = outcome.reason {
                        metrics.joinTicket(.refused, reason: reason)
                    } else {
                        metrics.joinTicket(.issued, reason: outcome.kind.rawValue)
                        if let seconds = outcome.seconds { metrics.releaseSeconds.record(seconds) }
                    }
                }
            )
            services.append(.grpc(transport, [service], name: "JoinService"))
            let listen = configuration.joinListen
            let log = logger
            readiness.append {
                guard let address = try await transport.listeningAddress else { return }
                log.info("JoinService listening", metadata: ["address": "\(address)", "configured": "\(listen)"])
            }

            // The operator's Init and Recover: one-way aTLS (this node attests; the operator's CLI checks it
            // before it sends the master secret, sealed to keyd). keyd refuses both once it holds a KEK.
            let bootstrapServer = ATLSServer(
                configuration: .init(
                    issuer: AttestedCertificateIssuer(
                        evidence: KeydEvidenceIssuer(socketPath: configuration.keydSocket, format: .native),
                        keyMode: .cached
                    ),
                    handshakeTimeout: .milliseconds(Int64(configuration.handshakeTimeoutMilliseconds))
                ),
                threadPool: pool
            )
            let bootstrapTransport = bootstrapServer.grpcTransport(
                host: configuration.bootstrapListen.host,
                port: configuration.bootstrapListen.port
            )
            let requests = BootstrapRequests(
                keyd: KeydInitAcceptor(gateway: keyd),
                initializer: try Self.controlPlaneInitializer(configuration, logger: logger),
                logger: logger.with(label: "bootstrap"),
                holdsKEK: { keyHeld.signal() }
            )
            services.append(.grpc(bootstrapTransport, requests.services, name: "Init and Recover"))
            let bootstrapListen = configuration.bootstrapListen
            readiness.append {
                guard let address = try await bootstrapTransport.listeningAddress else { return }
                log.info(
                    "Init and Recover listening",
                    metadata: ["address": "\(address)", "configured": "\(bootstrapListen)"]
                )
            }
        }

        if configuration.role == .controlPlane, let kmsListen = configuration.kmsListen {
            // A listener of its own: every connection's challenge is of purpose dataKey, so a connection
            // attested here serves data keys only, and a JoinService connection never does.
            let atls = ATLSServer(
                configuration: .init(
                    issuer: AttestedCertificateIssuer(
                        evidence: KeydEvidenceIssuer(socketPath: configuration.keydSocket, format: .native),
                        keyMode: .cached
                    ),
                    deferredClientCheck: ATLSDeferredClientCheck(
                        challenges: KeydChallengeSource(socketPath: configuration.keydSocket, purpose: .dataKey),
                        variants: [.asterismTPM]
                    ),
                    handshakeTimeout: .milliseconds(Int64(configuration.handshakeTimeoutMilliseconds))
                ),
                threadPool: pool
            )
            let transport = atls.grpcTransport(host: kmsListen.host, port: kmsListen.port)
            let gate = AdmissionGate(
                name: "kms",
                limits: AdmissionLimits(releasesOf: configuration),
                sources: SourceBuckets(sourcesOf: configuration),
                metrics: metrics
            )
            let service = KMSService(keyd: keyd, peers: atls.peers, admission: gate, logger: logger.with(label: "kms"))
            services.append(.grpc(transport, [service], name: "KMS"))
            let log = logger
            readiness.append {
                guard let address = try await transport.listeningAddress else { return }
                log.info("KMS listening", metadata: ["address": "\(address)", "configured": "\(kmsListen)"])
            }
        }

        if let kmsSocket = configuration.kmsSocket {
            guard !configuration.kmsEndpoints.isEmpty else {
                throw TrustdStartError("kms-socket is set but kms-endpoints is not")
            }
            let service = LocalKMSService(
                endpoints: configuration.kmsEndpoints,
                keydSocketPath: configuration.keydSocket,
                role: configuration.role,
                nodeName: try JoinRunner.nodeName(configuration),
                serviceVerifier: try JoinRunner.serviceVerifier(configuration, for: "kms-socket is set"),
                callTimeout: .milliseconds(configuration.callTimeoutMilliseconds),
                threadPool: pool,
                logger: logger.with(label: "kms-local")
            )
            let transport = HTTP2ServerTransport.Posix(
                listeningSocketDescriptor: Int(try LocalKMSSocket.listen(path: kmsSocket)),
                transportSecurity: .plaintext
            )
            services.append(.grpc(transport, [service], name: "local KMS"))
            let log = logger
            readiness.append {
                _ = try await transport.listeningAddress
                log.info("local KMS listening", metadata: ["socket": "\(kmsSocket)"])
            }
        }

        // VerificationService on every node: gRPC (plaintext, as Constellation's; trust comes from the
        // quote), Constellation's HTTP form, behind one gate in front of the TPM; and /metrics.
        let verificationGate = AdmissionGate(
            name: "verification",
            limits: .verification,
            sources: SourceBuckets(sourcesOf: configuration),
            metrics: metrics
        )
        let verification = VerificationService(
            source: KeydAttestationSource(gateway: keyd),
            gate: verificationGate,
            metrics: metrics,
            logger: logger.with(label: "verification")
        )
        var verificationConfig = HTTP2ServerTransport.Posix.Config.defaults
        verificationConfig.rpc.maxRequestPayloadSize = 1024
        let verificationTransport = HTTP2ServerTransport.Posix(
            address: configuration.verificationGRPCListen.kind == .ipv6
                ? .ipv6(
                    host: configuration.verificationGRPCListen.host,
                    port: configuration.verificationGRPCListen.port
                )
                : .ipv4(
                    host: configuration.verificationGRPCListen.host,
                    port: configuration.verificationGRPCListen.port
                ),
            transportSecurity: .plaintext,
            config: verificationConfig
        )
        services.append(.grpc(verificationTransport, [verification], name: "VerificationService"))
        let httpListen = configuration.verificationHTTPListen
        let metricsListen = configuration.metricsListen
        let verificationHTTP: VerificationHTTPServer
        let metricsHTTP: MetricsHTTPServer
        do {
            verificationHTTP = try await VerificationHTTPServer.bind(
                host: httpListen.host,
                port: httpListen.port,
                service: verification,
                metrics: metrics
            )
            metricsHTTP = try await MetricsHTTPServer.bind(
                host: metricsListen.host,
                port: metricsListen.port,
                metrics: metrics
            )
        } catch {
            // Nothing runs yet: close what was opened before giving up.
            for shutdown in shutdowns { await shutdown() }
            try? await pool.shutdownGracefully()
            throw TrustdStartError("cannot listen on \(httpListen) and \(metricsListen): \(error)")
        }
        services.append(.init(service: verificationHTTP))
        services.append(.init(service: metricsHTTP))
        do {
            let log = logger
            readiness.append {
                let address = try await verificationTransport.listeningAddress
                log.info(
                    "VerificationService listening",
                    metadata: [
                        "grpc": "\(address)", "http": "\(String(describing: verificationHTTP.localAddress))",
                        "metrics": "\(String(describing: metricsHTTP.localAddress))",
                    ]
                )
            }
        }

        if let join {
            services.append(.init(service: join, successTerminationBehavior: .ignore))
            readiness.append { try await join.done.wait() }
        }

        let log = logger
        services.append(
            .init(
                service: ReadinessNotifier(waits: readiness, logger: log),
                successTerminationBehavior: .ignore
            )
        )
        var groupConfiguration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(configuration.shutdownGraceSeconds)
        let group = ServiceGroup(configuration: groupConfiguration)
        defer { SystemdNotify.send("STOPPING=1") }
        let result: Result<Void, any Error>
        do {
            try await group.run()
            result = .success(())
        } catch {
            result = .failure(error)
        }
        for shutdown in shutdowns { await shutdown() }
        try? await pool.shutdownGracefully()
        try result.get()
    }
}

extension TrustdDaemon {
    /// What Init runs after keyd accepted it: kubeadm init through trustd (`kubeadm-path`), handed to its
    /// own unit (`kubeadm-handoff`), or nothing.
    static func controlPlaneInitializer(
        _ configuration: TrustdConfiguration,
        logger: Logger
    ) throws -> (any ControlPlaneInitializer)? {
        guard configuration.kubeadmPath != nil || configuration.kubeadmHandoff else { return nil }
        guard let advertise = configuration.apiServerAdvertise else {
            throw TrustdStartError("kubeadm runs on this control plane: set api-server-advertise (kubeadm init)")
        }
        let initConfiguration = KubeadmInitConfiguration(
            nodeName: try JoinRunner.nodeName(configuration),
            kubernetesVersion: configuration.kubernetesVersion,
            advertiseEndpoint: advertise.description,
            certificateSANs: []
        )
        guard let program = configuration.kubeadmPath else {
            return KubeadmInitHandoff(configuration: initConfiguration, outputDirectory: configuration.outputDirectory)
        }
        return KubeadmControlPlaneInitializer(
            runner: SubprocessKubeadmRunner(
                program: program,
                timeout: .seconds(configuration.kubeadmTimeoutSeconds),
                logger: logger.with(label: "kubeadm")
            ),
            configuration: initConfiguration,
            outputDirectory: configuration.outputDirectory,
            adminKubeconfig: configuration.kubeadmAdminKubeconfig
        )
    }
}

/// Sends `READY=1` once every wait has returned (listeners bound, the join done), then idles until shutdown.
struct ReadinessNotifier: Service {
    let waits: [@Sendable () async throws -> Void]
    let logger: Logger

    func run() async throws {
        for wait in waits { try await wait() }
        SystemdNotify.send("READY=1\nSTATUS=serving")
        logger.info("trustd ready")
        try? await gracefulShutdown()
    }
}

/// The node's start-up as a service that finishes once done: the Kubernetes components installed (when
/// configured), then the join or rejoin and the rest of the node's set-up (when join endpoints are set). A
/// control plane whose keyd holds the KEK already (unsealed at start) has nothing to join for; one that gets it
/// through Init or Recover while it retries stops retrying.
struct JoinRunner: Service {
    let components: ComponentsInstallation?
    let setUp: NodeSetUpRunner?
    let controlPlane: Bool
    let keyd: KeydGateway
    /// Signalled by Init or Recover once keyd holds the KEK.
    let keyHeld: CompletionSignal
    let logger: Logger
    /// Signalled when the start-up completed.
    let done = CompletionSignal()

    /// The runner the configuration asks for, or nil when this node neither installs nor joins.
    init?(
        configuration: TrustdConfiguration,
        pool: NIOThreadPool,
        keyd: KeydGateway,
        keyHeld: CompletionSignal,
        logger: Logger
    ) throws {
        components = try ComponentsInstallation(configuration: configuration, logger: logger.with(label: "components"))
        setUp = try Self.setUp(configuration: configuration, pool: pool, logger: logger)
        guard components != nil || setUp != nil else { return nil }
        controlPlane = configuration.role == .controlPlane
        self.keyd = keyd
        self.keyHeld = keyHeld
        self.logger = logger.with(label: "join")
    }

    /// The set-up runner, or nil when this node does not join (no endpoints).
    private static func setUp(
        configuration: TrustdConfiguration,
        pool: NIOThreadPool,
        logger: Logger
    ) throws -> NodeSetUpRunner? {
        var endpoints = configuration.joinEndpoints
        if let file = configuration.joinEndpointsFile {
            endpoints += try EndpointsFile.read(file)
        }
        guard !endpoints.isEmpty else { return nil }
        let verifier = try Self.serviceVerifier(configuration, for: "join endpoints are set")
        let nodeName = try Self.nodeName(configuration)
        let client = JoinClient(
            configuration: .init(
                endpoints: endpoints,
                role: configuration.role,
                nodeName: nodeName,
                serviceVerifier: verifier,
                callTimeout: .milliseconds(configuration.callTimeoutMilliseconds),
                deadline: .seconds(configuration.joinDeadlineSeconds),
                backoff: JoinBackoff(
                    initialMilliseconds: configuration.backoffInitialMilliseconds,
                    maximumMilliseconds: configuration.backoffMaxMilliseconds
                ),
                outputDirectory: configuration.outputDirectory
            ),
            keydSocketPath: configuration.keydSocket,
            threadPool: pool,
            logger: logger.with(label: "join")
        )
        let kubeadm = configuration.kubeadmPath.map {
            SubprocessKubeadmRunner(
                program: $0,
                timeout: .seconds(configuration.kubeadmTimeoutSeconds),
                logger: logger.with(label: "kubeadm")
            )
        }
        var runner = NodeSetUpRunner(
            client: client,
            kubeadm: kubeadm,
            keydSocket: configuration.keydSocket,
            outputDirectory: configuration.outputDirectory,
            logger: logger.with(label: "setup")
        )
        runner.handoff = configuration.kubeadmHandoff
        return runner
    }

    /// The check of another node's service (JoinService, KMS): its attestation against the policy in
    /// `join-service-policy-file`, which `user` needs.
    static func serviceVerifier(_ configuration: TrustdConfiguration, for user: String) throws -> ATLSVerifier {
        guard let policyFile = configuration.joinServicePolicyFile else {
            throw TrustdStartError(
                "\(user) but join-service-policy-file is not: the client would trust any service"
            )
        }
        let policyJSON = try BoundedFile.read(policyFile, limit: MeasurementPolicy.maximumLength)
        let policy: MeasurementPolicy
        do throws(CoreError) {
            policy = try MeasurementPolicy(json: policyJSON)
        } catch {
            throw TrustdStartError("join-service-policy-file \(policyFile): \(error.message)")
        }
        return ATLSVerifier(validators: [
            NativeTPMDocumentValidator(policy: policy.quotePolicy(expectedQualifyingData: []))
        ])
    }

    /// This node's name: `node-name`, or the host name.
    static func nodeName(_ configuration: TrustdConfiguration) throws -> String {
        guard let nodeName = configuration.nodeName?.description ?? HostName.current() else {
            throw TrustdStartError("node-name is not set and the host name is not a node name")
        }
        return nodeName
    }

    func run() async throws {
        _ = try await cancelWhenGracefulShutdown { try await components?.install() }
        if let setUp {
            if controlPlane, let phase = try? await keyd.call({ try $0.status().phase }), phase == .holdingKEK {
                logger.notice("keyd holds the cluster's KEK already (unsealed at start): no join needed")
            } else {
                let keyHeld = self.keyHeld
                let recovered = try await cancelWhenGracefulShutdown {
                    try await withThrowingTaskGroup(of: Bool.self) { group in
                        group.addTask {
                            try await setUp.run()
                            return false
                        }
                        group.addTask {
                            try await keyHeld.wait()
                            return true
                        }
                        defer { group.cancelAll() }
                        return try await group.next() ?? false
                    }
                }
                if recovered == true {
                    logger.notice("keyd holds the cluster's KEK through Init or Recover: join attempts stopped")
                }
            }
        }
        done.signal()
    }
}

/// The components file read and checked at start (a wrong one is exit status 2), installed by ``JoinRunner``.
struct ComponentsInstallation: Sendable {
    let installer: ComponentInstaller
    let components: [KubernetesComponent]

    /// nil when `kubernetes-components-file` is not set.
    init?(configuration: TrustdConfiguration, logger: Logger) throws {
        guard let file = configuration.kubernetesComponentsFile else { return nil }
        let bytes = try BoundedFile.read(file, limit: ComponentLimits.maxListBytes)
        do throws(ComponentError) {
            components = try ComponentList.parse(bytes, root: configuration.componentsInstallRoot)
        } catch {
            throw TrustdStartError("kubernetes-components-file \(file): \(error)")
        }
        installer = ComponentInstaller(
            root: configuration.componentsInstallRoot,
            maxBytes: configuration.componentMaxBytes,
            timeout: .seconds(configuration.componentTimeoutSeconds),
            logger: logger
        )
    }

    func install() async throws {
        installer.logger.info("Installing components", metadata: ["components.count": "\(components.count)"])
        try await installer.install(components)
    }
}

/// A one-shot signal for async waiters; a cancelled waiter returns with `CancellationError`.
final class CompletionSignal: Sendable {
    private struct State {
        var done = false
        var nextID = 0
        var waiters: [Int: CheckedContinuation<Void, any Error>] = [:]
    }
    private let state = Mutex(State())

    func signal() {
        let waiters = state.withLock { state in
            state.done = true
            defer { state.waiters = [:] }
            return state.waiters.values
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async throws {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resume: Result<Void, any Error>? = state.withLock { state in
                    if state.done { return .success(()) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let resume { continuation.resume(with: resume) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }
}

/// What JoinService hands joining nodes besides keys: the advertised API server, the cluster CA's key
/// hash, kubeadm's certificate key and version from the configuration's files, and a bootstrap token.
struct JoinServiceMaterial: JoinMaterialSource {
    let apiServerEndpoint: String
    let discoveryTokenCACertHash: String
    let certificateKey: String
    let kubernetesVersion: String
    let tokens: any BootstrapTokenSource

    init(configuration: TrustdConfiguration, logger: Logger) throws {
        guard let advertise = configuration.apiServerAdvertise else {
            throw TrustdStartError("a control plane serves JoinService: set api-server-advertise")
        }
        guard let caFile = configuration.kubernetesCAFile else {
            throw TrustdStartError("a control plane serves JoinService: set kubernetes-ca-file")
        }
        apiServerEndpoint = advertise.description
        let pem = try BoundedFile.read(caFile, limit: 65_536)
        do {
            let certificate = try Certificate(pemEncoded: String(decoding: pem, as: UTF8.self))
            var serializer = DER.Serializer()
            try serializer.serialize(certificate.publicKey)
            discoveryTokenCACertHash =
                "sha256:" + SHA256.hash(data: serializer.serializedBytes).map { String(format: "%02x", $0) }.joined()
        } catch {
            throw TrustdStartError("kubernetes-ca-file \(caFile) is not a PEM certificate: \(error)")
        }
        if let keyFile = configuration.kubeadmCertificateKeyFile {
            let text = String(decoding: try BoundedFile.read(keyFile, limit: 256), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            guard text.count == 64, text.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw TrustdStartError("kubeadm-certificate-key-file \(keyFile) does not hold 64 lowercase hex digits")
            }
            certificateKey = text
        } else {
            certificateKey = ""
        }
        kubernetesVersion = configuration.kubernetesVersion
        tokens = try KubernetesBootstrapTokens(configuration: configuration, logger: logger)
    }

    func material(nodeName: String, role: NodeRole) async throws -> JoinMaterial {
        if role == .controlPlane, certificateKey.isEmpty {
            throw TrustdStartError("a control plane asked to join but kubeadm-certificate-key-file is not set")
        }
        return JoinMaterial(
            apiServerEndpoint: apiServerEndpoint,
            token: try await tokens.token(for: nodeName),
            discoveryTokenCACertHash: discoveryTokenCACertHash,
            certificateKey: role == .controlPlane ? certificateKey : "",
            kubernetesVersion: kubernetesVersion
        )
    }
}

/// JoinService's material on a control plane whose Kubernetes files (CA, credentials) kubeadm init writes
/// after trustd started: made at the first ticket that needs it, again after a failure, then kept.
final class DeferredJoinMaterial: JoinMaterialSource {
    let configuration: TrustdConfiguration
    let logger: Logger
    private let made = Mutex<JoinServiceMaterial?>(nil)

    init(configuration: TrustdConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    func material(nodeName: String, role: NodeRole) async throws -> JoinMaterial {
        let material = try made.withLock { made in
            if let made { return made }
            let material = try JoinServiceMaterial(configuration: configuration, logger: logger)
            made = material
            return material
        }
        return try await material.material(nodeName: nodeName, role: role)
    }

    func shutdown() async { await made.withLock { $0 }?.tokens.shutdown() }
}

/// A cluster without Kubernetes (keys and disks only, as `make demo` runs it): empty join material.
struct KeysOnlyMaterial: JoinMaterialSource {
    func material(nodeName: String, role: NodeRole) async throws -> JoinMaterial {
        JoinMaterial(apiServerEndpoint: "", token: "", discoveryTokenCACertHash: "")
    }
}

/// Creates a bootstrap token for a joining node.
protocol BootstrapTokenSource: Sendable {
    func token(for nodeName: String) async throws -> String
    /// Closes the source's connections (before the process ends).
    func shutdown() async
}

/// Small files trustd reads at start, bounded and without following a final symbolic link.
enum BoundedFile {
    static func read(_ path: String, limit: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw TrustdStartError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw TrustdStartError("cannot read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { return bytes }
            bytes += buffer[0..<n]
            guard bytes.count <= limit else { throw TrustdStartError("\(path) is larger than \(limit) bytes") }
        }
    }
}

/// A join-endpoints file: one `host:port` per line, `#` comments and blank lines ignored, at most
/// ``TrustdConfiguration/maxJoinEndpoints`` entries, 64 KiB.
enum EndpointsFile {
    static func read(_ path: String) throws -> [HostPort] {
        let text = String(decoding: try BoundedFile.read(path, limit: 65_536), as: UTF8.self)
        var endpoints: [HostPort] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let entry = line.trimmingCharacters(in: .whitespaces)
            if entry.isEmpty || entry.hasPrefix("#") { continue }
            guard case .success(let endpoint) = HostPort.parse(entry, allowingNames: true) else {
                throw TrustdStartError("\(path) line \(index + 1): not host:port")
            }
            endpoints.append(endpoint)
            guard endpoints.count <= TrustdConfiguration.maxJoinEndpoints else {
                throw TrustdStartError("\(path) lists more than \(TrustdConfiguration.maxJoinEndpoints) endpoints")
            }
        }
        return endpoints
    }
}

/// The machine's host name when it is a valid node name.
enum HostName {
    static func current() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return nil }
        let name = String(cString: buffer)
        return (try? KubernetesNodeName(validating: name)) == nil ? nil : name
    }
}

extension Logger {
    /// This logger under another label, its metadata kept.
    func with(label: String) -> Logger {
        var logger = Logger(label: "trustd.\(label)")
        logger.logLevel = logLevel
        return logger
    }
}
