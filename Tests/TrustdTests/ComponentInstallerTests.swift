import AsterismTestSupport
import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import Trustd
import TrustdCore

/// A loopback HTTP/1.1 server answering GET for fixed paths: the body, or a status; optionally a
/// Content-Length that lies (larger than the limit, body cut short).
final class ComponentHTTPServer: Sendable {
    let port: Int
    private let channel: any Channel

    init(files: [String: [UInt8]], claimedLengths: [String: Int] = [:]) async throws {
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(files: files, claimedLengths: claimedLengths))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress!.port!
    }

    func url(_ path: String) -> String { "http://127.0.0.1:\(port)/\(path)" }

    func stop() async throws { try await channel.close() }

    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let files: [String: [UInt8]]
        let claimedLengths: [String: Int]

        init(files: [String: [UInt8]], claimedLengths: [String: Int]) {
            self.files = files
            self.claimedLengths = claimedLengths
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(let head) = unwrapInboundIn(data) else { return }
            let path = String(head.uri.dropFirst().prefix { $0 != "?" })
            let body = files[path]
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: "\(claimedLengths[path] ?? body?.count ?? 0)")
            headers.add(name: "Connection", value: "close")
            let status: HTTPResponseStatus = body == nil ? .notFound : .ok
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                promise: nil
            )
            if let body { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil) }
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// A scratch directory with an install root and a place for downloads and archives.
struct ComponentScene {
    let directory: String
    var root: String { directory + "/root" }
    var source: String { directory + "/source" }

    init() throws {
        var template = Array("/tmp/trustd-components-XXXXXX".utf8CString)
        directory = String(cString: try #require(mkdtemp(&template)))
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: false)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    func installer(maxBytes: Int = 1 << 20) -> ComponentInstaller {
        var logger = Logger(label: "test.components")
        logger.logLevel = .critical
        return ComponentInstaller(root: root, maxBytes: maxBytes, timeout: .seconds(30), logger: logger)
    }

    /// Writes `bytes` under the source directory; its file URL.
    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        try Data(bytes).write(to: URL(fileURLWithPath: source + "/" + name))
        return "file://" + source + "/" + name
    }

    func component(_ url: String, _ bytes: [UInt8], path: String, extract: Bool = false) throws -> KubernetesComponent {
        try component(url, hash: Self.sha256(bytes), path: path, extract: extract)
    }

    func component(_ url: String, hash: String, path: String, extract: Bool = false) throws -> KubernetesComponent {
        try KubernetesComponent(url: url, hash: hash, installPath: path, extract: extract, root: root)
    }

    static func sha256(_ bytes: [UInt8]) -> String {
        "sha256:" + SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// A .tar.gz /bin/tar makes of `members` inside `tree` (extra flags first), as bytes.
    func tarGz(tree: String, members: [String], flags: [String] = []) throws -> [UInt8] {
        let archive = directory + "/archive-\(UInt32.random(in: 0...UInt32.max)).tar.gz"
        let result = try runCommand("/bin/tar", flags + ["-czf", archive, "-C", tree] + members)
        try #require(result.status == 0, "\(result.stderr)")
        return Array(try Data(contentsOf: URL(fileURLWithPath: archive)))
    }

    /// Everything under the install root, relative, sorted.
    var installed: [String] {
        (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).sorted()
    }

    func mode(_ relative: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: root + "/" + relative)[.posixPermissions] as? Int) ?? -1
    }
}

@Suite struct ComponentInstallerTests {
    static let binary = Array("#!/bin/sh\necho kubeadm v1.31.2\n".utf8) + [UInt8](repeating: 0x41, count: 200_000)

    @Test func installsAFileAndSkipsItWhenInstalled() async throws {
        let scene = try ComponentScene()
        defer { scene.remove() }
        let component = try scene.component(try scene.file("kubeadm", Self.binary), Self.binary, path: "bin/kubeadm")
        #expect(try await scene.installer().install(component) == .installed)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scene.root + "/bin/kubeadm")) == Data(Self.binary))
        #expect(try scene.mode("bin/kubeadm") == 0o755)
        #expect(scene.installed == ["bin", "bin/kubeadm"])
        // Resumable: the right bytes are not fetched again, even when the source is gone.
        unlink(scene.source + "/kubeadm")
        #expect(try await scene.installer().install(component) == .alreadyInstalled)
        // A damaged install is replaced.
        try Data("damaged".utf8).write(to: URL(fileURLWithPath: scene.root + "/bin/kubeadm"))
        _ = try scene.file("kubeadm", Self.binary)
        #expect(try await scene.installer().install(component) == .installed)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scene.root + "/bin/kubeadm")) == Data(Self.binary))
    }

