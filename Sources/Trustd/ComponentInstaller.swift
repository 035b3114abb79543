import AsyncHTTPClient
import CompressNIO
import Crypto
import Logging
import NIOCore
import TrustdCore

#if canImport(Glibc)
import Glibc
#endif

/// Installs Kubernetes components under the install root: each is downloaded (`http`, `https`,
/// `file`) into a temporary file beside its target while it is hashed, size bounded, verified against
/// its `sha256:` hash, and only then renamed into place (a file, mode 0755) or extracted as a .tar.gz
/// into a fresh directory renamed into place (``TarReader`` decides what is safe). Directories are
/// walked with `O_NOFOLLOW` from the root's descriptor, so no symbolic link redirects a write. A file
/// already there with the listed hash, or an extracted directory whose hash marker
/// (`.<name>.sha256` beside it) matches, is not downloaded again.
public struct ComponentInstaller: Sendable {
    /// What became of a component.
    public enum Outcome: Hashable, Sendable {
        case installed
        case alreadyInstalled
    }

    public let root: String
    /// The most one download (and one archive's extracted files) may hold.
    public let maxBytes: Int
    /// One download's deadline.
    public let timeout: Duration
    public let logger: Logger

    public init(root: String, maxBytes: Int, timeout: Duration, logger: Logger) {
        self.root = root
        self.maxBytes = maxBytes
        self.timeout = timeout
        self.logger = logger
    }

    /// Installs every component in order; the first failure stops and names its component.
    public func install(_ components: [KubernetesComponent]) async throws(ComponentError) {
        for component in components {
            let outcome = try await install(component)
            logger.info(
                outcome == .installed ? "Component installed" : "Component already installed",
                metadata: [
                    "component.url": "\(ComponentURL.redacted(component.url))",
                    "component.path": "\(root)/\(component.installPath)", "component.hash": "\(component.hash)",
                ]
            )
        }
    }

    /// Installs one component.
    public func install(_ component: KubernetesComponent) async throws(ComponentError) -> Outcome {
        do throws(ComponentError) {
            let parent = try InstallDirectory.open(root: root, components: component.installPath.components.dropLast())
            defer { close(parent) }
            let name = component.installPath.components.last!
            if try isInstalled(component, name: name, in: parent) { return .alreadyInstalled }
            let download = try TemporaryFile(in: parent, name: ".\(name).download")
            defer { download.remove() }
            let digest = try await fetch(component, into: download)
            guard digest == component.hash else {
                throw ComponentError(.mismatch, "downloaded bytes hash to \(digest), not \(component.hash)")
            }
            if component.extract {
                try extract(download, as: name, in: parent, hash: component.hash)
            } else {
                try download.place(as: name, mode: 0o755)
            }
            return .installed
        } catch {
            throw error.about(component.url)
        }
    }

