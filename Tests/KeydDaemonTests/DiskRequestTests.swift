import Glibc
import KeydCore
import KeydPlatform
import KeydProtocol
import Testing

@testable import KeydDaemon

/// Which device a disk request reaches, and the status of every failure on the way (PROTOCOL.md,
/// "Disk requests and the state disk" and "Disk errors").
@Suite struct DiskRequestTests {
    /// Every errno a disk request can meet, with the status it answers when opening the device a
    /// request names and when libcryptsetup or keyd's header backups fail afterwards.
    static let errnoTable: [(Int32, opening: StatusCode, afterwards: StatusCode)] = [
        (ENOENT, .diskMissing, .diskMissing),
        (ENXIO, .diskMissing, .diskMissing),
        (ENODEV, .diskMissing, .diskMissing),
        (ENOTDIR, .diskMissing, .diskMissing),
        (ENOMEDIUM, .diskMissing, .diskMissing),
        (EBUSY, .diskBusy, .diskBusy),
        (ETXTBSY, .diskBusy, .diskBusy),
        (EIO, .diskIOError, .diskIOError),
        (EROFS, .diskIOError, .diskIOError),
        (ENOSPC, .diskIOError, .diskIOError),
        (EDQUOT, .diskIOError, .diskIOError),
        (EFBIG, .diskIOError, .diskIOError),
        (EACCES, .diskUnusable, .diskUnusable),
        (ELOOP, .diskUnusable, .diskUnusable),
        (ENAMETOOLONG, .diskUnusable, .diskUnusable),
        (EISDIR, .diskUnusable, .diskUnusable),
        (ENOTBLK, .diskUnusable, .diskUnusable),
        (EMEDIUMTYPE, .diskUnusable, .diskUnusable),
        // Opening: the path is refused. Afterwards: libcryptsetup's "no keyslot opens with this key".
        (EPERM, .diskUnusable, .diskWrongKey),
        // keyd's own resources or bugs.
        (EINVAL, .internal, .internal),
        (ENOMEM, .internal, .internal),
        (EMFILE, .internal, .internal),
        (ENFILE, .internal, .internal),
    ]

    @Test("errno to status", arguments: errnoTable)
    func errnoStatus(errno: Int32, opening: StatusCode, afterwards: StatusCode) {
        #expect(StateDisk.status(for: .errno(errno), opening: true) == opening)
        #expect(StateDisk.status(for: .errno(errno), opening: false) == afterwards)
    }

    @Test("other failures: a refused file type only when opening the device, destroyed headers, the rest internal")
    func otherCodes() {
        #expect(StateDisk.status(for: .unexpectedFileType, opening: true) == .diskUnusable)
        #expect(StateDisk.status(for: .unexpectedFileType, opening: false) == .stateRejected)
        #expect(StateDisk.status(for: .invalidFileName, opening: false) == .stateRejected)
        #expect(StateDisk.status(for: .luks2HeaderUnreadable, opening: false) == .diskHeadersDestroyed)
        for code in [SystemError.Code.fileTooLarge, .refusedExistingFile, .verificationFailed] {
            #expect(StateDisk.status(for: code, opening: false) == .internal)
        }
    }

    @Test("trustd's empty device is the configured state disk; without one it is missing")
    func configuredDisk() throws {
        let unconfigured = try InProcessKeyd()
        let missing = try unconfigured.perform(.diskInspect(device: ""), as: unconfigured.trustd)
        #expect(missing.status == .diskMissing)
        #expect(unconfigured.auditLines.last?.contains("no state disk configured") == true)

        let keyd = try InProcessKeyd(stateDiskName: "state.img")
        _ = try keyd.makeImage("state.img")
        let answer = try keyd.perform(.diskInspect(device: ""), as: keyd.trustd)
        #expect(answer.status == .ok)
        let report = try answer.decodePayload(.diskInspect, DiskInspectAnswer.read)
        #expect(String(decoding: report.report, as: UTF8.self) == #"{"luks2":false}"#)
        // trustd's inspect, granted, is routine: counted into the next audit.summary, not written now.
        #expect(keyd.service.routineCounts[.diskInspect] == 1)
    }

    @Test("what is no disk is refused at once: a FIFO, a directory, a character device, keyd's own files")
    func unusable() throws {
        let keyd = try InProcessKeyd()
        let fifo = keyd.directory + "/fifo"
        #expect(mkfifo(fifo, 0o666) == 0)
        let own = keyd.directory + "/state/" + AuditTrail.currentName
        for device in [fifo, keyd.directory, "/dev/null", own] {
            for request in [
                Request.diskInspect(device: device), .diskFormat(device: device), .diskReset(device: device),
            ] {
                let answer = try keyd.perform(request)
                #expect(answer.status == .diskUnusable, "\(request)")
            }
        }
        #expect(try keyd.perform(.diskInspect(device: keyd.directory + "/absent")).status == .diskMissing)
        #expect(try keyd.perform(.diskInspect(device: fifo + "/x")).status == .diskMissing)
        #expect(keyd.auditLines.filter { $0.contains(#""status":"diskUnusable""#) }.count == 12)
    }
}
