// swift-tools-version:6.0
import PackageDescription

/// libFuzzer targets for keyd's decoders of untrusted bytes (the swift-nio-http2 FuzzTesting model).
/// Build only through `make fuzz` (both sanitizer spellings and `--product`); see README.md.
let package = Package(
    name: "KeydFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Asterism", path: "../..")
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
        // Attestation's parsers of untrusted evidence (one target per parser).
        // TPMS_ATTEST.
        .executableTarget(name: "FuzzTPMAttest", dependencies: [.product(name: "Attestation", package: "Asterism")]),
        // TPMT_PUBLIC / TPM2B_PUBLIC and key import.
        .executableTarget(name: "FuzzTPMPublic", dependencies: [.product(name: "Attestation", package: "Asterism")]),
        // TPMT_SIGNATURE and its verification.
        .executableTarget(name: "FuzzTPMSignature", dependencies: [.product(name: "Attestation", package: "Asterism")]),
        // TCG event log parse and replay.
        .executableTarget(name: "FuzzEventLog", dependencies: [.product(name: "Attestation", package: "Asterism")]),
        // SEV-SNP report and AMD certificates.
        .executableTarget(name: "FuzzSNPReport", dependencies: [.product(name: "Attestation", package: "Asterism")]),
        // Native and Constellation evidence documents.
        .executableTarget(
            name: "FuzzEvidenceDocuments",
            dependencies: [.product(name: "Attestation", package: "Asterism")]
        ),
        // Key and init envelopes: strict parsing, re-encoding, opening.
        .executableTarget(name: "FuzzEnvelope", dependencies: [.product(name: "KeydCore", package: "Asterism")]),
        // The operator key, the signed policy and the measurement policy.
        .executableTarget(name: "FuzzPolicy", dependencies: [.product(name: "KeydCore", package: "Asterism")]),
        // A peer's attested certificate through the aTLS verifier, and the SNI nonce parser.
        .executableTarget(
            name: "FuzzATLSCertificate",
            dependencies: [
                .product(name: "ATLS", package: "Asterism"), .product(name: "Attestation", package: "Asterism"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
