import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// What the join client leaves for kubeadm and the kubelet, in the output directory under fixed names
/// (no name comes from the network): `kubelet.crt` (PEM, 0644) and `kubeadm-join.json` (the API server
/// endpoint, bootstrap token, CA hash and certificate key: 0600). Each file is written to a temporary
/// name with `O_EXCL | O_NOFOLLOW` relative to the directory's descriptor, synced, renamed into place,
/// and the directory synced, so a crash leaves the old file or the new one, never half of one.
public struct JoinFiles: Sendable {
    /// The kubelet certificate's file name.
    public static let kubeletCertificate = "kubelet.crt"
    /// The kubeadm join material's file name.
    public static let joinMaterial = "kubeadm-join.json"
    /// The largest file written.
    public static let maximumBytes = 65_536

    /// The kubeadm join material as written.
    public struct Material: Codable, Equatable, Sendable {
        public var apiServerEndpoint: String
        public var token: String
        public var discoveryTokenCACertHash: String
        public var certificateKey: String?
        public var kubernetesVersion: String?
        public var nodeName: String
        public var controlPlane: Bool

        public init(
            apiServerEndpoint: String,
            token: String,
            discoveryTokenCACertHash: String,
            certificateKey: String?,
            kubernetesVersion: String?,
            nodeName: String,
            controlPlane: Bool
        ) {
            self.apiServerEndpoint = apiServerEndpoint
            self.token = token
            self.discoveryTokenCACertHash = discoveryTokenCACertHash
            self.certificateKey = certificateKey
            self.kubernetesVersion = kubernetesVersion
            self.nodeName = nodeName
            self.controlPlane = controlPlane
        }
    }

    /// The directory (must exist, be a directory, not a symbolic link).
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// Writes the join's files; throws ``JoinClientError/output(_:)`` naming the file and errno.
    public func write(kubeletCertificatePEM: [UInt8], material: Material) throws(JoinClientError) {
        let json: [UInt8]
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            json = Array(try encoder.encode(material)) + [0x0A]
        } catch {
            throw .output("encoding \(Self.joinMaterial): \(error)")
        }
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dirFD >= 0 else { throw .output("open directory \(directory): errno \(errno)") }
        defer { close(dirFD) }
        if !kubeletCertificatePEM.isEmpty {
            try Self.replace(Self.kubeletCertificate, in: dirFD, with: kubeletCertificatePEM, mode: 0o644)
        }
        try Self.replace(Self.joinMaterial, in: dirFD, with: json, mode: 0o600)
        guard fsync(dirFD) == 0 else { throw .output("fsync \(directory): errno \(errno)") }
    }

    /// Reads back the join material (for a rejoin, which needs the node's name and role).
    public func readMaterial() throws(JoinClientError) -> Material {
        let path = directory + "/" + Self.joinMaterial
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .output("open \(path): errno \(errno)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= Self.maximumBytes {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw .output("read \(path): errno \(errno)") }
            if n == 0 { break }
            bytes += buffer[0..<n]
        }
        guard bytes.count <= Self.maximumBytes else {
            throw .output("\(path) is larger than \(Self.maximumBytes) bytes")
        }
        do {
            return try JSONDecoder().decode(Material.self, from: Data(bytes))
        } catch {
            throw .output("\(path) does not hold join material: \(error)")
        }
    }

    /// Replaces `name` in the directory `dirFD` with `bytes` atomically.
    static func replace(_ name: String, in dirFD: Int32, with bytes: [UInt8], mode: mode_t) throws(JoinClientError) {
        let temporary = ".\(name).tmp"
        _ = unlinkat(dirFD, temporary, 0)
        let fd = openat(dirFD, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .output("create \(temporary): errno \(errno)") }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                let saved = errno
                close(fd)
                _ = unlinkat(dirFD, temporary, 0)
                throw .output("write \(temporary): errno \(saved)")
            }
            written += n
        }
        let synced = fchmod(fd, mode) == 0 && fsync(fd) == 0
        let saved = errno
        close(fd)
        guard synced, renameat(dirFD, temporary, dirFD, name) == 0 else {
            _ = unlinkat(dirFD, temporary, 0)
            throw .output("replace \(name): errno \(synced ? errno : saved)")
        }
    }
}
