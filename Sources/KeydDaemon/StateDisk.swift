import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The result of one state-disk operation: the status to answer and what the audit record says.
struct DiskOutcome: Sendable {
    /// The answer status.
    var status: StatusCode
    /// The disk's lowercase UUID, when known.
    var uuid: String?
    /// Why the operation was refused or failed (no key material); nil on success.
    var reason: String?
    /// The inspect report (JSON), for `disk.inspect`.
    var report: String?
    /// Whether `disk.open` activated a mapping.
    var activated = false

    /// A refusal or failure with `status` and `reason`.
    static func refused(_ status: StatusCode, _ reason: String, uuid: String? = nil) -> DiskOutcome {
        DiskOutcome(status: status, uuid: uuid, reason: reason)
    }
}

/// A first-boot passphrase kept in memory only, between `disk.format` and `disk.bind`.
final class FirstBootKey {
    /// The random 32-byte passphrase.
    let secret: SecretBytes

    /// Takes custody of `secret`.
    init(_ secret: consuming SecretBytes) { self.secret = secret }
}

/// keyd's state-disk operations on LUKS2 through libcryptsetup: inspect, first-boot format, bind
/// (re-key to the KEK-derived key in ``StateDiskRekey``'s order) and open.
///
/// Single-threaded, like ``KeydService``, which audits every outcome.
public final class StateDisk {
    /// Length of the first-boot passphrase and of the derived disk key.
    static let keyByteCount = 32
    /// Label written by `disk.format`.
    public static let label = "asterism-state"
    /// The control node whose presence means the kernel's device mapper is usable.
    static let deviceMapperControl = "/dev/mapper/control"

    /// Whether a device without a LUKS2 header may be formatted.
    let allowInitialize: Bool
    /// The profile `disk.format` writes (configuration `disk-profile`).
    let formatProfile: DiskProfile
    /// keyd's state directory; header backups and disk records go to its `headers` subdirectory.
    let state: StateDirectory
    /// First-boot passphrases by disk UUID; memory only.
    private var firstBootKeys: [String: FirstBootKey] = [:]
    #if DEBUG
    /// The test-only fault armed from the environment at start (debug builds only; `fail` fires once).
    var fault = FaultInjection.fromEnvironment()
    #endif

    /// The subdirectory of the state directory that holds header backups and disk records.
    static let headersName = "headers"

    /// Makes the service over the open state directory.
    init(state: StateDirectory, allowInitialize: Bool, formatProfile: DiskProfile = .asterism) {
        self.allowInitialize = allowInitialize
        self.formatProfile = formatProfile
        self.state = state
        // libcryptsetup's messages carry no key material; route them to keyd's log, never stderr directly.
        LUKS2Log.setSink { level, message in
            switch level {
            case .error: Log.warning("libcryptsetup", ["message": message])
            case .normal, .verbose: Log.info("libcryptsetup", ["message": message])
            case .debug: break
            }
        }
    }

    /// Drops every first-boot passphrase (at shutdown).
    func forgetKeys() { firstBootKeys.removeAll() }

    // MARK: Operations

