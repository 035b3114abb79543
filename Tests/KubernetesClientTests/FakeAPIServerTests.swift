import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

@testable import FakeKubernetesAPI

/// The fake kube-apiserver's contract, over real HTTPS on loopback with a plain HTTP client.
@Suite("Fake API server contract")
struct FakeAPIServerTests {
    /// A Secret the contract accepts, as a JSON object, with `stringData`.
    static func goodSecret(id: String = "abc123", secret: String = "0123456789abcdef") -> [String: Any] {
        [
            "apiVersion": "v1", "kind": "Secret",
            "metadata": ["name": "bootstrap-token-\(id)", "namespace": "kube-system"],
            "type": "bootstrap.kubernetes.io/token",
            "stringData": [
                "token-id": id, "token-secret": secret, "expiration": "2030-01-01T00:00:00Z",
                "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
            ],
        ]
    }

    /// An answer's status and its Status object's reason.
    struct Answer {
        var status: Int
        var reason: String?
        var body: [String: Any]
    }

    /// Sends one request to the fake.
    static func send(
        _ http: HTTPClient,
        _ server: FakeAPIServer,
        method: HTTPMethod = .POST,
        path: String = FakeAPIContract.secretsPath,
        body: [UInt8]?,
        bearer: String? = fakeBearerToken,
        contentType: String = "application/json"
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: server.url + path)
        request.method = method
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(body)
        }
        let response = try await http.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        let object = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any] ?? [:]
        return Answer(status: Int(response.status.code), reason: object["reason"] as? String, body: object)
    }

    /// `object` as JSON bytes.
    static func json(_ object: [String: Any]) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: object))
    }

    @Test("a good Secret is created (201), stored, and read back with its values base64 in data")
    func goodRequest() async throws {
        try await withFakeAPIServerAndClient { server, pki, http in
            let created = try await Self.send(http, server, body: Self.json(Self.goodSecret()))
            #expect(created.status == 201)
            #expect(server.secrets["bootstrap-token-abc123"]?["token-secret"] == "0123456789abcdef")
            let read = try await Self.send(
                http,
                server,
                method: .GET,
                path: FakeAPIContract.secretsPath + "/bootstrap-token-abc123",
                body: nil
            )
            #expect(read.status == 200)
            let data = read.body["data"] as? [String: String]
            #expect(data?["token-id"] == Data("abc123".utf8).base64EncodedString())
            #expect(read.body["stringData"] == nil)
        }
    }

    @Test("a Secret with base64 data instead of stringData is accepted")
    func base64Data() async throws {
        try await withFakeAPIServerAndClient { server, pki, http in
            var secret = Self.goodSecret()
            let plain = secret.removeValue(forKey: "stringData") as! [String: String]
            secret["data"] = plain.mapValues { Data($0.utf8).base64EncodedString() }
            let answer = try await Self.send(http, server, body: Self.json(secret))
            #expect(answer.status == 201)
            #expect(server.secrets["bootstrap-token-abc123"] == plain)
        }
    }

    /// One way to break the request, and the answer the contract gives.
    struct Violation: Sendable, CustomStringConvertible {
        var description: String
        var status: Int
        var reason: String
        var method: HTTPMethod = .POST
        var path: String = FakeAPIContract.secretsPath
        var bearer: String? = fakeBearerToken
        var contentType = "application/json"
        /// The raw body, when not a mutated good Secret.
        var rawBody: String?
        var mutate: @Sendable (inout [String: Any]) -> Void = { _ in }
    }

    /// Sets `stringData[key]` (nil removes it).
    static func setValue(_ key: String, _ value: String?) -> @Sendable (inout [String: Any]) -> Void {
        { object in
            var values = object["stringData"] as! [String: String]
            values[key] = value
            object["stringData"] = values
        }
    }

    static let violations: [Violation] = [
        Violation(description: "no bearer token", status: 401, reason: "Unauthorized", bearer: nil),
        Violation(description: "wrong bearer token", status: 401, reason: "Unauthorized", bearer: "other-token"),
        Violation(description: "GET on the collection", status: 405, reason: "MethodNotAllowed", method: .GET),
        Violation(
            description: "another namespace's path",
            status: 404,
            reason: "NotFound",
            path: "/api/v1/namespaces/default/secrets"
        ),
        Violation(
            description: "not JSON content",
            status: 415,
            reason: "UnsupportedMediaType",
            contentType: "text/plain"
        ),
        Violation(description: "body not JSON", status: 400, reason: "BadRequest", rawBody: "{not json"),
        Violation(description: "kind ConfigMap", status: 400, reason: "BadRequest") { $0["kind"] = "ConfigMap" },
        Violation(description: "namespace default", status: 400, reason: "BadRequest") {
            $0["metadata"] = ["name": "bootstrap-token-abc123", "namespace": "default"]
        },
        Violation(description: "no name", status: 422, reason: "Invalid") { $0["metadata"] = [String: String]() },
        Violation(description: "type Opaque", status: 422, reason: "Invalid") { $0["type"] = "Opaque" },
        Violation(description: "name not bootstrap-token-<token-id>", status: 422, reason: "Invalid") {
            $0["metadata"] = ["name": "bootstrap-token-zzz999", "namespace": "kube-system"]
        },
        Violation(
            description: "token-secret missing",
            status: 422,
            reason: "Invalid",
            mutate: setValue("token-secret", nil)
        ),
        Violation(
            description: "expiration missing",
            status: 422,
            reason: "Invalid",
            mutate: setValue("expiration", nil)
        ),
        Violation(
            description: "token-id upper case",
            status: 422,
            reason: "Invalid",
            mutate: { object in
                setValue("token-id", "ABC123")(&object)
                object["metadata"] = ["name": "bootstrap-token-ABC123", "namespace": "kube-system"]
            }
        ),
        Violation(
            description: "token-secret 15 characters",
            status: 422,
            reason: "Invalid",
            mutate: setValue("token-secret", "0123456789abcde")
        ),
        Violation(
            description: "expiration not RFC 3339",
            status: 422,
            reason: "Invalid",
            mutate: setValue("expiration", "tomorrow")
        ),
        Violation(
            description: "authentication usage false",
            status: 422,
            reason: "Invalid",
            mutate: setValue("usage-bootstrap-authentication", "false")
        ),
        Violation(
            description: "signing usage yes",
            status: 422,
            reason: "Invalid",
            mutate: setValue("usage-bootstrap-signing", "yes")
        ),
        Violation(
            description: "extra group outside system:bootstrappers:",
            status: 422,
            reason: "Invalid",
            mutate: setValue("auth-extra-groups", "system:masters")
        ),
        Violation(description: "data not base64", status: 400, reason: "BadRequest") {
            $0["data"] = ["token-id": "!!not base64!!"]
        },
        Violation(description: "stringData value not a string", status: 400, reason: "BadRequest") {
            $0["stringData"] = ["token-id": 7]
        },
    ]

    @Test("each contract violation is refused with its status and reason, and nothing is stored", arguments: violations)
    func violation(_ violation: Violation) async throws {
        try await withFakeAPIServerAndClient { server, pki, http in
            var secret = Self.goodSecret()
            violation.mutate(&secret)
            let body = violation.rawBody.map { Array($0.utf8) } ?? Self.json(secret)
            let answer = try await Self.send(
                http,
                server,
                method: violation.method,
                path: violation.path,
                body: violation.method == .POST ? body : nil,
                bearer: violation.bearer,
                contentType: violation.contentType
            )
            #expect(answer.status == violation.status)
            #expect(answer.reason == violation.reason)
            #expect(!((answer.body["message"] as? String) ?? "").isEmpty)
            #expect(server.secrets.isEmpty)
        }
    }

    @Test("a second Secret of the same name is refused with 409 AlreadyExists and the first is kept")
    func conflict() async throws {
        try await withFakeAPIServerAndClient { server, pki, http in
            let first = try await Self.send(http, server, body: Self.json(Self.goodSecret()))
            #expect(first.status == 201)
            let second = try await Self.send(
                http,
                server,
                body: Self.json(Self.goodSecret(secret: "ffffffffffffffff"))
            )
            #expect(second.status == 409)
            #expect(second.reason == "AlreadyExists")
            #expect(server.secrets["bootstrap-token-abc123"]?["token-secret"] == "0123456789abcdef")
        }
    }

    @Test("injected faults: a 5xx answer writes nothing; a held answer writes first and answers once released")
    func faults() async throws {
        try await withFakeAPIServerAndClient { server, pki, http in
            server.inject([.status(503), .held])
            let unavailable = try await Self.send(http, server, body: Self.json(Self.goodSecret()))
            #expect(unavailable.status == 503)
            #expect(server.secrets.isEmpty)
            let answered = Mutex(false)
            let held = Task {
                let answer = try await Self.send(http, server, body: Self.json(Self.goodSecret()))
                answered.withLock { $0 = true }
                return answer.status
            }
            await server.waitForRequests(2)
            #expect(server.secrets["bootstrap-token-abc123"] != nil)
            #expect(!answered.withLock { $0 })
            server.releaseHeldAnswers()
            #expect(try await held.value == 201)
        }
    }

    @Test("an injected drop writes the Secret and closes the connection without an answer")
    func dropAfterWrite() async throws {
        try await withFakeAPIServerAndClient { server, pki, http in
            server.inject([.dropAfterWrite])
            await #expect(throws: (any Error).self) {
                try await Self.send(http, server, body: Self.json(Self.goodSecret()))
            }
            #expect(server.secrets["bootstrap-token-abc123"] != nil)
        }
    }

    @Test("a client certificate the cluster CA signed for client auth authenticates without a bearer token")
    func clientCertificate() async throws {
        try await withFakeAPIServerAndClient(identity: .signedByTestCA(commonName: "admin")) { server, pki, http in
            let answer = try await Self.send(http, server, body: Self.json(Self.goodSecret()), bearer: nil)
            #expect(answer.status == 201)
            #expect(server.credentials == ["x509 CN=admin,O=system:masters"])
        }
    }

    @Test("a client certificate from another CA passes the handshake but not authentication: 401, nothing stored")
    func foreignClientCertificate() async throws {
        try await withFakeAPIServerAndClient(identity: .signedByAnotherCA) { server, pki, http in
            let answer = try await Self.send(http, server, body: Self.json(Self.goodSecret()), bearer: nil)
            #expect(answer.status == 401)
            #expect(answer.reason == "Unauthorized")
            #expect(server.credentials == ["none"])
            #expect(server.secrets.isEmpty)
        }
    }
}