    /// Whether `name` already holds the component: a regular file with its hash, or an extracted
    /// directory with a matching marker.
    private func isInstalled(
        _ component: KubernetesComponent,
        name: String,
        in parent: Int32
    ) throws(ComponentError)
        -> Bool
    {
        if component.extract {
            var info = stat()
            guard fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                return false
            }
            let marker = openat(parent, ".\(name).sha256", O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard marker >= 0 else { return false }
            defer { close(marker) }
            var bytes = [UInt8](repeating: 0, count: 128)
            let count = read(marker, &bytes, bytes.count)
            return count > 0 && String(decoding: bytes[..<count], as: UTF8.self) == component.hash.description
        }
        let fd = openat(parent, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, Int(info.st_size) <= maxBytes else {
            return false
        }
        var hasher = SHA256()
        try ComponentFile.read(fd, limit: maxBytes, what: name) { hasher.update(bufferPointer: $0) }
        return ComponentHash(digest: Array(hasher.finalize())) == component.hash
    }

    /// Downloads the component into `file`, hashing as it goes; the SHA-256 of what was written.
    private func fetch(
        _ component: KubernetesComponent,
        into file: TemporaryFile
    ) async throws(ComponentError)
        -> ComponentHash
    {
        var hasher = SHA256()
        let limit = maxBytes
        func tooLarge() -> ComponentError { ComponentError(.size, "download exceeds \(limit) bytes") }
        switch component.scheme {
        case .file:
            let path = ComponentURL.filePath(of: component.url)
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else { throw ComponentError(.download, "cannot open \(path): \(errnoText())") }
            defer { close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
                throw ComponentError(.download, "\(path) is not a regular file")
            }
            try ComponentFile.read(fd, limit: limit, what: path) { chunk throws(ComponentError) in
                hasher.update(bufferPointer: chunk)
                try file.write(chunk)
            }
        case .http, .https:
            do {
                var request = HTTPClientRequest(url: component.url)
                request.method = .GET
                let response = try await HTTPClient.shared.execute(
                    request,
                    deadline: .now() + .seconds(timeout.components.seconds)
                )
                guard response.status == .ok else {
                    throw ComponentError(.download, "HTTP status \(response.status.code)")
                }
                if let length = response.headers.first(name: "content-length").flatMap(Int.init), length > limit {
                    throw ComponentError(.size, "Content-Length \(length) exceeds \(limit) bytes")
                }
                var received = 0
                for try await buffer in response.body {
                    received += buffer.readableBytes
                    guard received <= limit else { throw tooLarge() }
                    try buffer.withUnsafeReadableBytes { chunk throws(ComponentError) in
                        hasher.update(bufferPointer: chunk)
                        try file.write(chunk)
                    }
                }
            } catch let error as ComponentError {
                throw error
            } catch {
                throw ComponentError(.download, "\(error)")
            }
        }
        try file.sync()
        return ComponentHash(digest: Array(hasher.finalize()))
    }

    /// Extracts the verified .tar.gz `archive` into a fresh directory, then renames it to `name`
    /// (replacing an older one) and writes the hash marker.
    private func extract(
        _ archive: TemporaryFile,
        as name: String,
        in parent: Int32,
        hash: ComponentHash
    )
        throws(ComponentError)
    {
        let staging = ".\(name).extract-\(randomSuffix())"
        guard mkdirat(parent, staging, 0o700) == 0 else {
            throw ComponentError(.install, "cannot create \(staging): \(errnoText())")
        }
        var placed = false
        defer { if !placed { InstallDirectory.removeTree(staging, in: parent) } }
        let target = openat(parent, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard target >= 0 else { throw ComponentError(.install, "cannot open \(staging): \(errnoText())") }
        defer { close(target) }
        var extractor = ArchiveExtractor(
            target: target,
            reader: TarReader(limits: .init(maxFileBytes: maxBytes, maxTotalBytes: maxBytes))
        )
        defer { extractor.closeCurrent() }
        let decompressor: ZlibDecompressor
        do {
            decompressor = try ZlibDecompressor(algorithm: .gzip)
        } catch {
            throw ComponentError(.archive, "cannot start gzip: \(error)")
        }
        guard lseek(archive.fd, 0, SEEK_SET) == 0 else { throw ComponentError(.install, "seek: \(errnoText())") }
        try ComponentFile.read(archive.fd, limit: maxBytes, what: "the archive") { chunk throws(ComponentError) in
            var input = ByteBuffer(bytes: chunk)
            while input.readableBytes > 0 {
                var output = ByteBuffer()
                output.reserveCapacity(65_536)
                var streamEnded = false
                do {
                    // A normal return with input left is the end of the gzip stream (zlib otherwise
                    // returns only once the input is used up or the output is full).
                    try decompressor.inflate(from: &input, to: &output)
                    streamEnded = input.readableBytes > 0
                } catch let error as CompressNIOError where error == .bufferOverflow || error == .inputBufferOverflow {
                    // The window is full, or the input is used up mid-stream: go on.
                } catch {
                    throw ComponentError(.archive, "not a gzip stream (\(error))")
                }
                try extractor.feed(output.readableBytesView)
                guard !streamEnded else { throw ComponentError(.archive, "bytes follow the end of the gzip stream") }
            }
        }
        // A gzip stream cut short is a tar stream cut short: the reader finds no end-of-archive marker.
        try extractor.finish()
        guard fchmod(target, 0o755) == 0, fsync(target) == 0 else {
            throw ComponentError(.install, "cannot finish \(staging): \(errnoText())")
        }
        let old = ".\(name).old-\(randomSuffix())"
        let replaced = renameat(parent, name, parent, old) == 0
        guard replaced || errno == ENOENT else {
            throw ComponentError(.install, "cannot move \(name) aside: \(errnoText())")
        }
        guard renameat(parent, staging, parent, name) == 0 else {
            throw ComponentError(.install, "cannot rename \(staging) to \(name): \(errnoText())")
        }
        placed = true
        if replaced { InstallDirectory.removeTree(old, in: parent) }
        let marker = try TemporaryFile(in: parent, name: ".\(name).sha256")
        defer { marker.remove() }
        try ComponentFile.withBytes(Array(hash.description.utf8)[...]) { bytes throws(ComponentError) in
            try marker.write(bytes)
        }
        try marker.sync()
        try marker.place(as: ".\(name).sha256", mode: 0o644)
    }
}

/// Writes a tar stream's entries below a directory descriptor: directories created as needed, files
/// created exclusively (a duplicate entry is an error), every open `O_NOFOLLOW`.
struct ArchiveExtractor {
    let target: Int32
    var reader: TarReader
    private var pending: [UInt8] = []
    private var current: Int32 = -1
    private var currentName = ""

    init(target: Int32, reader: TarReader) {
        self.target = target
        self.reader = reader
    }

    /// Feeds decompressed bytes.
    mutating func feed(_ bytes: ByteBufferView) throws(ComponentError) {
        pending += bytes
        var start = 0
        while pending.count - start >= TarReader.blockSize {
            let block = pending[start..<start + TarReader.blockSize]
            start += TarReader.blockSize
            guard let event = try reader.consume(block) else { continue }
            try apply(event)
        }
        pending.removeFirst(start)
    }

    /// Checks the archive ended properly.
    mutating func finish() throws(ComponentError) {
        try reader.finish()
        guard pending.allSatisfy({ $0 == 0 }) else { throw ComponentError(.archive, "the archive ends mid-block") }
    }

    mutating func closeCurrent() {
        if current >= 0 { close(current) }
        current = -1
    }

    private mutating func apply(_ event: TarReader.Event) throws(ComponentError) {
        switch event {
        case .end:
            return
        case .entry(let entry):
            let parent = try InstallDirectory.open(in: target, components: entry.path.dropLast(), owned: false)
            defer { if parent != target { close(parent) } }
            guard let name = entry.path.last else { return }  // the archive's own root: the target itself
            let shown = entry.path.joined(separator: "/")
            // No group or world write bits, whatever the archive says.
            let mode = mode_t(entry.mode & 0o755)
            switch entry.kind {
            case .directory:
                guard mkdirat(parent, name, mode | 0o700) == 0 || errno == EEXIST else {
                    throw ComponentError(.install, "cannot create directory \(shown): \(errnoText())")
                }
                var info = stat()
                guard fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                    throw ComponentError(.archive, "\(shown) is both a file and a directory")
                }
            case .file:
                let fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
                guard fd >= 0 else {
                    throw ComponentError(
                        errno == EEXIST ? .archive : .install,
                        errno == EEXIST ? "\(shown) appears twice" : "cannot create \(shown): \(errnoText())"
                    )
                }
                guard fchmod(fd, mode) == 0 else {
                    close(fd)
                    throw ComponentError(.install, "cannot set the mode of \(shown): \(errnoText())")
                }
                if entry.size == 0 {
                    close(fd)
                } else {
                    current = fd
                    currentName = shown
                }
            }
        case .data(let bytes, let last):
            let (fd, name) = (current, currentName)
            try ComponentFile.withBytes(bytes) { chunk throws(ComponentError) in
                try ComponentFile.write(fd, chunk, what: name)
            }
            if last { closeCurrent() }
        }
    }
}

/// A temporary file created exclusively beside its target, removed unless placed.
final class TemporaryFile: Sendable {
    let fd: Int32
    let directory: Int32
    let name: String

