import FoundationEssentials
import KeydCore

/// Why a Kubernetes component could not be listed, downloaded, verified or installed. The description
/// names the component by its URL without credentials, query or fragment, and says what failed and the
/// limit; equality is on the code only.
public struct ComponentError: Error, Hashable, CustomStringConvertible, Sendable {
    /// What failed.
    public enum Code: Hashable, Sendable {
        /// The components file is not a bounded JSON list of well-formed components.
        case list
        /// The URL is not `http://`, `https://` or `file://`, or is too long.
        case url
        /// The hash is empty or not `sha256:` and 64 lowercase hex digits.
        case hash
        /// The install path is not a canonical path under the install root.
        case path
        /// The download failed (connection, HTTP status, read).
        case download
        /// The download or an archive entry exceeds its bound.
        case size
        /// The downloaded bytes do not have the listed hash.
        case mismatch
        /// The archive is not a safe .tar.gz (link, device, absolute or `..` name, bad header, bounds).
        case archive
        /// Writing the file or directory into place failed.
        case install
    }

    public let code: Code
    public let description: String

    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }

    /// The same failure, prefixed with the component it concerns.
    public func about(_ url: String) -> ComponentError {
        ComponentError(code, "component \(ComponentURL.redacted(url)): \(description)")
    }

    public static func == (lhs: ComponentError, rhs: ComponentError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}

/// Named bounds of the components file and of what a component may install.
public enum ComponentLimits {
    /// The components file's largest size.
    public static let maxListBytes = 65_536
    /// The most components one file may list.
    public static let maxComponents = 64
    /// The longest URL.
    public static let maxURLLength = 2048
    /// The longest install path.
    public static let maxPathLength = 1024
    /// The longest path component (NAME_MAX).
    public static let maxNameLength = 255
    /// The most entries one archive may hold.
    public static let maxArchiveEntries = 10_000
    /// The longest name of an archive entry.
    public static let maxEntryNameLength = 4096
    /// The largest pax extended header or GNU long name accepted.
    public static let maxExtendedHeaderBytes = 65_536
}

/// A component URL: `http://`, `https://` or `file://` (tests, images with components baked in).
public enum ComponentURL {
    /// The URL's scheme, as the downloader dispatches on it.
    public enum Scheme: String, Sendable { case http, https, file }

    /// The scheme of `url`, or a ``ComponentError/Code/url`` error.
    public static func scheme(of url: String) throws(ComponentError) -> Scheme {
        guard url.utf8.count <= ComponentLimits.maxURLLength else {
            throw ComponentError(.url, "URL is \(url.utf8.count) bytes, over \(ComponentLimits.maxURLLength)")
        }
        guard !url.contains(where: { $0.isWhitespace || $0 == "\0" }) else {
            throw ComponentError(.url, "URL contains white space or NUL")
        }
        for scheme in [Scheme.http, .https, .file] where url.lowercased().hasPrefix(scheme.rawValue + "://") {
            let rest = url.dropFirst(scheme.rawValue.count + 3)
            guard scheme != .file || rest.hasPrefix("/") else {
                throw ComponentError(.url, "a file URL must be file:///absolute/path")
            }
            guard scheme == .file || !(rest.first.map { "/?#".contains($0) } ?? true) else {
                throw ComponentError(.url, "URL has no host")
            }
            return scheme
        }
        throw ComponentError(.url, "URL scheme is not http, https or file")
    }

    /// The local path of a `file://` URL (percent escapes are not decoded: component paths are plain).
    public static func filePath(of url: String) -> String {
        String(url.dropFirst("file://".count).prefix { $0 != "?" && $0 != "#" })
    }

    /// `url` without user information, query or fragment: what logs and errors show.
    public static func redacted(_ url: String) -> String {
        var text = Substring(url.prefix(ComponentLimits.maxURLLength))
        if let cut = text.firstIndex(where: { $0 == "?" || $0 == "#" }) { text = text[..<cut] }
        let parts = text.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        // scheme:, "", authority, path: the authority loses anything up to its last '@'.
        if parts.count >= 3, parts[0].hasSuffix(":"), parts[1].isEmpty, let at = parts[2].lastIndex(of: "@") {
            let authority = parts[2][parts[2].index(after: at)...]
            text = Substring(([parts[0], "", authority] + parts.dropFirst(3)).joined(separator: "/"))
        }
        return String(text)
    }
}

/// A component's content hash: `sha256:` and 64 lowercase hex digits. An empty or malformed hash is an
/// error, never a reason to skip verification.
public struct ComponentHash: Hashable, Sendable, CustomStringConvertible {
    /// The 32 digest bytes.
    public let digest: [UInt8]

    /// Parses `sha256:<64 lowercase hex>`.
    public init(_ text: String) throws(ComponentError) {
        guard !text.isEmpty else { throw ComponentError(.hash, "hash is empty (verification cannot be skipped)") }
        let hex = Array(text.utf8.dropFirst("sha256:".count))
        guard text.hasPrefix("sha256:"), hex.count == 64,
            hex.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        else {
            throw ComponentError(.hash, "hash \"\(text.prefix(80))\" is not sha256: and 64 lowercase hex digits")
        }
        digest = stride(from: 0, to: 64, by: 2).map {
            UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)!
        }
    }

    /// Wraps a computed digest (32 bytes).
    public init(digest: [UInt8]) {
        precondition(digest.count == 32, "a SHA-256 digest is 32 bytes")
        self.digest = digest
    }

    public var description: String { "sha256:" + lowercaseHex(digest) }
}

