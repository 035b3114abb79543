import Foundation
import NIOSSL
import X509

/// The part of kube-apiserver's contract the fake enforces for bootstrap-token Secrets, as pure functions over a
/// request: bearer or client-certificate authentication, routes, the Secret's schema and field encodings, conflicts.
///
/// kube-apiserver itself checks a bootstrap-token Secret's contents only when the token is used (a malformed one
/// is silently never accepted); the fake checks them at creation and answers 422, so a client that writes a
/// Secret no kubelet could use fails its test instead.
enum FakeAPIContract {
    /// A request as the fake received it.
    struct Request: Sendable {
        /// `GET`, `POST`, ...
        var method: String
        /// The URI path.
        var path: String
        /// Header names lower-cased, with their values.
        var headers: [String: String]
        /// The body.
        var body: [UInt8]
        /// The subject of the client certificate the TLS layer verified against the cluster CA, if any.
        var clientSubject: String? = nil
    }

    /// An answer: status and a JSON body.
    struct Response: Sendable, Equatable {
        /// The HTTP status.
        var status: Int
        /// The Status object's `reason` (`Invalid`, `AlreadyExists`, ...), or nil for a Secret.
        var reason: String?
        /// The body.
        var body: [UInt8]

        /// A Kubernetes `Status` failure object, as kube-apiserver answers errors.
        static func failure(_ status: Int, _ reason: String, _ message: String) -> Response {
            let object: [String: Any] = [
                "kind": "Status", "apiVersion": "v1", "metadata": [String: Any](), "status": "Failure",
                "message": message, "reason": reason, "code": status,
            ]
            let body = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            return Response(status: status, reason: reason, body: Array(body))
        }

        /// A Secret as kube-apiserver returns it: values base64 in `data`, never `stringData`.
        static func secret(_ status: Int, name: String, data: [String: String]) -> Response {
            let object: [String: Any] = [
                "kind": "Secret", "apiVersion": "v1",
                "metadata": ["name": name, "namespace": namespace],
                "type": secretType,
                "data": data.mapValues { Data($0.utf8).base64EncodedString() },
            ]
            let body = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            return Response(status: status, reason: nil, body: Array(body))
        }
    }

    /// The namespace bootstrap tokens live in.
    static let namespace = "kube-system"
    /// The collection path.
    static let secretsPath = "/api/v1/namespaces/kube-system/secrets"
    /// The bootstrap-token Secret type.
    static let secretType = "bootstrap.kubernetes.io/token"

    /// What an authenticated, routed request asks for.
    enum Route: Equatable {
        /// POST to the collection.
        case create
        /// GET of one Secret by name.
        case read(String)
    }

    /// 401 unless `request` came with a client certificate the cluster CA verified, or carries
    /// `Authorization: Bearer <bearerToken>` (kube-apiserver's union of its x509 and token authenticators).
    static func authenticate(_ request: Request, bearerToken: String) -> Response? {
        if request.clientSubject != nil { return nil }
        return request.headers["authorization"] == "Bearer \(bearerToken)"
            ? nil : .failure(401, "Unauthorized", "Unauthorized")
    }

    /// The chain from `presented` (leaf first) to `ca` when it is valid now and the leaf is for client
    /// authentication, as kube-apiserver's x509 authenticator checks it; nil otherwise.
    static func verifyClientCertificate(_ presented: [NIOSSLCertificate], ca: Certificate) async -> [Certificate]? {
        guard let certificates = try? presented.map({ try Certificate(derEncoded: try $0.toDERBytes()) }),
            let leaf = certificates.first,
            (try? leaf.extensions.extendedKeyUsage)??.contains(.clientAuth) == true
        else { return nil }
        var verifier = Verifier(rootCertificates: CertificateStore([ca])) { RFC5280Policy(validationTime: Date()) }
        let result = await verifier.validate(
            leaf: leaf,
            intermediates: CertificateStore(certificates.dropFirst())
        )
        guard case .validCertificate(let chain) = result else { return nil }
        return Array(chain)
    }