    init(in directory: Int32, name prefix: String) throws(ComponentError) {
        let name = "\(prefix)-\(randomSuffix())"
        let fd = openat(directory, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ComponentError(.install, "cannot create \(name): \(errnoText())") }
        self.fd = fd
        self.directory = directory
        self.name = name
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(ComponentError) {
        try ComponentFile.write(fd, bytes, what: name)
    }

    func sync() throws(ComponentError) {
        guard fsync(fd) == 0 else { throw ComponentError(.install, "fsync \(name): \(errnoText())") }
    }

    /// Renames the file to `target` with `mode`, and syncs the directory.
    func place(as target: String, mode: mode_t) throws(ComponentError) {
        guard fchmod(fd, mode) == 0, renameat(directory, name, directory, target) == 0, fsync(directory) == 0 else {
            throw ComponentError(.install, "cannot rename \(name) to \(target): \(errnoText())")
        }
    }

    /// Closes the file and removes it if it was not placed.
    func remove() {
        close(fd)
        _ = unlinkat(directory, name, 0)
    }
}

/// Directory walks below a descriptor, never through a symbolic link.
enum InstallDirectory {
    /// Opens (creating, 0755) the install root and the directories `components` below it.
    static func open(root: String, components: ArraySlice<String>) throws(ComponentError) -> Int32 {
        var fd = Glibc.open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ComponentError(.install, "cannot open /: \(errnoText())") }
        let rootParts = root.split(separator: "/").map(String.init)
        do throws(ComponentError) {
            let opened = try open(in: fd, components: rootParts[...] + components, owned: true)
            fd = -1
            return opened
        } catch {
            if fd >= 0 { close(fd) }
            throw error
        }
    }