/// A path under the install root, as canonical components: no empty, `.` or `..` component, no NUL.
public struct InstallPath: Hashable, Sendable, CustomStringConvertible {
    /// The components below the install root (at least one).
    public let components: [String]

    /// Checks `text`, relative to `root` or absolute under it.
    public init(_ text: String, root: String) throws(ComponentError) {
        guard text.utf8.count <= ComponentLimits.maxPathLength else {
            throw ComponentError(
                .path,
                "install path is \(text.utf8.count) bytes, over \(ComponentLimits.maxPathLength)"
            )
        }
        guard !text.contains("\0") else { throw ComponentError(.path, "install path contains NUL") }
        var relative = Substring(text)
        if text.hasPrefix("/") {
            guard text.hasPrefix(root + "/") else {
                throw ComponentError(.path, "install path \(text) is not under the install root \(root)")
            }
            relative = relative.dropFirst(root.count + 1)
        }
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty, !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            throw ComponentError(.path, "install path \(text) is not canonical (empty, '.', '..' or '//' component)")
        }
        guard parts.allSatisfy({ $0.utf8.count <= ComponentLimits.maxNameLength }) else {
            throw ComponentError(
                .path,
                "install path \(text) has a component over \(ComponentLimits.maxNameLength) bytes"
            )
        }
        components = parts
    }

    /// The path below the root, `/`-joined.
    public var description: String { components.joined(separator: "/") }

    /// Whether `other` is this path or lies below it.
    public func contains(_ other: InstallPath) -> Bool {
        other.components.count >= components.count && Array(other.components.prefix(components.count)) == components
    }
}

/// One Kubernetes component to install: Constellation's `components.Component` (url, hash, install
/// path, extract), checked.
public struct KubernetesComponent: Hashable, Sendable {
    /// Where the bytes come from.
    public let url: String
    public let scheme: ComponentURL.Scheme
    /// What the downloaded bytes must hash to.
    public let hash: ComponentHash
    /// Where the file (or the extracted archive's directory) goes, below the install root.
    public let installPath: InstallPath
    /// Whether the download is a .tar.gz to extract into a directory at ``installPath``.
    public let extract: Bool

    /// Checks one listed component; errors name its URL.
    public init(url: String, hash: String, installPath: String, extract: Bool, root: String) throws(ComponentError) {
        do throws(ComponentError) {
            scheme = try ComponentURL.scheme(of: url)
            self.hash = try ComponentHash(hash)
            self.installPath = try InstallPath(installPath, root: root)
        } catch {
            throw error.about(url)
        }
        self.url = url
        self.extract = extract
    }
}

/// The components file: a JSON array of `{"url", "hash", "installPath", "extract"}` objects (no other
/// keys), at most ``ComponentLimits/maxComponents``, install paths distinct and none inside another.
public enum ComponentList {
    /// One entry as written.
    private struct Entry: Decodable {
        var url: String
        var hash: String
        var installPath: String
        var extract: Bool

        enum CodingKeys: String, CodingKey, CaseIterable { case url, hash, installPath, extract }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: AnyKey.self)
            let known = Set(CodingKeys.allCases.map(\.rawValue))
            if let unknown = container.allKeys.first(where: { !known.contains($0.stringValue) }) {
                throw ComponentError(.list, "unknown key \"\(unknown.stringValue.prefix(64))\"")
            }
            let keyed = try decoder.container(keyedBy: CodingKeys.self)
            url = try keyed.decode(String.self, forKey: .url)
            hash = try keyed.decode(String.self, forKey: .hash)
            installPath = try keyed.decode(String.self, forKey: .installPath)
            extract = try keyed.decodeIfPresent(Bool.self, forKey: .extract) ?? false
        }
    }

    /// Any key, to find unknown ones.
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Parses the file's bytes; `root` is the install root the paths must stay under.
    public static func parse(_ bytes: [UInt8], root: String) throws(ComponentError) -> [KubernetesComponent] {
        guard bytes.count <= ComponentLimits.maxListBytes else {
            throw ComponentError(.list, "components file is \(bytes.count) bytes, over \(ComponentLimits.maxListBytes)")
        }
        let entries: [Entry]
        do {
            entries = try JSONDecoder().decode([Entry].self, from: Data(bytes))
        } catch let error as ComponentError {
            throw error
        } catch {
            throw ComponentError(.list, "components file is not a JSON array of {url, hash, installPath, extract}")
        }
        guard entries.count <= ComponentLimits.maxComponents else {
            throw ComponentError(
                .list,
                "components file lists \(entries.count) components, over \(ComponentLimits.maxComponents)"
            )
        }
        var components: [KubernetesComponent] = []
        for entry in entries {
            let component = try KubernetesComponent(
                url: entry.url,
                hash: entry.hash,
                installPath: entry.installPath,
                extract: entry.extract,
                root: root
            )
            if let other = components.first(where: {
                $0.installPath.contains(component.installPath) || component.installPath.contains($0.installPath)
            }) {
                throw ComponentError(.path, "install path \(component.installPath) overlaps \(other.installPath)")
                    .about(entry.url)
            }
            components.append(component)
        }
        return components
    }
}
