import KeydClient
import KeydProtocol
import Logging
import Synchronization
import TrustdCore

#if canImport(Glibc)
import Glibc
#endif

/// Carries out ``NodeSetUp``'s decisions: observes the node (keyd's boot key, the join files, kubeadm's
/// marker), reads and writes the state file (`node-setup.state` in the output directory, atomic), asks
/// for a ticket through the join client, recording each step as it completes, and runs kubeadm join.
struct NodeSetUpRunner: Sendable {
    /// The state file's name in the output directory.
    static let stateFileName = "node-setup.state"
    /// Written once `kubeadm join` exited 0.
    static let kubeadmMarkerName = "kubeadm-join.done"

    let client: JoinClient
    let kubeadm: (any KubeadmRunner)?
    /// Whether kubeadm join runs as root from `asterism-kubeadm-join.service` with the configuration written
    /// here (`kubeadm-handoff`), instead of through ``kubeadm``.
    var handoff = false
    let keydSocket: String
    let outputDirectory: String
    let logger: Logger

    /// Runs the set-up to its end.
    func run() async throws {
        if kubeadm == nil, !handoff {
            logger.notice("kubeadm-path is not set: the node set-up ends without a kubeadm step")
        }
        while true {
            let observed = try await observe()
            let persisted = try readState()
            let (state, action) = try NodeSetUp.resume(from: persisted, observing: observed)
            try writeState(state)
            logger.info(
                "Node set-up",
                metadata: ["setup.completed": "\(state.completed?.description ?? "none")", "setup.next": "\(action)"]
            )
            switch action {
            case .done:
                return
            case .requestTicket(let kind):
                try await requestTicket(kind, from: state)
            case .runKubeadm where handoff:
                let file = try KubeadmConfigFile.write(try joinConfiguration(), directory: outputDirectory)
                logger.notice(
                    "kubeadm join handed to asterism-kubeadm-join.service (root)",
                    metadata: ["kubeadm.config": "\(file)", "kubeadm.marker": "\(Self.kubeadmMarkerName)"]
                )
                return
            case .runKubeadm:
                try await runKubeadm(from: state)
            }
        }
    }

    /// A ticket of `kind` through the join client, each step recorded as the client reports it.
    private func requestTicket(_ kind: JoinTicketKind, from start: NodeSetUpState) async throws {
        let progress = Mutex(start)
        let directory = outputDirectory
        let observer: JoinProgressObserver = { step throws(JoinClientError) in
            let next: NodeSetUpState? = progress.withLock { state in
                switch step {
                case .ticketReceived:
                    state = state.recording(.ticketReceived)
                case .envelopeAccepted(let answer):
                    // keyd's one `envelope.accept` opened the disk and marked PCR 15: three steps, in order.
                    state = state.recording(.envelopeAccepted).recording(.pcr15Marked, clusterID: answer.clusterID)
                        .recording(.diskOpened)
                case .filesWritten:
                    return nil
                }
                return state
            }
            guard let next else { return }
            do throws(NodeSetUpError) {
                try Self.write(next, directory: directory)
            } catch {
                throw .output(error.description)
            }
        }
        _ = kind == .join ? try await client.join(observing: observer) : try await client.rejoin(observing: observer)
    }