    /// Opens the directories `components` below `base`, creating missing ones (0755). With `owned`,
    /// `base` is closed once no longer needed; otherwise the result may be `base` itself.
    static func open(in base: Int32, components: ArraySlice<String>, owned: Bool) throws(ComponentError) -> Int32 {
        var fd = base
        for name in components {
            if mkdirat(fd, name, 0o755) != 0, errno != EEXIST {
                let saved = errnoText()
                if fd != base || owned { close(fd) }
                throw ComponentError(.install, "cannot create directory \(name): \(saved)")
            }
            let next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let saved = errnoText()
            if fd != base || owned { close(fd) }
            guard next >= 0 else { throw ComponentError(.install, "cannot open directory \(name): \(saved)") }
            fd = next
        }
        return fd
    }

    /// Removes `name` below `parent` and everything in it, without following links.
    static func removeTree(_ name: String, in parent: Int32) {
        if unlinkat(parent, name, 0) == 0 || errno != EISDIR && errno != EPERM { return }
        let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0, let stream = fdopendir(fd) else { return }
        var names: [String] = []
        while let entry = readdir(stream) {
            let child = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if child != ".", child != ".." { names.append(child) }
        }
        for child in names { removeTree(child, in: dirfd(stream)) }
        closedir(stream)
        _ = unlinkat(parent, name, AT_REMOVEDIR)
    }
}

/// Bounded reads and complete writes on descriptors.
enum ComponentFile {
    /// Reads `fd` to its end in 64 KiB chunks, at most `limit` bytes.
    static func read(
        _ fd: Int32,
        limit: Int,
        what: String,
        _ body: (UnsafeRawBufferPointer) throws(ComponentError) -> Void
    ) throws(ComponentError) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var total = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw ComponentError(.download, "cannot read \(what): \(errnoText())") }
            if count == 0 { return }
            total += count
            guard total <= limit else { throw ComponentError(.size, "\(what) exceeds \(limit) bytes") }
            try withBytes(buffer[..<count]) { bytes throws(ComponentError) in try body(bytes) }
        }
    }

    /// `body` over the raw bytes of `bytes`, keeping the typed error.
    static func withBytes(
        _ bytes: ArraySlice<UInt8>,
        _ body: (UnsafeRawBufferPointer) throws(ComponentError) -> Void
    ) throws(ComponentError) {
        let result: Result<Void, ComponentError> = bytes.withUnsafeBytes { raw in
            do throws(ComponentError) {
                return .success(try body(raw))
            } catch {
                return .failure(error)
            }
        }
        try result.get()
    }

    /// Writes all of `bytes`.
    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: String) throws(ComponentError) {
        var written = 0
        while written < bytes.count {
            let count = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw ComponentError(.install, "cannot write \(what): \(errnoText())") }
            written += count
        }
    }
}

/// 16 random hex digits for temporary names.
func randomSuffix() -> String { String(UInt64.random(in: .min ... .max), radix: 16) }

/// The current errno as text.
func errnoText() -> String { String(cString: strerror(errno)) }
