// swift-tools-version:6.0
import PackageDescription

/// Asterism: the node trust plane for confidential Kubernetes.
/// keyd's closure (KeydProtocol, KeydCore, KeydPlatform, C shims) must not reach NIO, gRPC or
/// full Foundation; `scripts/check-keyd-imports` enforces it in `make test`.
let package = Package(
    name: "Asterism",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyd", targets: ["keyd"]),
        .executable(name: "keydctl", targets: ["keydctl"]),
        .executable(name: "asterism", targets: ["asterism"]),
        .executable(name: "trustd", targets: ["trustd"]),
        .library(name: "KeydClient", targets: ["KeydClient"]),
        // For the nested fuzz package Tests/KeydFuzz, which can depend only on products.
        .library(name: "KeydProtocol", targets: ["KeydProtocol"]),
        .library(name: "KeydCore", targets: ["KeydCore"]),
        .library(name: "Attestation", targets: ["Attestation"]),
        .library(name: "ATLS", targets: ["ATLS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
    ],
    targets: [
        // keyd's wire format: frames, requests, limits, status codes. Standard library only.
        .target(name: "KeydProtocol", exclude: ["PROTOCOL.md"]),
        // keyd's decisions: permission table, session state machine, key custody, audit chain, sealed key
        // release (join binding, envelopes, signed policy, the release decision, kubelet certificates).
        .target(
            name: "KeydCore",
            dependencies: [
                "KeydProtocol", "Attestation", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // System libraries and the macro/GNU-only shims Swift cannot import directly.
        .systemLibrary(name: "CTSS2", pkgConfig: "tss2-esys tss2-tctildr tss2-mu tss2-rc"),
        .systemLibrary(name: "CCryptsetup", pkgConfig: "libcryptsetup"),
        .systemLibrary(name: "CCap", pkgConfig: "libcap"),
        .target(name: "CKeydShims"),
        // Thin Swift over syscalls and the C libraries; no policy.
        .target(name: "KeydPlatform", dependencies: ["KeydProtocol", "CKeydShims", "CCap", "CCryptsetup", "CTSS2"]),
        // The privileged daemon's logic as a library: the poll loop, request handlers, state disk, TPM.
        .target(name: "KeydDaemon", dependencies: ["KeydProtocol", "KeydCore", "KeydPlatform"]),
        // keyd's thin main: options, then the loop.
        .executableTarget(name: "keyd", dependencies: ["KeydDaemon", "KeydProtocol"]),
        // Client of keyd's sockets, for trustd and keydctl.
        .target(name: "KeydClient", dependencies: ["KeydProtocol"]),
        // keydctl's commands as a library, so golden --help tests can render them in process.
        .target(
            name: "KeydctlCLI",
            dependencies: [
                "KeydClient", "KeydCore", "KeydProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "keydctl", dependencies: ["KeydctlCLI"]),
        // Evidence formats and pure validators (TPM quotes, event logs, measurements, SEV-SNP). No I/O.
        .target(
            name: "Attestation",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // The operator CLI's commands as a library, so tests can run them in process; its node attestation
        // client (VerificationService over gRPC) for the lifecycle commands.
        .target(
            name: "AsterismCLI",
            dependencies: [
                "Attestation", "ATLS", "ATLSTransport", "AsterismProto", "KeydCore", "TrustdCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        .executableTarget(name: "asterism", dependencies: ["AsterismCLI"]),
        // Attested TLS, pure part: attested certificates, variants, nonce codec and their verifier.
        .target(
            name: "ATLS",
            dependencies: [
                "Attestation", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // aTLS over NIOSSL (per-ClientHello certificates, verification callback) and the gRPC transports built on it.
        .target(
            name: "ATLSTransport",
            dependencies: [
                "ATLS", "Attestation", "KeydClient", "KeydProtocol", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"), .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            ]
        ),
        // trustd's Kubernetes side: bootstrap tokens created as Secrets through the API server's REST API.
        .target(
            name: "KubernetesClient",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams"),
            ]
        ),
        // trustd's pure logic (configuration first); KeydCore's pure types, no I/O, no system library.
        .target(name: "TrustdCore", dependencies: ["KeydCore", "KeydProtocol"]),
        // trustd's services: JoinService, join client, VerificationService over aTLS gRPC; talks to keyd
        // only through KeydClient.
        .target(
            name: "Trustd",
            dependencies: [
                "TrustdCore", "KeydClient", "KeydProtocol", "KeydCore", "ATLS", "ATLSTransport", "Attestation",
                "AsterismProto", "KubernetesClient", .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                // The bootstrapper: component downloads, .tar.gz extraction, kubeadm's config and process.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(
            name: "trustd",
            dependencies: ["Trustd", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Generated protobuf and gRPC code (scripts/generate-protos); Constellation's schemas plus Asterism's fields.
        .target(
            name: "AsterismProto",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ],
            exclude: ["Protos"]
        ),

        // Benchmarks/: programs that print figures beside a baseline, run by `make bench`. Not products:
        // SwiftPM gives each executable target of the root package a product of its own name.
        // The clock, percentiles, figure formatting and options every bench shares.
        .target(
            name: "BenchSupport",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks/BenchSupport"
        ),
        // The release keyd the benches that drive keyd start (launch, stop, memory, scheduling).
        .target(name: "BenchKeyd", dependencies: ["AsterismTestSupport"], path: "Benchmarks/BenchKeyd"),
        // keyd round trips beside a bare Unix-socket echo, RSS and binary size.
        .executableTarget(
            name: "keyd-bench",
            dependencies: ["BenchSupport", "KeydClient", "KeydProtocol"],
            path: "Benchmarks/KeydBench"
        ),
        // The state disk's unlock check, Asterism's profile beside Constellation's.
        .executableTarget(
            name: "statedisk-bench",
            dependencies: ["BenchSupport", "KeydCore", "KeydDaemon", "KeydPlatform"],
            path: "Benchmarks/StateDiskBench"
        ),
        // Evidence latency through keyd beside tpm2_quote on one swtpm; KEK unseal at start; the admin's
        // status under an evidence.issue flood beside an idle keyd.
        .executableTarget(
            name: "tpm-bench",
            dependencies: ["AsterismTestSupport", "BenchSupport", "KeydClient", "KeydProtocol"],
            path: "Benchmarks/TPMBench"
        ),
        // Quote, SEV-SNP report and event-log validations per second.
        .executableTarget(
            name: "attestation-bench",
            dependencies: ["Attestation", "BenchSupport", .product(name: "Crypto", package: "swift-crypto")],
            path: "Benchmarks/AttestationBench"
        ),
        // keyd's start time with a 1 GiB audit log; audit records per 10,000 routine trustd requests.
        .executableTarget(
            name: "audit-bench",
            dependencies: [
                "AsterismTestSupport", "BenchSupport", "KeydClient", "KeydCore", "KeydPlatform", "KeydProtocol",
            ],
            path: "Benchmarks/AuditBench"
        ),
        // Key releases/s through keyd's trustd socket (one client pipelining, concurrent clients) beside the
        // in-process validation of the same quotes; what one audit commit costs; keyd's RSS.
        .executableTarget(
            name: "release-bench",
            dependencies: [
                "BenchKeyd",
                "AsterismTestSupport", "Attestation", "BenchSupport", "KeydClient", "KeydCore", "KeydPlatform",
                "KeydProtocol", .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Benchmarks/ReleaseBench"
        ),
        // Handshakes/s and server CPU per handshake, plain TLS beside aTLS variants.
        .executableTarget(
            name: "atls-bench",
            dependencies: [
                "ATLS", "ATLSTransport", "Attestation", "AsterismTestSupport", "BenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            path: "Benchmarks/ATLSBench"
        ),
        // Join tickets/s and p50/p99 end to end (aTLS + gRPC + keyd's key.release) through an in-process
        // The cluster lifecycle (scripts/demo, three nodes in network namespaces): init, join and rejoin times.
        .executableTarget(
            name: "lifecycle-bench",
            dependencies: ["BenchSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks/LifecycleBench"
        ),
        // JoinService and a real keyd; rejoin round trip beside clevis decrypt against tangd; a boot storm.
        .executableTarget(
            name: "join-bench",
            dependencies: [
                "BenchKeyd",
                "Trustd", "TrustdCore", "AsterismProto", "ATLS", "ATLSTransport", "Attestation", "AsterismTestSupport",
                "BenchSupport", "KeydClient", "KeydCore", "KeydProtocol",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Benchmarks/JoinBench"
        ),

        // Test harness shared by the integration, attestation and aTLS tests and atls-bench: posix_spawn
        // children, swtpm, and an in-memory evidence issuer that proves nothing about a machine.
        .target(
            name: "AsterismTestSupport",
            dependencies: [
                "Attestation", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            path: "Tests/TestSupport"
        ),
        // KeydCore for the limits PROTOCOL.md documents as keyd's defaults.
        .testTarget(name: "KeydProtocolTests", dependencies: ["KeydProtocol", "KeydCore"]),
        .testTarget(
            name: "ATLSTests",
            dependencies: [
                "ATLS", "ATLSTransport", "Attestation", "AsterismProto", "AsterismCLI", "AsterismTestSupport",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            exclude: ["atls_crosscheck.py"]
        ),
        .testTarget(
            name: "AsterismProtoTests",
            dependencies: [
                "AsterismProto", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
            ]
        ),
        // One well-formed request of every kind, for the session and request-table tests.
        .target(name: "KeydTestSamples", dependencies: ["KeydProtocol"], path: "Tests/KeydTestSamples"),
        // AsterismTestSupport for the software AK that signs join evidence; X509 for the kubelet CA's CSRs.
        .testTarget(
            name: "KeydCoreTests",
            dependencies: [
                "KeydCore", "KeydProtocol", "KeydTestSamples", "Attestation", "AsterismTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // keyd's service in process: the request table, the re-key order with injected faults.
        .testTarget(
            name: "KeydDaemonTests",
            dependencies: [
                "KeydDaemon", "KeydCore", "KeydPlatform", "KeydProtocol", "KeydTestSamples", "AsterismTestSupport",
                "Attestation", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
        .testTarget(
            name: "KeydPlatformTests",
            dependencies: ["KeydPlatform", "KeydCore", "KeydDaemon", "CKeydShims", "CCap", "CTSS2", "CCryptsetup"]
        ),
        .testTarget(
            name: "KeydctlTests",
            dependencies: [
                "KeydctlCLI", "KeydClient", "KeydCore", "KeydProtocol", "AsterismTestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Golden")]
        ),
        // asterism's --help goldens, the built binary's dispatch and exit statuses, the key and policy commands.
        .testTarget(
            name: "AsterismCLITests",
            dependencies: [
                "AsterismCLI", "AsterismTestSupport", "Attestation", "KeydCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Golden")]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "Trustd", "TrustdCore", "AsterismProto", "FakeKubernetesAPI",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                "KeydClient", "KeydProtocol", "KeydCore", "KeydPlatform", "Attestation", "AsterismTestSupport", "ATLS",
                "ATLSTransport",
                "AsterismCLI",
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            exclude: ["constellation_join.py", "constellation_join.proto"]
        ),
        // A fake kube-apiserver enforcing the bootstrap-token Secret's contract (no real API server can run
        // here), its test PKI; for the Kubernetes client's tests and trustd's end-to-end tests.
        .target(
            name: "FakeKubernetesAPI",
            dependencies: [
                "AsterismTestSupport", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            path: "Tests/FakeKubernetesAPI"
        ),
        // The fake kube-apiserver's contract, and the bootstrap-token client against it over loopback HTTPS.
        .testTarget(
            name: "KubernetesClientTests",
            dependencies: [
                "KubernetesClient", "AsterismTestSupport", "FakeKubernetesAPI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "TrustdCoreTests", dependencies: ["TrustdCore", "KeydCore", "KeydProtocol"]),
        // A recording kubeadm that enforces the real one's contract on its config file (no Kubernetes here).
        .target(
            name: "FakeKubeadm",
            dependencies: ["TrustdCore", .product(name: "Yams", package: "Yams")],
            path: "Tests/FakeKubeadm"
        ),
        // trustd's services in process over real sockets: VerificationService (gRPC, HTTP), admission, /metrics;
        // the bootstrapper's components (file:// and loopback HTTP), kubeadm and node set-up.
        .testTarget(
            name: "TrustdTests",
            dependencies: [
                "Trustd", "TrustdCore", "AsterismProto", "AsterismTestSupport", "Attestation", "KeydClient",
                "FakeKubeadm", .product(name: "NIOHTTP1", package: "swift-nio"),
                "KeydProtocol", .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "AttestationTests",
            dependencies: [
                "Attestation", "AsterismCLI", "AsterismTestSupport", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