    /// `disk.inspect`: the header's facts and profile check, as a JSON report.
    func inspect(device: String) -> DiskOutcome {
        let header: LUKS2Header?
        do {
            header = try LUKS2Volume.inspect(path: device)
        } catch {
            return Self.outcome(of: error)
        }
        guard let header else {
            if let destroyed = headersDestroyed(device: device) { return destroyed }
            return DiskOutcome(status: .ok, report: #"{"luks2":false}"#)
        }
        let (facts, profile) = Self.check(header)
        guard let facts, case .success(let checked) = profile else {
            let reason = Self.rejection(profile)
            return .refused(.diskHeaderRejected, "header rejected: \(reason)", uuid: header.uuid)
        }
        let initialized = facts.stateDiskToken?.initialized ?? false
        let slots = header.keyslots.map { String($0.index) }.joined(separator: ",")
        let report =
            "{\"luks2\":true,\"uuid\":\(AuditJSON.quoted(header.uuid)),\"label\":\(AuditJSON.quoted(header.label)),"
            + "\"profile\":\(AuditJSON.quoted(checked.name)),\"initialized\":\(initialized),\"keyslots\":[\(slots)],"
            + "\"firstBootKeyHeld\":\(firstBootKeys[header.uuid] != nil),\"headerCheck\":\"ok\"}"
        return DiskOutcome(status: .ok, uuid: header.uuid, report: report)
    }

    /// `disk.format`: first-boot format with Asterism's profile and a fresh random passphrase kept in memory.
    func format(device: String) -> DiskOutcome {
        let header: LUKS2Header?
        do {
            header = try LUKS2Volume.inspect(path: device)
        } catch {
            return Self.outcome(of: error)
        }
        if let header {
            // Only a state disk that was never bound, or was marked by disk.reset, is formatted
            // again, and only when keyd no longer holds its first-boot passphrase.
            guard case .success(let checked) = checkedHeader(device: device), firstBootKeys[header.uuid] == nil,
                Self.markedUninitialized(checked.header)
            else {
                return .refused(
                    .invalidArgument,
                    "device holds a LUKS2 header that is bound, foreign or formatted this boot; not reformatted",
                    uuid: header.uuid
                )
            }
        } else {
            // Never initialize a device whose state disk keyd formatted and whose headers are now gone.
            if let destroyed = headersDestroyed(device: device) { return destroyed }
            guard allowInitialize else {
                return .refused(.diskNotLUKS2, "device holds no LUKS2 header and disk-allow-initialize is false")
            }
        }
        // The records of this format go to headers/: a headers/ the host replaced refuses the format
        // before the device is touched, so nothing is written there or through it.
        do {
            _ = try headers()
        } catch {
            return Self.outcome(of: error)
        }
        let passphrase = SecretBytes(randomByteCount: Self.keyByteCount)
        let profile = formatProfile
        let parameters = LUKS2FormatParameters(profile: profile)
        let uuid: String
        do {
            uuid = try passphrase.withUnsafeBytes { bytes in
                try LUKS2Volume.format(path: device, parameters: parameters, passphrase: bytes)
            }
        } catch {
            return Self.outcome(of: error)
        }
        firstBootKeys[uuid] = FirstBootKey(passphrase)
        recordDevice(device, uuid: uuid)
        recordFirstBootKeyslot(device: device, uuid: uuid)
        return DiskOutcome(status: .ok, uuid: uuid)
    }

    /// The name of the first-boot keyslot record of `uuid` in the headers directory.
    private static func firstBootRecordName(_ uuid: String) -> String { uuid + ".first-boot-keyslot" }

    /// The name of the device record of `uuid` in the headers directory.
    private static func deviceRecordName(_ uuid: String) -> String { uuid + ".device" }

    /// The headers directory, created when missing.
    func headers() throws -> StateDirectory {
        try state.subdirectory(Self.headersName, creatingWith: 0o700)
    }

    /// Records the single keyslot a fresh format made (``FirstBootKeyslot``), so that a successor
    /// keyd can remove it after a crash in the middle of a re-key.
    private func recordFirstBootKeyslot(device: String, uuid: String) {
        do {
            guard let header = try LUKS2Volume.inspect(path: device), header.keyslots.count == 1,
                let facts = Self.check(header).0, let slot = header.keyslots.first?.index,
                let salt = facts.keyslotSalts[slot]
            else {
                throw SystemError.verificationFailed(
                    call: "recordFirstBootKeyslot",
                    "a fresh format has not exactly one keyslot with a salt"
                )
            }
            let record = FirstBootKeyslot(index: slot, salt: salt)
            try headers().writeAtomically(Self.firstBootRecordName(uuid), bytes: Array(record.text.utf8), mode: 0o600)
        } catch {
            Log.warning(
                "First-boot keyslot record not written",
                ["disk.device": device, "disk.uuid": uuid, "error": "\(error)"]
            )
        }
    }

    /// The first-boot keyslot that the record of `uuid` names and that still exists on `device`, or nil.
    private func recordedFirstBootKeyslot(device: String, uuid: String) -> Int? {
        guard let headers = try? state.existingSubdirectory(Self.headersName),
            let bytes = try? headers.read(Self.firstBootRecordName(uuid), limit: FirstBootKeyslot.maximumLength),
            let record = try? FirstBootKeyslot(parsing: String(decoding: bytes, as: UTF8.self)),
            let header = try? LUKS2Volume.inspect(path: device), let facts = Self.check(header).0
        else { return nil }
        return record.keyslot(in: facts)
    }

    /// Remembers which device holds the state disk `uuid` (`<headers>/<uuid>.device`), so that a
    /// device whose both headers were destroyed is told apart from a blank one.
    func recordDevice(_ device: String, uuid: String) {
        do {
            let headers = try headers()
            // A re-initialized device replaces the record of the state disk it held before.
            for _ in 0..<64 {
                guard let previous = headersDestroyed(device: device)?.uuid,
                    try headers.remove(Self.deviceRecordName(previous))
                else { break }
                try headers.remove(Self.firstBootRecordName(previous))
            }
            try headers.writeAtomically(Self.deviceRecordName(uuid), bytes: Array(device.utf8), mode: 0o600)
        } catch {
            Log.warning(
                "State-disk device record not written",
                ["disk.device": device, "disk.uuid": uuid, "error": "\(error)"]
            )
        }
    }

    /// `diskHeadersDestroyed` when `device` has no LUKS2 header but keyd formatted a state disk on it.
    func headersDestroyed(device: String) -> DiskOutcome? {
        guard let headers = try? state.existingSubdirectory(Self.headersName), let names = try? headers.entries() else {
            return nil
        }
        for name in names where name.hasSuffix(".device") {
            guard let recorded = try? headers.read(name, limit: Limits.maxDevicePath),
                String(decoding: recorded, as: UTF8.self) == device
            else { continue }
            let uuid = String(name.dropLast(".device".count))
            return .refused(
                .diskHeadersDestroyed,
                "both LUKS2 headers are unreadable on a device that held state disk \(uuid); header backups are in \(headers.path)",
                uuid: uuid
            )
        }
        return nil
    }

    /// Whether the header carries a state-disk token that says not initialized.
    static func markedUninitialized(_ header: LUKS2Header) -> Bool {
        header.tokens.contains { token in
            guard let parsed = try? StateDiskToken(parsing: token.json) else { return false }
            return !parsed.initialized
        }
    }

    /// The UUID and profile of a LUKS2 device that passes the header check, or the refusal.
    func checkedHeader(device: String) -> Result<(header: LUKS2Header, profile: DiskProfile), DiskOutcomeError> {
        let header: LUKS2Header?
        do {
            header = try LUKS2Volume.inspect(path: device)
        } catch {
            return .failure(DiskOutcomeError(Self.outcome(of: error)))
        }
        guard let header else {
            if let destroyed = headersDestroyed(device: device) { return .failure(DiskOutcomeError(destroyed)) }
            return .failure(DiskOutcomeError(.refused(.diskNotLUKS2, "device holds no LUKS2 header")))
        }
        let (facts, profile) = Self.check(header)
        guard facts != nil, case .success(let checked) = profile else {
            let reason = Self.rejection(profile)
            return .failure(
                DiskOutcomeError(.refused(.diskHeaderRejected, "header rejected: \(reason)", uuid: header.uuid))
            )
        }
        return .success((header, checked))
    }

    /// `disk.bind`: re-keys from the in-memory first-boot passphrase to `newKey` in
    /// ``StateDiskRekey``'s order, backing up the header first and restoring it if a step fails.
    func bind(device: String, header: LUKS2Header, profile: DiskProfile, newKey: borrowing SecretBytes) -> DiskOutcome {
        let kdf = profile.kdf
        do {
            let volume = try LUKS2Volume(path: device, kdf: kdf)
            return rekey(volume, device: device, uuid: header.uuid, profile: profile, kdf: kdf, newKey: newKey)
        } catch {
            return Self.outcome(of: error, uuid: header.uuid)
        }
    }

    /// The re-key loop: observe, let ``StateDiskRekey`` decide, perform one step, repeat.
    private func rekey(
        _ volume: borrowing LUKS2Volume,
        device: String,
        uuid: String,
        profile: DiskProfile,
        kdf: LUKS2KDF,
        newKey: borrowing SecretBytes
    ) -> DiskOutcome {
        let oldKey = firstBootKeys[uuid]
        var backup: HeaderBackup?
        var steps: [String] = []
        // Each round observes the disk and performs the step the order asks for; 6 rounds cover 4 steps.
        for _ in 0..<6 {
            let observation: StateDiskRekey.Observation
            do {
                let tokenInitialized = try Self.stateToken(volume)?.token.initialized ?? false
                let old =
                    try oldKey.map { key in
                        try key.secret.withUnsafeBytes { bytes in try volume.verify(key: bytes) }
                    } ?? nil
                let new = try newKey.withUnsafeBytes { bytes in try volume.verify(key: bytes) }
                // Without the passphrase (keyd restarted mid re-key), the recorded first-boot keyslot stands
                // for the old key, but only once the new key opens a keyslot of its own.
                let recorded = oldKey == nil && new != nil ? recordedFirstBootKeyslot(device: device, uuid: uuid) : nil
                observation = StateDiskRekey.Observation(
                    oldKeyslot: old ?? (recorded == new ? nil : recorded),
                    newKeyslot: new,
                    tokenInitialized: tokenInitialized
                )
            } catch {
                return restoring(device: device, backup: backup, outcome: Self.outcome(of: error, uuid: uuid))
            }
            let step: StateDiskRekey.Step
            switch StateDiskRekey.resume(observed: observation) {
            case .neitherKeyOpens:
                let reason =
                    oldKey == nil
                    ? "no first-boot passphrase held for this disk (formatted by another keyd run?) and the derived key opens no keyslot"
                    : "neither the first-boot passphrase nor the derived key opens a keyslot (wrong key or damaged keyslot area: indistinguishable)"
                return restoring(device: device, backup: backup, outcome: .refused(.diskWrongKey, reason, uuid: uuid))
            case .keysShareKeyslot(let slot):
                return restoring(
                    device: device,
                    backup: backup,
                    outcome: .refused(
                        .internal,
                        "first-boot passphrase and derived key both open keyslot \(slot)",
                        uuid: uuid
                    )
                )
            case .perform(let next):
                step = next
            }
            if step == .done {
                firstBootKeys[uuid] = nil
                _ = try? headers().remove(Self.firstBootRecordName(uuid))
                let done = steps.isEmpty ? "already bound" : "steps " + steps.joined(separator: ",")
                return DiskOutcome(status: .ok, uuid: uuid, reason: done)
            }
            if backup == nil {
                switch backupHeader(volume, uuid: uuid) {
                case .success(let made): backup = made
                case .failure(let error): return Self.outcome(of: error, uuid: uuid)
                }
            }
            do {
                #if DEBUG
                // ``StateDiskRekey/resume(observed:)`` never asks for verifyNewKeyslot: the observation verifies.
                // So its fault fires once an observation has seen the new key open a keyslot.
                if observation.newKeyslot != nil { try injectFault(after: .verifyNewKeyslot) }
                #endif
                switch step {
                case .addNewKeyslot:
                    guard let oldKey else { preconditionFailure("resume asked to add a keyslot without the old key") }
                    _ = try oldKey.secret.withUnsafeBytes { old in
                        try newKey.withUnsafeBytes { new in
                            try volume.addKeyslot(existing: old, new: new, kdf: kdf)
                        }
                    }
                case .verifyNewKeyslot, .done:
                    break  // The next observation verifies.
                case .markTokenInitialized:
                    let existing = try Self.stateToken(volume)
                    try volume.setToken(
                        json: StateDiskToken(kind: profile.tokenKind, initialized: true).json,
                        id: existing?.id
                    )
                case .removeOldKeyslot:
                    guard let slot = observation.oldKeyslot else { preconditionFailure("no old keyslot to remove") }
                    try volume.destroyKeyslot(slot)
                }
                #if DEBUG
                try injectFault(after: step)
                #endif
            } catch {
                return restoring(
                    device: device,
                    backup: backup,
                    outcome: Self.outcome(of: error, uuid: uuid),
                    step: step
                )
            }
            steps.append(step.description)
        }
        return restoring(
            device: device,
            backup: backup,
            outcome: .refused(.internal, "re-key did not converge", uuid: uuid)
        )
    }

    /// `disk.open`: verifies `key` against the keyslots, then activates `mappingName` when the
    /// kernel's device mapper is present; without it answers ok with `activated` false.
    func open(
        device: String,
        mappingName: String,
        header: LUKS2Header,
        profile: DiskProfile,
        key: borrowing SecretBytes
    ) -> DiskOutcome {
        let uuid = header.uuid
        do {
            let volume = try LUKS2Volume(path: device, kdf: profile.kdf)
            let slot = try key.withUnsafeBytes { bytes in try volume.verify(key: bytes) }
            guard slot != nil else {
                return .refused(
                    .diskWrongKey,
                    "the derived key opens no keyslot (wrong key or damaged keyslot area: indistinguishable)",
                    uuid: uuid
                )
            }
            guard Self.deviceMapperAvailable() else {
                return DiskOutcome(
                    status: .ok,
                    uuid: uuid,
                    reason: "key verified; no device mapper here, activation unavailable"
                )
            }
            _ = try key.withUnsafeBytes { bytes in try volume.activate(name: mappingName, key: bytes) }
            return DiskOutcome(status: .ok, uuid: uuid, activated: true)
        } catch {
            return Self.outcome(of: error, uuid: uuid)
        }
    }

    // MARK: Helpers

    /// Runs `body` under the exclusive lock on `device` (``DeviceLock``): a device that another
    /// process has locked is `diskBusy` and stays untouched. A block device stays locked while `body`
    /// runs; an image file is only probed, because libcryptsetup locks image files itself (and would
    /// otherwise wait for the other process, stalling keyd). `exclusive` false takes a shared lock (reading).
    func whileLocked(device: String, exclusive: Bool = true, _ body: () -> DiskOutcome) -> DiskOutcome {
        let lock: DeviceLock
        do {
            lock = try DeviceLock(path: device, exclusive: exclusive)
        } catch {
            return Self.outcome(of: error)
        }
        guard lock.isBlockDevice else {
            lock.release()
            return body()
        }
        let outcome = body()
        lock.release()
        return outcome
    }

    #if DEBUG
    /// Fires the armed test fault after `step`: SIGKILL, or one injected failure (debug builds only).
    private func injectFault(after step: StateDiskRekey.Step) throws(KeydError) {
        guard let fault, fault.step == step else { return }
        switch fault.action {
        case .kill:
            Log.warning("Fault injection: SIGKILL", ["rekey.step": step.description])
            kill(getpid(), SIGKILL)
            while true { pause() }
        case .fail:
            self.fault = nil
            Log.warning("Fault injection: failing step", ["rekey.step": step.description])
            throw .injectedFault(after: step)
        }
    }
    #endif

    /// True when the device-mapper control node opens (it may exist while the kernel lacks the driver).
    static func deviceMapperAvailable() -> Bool {
        guard let control = try? FileDescriptor.open(path: deviceMapperControl, flags: O_RDWR) else { return false }
        try? control.close()
        return true
    }

    /// Copies the header to `<headers>/<uuid><suffix>` (through a temporary file and a rename);
    /// libcryptsetup writes it through the directory's pinned descriptor path.
    func backupHeader(
        _ volume: borrowing LUKS2Volume,
        uuid: String,
        suffix: String = ".img"
    ) -> Result<HeaderBackup, SystemError> {
        do {
            let headers = try headers()
            let name = uuid + suffix
            let temporary = name + ".tmp"
            try headers.remove(temporary)
            try headers.withPinnedPath(temporary) { try volume.backupHeader(to: $0) }
            try headers.rename(temporary, to: name)
            try headers.sync()
            return .success(HeaderBackup(name: name, path: headers.path + "/" + name))
        } catch let error as SystemError {
            return .failure(error)
        } catch {
            return .failure(SystemError.errno(EIO, call: "backupHeader", context: "\(error)"))
        }
    }

    /// Restores the backup (when one was made) and returns `outcome` with the restore noted.
    private func restoring(
        device: String,
        backup: HeaderBackup?,
        outcome: DiskOutcome,
        step: StateDiskRekey.Step? = nil
    ) -> DiskOutcome {
        var result = outcome
        let at = step.map { " at step \($0)" } ?? ""
        guard let backup else { return result }
        do {
            try headers().withPinnedPath(backup.name) { try LUKS2Volume.restoreHeader(path: device, from: $0) }
            result.reason = (result.reason ?? "failed") + at + "; header restored from \(backup.path)"
        } catch {
            Log.error("State-disk header restore failed", ["disk.device": device, "error": "\(error)"])
            result.reason = (result.reason ?? "failed") + at + "; header restore from \(backup.path) failed: \(error)"
        }
        return result
    }

    /// The state-disk token of `volume` and its id, or nil.
    private static func stateToken(
        _ volume: borrowing LUKS2Volume
    ) throws(SystemError) -> (id: Int, token: StateDiskToken)? {
        for token in try volume.tokens() {
            if let parsed = try? StateDiskToken(parsing: token.json) { return (token.id, parsed) }
        }
        return nil
    }

    /// KeydCore facts of `header` and the profile check.
    private static func check(_ header: LUKS2Header) -> (LUKS2HeaderFacts?, Result<DiskProfile, HeaderRejection>?) {
        do {
            let facts = try LUKS2HeaderFacts(header)
            return (facts, DiskProfile.check(facts))
        } catch {
            return (nil, nil)
        }
    }

    /// Why a header was rejected: the profile check's finding, or unparsable metadata.
    private static func rejection(_ profile: Result<DiskProfile, HeaderRejection>?) -> String {
        if case .failure(let rejection)? = profile { return rejection.description }
        return "LUKS2 metadata does not parse"
    }

    /// Maps a libcryptsetup or system failure to a disk status.
    static func outcome(of failure: any Error, uuid: String? = nil) -> DiskOutcome {
        guard let error = failure as? SystemError else { return .refused(.internal, "\(failure)", uuid: uuid) }
        let status: StatusCode
        switch error.code {
        case .unexpectedFileType, .invalidFileName: status = .stateRejected
        case .luks2HeaderUnreadable: status = .diskHeadersDestroyed
        case .errno(ENOENT), .errno(ENODEV), .errno(ENXIO): status = .diskMissing
        case .errno(EBUSY): status = .diskBusy
        case .errno(EPERM): status = .diskWrongKey
        default: status = .internal
        }
        return .refused(status, error.description, uuid: uuid)
    }

}

/// A header backup in the headers directory: its name there, and its path for messages.
struct HeaderBackup {
    /// The file name in `<state-dir>/headers`.
    let name: String
    /// `<state-dir>/headers/<name>`, for messages and audit records.
    let path: String
}

/// A disk refusal carried through a `Result`.
struct DiskOutcomeError: Error {
    /// The outcome to answer and audit.
    let outcome: DiskOutcome

    init(_ outcome: DiskOutcome) { self.outcome = outcome }
}