    /// `kubeadm join` with the written join material; the marker, then the step.
    private func runKubeadm(from state: NodeSetUpState) async throws {
        guard let kubeadm else { preconditionFailure("the set-up ran kubeadm without one configured") }
        let configuration = try joinConfiguration()
        let configFile = try KubeadmConfigFile.write(configuration, directory: outputDirectory)
        // The file holds the bootstrap token: gone once kubeadm is done with it.
        defer { unlink(configFile) }
        try await kubeadm.join(configuration, configFile: configFile)
        let dirFD = open(outputDirectory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dirFD >= 0 else { throw TrustdStartError("cannot open \(outputDirectory): \(errnoText())") }
        defer { close(dirFD) }
        try JoinFiles.replace(
            Self.kubeadmMarkerName,
            in: dirFD,
            with: Array("kubeadm join completed\n".utf8),
            mode: 0o644
        )
        try Self.write(state.recording(.kubeadmDone), directory: outputDirectory)
    }

    /// kubeadm's join configuration from the join material written.
    private func joinConfiguration() throws -> KubeadmJoinConfiguration {
        let material = try JoinFiles(directory: outputDirectory).readMaterial()
        return KubeadmJoinConfiguration(
            apiServerEndpoint: material.apiServerEndpoint,
            token: material.token,
            caCertHash: material.discoveryTokenCACertHash,
            nodeName: material.nodeName,
            certificateKey: material.controlPlane ? material.certificateKey : nil
        )
    }

    /// What the node shows now. keyd may still be starting: its boot key is asked for until it answers,
    /// with the join's backoff, within the join's deadline.
    private func observe() async throws -> NodeSetUpObservations {
        let clock = ContinuousClock()
        let deadline = clock.now + client.configuration.deadline
        var attempt = 0
        var bootKey: [UInt8]?
        while bootKey == nil {
            attempt += 1
            do throws(KeydClientError) {
                bootKey = try Self.keydBootKey(keydSocket)
            } catch {
                guard error.isUnreachable, clock.now < deadline else { throw error }
                let pause = client.configuration.backoff.pauseMilliseconds(
                    afterAttempt: attempt,
                    hintMilliseconds: nil,
                    random: Double.random(in: 0..<1)
                )
                logger.warning("keyd is not reachable yet", metadata: ["keyd.socket": "\(keydSocket)"])
                try await Task.sleep(for: .milliseconds(pause))
            }
        }
        var info = stat()
        return NodeSetUpObservations(
            keydBootKey: bootKey!,
            joinMaterialPresent: (try? JoinFiles(directory: outputDirectory).readMaterial()) != nil,
            kubeadmCompleted: lstat(outputDirectory + "/" + Self.kubeadmMarkerName, &info) == 0,
            kubeadmConfigured: kubeadm != nil || handoff
        )
    }

    /// keyd's boot public key (`bootKey.get`).
    private static func keydBootKey(_ socket: String) throws(KeydClientError) -> [UInt8] {
        let connection = try KeydConnection(path: socket)
        defer { connection.close() }
        return try connection.bootKey().publicKey
    }

    /// The state file, nil when there is none.
    private func readState() throws -> NodeSetUpState? {
        let path = outputDirectory + "/" + Self.stateFileName
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        if fd < 0, errno == ENOENT { return nil }
        guard fd >= 0 else { throw TrustdStartError("cannot open \(path): \(errnoText())") }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: NodeSetUpState.maximumBytes + 1)
        let count = read(fd, &bytes, bytes.count)
        guard count >= 0 else { throw TrustdStartError("cannot read \(path): \(errnoText())") }
        do throws(NodeSetUpError) {
            return try NodeSetUpState(parsing: Array(bytes[..<count]))
        } catch {
            throw TrustdStartError("\(path): \(error); remove it to start the set-up over")
        }
    }

    private func writeState(_ state: NodeSetUpState) throws {
        do throws(NodeSetUpError) {
            try Self.write(state, directory: outputDirectory)
        } catch {
            throw TrustdStartError(error.description)
        }
    }

    /// Replaces the state file atomically (temporary file, fsync, rename, directory fsync).
    static func write(_ state: NodeSetUpState, directory: String) throws(NodeSetUpError) {
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dirFD >= 0 else { throw .io("cannot open \(directory): \(errnoText())") }
        defer { close(dirFD) }
        do throws(JoinClientError) {
            try JoinFiles.replace(stateFileName, in: dirFD, with: state.encoded, mode: 0o600)
        } catch {
            throw .io("cannot write \(directory)/\(stateFileName): \(error)")
        }
        guard fsync(dirFD) == 0 else { throw .io("cannot sync \(directory): \(errnoText())") }
    }
}
