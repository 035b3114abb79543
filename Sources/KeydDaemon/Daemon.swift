import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// keyd's start-up and shutdown around the event loop: socket activation or bound sockets,
/// configuration, hardening, the TPM and the audit log, then the loop until SIGTERM.
public enum Daemon {
    /// Capabilities keyd keeps: device-mapper activation (CAP_SYS_ADMIN) and locking memory (CAP_IPC_LOCK).
    static let keptCapabilities: Set<Capability> = [.sysAdmin, .ipcLock]

    /// The descriptors systemd passed by name, or nil when keyd was not socket-activated.
    static func socketActivation() throws(KeydError) -> [String: Int32]? {
        let environment = SocketActivation.processEnvironment()
        guard environment["LISTEN_FDS"] != nil else { return nil }
        do {
            let named = try SocketActivation.parse(environment: environment, currentPID: getpid())
            SocketActivation.unsetEnvironment()
            return named
        } catch {
            throw .startup("socket activation: \(error)")
        }
    }

    /// Sockets from systemd (names "keyd" and "admin") or bound by keyd when run by hand.
    static func openListeners(
        _ options: Options,
        _ configuration: KeydConfiguration,
        activation: [String: Int32]?
    ) throws(KeydError) -> (
        listeners: [(listener: UnixListener, role: ListenerRole)], activated: Bool
    ) {
        if let named = activation {
            do {
                var listeners: [(listener: UnixListener, role: ListenerRole)] = []
                for role in ListenerRole.allCases {
                    guard let fd = named[role.rawValue] else {
                        throw KeydError.startup(
                            "socket activation passed no socket named '\(role.rawValue)' (got \(named.keys.sorted()))"
                        )
                    }
                    try SocketActivation.validateListeningUnixSocket(fd: fd)
                    listeners.append((try UnixListener.adopt(FileDescriptor(rawValue: fd)), role))
                }
                return (listeners, true)
            } catch let error as KeydError {
                throw error
            } catch {
                throw .startup("socket activation: \(error)")
            }
        }
        guard let socketPath = options.socketPath, let adminPath = options.adminSocketPath else {
            throw .usage("not socket-activated: --socket and --admin-socket are required")
        }
        do {
            let trustd = try UnixListener.bind(path: socketPath, mode: mode_t(configuration.trustdSocketMode))
            let admin = try UnixListener.bind(path: adminPath, mode: mode_t(configuration.adminSocketMode))
            return ([(trustd, .trustd), (admin, .admin)], false)
        } catch {
            throw .startup("binding sockets: \(error)")
        }
    }

    /// Drops every capability but `keptCapabilities`, proves it, and seals the process.
    static func harden() throws(KeydError) -> String {
        do {
            try ProcessHardening.ignoreSIGPIPE()
            let sets = try Capabilities.reduce(keeping: keptCapabilities)
            try ProcessHardening.setNoNewPrivileges()
            try ProcessHardening.setNotDumpable()
            guard try ProcessHardening.noNewPrivileges(), try !ProcessHardening.isDumpable() else {
                throw KeydError.startup("no_new_privs or dumpable did not hold after prctl")
            }
            var memory = "not locked (no cap_ipc_lock)"
            if sets.effective.contains(.ipcLock) {
                try ProcessHardening.lockMemoryOnFault()
                memory = "locked on fault"
            }
            return
                "capabilities=\(sets.effective.isEmpty ? "none" : sets.effective.map(\.name).sorted().joined(separator: ",")) memory=\(memory)"
        } catch let error as KeydError {
            throw error
        } catch {
            throw .startup("hardening: \(error)")
        }
    }

    static func loadConfiguration(_ path: String?) throws(KeydError) -> KeydConfiguration {
        guard let path else { return KeydConfiguration() }
        do {
            let bytes = try readWholeFile(path: path, limit: 65_536)
            return try KeydConfiguration.parse(String(decoding: bytes, as: UTF8.self))
        } catch {
            throw .startup("configuration \(path): \(error)")
        }
    }

    public static func run(_ options: Options) throws(KeydError) {
        let activation = try socketActivation()
        do {
            try ProcessHardening.closeInheritedDescriptors(keeping: Set(activation.map { Array($0.values) } ?? []))
        } catch {
            throw .startup("closing inherited descriptors: \(error)")
        }
        let configuration = try loadConfiguration(options.configPath)
        do {
            let connections = configuration.maxConnections + configuration.maxAdminConnections
            _ = try ProcessHardening.raiseOpenFileLimit(to: UInt64(connections + 64))
        } catch {
            Log.warning("Open-file limit not raised", ["error": "\(error)"])
        }
        let signals: SignalFD
        do {
            signals = try SignalFD(signals: [SIGTERM, SIGINT])
        } catch {
            throw .startup("signalfd: \(error)")
        }
        let (listeners, activated) = try openListeners(options, configuration, activation: activation)
        let state: StateDirectory
        do {
            state = try StateDirectory(path: options.stateDirectory, creatingWith: 0o700)
        } catch {
            throw .startup("state directory \(options.stateDirectory): \(error)")
        }
        // The TPM first: the audit log is checked against the audit key and counter it holds.
        let tpm = TPMService(configuration: configuration, tcti: options.tcti ?? configuration.tpmTCTI, state: state)
        let service = try KeydService(
            state: state,
            tpm: tpm,
            diskAllowInitialize: configuration.diskAllowInitialize,
            diskProfile: configuration.diskProfile,
            stateDiskDevice: configuration.stateDiskDevice,
            settings: try ReleaseSettings.load(configuration)
        )
        let hardening = try harden()

        let classifier = PeerClassifier(
            trustdUIDs: configuration.trustdUIDs,
            trustdGIDs: configuration.trustdGIDs,
            adminUIDs: configuration.adminUIDs,
            adminGIDs: configuration.adminGIDs
        )
        let loop = EventLoop(
            listeners: listeners,
            signals: signals,
            service: service,
            classifier: classifier,
            configuration: configuration
        )
        service.auditStart(socketActivated: activated)
        service.auditTrustCheck()
        service.unsealStoredKEK()
        service.commitAudit()
        Log.notice(
            "keyd ready",
            [
                "version": KeydService.version, "socket.activated": "\(activated)", "hardening": hardening,
                "state.dir": options.stateDirectory,
            ]
        )
        _ = try? SystemdNotify.send("READY=1\nSTATUS=Serving")

        loop.run()

        _ = try? SystemdNotify.send("STOPPING=1")
        service.shutdown()
        service.auditLifecycle(.keydStop, detail: [])
        for (listener, _) in listeners { try? listener.close(unlinkingPath: !activated) }
        Log.notice("keyd stopped")
    }
}
