import FoundationEssentials
import Testing

@testable import TrustdCore

/// The components list: URLs, hashes, install paths, the file's bounds.
@Suite struct ComponentsTests {
    static let root = "/run/state/bin"
    static let hash = "sha256:" + String(repeating: "ab", count: 32)

    /// A one-component list's JSON.
    static func list(
        url: String = "https://example.com/kubeadm",
        hash: String = hash,
        path: String = "kubeadm"
    ) -> [UInt8] {
        Array(#"[{"url": "\#(url)", "hash": "\#(hash)", "installPath": "\#(path)", "extract": false}]"#.utf8)
    }

    @Test func parsesAList() throws {
        let json = """
            [{"url": "https://dl.k8s.io/v1.31.2/bin/linux/amd64/kubeadm", "hash": "\(Self.hash)",
              "installPath": "/run/state/bin/kubeadm"},
             {"url": "file:///var/cache/cni.tgz", "hash": "\(Self.hash)", "installPath": "cni/bin", "extract": true}]
            """
        let components = try ComponentList.parse(Array(json.utf8), root: Self.root)
        #expect(components.count == 2)
        #expect(components[0].installPath.components == ["kubeadm"])
        #expect(components[0].scheme == .https && components[0].extract == false)
        #expect(components[1].installPath.description == "cni/bin")
        #expect(components[1].scheme == .file && components[1].extract)
        #expect(components[0].hash.description == Self.hash)
        #expect(try ComponentList.parse(Array("[]".utf8), root: Self.root).isEmpty)
    }

    /// A refused list: its JSON, the code, and a fragment the message must hold.
    struct Refusal: Sendable, CustomTestStringConvertible {
        let json: [UInt8]
        let code: ComponentError.Code
        let says: String
        var testDescription: String { says }
    }

    static let refusals: [Refusal] = [
        Refusal(json: list(hash: ""), code: .hash, says: "hash is empty (verification cannot be skipped)"),
        Refusal(json: list(hash: "sha256:" + String(repeating: "AB", count: 32)), code: .hash, says: "lowercase hex"),
        Refusal(json: list(hash: "sha512:" + String(repeating: "ab", count: 32)), code: .hash, says: "is not sha256:"),
        Refusal(json: list(hash: String(repeating: "ab", count: 32)), code: .hash, says: "is not sha256:"),
        Refusal(json: list(hash: "sha256:" + String(repeating: "ab", count: 31)), code: .hash, says: "64 lowercase"),
        Refusal(json: list(hash: "sha256:" + String(repeating: "a", count: 63) + "g"), code: .hash, says: "hex"),
        Refusal(
            json: list(path: "/usr/bin/kubeadm"),
            code: .path,
            says: "is not under the install root /run/state/bin"
        ),
        Refusal(json: list(path: "/run/state/binx/kubeadm"), code: .path, says: "is not under the install root"),
        Refusal(json: list(path: "/run/state/bin"), code: .path, says: "is not under the install root"),
        Refusal(json: list(path: "../kubeadm"), code: .path, says: "not canonical"),
        Refusal(json: list(path: "bin/../../kubeadm"), code: .path, says: "not canonical"),
        Refusal(json: list(path: "./kubeadm"), code: .path, says: "not canonical"),
        Refusal(json: list(path: "bin//kubeadm"), code: .path, says: "not canonical"),
        Refusal(json: list(path: "bin/"), code: .path, says: "not canonical"),
        Refusal(json: list(path: ""), code: .path, says: "not canonical"),
        Refusal(json: list(path: "a\\u0000b"), code: .path, says: "contains NUL"),
        Refusal(json: list(path: String(repeating: "x", count: 256)), code: .path, says: "over 255 bytes"),
        Refusal(json: list(url: "ftp://example.com/kubeadm"), code: .url, says: "not http, https or file"),
        Refusal(json: list(url: "data:application/octet-stream;base64,AA=="), code: .url, says: "not http"),
        Refusal(json: list(url: "https:///kubeadm"), code: .url, says: "no host"),
        Refusal(json: list(url: "file://relative/kubeadm"), code: .url, says: "file:///absolute/path"),
        Refusal(json: list(url: "https://example.com/a b"), code: .url, says: "white space"),
        Refusal(json: list(url: "https://x/" + String(repeating: "a", count: 2048)), code: .url, says: "over 2048"),
        Refusal(json: Array("{}".utf8), code: .list, says: "not a JSON array"),
        Refusal(json: Array(#"[{"url": "https://x/k", "hash": "\#(hash)"}]"#.utf8), code: .list, says: "JSON array"),
        Refusal(
            json: Array(#"[{"url": "https://x/k", "hash": "\#(hash)", "installPath": "k", "mode": 4095}]"#.utf8),
            code: .list,
            says: "unknown key \"mode\""
        ),
        Refusal(
            json: Array(
                #"[{"url":"https://x/a","hash":"\#(hash)","installPath":"cni"},{"url":"https://x/b","hash":"\#(hash)","installPath":"cni/bin"}]"#
                    .utf8
            ),
            code: .path,
            says: "component https://x/b: install path cni/bin overlaps cni"
        ),
        Refusal(json: [UInt8](repeating: 0x20, count: 65_537), code: .list, says: "65537 bytes, over 65536"),
    ]

    @Test(arguments: refusals)
    func refused(refusal: Refusal) {
        let error = #expect(throws: ComponentError.self) { try ComponentList.parse(refusal.json, root: Self.root) }
        #expect(error?.code == refusal.code)
        #expect(error?.description.contains(refusal.says) == true, "\(String(describing: error))")
    }

    @Test func tooManyComponents() {
        let entry = #"{"url":"https://x/a","hash":"\#(Self.hash)","installPath":"p"}"#
        let entries = (0..<65).map { entry.replacing("\"p\"", with: "\"p\($0)\"") }
        let error = #expect(throws: ComponentError.self) {
            try ComponentList.parse(Array(("[" + entries.joined(separator: ",") + "]").utf8), root: Self.root)
        }
        #expect(error?.description == "components file lists 65 components, over 64")
    }

    @Test func errorsNameTheURLWithoutSecrets() {
        let error = #expect(throws: ComponentError.self) {
            try ComponentList.parse(
                Self.list(url: "https://user:pw@example.com/kubeadm?X-Amz-Signature=s3cr3t#frag", hash: ""),
                root: Self.root
            )
        }
        let text = error?.description ?? ""
        #expect(text.hasPrefix("component https://example.com/kubeadm: hash is empty"), "\(text)")
        #expect(!text.contains("s3cr3t") && !text.contains("pw") && !text.contains("frag"))
        #expect(ComponentURL.redacted("file:///a/b?c") == "file:///a/b")
        #expect(ComponentURL.redacted("http://h:1/p/q@r") == "http://h:1/p/q@r")
    }

    @Test func hashRoundTrips() throws {
        let hash = try ComponentHash("sha256:" + String(repeating: "0f", count: 32))
        #expect(hash.digest == [UInt8](repeating: 0x0F, count: 32))
        #expect(ComponentHash(digest: hash.digest) == hash)
        #expect(hash.description == "sha256:" + String(repeating: "0f", count: 32))
    }
}
