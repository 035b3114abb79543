import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

extension StateDisk {
    /// `disk.close`: removes the mapping `mappingName`; without a device mapper nothing can be mapped.
    func closeMapping(_ mappingName: String) -> DiskOutcome {
        guard Self.deviceMapperAvailable() else {
            return .refused(.diskActivationUnavailable, "no device mapper here; nothing is mapped")
        }
        do {
            try LUKS2Volume.deactivate(name: mappingName)
            return DiskOutcome(status: .ok)
        } catch {
            return Self.outcome(of: error)
        }
    }

    /// `disk.reset`: marks a state disk that passes the header check for re-initialization by
    /// setting its token to not initialized, after backing up the header to
    /// `<headers>/<uuid>.before-reset.img`. The next `disk.format` then starts it afresh.
    func markForReset(device: DiskDevice) -> DiskOutcome {
        let checked: CheckedHeader
        switch checkedHeader(device: device) {
        case .failure(let refusal): return refusal.outcome
        case .success(let value): checked = value
        }
        let uuid = checked.uuid
        do {
            let volume = try volume(device, checked: checked)
            let backup = try backupHeader(volume, uuid: uuid, suffix: ".before-reset.img").get()
            let marked = StateDiskToken(kind: checked.profile.tokenKind, initialized: false).json
            let existing = try volume.tokens().first { (try? StateDiskToken(parsing: $0.json)) != nil }
            _ = try volume.setToken(json: marked, id: existing?.id)
            return DiskOutcome(status: .ok, uuid: uuid, reason: "marked for reset; header backed up to \(backup.path)")
        } catch {
            return Self.outcome(of: error, uuid: uuid)
        }
    }
}
