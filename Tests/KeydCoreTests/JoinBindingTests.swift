import Attestation
import Crypto
import KeydCore
import KeydProtocol
import Testing

/// The join binding (its encoding against an independent oracle) and the node name rule.
@Suite struct JoinBindingTests {
    static let uuid = try! DiskUUID(validating: "0f0e0d0c-0b0a-4988-8776-655443322110")

    static func claims(
        nonce: [UInt8] = Array(0..<32),
        certificateKeyHash: [UInt8] = Array(32..<64),
        bootPublicKey: [UInt8] = Array(64..<96),
        diskUUID: DiskUUID = uuid,
        role: NodeRole = .controlPlane,
        nodeName: String = "cp-0.cluster.local"
    ) throws -> JoinClaims {
        try JoinClaims(
            nonce: nonce,
            certificateKeyHash: certificateKeyHash,
            bootPublicKey: bootPublicKey,
            diskUUID: diskUUID,
            role: role,
            nodeName: try KubernetesNodeName(validating: nodeName)
        )
    }

    /// Computed with Python's hashlib, independently of this code:
    /// `lp = lambda b: len(b).to_bytes(2, 'big') + b`
    /// `sha256(b'asterism-join-v1' + lp(bytes(range(32))) + lp(bytes(range(32, 64))) + lp(bytes(range(64, 96)))
    ///  + lp(b'0f0e0d0c-0b0a-4988-8776-655443322110') + lp(bytes([role])) + lp(name)).hexdigest()`
    @Test(
        arguments: [
            (
                NodeRole.controlPlane, "cp-0.cluster.local",
                "b86956c0e0de7483ab8c76ddf2c17602cde03581ce1d6c57cd245fe480d3ff7f"
            ),
            (NodeRole.worker, "worker-1", "c593bce95d1ed7bf12261ebd183ec208ad4888d1ed2be8f66b929538ced0efc5"),
        ]
    )
    func qualifyingDataMatchesPythonsHashlib(role: NodeRole, name: String, hex: String) throws {
        let data = JoinBinding.qualifyingData(try Self.claims(role: role, nodeName: name))
        #expect(hexString(data) == hex)
    }

    @Test func everyFieldChangesTheBinding() throws {
        let base = JoinBinding.qualifyingData(try Self.claims())
        let other = try DiskUUID(validating: "0f0e0d0c-0b0a-4988-8776-655443322111")
        let variants = [
            try Self.claims(nonce: Array(1..<33)), try Self.claims(certificateKeyHash: Array(33..<65)),
            try Self.claims(bootPublicKey: Array(65..<97)), try Self.claims(diskUUID: other),
            try Self.claims(role: .worker), try Self.claims(nodeName: "cp-1.cluster.local"),
        ]
        let bindings = variants.map(JoinBinding.qualifyingData)
        #expect(!bindings.contains(base))
        #expect(Set(bindings).count == variants.count)
    }

    @Test func theLabelKeepsJoinEvidenceApartFromGenericEvidence() throws {
        let claims = try Self.claims()
        let generic = EvidenceBinding.nativeQualifyingData(
            nonce: claims.nonce,
            userDataDigest: claims.certificateKeyHash
        )
        #expect(JoinBinding.qualifyingData(claims) != generic)
        #expect(JoinBinding.label == "asterism-join-v1")
    }

    @Test(arguments: ["nonce", "certificateKeyHash", "bootPublicKey"], [31, 33, 0])
    func fixedFieldsAre32Bytes(field: String, length: Int) {
        let bytes = [UInt8](repeating: 7, count: length)
        let error = #expect(throws: CoreError.self) {
            _ = try Self.claims(
                nonce: field == "nonce" ? bytes : Array(0..<32),
                certificateKeyHash: field == "certificateKeyHash" ? bytes : Array(32..<64),
                bootPublicKey: field == "bootPublicKey" ? bytes : Array(64..<96)
            )
        }
        #expect(error?.code == .invalidJoinClaims)
        #expect(error?.message.contains("\(field) is \(length) bytes") == true)
    }

    /// (name, accepted): a DNS-1123 subdomain of at most 253 bytes, labels of at most 63.
    static let names: [(String, Bool)] = [
        ("a", true), ("worker-1", true), ("cp-0.cluster.local", true), ("0", true), ("a-b.c-d", true),
        (
            Array(repeating: String(repeating: "a", count: 63), count: 3).joined(separator: ".") + "."
                + String(repeating: "a", count: 61), true
        ),
        (String(repeating: "a", count: 63) + "." + "b", true), (String(repeating: "a", count: 64), false),
        (
            Array(repeating: String(repeating: "a", count: 63), count: 3).joined(separator: ".") + "."
                + String(repeating: "a", count: 62), false
        ),
        ("", false), ("Worker-1", false), ("-a", false), ("a-", false),
        ("a..b", false), (".a", false), ("a.", false), ("a_b", false), ("a b", false), ("a/b", false),
        ("ä", false), ("a\u{0}", false), ("system:node:a", false),
    ]

    @Test(arguments: names)
    func nodeNames(name: String, accepted: Bool) {
        let result = Result { () throws(CoreError) in try KubernetesNodeName(validating: name) }
        switch result {
        case .success(let node):
            #expect(accepted, "accepted \(name)")
            #expect(node.text == name && node.description == name)
        case .failure(let error):
            #expect(!accepted, "refused \(name): \(error)")
            #expect(error.code == .invalidNodeName)
        }
    }
}
