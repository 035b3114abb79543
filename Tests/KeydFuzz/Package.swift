// swift-tools-version:6.0
import PackageDescription

/// libFuzzer targets for keyd's decoders of untrusted bytes (the swift-nio-http2 FuzzTesting model).
/// Build only through `make fuzz` (both sanitizer spellings and `--product`); see README.md.
let package = Package(
    name: "KeydFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Asterism", path: "../.."),
    ],
    targets: [
        // Stream reassembly, request and answer decoding, and encode/decode agreement.
        .executableTarget(
            name: "FuzzFrameDecoder",
            dependencies: [.product(name: "KeydProtocol", package: "Asterism")]
        ),
        // The per-connection session state machine against the permission table.
        .executableTarget(
            name: "FuzzSession",
            dependencies: [
                .product(name: "KeydProtocol", package: "Asterism"),
                .product(name: "KeydCore", package: "Asterism"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
