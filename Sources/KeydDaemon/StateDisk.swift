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
    /// The disk's UUID, once the header check accepted it.
    var uuid: DiskUUID?
    /// Why the operation was refused or failed (no key material); nil on success.
    var reason: String?
    /// The inspect report (JSON), for `disk.inspect`.
    var report: String?
    /// Whether `disk.open` activated a mapping.
    var activated = false

    /// A refusal or failure with `status` and `reason`.
    static func refused(_ status: StatusCode, _ reason: String, uuid: DiskUUID? = nil) -> DiskOutcome {
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
    /// The state-disk device the configuration names (`state-disk-device`): an empty device field means it.
    let configuredDevice: String?
    /// First-boot passphrases by disk UUID; memory only.
    private var firstBootKeys: [DiskUUID: FirstBootKey] = [:]
    #if DEBUG
    /// The test-only fault armed from the environment at start (debug builds only; `fail` fires once).
    var fault = FaultInjection.fromEnvironment()
    #endif

    /// The subdirectory of the state directory that holds header backups and disk records.
    static let headersName = "headers"

    /// Makes the service over the open state directory.
    init(
        state: StateDirectory,
        allowInitialize: Bool,
        formatProfile: DiskProfile = .asterism,
        configuredDevice: String? = nil
    ) {
        self.allowInitialize = allowInitialize
        self.formatProfile = formatProfile
        self.configuredDevice = configuredDevice
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

    /// Whether keyd holds the first-boot passphrase of `uuid` (it formatted that disk this boot).
    func holdsFirstBootKey(_ uuid: DiskUUID) -> Bool { firstBootKeys[uuid] != nil }

    /// Drops every first-boot passphrase (at shutdown).
    func forgetKeys() { firstBootKeys.removeAll() }

    // MARK: Operations

    /// `disk.inspect`: the header's facts and profile check, as a JSON report.
    func inspect(device: DiskDevice) -> DiskOutcome {
        let header: LUKS2Header?
        do {
            header = try LUKS2Volume.inspect(path: device.pinnedPath)
        } catch {
            return Self.outcome(of: error)
        }
        guard let header else {
            if let destroyed = headersDestroyed(device: device.path) { return destroyed }
            return DiskOutcome(status: .ok, report: #"{"luks2":false}"#)
        }
        let checked: CheckedHeader
        switch Self.check(header) {
        case .failure(let refusal): return refusal.outcome
        case .success(let value): checked = value
        }
        let initialized = checked.stateDiskToken?.initialized ?? false
        let slots = header.keyslots.map { String($0.index) }.joined(separator: ",")
        let report =
            "{\"luks2\":true,\"uuid\":\"\(checked.uuid)\",\"label\":\(AuditJSON.quoted(checked.label)),"
            + "\"profile\":\(AuditJSON.quoted(checked.profile.name)),\"initialized\":\(initialized),\"keyslots\":[\(slots)],"
            + "\"firstBootKeyHeld\":\(firstBootKeys[checked.uuid] != nil),\"headerCheck\":\"ok\"}"
        return DiskOutcome(status: .ok, uuid: checked.uuid, report: report)
    }

    /// `disk.format`: first-boot format with the configured profile and a fresh random passphrase kept in memory.
    func format(device: DiskDevice) -> DiskOutcome {
        let header: LUKS2Header?
        do {
            header = try LUKS2Volume.inspect(path: device.pinnedPath)
        } catch {
            return Self.outcome(of: error)
        }
        if let header {
            // Only a state disk that passes the header check and was never bound, or was marked by
            // disk.reset, is formatted again, and only when keyd no longer holds its first-boot passphrase.
            let checked: CheckedHeader
            switch Self.check(header) {
            case .failure(let refusal): return refusal.outcome
            case .success(let value): checked = value
            }
            guard firstBootKeys[checked.uuid] == nil, checked.stateDiskToken?.initialized == false else {
                return .refused(
                    .invalidArgument,
                    "device holds a LUKS2 state disk that is bound, unmarked or formatted this boot; not reformatted",
                    uuid: checked.uuid
                )
            }
        } else {
            // Never initialize a device whose state disk keyd formatted and whose headers are now gone.
            if let destroyed = headersDestroyed(device: device.path) { return destroyed }
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
        let parameters = LUKS2FormatParameters(profile: formatProfile)
        let uuid: DiskUUID
        do {
            let formatted = try passphrase.withUnsafeBytes { bytes in
                try LUKS2Volume.format(path: device.pinnedPath, parameters: parameters, passphrase: bytes)
            }
            uuid = try DiskUUID(validating: formatted)
        } catch {
            return Self.outcome(of: error)
        }
        firstBootKeys[uuid] = FirstBootKey(passphrase)
        recordDevice(device.path, uuid: uuid)
        recordFirstBootKeyslot(device: device, uuid: uuid)
        return DiskOutcome(status: .ok, uuid: uuid)
    }

    /// The name of the first-boot keyslot record of `uuid` in the headers directory.
    private static func firstBootRecordName(_ uuid: DiskUUID) -> String { uuid.text + ".first-boot-keyslot" }

    /// The name of the device record of `uuid` in the headers directory.
    private static func deviceRecordName(_ uuid: DiskUUID) -> String { uuid.text + deviceRecordSuffix }

    /// The suffix of device records.
    private static let deviceRecordSuffix = ".device"

    /// The headers directory, created when missing.
    func headers() throws -> StateDirectory {
        try state.subdirectory(Self.headersName, creatingWith: 0o700)
    }

    /// Records the single keyslot a fresh format made (``FirstBootKeyslot``), so that a successor
    /// keyd can remove it after a crash in the middle of a re-key.
    private func recordFirstBootKeyslot(device: DiskDevice, uuid: DiskUUID) {
        do {
            guard let header = try LUKS2Volume.inspect(path: device.pinnedPath), header.keyslots.count == 1,
                let facts = try? LUKS2HeaderFacts(header), let slot = header.keyslots.first?.index,
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
                ["disk.device": device.path, "disk.uuid": uuid.text, "error": "\(error)"]
            )
        }
    }

    /// The first-boot keyslot that the record of `uuid` names and that still exists on `device`, or nil.
    private func recordedFirstBootKeyslot(device: DiskDevice, uuid: DiskUUID) -> Int? {
        guard let headers = try? state.existingSubdirectory(Self.headersName),
            let bytes = try? headers.read(Self.firstBootRecordName(uuid), limit: FirstBootKeyslot.maximumLength),
            let record = try? FirstBootKeyslot(parsing: String(decoding: bytes, as: UTF8.self)),
            let header = try? LUKS2Volume.inspect(path: device.pinnedPath), let facts = try? LUKS2HeaderFacts(header)
        else { return nil }
        return record.keyslot(in: facts)
    }

    /// Remembers which device holds the state disk `uuid` (`<headers>/<uuid>.device`), so that a
    /// device whose both headers were destroyed is told apart from a blank one.
    func recordDevice(_ device: String, uuid: DiskUUID) {
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
                ["disk.device": device, "disk.uuid": uuid.text, "error": "\(error)"]
            )
        }
    }

    /// `diskHeadersDestroyed` when `device` has no LUKS2 header but keyd formatted a state disk on it.
    func headersDestroyed(device: String) -> DiskOutcome? {
        guard let headers = try? state.existingSubdirectory(Self.headersName), let names = try? headers.entries() else {
            return nil
        }
        for name in names where name.hasSuffix(Self.deviceRecordSuffix) {
            // A record whose name is not a UUID is not keyd's: the host may write this directory.
            guard let uuid = try? DiskUUID(validating: String(name.dropLast(Self.deviceRecordSuffix.count))),
                let recorded = try? headers.read(name, limit: Limits.maxDevicePath),
                String(decoding: recorded, as: UTF8.self) == device
            else { continue }
            return .refused(
                .diskHeadersDestroyed,
                "both LUKS2 headers are unreadable on a device that held state disk \(uuid); header backups are in \(headers.path)",
                uuid: uuid
            )
        }
        return nil
    }

    /// The checked header of `device`, or the refusal.
    func checkedHeader(device: DiskDevice) -> Result<CheckedHeader, DiskOutcomeError> {
        let header: LUKS2Header?
        do {
            header = try LUKS2Volume.inspect(path: device.pinnedPath)
        } catch {
            return .failure(DiskOutcomeError(Self.outcome(of: error)))
        }
        guard let header else {
            if let destroyed = headersDestroyed(device: device.path) { return .failure(DiskOutcomeError(destroyed)) }
            return .failure(DiskOutcomeError(.refused(.diskNotLUKS2, "device holds no LUKS2 header")))
        }
        return Self.check(header)
    }

    /// Opens `device` for keyslot work and checks its header again on that handle, the one that will
    /// run the KDF: the host may rewrite the disk after an earlier check. Throws ``DiskOutcomeError``
    /// for a header that no longer passes or now names another disk or profile.
    func volume(_ device: DiskDevice, checked: CheckedHeader) throws -> LUKS2Volume {
        let volume = try LUKS2Volume(path: device.pinnedPath, kdf: checked.profile.kdf)
        let again = try Self.check(try volume.header()).get()
        guard again.uuid == checked.uuid, again.profile == checked.profile else {
            throw DiskOutcomeError(
                .refused(.diskHeaderRejected, "header changed during the request", uuid: checked.uuid)
            )
        }
        return volume
    }

    /// `disk.bind`: re-keys from the in-memory first-boot passphrase to `newKey` in
    /// ``StateDiskRekey``'s order, backing up the header first and restoring it if a step fails.
    func bind(device: DiskDevice, checked: CheckedHeader, newKey: borrowing SecretBytes) -> DiskOutcome {
        do {
            let volume = try volume(device, checked: checked)
            return rekey(volume, device: device, uuid: checked.uuid, profile: checked.profile, newKey: newKey)
        } catch {
            return Self.outcome(of: error, uuid: checked.uuid)
        }
    }

    /// The re-key loop: observe, let ``StateDiskRekey`` decide, perform one step, repeat.
    private func rekey(
        _ volume: borrowing LUKS2Volume,
        device: DiskDevice,
        uuid: DiskUUID,
        profile: DiskProfile,
        newKey: borrowing SecretBytes
    ) -> DiskOutcome {
        let kdf = profile.kdf
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
        device: DiskDevice,
        mappingName: String,
        checked: CheckedHeader,
        key: borrowing SecretBytes
    ) -> DiskOutcome {
        let uuid = checked.uuid
        do {
            let volume = try self.volume(device, checked: checked)
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

    /// Opens the device at `path` (``DiskDevice``: a block device or an image file, nothing else),
    /// refuses one of keyd's own files, and runs `body` under the device's BSD lock (``DeviceLock``):
    /// a device that another process has locked is `diskBusy` and stays untouched. A block device
    /// stays locked while `body` runs; an image file is only probed, because libcryptsetup locks image
    /// files itself (and would otherwise wait for the other process, stalling keyd). `exclusive`
    /// false takes a shared lock (reading).
    func withDevice(_ path: String, exclusive: Bool = true, _ body: (DiskDevice) -> DiskOutcome) -> DiskOutcome {
        let device: DiskDevice
        do {
            device = try DiskDevice(path: path)
        } catch {
            return Self.outcome(of: error, opening: true)
        }
        // keyd's header backups, audit log and sealed KEK are no disk to inspect, format or reset.
        if device.kind == .imageFile, holdsOwnFile(device.identity) {
            return .refused(.diskUnusable, "the path names a file in keyd's state directory")
        }
        let lock: DeviceLock
        do {
            lock = try DeviceLock(device, exclusive: exclusive)
        } catch {
            return Self.outcome(of: error)
        }
        guard device.kind == .blockDevice else {
            lock.release()
            return body(device)
        }
        let outcome = body(device)
        lock.release()
        return outcome
    }

    /// Whether `identity` is a file of the state directory or its headers subdirectory.
    private func holdsOwnFile(_ identity: FileIdentity) -> Bool {
        if (try? state.holds(identity)) == true { return true }
        guard let headers = try? state.existingSubdirectory(Self.headersName) else { return false }
        return (try? headers.holds(identity)) == true
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
        uuid: DiskUUID,
        suffix: String = ".img"
    ) -> Result<HeaderBackup, SystemError> {
        do {
            let headers = try headers()
            let name = uuid.text + suffix
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
        device: DiskDevice,
        backup: HeaderBackup?,
        outcome: DiskOutcome,
        step: StateDiskRekey.Step? = nil
    ) -> DiskOutcome {
        var result = outcome
        let at = step.map { " at step \($0)" } ?? ""
        guard let backup else { return result }
        do {
            try headers().withPinnedPath(backup.name) {
                try LUKS2Volume.restoreHeader(path: device.pinnedPath, from: $0)
            }
            result.reason = (result.reason ?? "failed") + at + "; header restored from \(backup.path)"
        } catch {
            Log.error("State-disk header restore failed", ["disk.device": device.path, "error": "\(error)"])
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

    /// The header check of `header` (``DiskProfile/check(_:)``); a refusal is `diskHeaderRejected`
    /// with the field and the value found, quoted.
    static func check(_ header: LUKS2Header) -> Result<CheckedHeader, DiskOutcomeError> {
        let facts: LUKS2HeaderFacts
        do {
            facts = try LUKS2HeaderFacts(header)
        } catch {
            return .failure(DiskOutcomeError(.refused(.diskHeaderRejected, "header rejected: \(error.message)")))
        }
        return DiskProfile.check(facts).mapError { rejection in
            DiskOutcomeError(.refused(.diskHeaderRejected, "header rejected: \(rejection)"))
        }
    }

    /// Maps a libcryptsetup or system failure to a disk status (``status(for:opening:)``).
    static func outcome(of failure: any Error, uuid: DiskUUID? = nil, opening: Bool = false) -> DiskOutcome {
        if let refusal = failure as? DiskOutcomeError { return refusal.outcome }
        guard let error = failure as? SystemError else { return .refused(.internal, "\(failure)", uuid: uuid) }
        return .refused(status(for: error.code, opening: opening), error.description, uuid: uuid)
    }

    /// The status of a failed disk step, as PROTOCOL.md lists them ("Disk errors"). `opening` is the
    /// open of the device a request names; afterwards come libcryptsetup and keyd's header backups,
    /// where `EPERM` means that no keyslot opens with the key.
    static func status(for code: SystemError.Code, opening: Bool) -> StatusCode {
        switch code {
        case .luks2HeaderUnreadable:
            return .diskHeadersDestroyed
        case .unexpectedFileType:
            // A FIFO, socket, directory or character device named as the device; later, an entry of
            // keyd's state directory that the host replaced.
            return opening ? .diskUnusable : .stateRejected
        case .errno(let value):
            switch value {
            case ENOENT, ENXIO, ENODEV, ENOTDIR, ENOMEDIUM: return .diskMissing
            case EBUSY, ETXTBSY: return .diskBusy
            case EIO, EROFS, ENOSPC, EDQUOT, EFBIG: return .diskIOError
            case EACCES, ELOOP, ENAMETOOLONG, EISDIR, ENOTBLK, EMEDIUMTYPE: return .diskUnusable
            case EPERM: return opening ? .diskUnusable : .diskWrongKey
            default: return .internal
            }
        case .invalidFileName:
            return .stateRejected
        case .fileTooLarge, .refusedExistingFile, .pathTooLong, .invalidEnvironment, .notListeningUnixSocket,
            .verificationFailed, .tpm:
            return .internal
        }
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
