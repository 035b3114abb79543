import Glibc
import KeydCore
import KeydPlatform
import KeydProtocol
import Testing

@testable import KeydDaemon

/// keyd's service in this process, in a fresh temporary state directory: requests go through the
/// real request table (`KeydService.perform`) exactly as the event loop hands them over.
final class InProcessKeyd {
    /// The temporary directory holding the state directory and any images.
    let directory: String
    /// The service under test.
    let service: KeydService
    /// An admin connection's identity (uid 0).
    let admin = ConnectionIdentity(peerClass: .admin, credentials: PeerCredentials(pid: 1, uid: 0, gid: 0))
    /// A trustd connection's identity.
    let trustd = ConnectionIdentity(peerClass: .trustd, credentials: PeerCredentials(pid: 2, uid: 998, gid: 998))
    private var sequence: UInt32 = 0

    /// `stateDiskName` names the configured state disk (`state-disk-device`) in the temporary directory.
    init(
        diskAllowInitialize: Bool = true,
        stateDiskName: String? = nil,
        settings: ReleaseSettings = ReleaseSettings()
    ) throws {
        var template = Array("/tmp/keyd-ip-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError.errno(errno, call: "mkdtemp") }
        let directory = String(cString: made)
        self.directory = directory
        service = try KeydService(
            stateDirectory: directory + "/state",
            diskAllowInitialize: diskAllowInitialize,
            stateDiskDevice: stateDiskName.map { directory + "/" + $0 },
            settings: settings
        )
    }

    deinit {
        _ = system("rm -rf '\(directory)'")
    }

    /// Performs `request` as `identity` and decodes the answer frame.
    func perform(_ request: Request, as identity: ConnectionIdentity? = nil) throws -> AnswerFrame {
        sequence += 1
        return try answer(RequestFrame(sequence: sequence, request: request).encodeFrame(), as: identity ?? admin)
    }

    /// Imports `secret`'s master secret and salt as the admin would (`kek.import`).
    func importKEK(_ secret: KnownSecret) throws -> AnswerFrame {
        try importKEK(master: secret.master, salt: secret.salt)
    }

    /// Sends `kek.import` with these secrets, of any length the wire format carries.
    func importKEK(master: [UInt8], salt: [UInt8]) throws -> AnswerFrame {
        sequence += 1
        let frame = master.withUnsafeBytes { m in
            salt.withUnsafeBytes { s in
                RequestFrame.encodeKEKImport(sequence: sequence, masterSecret: m, salt: s)
            }
        }
        return try answer(frame, as: admin)
    }

    private func answer(_ frame: [UInt8], as identity: ConnectionIdentity) throws -> AnswerFrame {
        let body = Array(frame.dropFirst(Limits.lengthPrefixSize))
        let decoded = try RequestFrame.decode(body: body)
        var bytes = body.withUnsafeBytes { service.perform(decoded, body: $0, identity: identity) }
        // As the event loop does: the answer leaves once its audit group is durable, or fails.
        if !service.commitAudit() {
            bytes = AnswerFrame.encodeStatus(
                answering: decoded.request.kind,
                sequence: decoded.sequence,
                status: .auditFailure
            )
        }
        return try AnswerFrame.decode(body: Array(bytes.dropFirst(Limits.lengthPrefixSize)))
    }

    /// A sparse image of `megabytes` MiB in the temporary directory.
    func makeImage(_ name: String = "disk.img", megabytes: Int = 32) throws -> String {
        let path = directory + "/" + name
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError.errno(errno, call: "open", context: path) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(megabytes) << 20) == 0 else {
            throw SystemError.errno(errno, call: "ftruncate", context: path)
        }
        return path
    }

    /// The audit log's lines.
    var auditLines: [String] {
        let bytes = (try? service.state.read(AuditTrail.currentName, limit: 64 << 20)) ?? nil
        return String(decoding: bytes ?? [], as: UTF8.self).split(separator: "\n").map(String.init)
    }
}

/// A known master secret and salt, so tests can derive the disk key keyd derives.
struct KnownSecret {
    let master = (0..<32).map { _ in UInt8.random(in: 0...255) }
    let salt = (0..<32).map { _ in UInt8.random(in: 0...255) }

    /// The KEK these bytes make.
    func kek() throws -> KeyEncryptionKey {
        try KeyEncryptionKey(masterSecret: SecretBytes(copying: master), salt: SecretBytes(copying: salt))
    }

    /// Whether the disk key keyd derives for `uuid` opens a keyslot of `image`.
    func diskKeyOpens(_ image: String, uuid: String) throws -> Bool {
        let key = try kek().deriveKey(
            info: KeyDerivation.diskKeyInfo(uuid: try DiskUUID(validating: uuid)),
            byteCount: StateDisk.keyByteCount
        )
        let volume = try LUKS2Volume(path: image, kdf: DiskProfile.asterism.kdf)
        return try key.withUnsafeBytes { try volume.verify(key: $0) } != nil
    }
}
