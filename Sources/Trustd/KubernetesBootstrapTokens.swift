import FoundationEssentials
import KubernetesClient
import Logging
import NIOSSL
import TrustdCore

/// Bootstrap tokens for joining nodes, each a `bootstrap-token-<id>` Secret created through the
/// Kubernetes API (KubernetesClient): with a service-account token file (the API server's CA from
/// `kubernetes-ca-file`) or a kubeconfig (its server, CA and client certificate).
struct KubernetesBootstrapTokens: BootstrapTokenSource {
    let client: BootstrapTokenClient

    init(configuration: TrustdConfiguration, logger: Logger) throws {
        guard let credentials = configuration.kubernetesCredentials else {
            throw TrustdStartError(
                "a control plane serves JoinService: set kubernetes-token-file or kubernetes-kubeconfig (bootstrap tokens)"
            )
        }
        let lifetime = Duration.seconds(configuration.bootstrapTokenTTLSeconds)
        let clientConfiguration: BootstrapTokenClient.Configuration
        do {
            switch credentials {
            case .serviceAccountTokenFile(let path):
                guard let caFile = configuration.kubernetesCAFile else {
                    throw TrustdStartError("kubernetes-token-file needs kubernetes-ca-file (the API server's CA)")
                }
                let roots = try NIOSSLCertificate.fromPEMBytes(try BoundedFile.read(caFile, limit: 65_536))
                clientConfiguration = .init(
                    apiServer: configuration.kubernetesAPIServerURL,
                    credentials: .bearerTokenFile(path),
                    trustRoots: roots,
                    tokenLifetime: lifetime
                )
            case .kubeconfig(let path):
                let text = String(decoding: try BoundedFile.read(path, limit: 1 << 20), as: UTF8.self)
                let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
                clientConfiguration = try BootstrapTokenClient.Configuration(
                    kubeconfig: try Kubeconfig(yaml: text, directory: directory.isEmpty ? "/" : directory),
                    tokenLifetime: lifetime
                )
            }
            client = try BootstrapTokenClient(configuration: clientConfiguration, logger: logger)
        } catch let error as TrustdStartError {
            throw error
        } catch {
            throw TrustdStartError("Kubernetes client: \(error)")
        }
    }

    func shutdown() async { try? await client.shutdown() }

    func token(for nodeName: String) async throws -> String {
        try await client.createToken().text
    }
}