    @Test func wrongHashInstallsNothing() async throws {
        let scene = try ComponentScene()
        defer { scene.remove() }
        let url = try scene.file("kubeadm", Self.binary)
        let other = ComponentScene.sha256(Array("something else".utf8))
        let error = await #expect(throws: ComponentError.self) {
            try await scene.installer().install(try scene.component(url, hash: other, path: "kubeadm"))
        }
        #expect(error?.code == .mismatch)
        #expect(
            error?.description
                == "component \(url): downloaded bytes hash to \(ComponentScene.sha256(Self.binary)), not \(other)"
        )
        #expect(scene.installed.isEmpty, "no temporary file is left: \(scene.installed)")
    }

    @Test func emptyAndMalformedHashesAreErrors() throws {
        let scene = try ComponentScene()
        defer { scene.remove() }
        for hash in [
            "", "sha256:", "sha256:" + String(repeating: "F", count: 64), "md5:d41d8cd98f00b204e9800998ecf8427e",
        ] {
            let error = #expect(throws: ComponentError.self) { try scene.component("file:///x", hash: hash, path: "x") }
            #expect(error?.code == .hash)
        }
    }

    @Test func oversizeDownloadIsRefused() async throws {
        let scene = try ComponentScene()
        defer { scene.remove() }
        let url = try scene.file("big", Self.binary)
        let error = await #expect(throws: ComponentError.self) {
            try await scene.installer(maxBytes: 100_000).install(try scene.component(url, Self.binary, path: "big"))
        }
        #expect(error?.code == .size)
        #expect(error?.description.contains("exceeds 100000 bytes") == true)
        #expect(scene.installed.isEmpty)
    }

    @Test func overHTTP() async throws {
        let scene = try ComponentScene()
        defer { scene.remove() }
        let server = try await ComponentHTTPServer(
            files: ["kubelet": Self.binary, "liar": [1, 2, 3]],
            claimedLengths: ["liar": 10 << 20]
        )
        let component = try scene.component(server.url("kubelet?token=s3cr3t"), Self.binary, path: "kubelet")
        #expect(try await scene.installer().install(component) == .installed)
        #expect(try Data(contentsOf: URL(fileURLWithPath: scene.root + "/kubelet")) == Data(Self.binary))
        #expect(try await scene.installer().install(component) == .alreadyInstalled)

        let missing = await #expect(throws: ComponentError.self) {
            try await scene.installer().install(
                try scene.component(server.url("nope?token=s3cr3t"), Self.binary, path: "n")
            )
        }
        #expect(missing?.code == .download)
        #expect(missing?.description == "component \(server.url("nope")): HTTP status 404")
        let liar = await #expect(throws: ComponentError.self) {
            try await scene.installer().install(try scene.component(server.url("liar"), [1, 2, 3], path: "l"))
        }
        #expect(liar?.code == .size)
        #expect(liar?.description.contains("Content-Length 10485760 exceeds 1048576 bytes") == true)
        try await server.stop()
        #expect(scene.installed == ["kubelet"])
    }

    @Test func extractsATarGz() async throws {
        let scene = try ComponentScene()
        defer { scene.remove() }
        let tree = scene.directory + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/cni/bin", withIntermediateDirectories: true)
        try Data(Self.binary).write(to: URL(fileURLWithPath: tree + "/cni/bin/bridge"))
        try Data("{}".utf8).write(to: URL(fileURLWithPath: tree + "/cni/conf.json"))
        chmod(tree + "/cni/bin/bridge", 0o775)
        chmod(tree + "/cni/conf.json", 0o666)
        let archive = try scene.tarGz(tree: tree + "/cni", members: ["."])
        let component = try scene.component(try scene.file("cni.tgz", archive), archive, path: "opt/cni", extract: true)
        #expect(try await scene.installer().install(component) == .installed)
        #expect(
            scene.installed == ["opt"]
                + [".cni.sha256", "cni", "cni/bin", "cni/bin/bridge", "cni/conf.json"].map { "opt/" + $0 }
        )
        #expect(try Data(contentsOf: URL(fileURLWithPath: scene.root + "/opt/cni/bin/bridge")) == Data(Self.binary))
        // Group and world write bits are dropped.
        #expect(try scene.mode("opt/cni/bin/bridge") == 0o755 && scene.mode("opt/cni/conf.json") == 0o644)
        #expect(try await scene.installer().install(component) == .alreadyInstalled)
        // A new version replaces the directory whole.
        try Data("{\"v\":2}".utf8).write(to: URL(fileURLWithPath: tree + "/cni/conf.json"))
        unlink(tree + "/cni/bin/bridge")
        let second = try scene.tarGz(tree: tree + "/cni", members: ["."])
        let upgraded = try scene.component(try scene.file("cni2.tgz", second), second, path: "opt/cni", extract: true)
        #expect(try await scene.installer().install(upgraded) == .installed)
        #expect(scene.installed == ["opt"] + [".cni.sha256", "cni", "cni/bin", "cni/conf.json"].map { "opt/" + $0 })
    }

    /// A hostile archive: how /bin/tar (or a crafted header) makes it, and what the refusal says.
    struct Hostile: Sendable, CustomTestStringConvertible {
        let name: String
        let says: String
        let make: @Sendable (ComponentScene, String) throws -> [UInt8]
        var testDescription: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(name: "../x", says: "has a '..' component") { scene, tree in
            try Data("x".utf8).write(to: URL(fileURLWithPath: scene.directory + "/escape"))
            return try scene.tarGz(tree: tree, members: ["../escape"], flags: ["-P"])
        },
        Hostile(name: "/abs", says: "is an absolute name") { scene, tree in
            try Data("x".utf8).write(to: URL(fileURLWithPath: tree + "/f"))
            return try scene.tarGz(tree: tree, members: [tree + "/f"], flags: ["-P"])
        },
        Hostile(name: "symlink out", says: "is a symbolic link") { scene, tree in
            symlink("/etc/passwd", tree + "/passwd")
            return try scene.tarGz(tree: tree, members: ["passwd"])
        },
        Hostile(name: "hardlink", says: "is a hard link") { scene, tree in
            try Data("x".utf8).write(to: URL(fileURLWithPath: tree + "/a"))
            link(tree + "/a", tree + "/b")
            return try scene.tarGz(tree: tree, members: ["a", "b"])
        },
        Hostile(name: "fifo", says: "is a FIFO") { scene, tree in
            mkfifo(tree + "/pipe", 0o644)
            return try scene.tarGz(tree: tree, members: ["pipe"])
        },
        Hostile(name: "setuid", says: "(setuid, setgid or sticky)") { scene, tree in
            try Data("x".utf8).write(to: URL(fileURLWithPath: tree + "/su"))
            chmod(tree + "/su", 0o4755)
            return try scene.tarGz(tree: tree, members: ["su"])
        },
        Hostile(name: "huge size header", says: "over the 1048576-byte limit") { scene, tree in
            // A GNU base-256 size of 64 GiB with no data behind it, gzipped by /bin/gzip.
            var header = [UInt8](repeating: 0, count: 512)
            header.replaceSubrange(0..<4, with: Array("huge".utf8))
            header.replaceSubrange(100..<108, with: Array("0000644\0".utf8))
            header.replaceSubrange(124..<136, with: [0x80, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0])
            header[156] = UInt8(ascii: "0")
            header.replaceSubrange(257..<263, with: Array("ustar\0".utf8))
            header.replaceSubrange(148..<156, with: [UInt8](repeating: 0x20, count: 8))
            let sum = String(header.reduce(0) { $0 + Int($1) }, radix: 8)
            header.replaceSubrange(
                148..<156,
                with: Array((String(repeating: "0", count: 6 - sum.count) + sum).utf8) + [0, 0x20]
            )
            let tar = tree + "/huge.tar"
            try Data(header + [UInt8](repeating: 0, count: 1024)).write(to: URL(fileURLWithPath: tar))
            try #require(try runCommand("/bin/gzip", ["-n", tar]).status == 0)
            return Array(try Data(contentsOf: URL(fileURLWithPath: tar + ".gz")))
        },
        Hostile(name: "not gzip", says: "not a gzip stream") { _, _ in Array("plain bytes, no gzip".utf8) },
        Hostile(name: "truncated", says: "truncated") { scene, tree in
            try Data(ComponentInstallerTests.binary).write(to: URL(fileURLWithPath: tree + "/f"))
            let whole = try scene.tarGz(tree: tree, members: ["f"])
            return Array(whole.prefix(whole.count / 2))
        },
    ]

    @Test(arguments: hostile)
    func hostileArchiveIsRefused(hostile: Hostile) async throws {
        let scene = try ComponentScene()
        defer { scene.remove() }
        let tree = scene.directory + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: false)
        let archive = try hostile.make(scene, tree)
        let url = try scene.file("hostile.tgz", archive)
        let error = await #expect(throws: ComponentError.self) {
            try await scene.installer().install(try scene.component(url, archive, path: "opt/x", extract: true))
        }
        #expect(error?.code == .archive || error?.code == .size)
        #expect(error?.description.hasPrefix("component \(url): ") == true)
        #expect(error?.description.contains(hostile.says) == true, "\(String(describing: error))")
        // Nothing was placed, no staging directory or download is left, and nothing escaped.
        #expect(scene.installed == ["opt"], "\(scene.installed)")
        #expect(!FileManager.default.fileExists(atPath: scene.root + "/escape"))
    }
}