    /// The route, or 404 for an unknown path and 405 for a wrong method.
    static func route(_ request: Request) -> Result<Route, FakeAPIFailure> {
        if request.path == secretsPath {
            return request.method == "POST"
                ? .success(.create) : .failure(.init(.failure(405, "MethodNotAllowed", "only POST here")))
        }
        if request.path.hasPrefix(secretsPath + "/") {
            let name = String(request.path.dropFirst(secretsPath.count + 1))
            guard !name.isEmpty, !name.contains("/") else {
                return .failure(.init(.failure(404, "NotFound", "no route")))
            }
            return request.method == "GET"
                ? .success(.read(name)) : .failure(.init(.failure(405, "MethodNotAllowed", "only GET here")))
        }
        return .failure(.init(.failure(404, "NotFound", "the server could not find the requested resource")))
    }

    /// A bootstrap-token Secret the contract accepts: its name and its values, decoded.
    struct ValidSecret: Equatable {
        /// `bootstrap-token-<token-id>`.
        var name: String
        /// `data` decoded, then `stringData` over it.
        var values: [String: String]
    }

    /// The Secret in a create request's body, or the 400/415/422 kube-apiserver (or the bootstrap-token
    /// authenticator, for the contents) would give.
    static func validateSecret(_ request: Request) -> Result<ValidSecret, FakeAPIFailure> {
        func invalid(_ message: String) -> Result<ValidSecret, FakeAPIFailure> {
            .failure(.init(.failure(422, "Invalid", message)))
        }
        func badRequest(_ message: String) -> Result<ValidSecret, FakeAPIFailure> {
            .failure(.init(.failure(400, "BadRequest", message)))
        }
        guard request.headers["content-type"]?.hasPrefix("application/json") == true else {
            return .failure(.init(.failure(415, "UnsupportedMediaType", "Content-Type must be application/json")))
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any] else {
            return badRequest("body is not a JSON object")
        }
        guard object["apiVersion"] as? String == "v1", object["kind"] as? String == "Secret" else {
            return badRequest("apiVersion must be v1 and kind Secret")
        }
        guard let metadata = object["metadata"] as? [String: Any] else { return invalid("metadata: Required value") }
        if let namespace = metadata["namespace"], namespace as? String != Self.namespace {
            return badRequest("metadata.namespace does not match the namespace of the request")
        }
        guard let name = metadata["name"] as? String, !name.isEmpty else {
            return invalid("metadata.name: Required value")
        }
        guard object["type"] as? String == secretType else { return invalid("type: must be \(secretType)") }
        var values: [String: String] = [:]
        if let data = object["data"] {
            guard let data = data as? [String: String] else { return badRequest("data: values must be strings") }
            for (key, encoded) in data {
                guard let decoded = Data(base64Encoded: encoded), let text = String(data: decoded, encoding: .utf8)
                else { return badRequest("data[\(key)]: illegal base64 data") }
                values[key] = text
            }
        }
        if let stringData = object["stringData"] {
            guard let stringData = stringData as? [String: String] else {
                return badRequest("stringData: values must be strings")
            }
            values.merge(stringData) { $1 }
        }
        for key in ["token-id", "token-secret", "expiration"] where values[key] == nil {
            return invalid("data[\(key)]: Required value")
        }
        let id = values["token-id"]!
        guard id.wholeMatch(of: /[a-z0-9]{6}/) != nil else { return invalid("data[token-id]: must match [a-z0-9]{6}") }
        guard values["token-secret"]!.wholeMatch(of: /[a-z0-9]{16}/) != nil else {
            return invalid("data[token-secret]: must match [a-z0-9]{16}")
        }
        guard name == "bootstrap-token-\(id)" else { return invalid("metadata.name: must be bootstrap-token-\(id)") }
        guard (try? Date.ISO8601FormatStyle().parse(values["expiration"]!)) != nil else {
            return invalid("data[expiration]: not an RFC 3339 time")
        }
        guard values["usage-bootstrap-authentication"] == "true" else {
            return invalid("data[usage-bootstrap-authentication]: must be \"true\" for a node join")
        }
        for (key, value) in values where key.hasPrefix("usage-bootstrap-") && value != "true" {
            return invalid("data[\(key)]: must be \"true\" when present")
        }
        if let groups = values["auth-extra-groups"] {
            for group in groups.split(separator: ",", omittingEmptySubsequences: false)
            where group.wholeMatch(of: /system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]/) == nil {
                return invalid("data[auth-extra-groups]: \(group) is not a system:bootstrappers: group")
            }
        }
        return .success(ValidSecret(name: name, values: values))
    }
}

/// A contract violation as the answer to give.
struct FakeAPIFailure: Error {
    /// The answer.
    let response: FakeAPIContract.Response

    init(_ response: FakeAPIContract.Response) { self.response = response }
}
