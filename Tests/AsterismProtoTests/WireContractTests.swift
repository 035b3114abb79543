import AsterismProto
import Foundation
import GRPCCore
import GRPCInProcessTransport
import SwiftProtobuf
import Testing

/// The serialized bytes of `message`.
func wire<M: SwiftProtobuf.Message>(_ message: M) throws -> [UInt8] {
    try message.serializedBytes()
}

/// The tag bytes of field `number` with `wireType` (0 varint, 2 length-delimited), as a varint.
func tag(_ number: Int, _ wireType: Int) -> [UInt8] {
    var value = number << 3 | wireType
    var bytes: [UInt8] = []
    while value >= 0x80 {
        bytes.append(UInt8(value & 0x7F) | 0x80)
        value >>= 7
    }
    bytes.append(UInt8(value))
    return bytes
}

/// The tag bytes that open the encoding of a message with exactly one field set.
func leadingTag<M: SwiftProtobuf.Message>(_ message: M, length: Int) throws -> [UInt8] {
    Array(try wire(message).prefix(length))
}

@Suite("Wire contract: Constellation's field numbers and Asterism's")
struct WireContractTests {
    @Test("tag helper matches protobuf's varint tags")
    func tagHelper() {
        #expect(tag(1, 2) == [0x0A])
        #expect(tag(11, 2) == [0x5A])
        #expect(tag(1000, 2) == [0xC2, 0x3E])
        #expect(tag(1001, 0) == [0xC8, 0x3E])
    }

    @Test("IssueJoinTicketRequest: disk_uuid is field 1, exact bytes")
    func joinRequestDiskUUID() throws {
        var request = Join_IssueJoinTicketRequest()
        request.diskUuid = "ab"
        #expect(try wire(request) == [0x0A, 0x02, 0x61, 0x62])
    }

    @Test("IssueJoinTicketRequest: Constellation's fields 1–5")
    func joinRequestFields() throws {
        let cases: [(Join_IssueJoinTicketRequest, [UInt8])] = [
            (.with { $0.diskUuid = "u" }, tag(1, 2)),
            (.with { $0.certificateRequest = Data([0x30]) }, tag(2, 2)),
            (.with { $0.isControlPlane = true }, tag(3, 0)),
            (.with { $0.hostPublicKey = Data([1]) }, tag(4, 2)),
            (.with { $0.hostCertificatePrincipals = ["p"] }, tag(5, 2)),
        ]
        for (message, expected) in cases {
            #expect(try leadingTag(message, length: 1) == expected)
        }
        #expect(try wire(Join_IssueJoinTicketRequest.with { $0.isControlPlane = true }) == [0x18, 0x01])
    }

    @Test("IssueJoinTicketResponse: Constellation's fields 1–12, nested cert-or-key and component")
    func joinResponseFields() throws {
        let cases: [(Join_IssueJoinTicketResponse, Int)] = [
            (.with { $0.stateDiskKey = Data([1]) }, 1), (.with { $0.measurementSalt = Data([1]) }, 2),
            (.with { $0.measurementSecret = Data([1]) }, 3), (.with { $0.kubeletCert = Data([1]) }, 4),
            (.with { $0.apiServerEndpoint = "h:6443" }, 5), (.with { $0.token = "t" }, 6),
            (.with { $0.discoveryTokenCaCertHash = "sha256:00" }, 7),
            (.with { $0.controlPlaneFiles = [Join_control_plane_cert_or_key()] }, 8),
            (.with { $0.kubernetesVersion = "v1" }, 9),
            (.with { $0.kubernetesComponents = [Components_Component()] }, 10),
            (.with { $0.authorizedCaPublicKey = Data([1]) }, 11), (.with { $0.hostCertificate = Data([1]) }, 12),
        ]
        for (message, number) in cases {
            #expect(try leadingTag(message, length: 1) == tag(number, 2), "field \(number)")
        }
        let file = Join_control_plane_cert_or_key.with {
            $0.name = "ca.crt"
            $0.data = Data([0xAA])
        }
        #expect(
            try wire(Join_IssueJoinTicketResponse.with { $0.controlPlaneFiles = [file] })
                == [0x42, 0x0B, 0x0A, 0x06] + Array("ca.crt".utf8) + [0x12, 0x01, 0xAA]
        )
    }

    @Test("components.Component: fields 1–4")
    func componentFields() throws {
        let component = Components_Component.with {
            $0.url = "u"
            $0.hash = "h"
            $0.installPath = "p"
            $0.extract = true
        }
        #expect(try wire(component) == [0x0A, 0x01, 0x75, 0x12, 0x01, 0x68, 0x1A, 0x01, 0x70, 0x20, 0x01])
    }

    @Test("IssueRejoinTicket: request field 1, response fields 1–2")
    func rejoinFields() throws {
        #expect(try wire(Join_IssueRejoinTicketRequest.with { $0.diskUuid = "u" }) == [0x0A, 0x01, 0x75])
        let response = Join_IssueRejoinTicketResponse.with {
            $0.stateDiskKey = Data([1])
            $0.measurementSecret = Data([2])
        }
        #expect(try wire(response) == [0x0A, 0x01, 0x01, 0x12, 0x01, 0x02])
    }

    @Test("InitRequest: service_cidr is field 11 (tag 0x5A), every Constellation field")
    func initRequestFields() throws {
        #expect(
            try wire(Init_InitRequest.with { $0.serviceCidr = "10.0.0.0/8" })
                == [0x5A, 0x0A] + Array("10.0.0.0/8".utf8)
        )
        let cases: [(Init_InitRequest, [UInt8])] = [
            (.with { $0.kmsUri = "k" }, tag(1, 2)), (.with { $0.storageUri = "s" }, tag(2, 2)),
            (.with { $0.measurementSalt = Data([1]) }, tag(3, 2)), (.with { $0.kubernetesVersion = "v" }, tag(5, 2)),
            (.with { $0.conformanceMode = true }, tag(6, 0)),
            (.with { $0.kubernetesComponents = [Components_Component()] }, tag(7, 2)),
            (.with { $0.initSecret = Data([1]) }, tag(8, 2)), (.with { $0.clusterName = "c" }, tag(9, 2)),
            (.with { $0.apiserverCertSans = ["a"] }, tag(10, 2)),
        ]
        for (message, expected) in cases {
            #expect(try leadingTag(message, length: 1) == expected)
        }
    }

    @Test("InitRequest: field 4 is reserved, so it decodes as an unknown field and survives a round trip")
    func initRequestReservedField4() throws {
        let field4: [UInt8] = tag(4, 2) + [0x01, 0x78]
        let decoded = try Init_InitRequest(serializedBytes: field4)
        var withoutUnknown = decoded
        withoutUnknown.unknownFields = UnknownStorage()
        #expect(withoutUnknown == Init_InitRequest())
        #expect(Array(decoded.unknownFields.data) == field4)
        #expect(try wire(decoded) == field4)
    }

    @Test("InitResponse: oneof kind, 1 init_success, 2 init_failure, 3 log")
    func initResponseKinds() throws {
        let success = Init_InitResponse.with {
            $0.initSuccess = .with {
                $0.kubeconfig = Data([0x6B])
                $0.ownerID = Data([0x6F])
                $0.clusterID = Data([0x63])
            }
        }
        #expect(try wire(success) == [0x0A, 0x09, 0x0A, 0x01, 0x6B, 0x12, 0x01, 0x6F, 0x1A, 0x01, 0x63])
        #expect(
            try wire(Init_InitResponse.with { $0.initFailure = .with { $0.error = "e" } })
                == [0x12, 0x03, 0x0A, 0x01, 0x65]
        )
        #expect(
            try wire(Init_InitResponse.with { $0.log = .with { $0.log = Data([0x6C]) } }) == [
                0x1A, 0x03, 0x0A, 0x01, 0x6C,
            ]
        )

        let decoded = try Init_InitResponse(serializedBytes: [0x12, 0x03, 0x0A, 0x01, 0x65])
        #expect(decoded.kind == .initFailure(.with { $0.error = "e" }))
        // Two members on the wire: the last one wins, as in every proto3 oneof.
        let last = try Init_InitResponse(serializedBytes: [0x12, 0x00, 0x1A, 0x00])
        #expect(last.kind == .log(Init_LogResponseType()))
    }

    @Test("Recover, KMS and verify: Constellation's field numbers")
    func otherServices() throws {
        let recover = Recoverproto_RecoverMessage.with {
            $0.kmsUri = "k"
            $0.storageUri = "s"
        }
        #expect(try wire(recover) == [0x1A, 0x01, 0x6B, 0x22, 0x01, 0x73])
        #expect(try wire(Recoverproto_RecoverResponse()) == [])
        let dataKey = Kms_GetDataKeyRequest.with {
            $0.dataKeyID = "d"
            $0.length = 32
        }
        #expect(try wire(dataKey) == [0x0A, 0x01, 0x64, 0x10, 0x20])
        #expect(try wire(Kms_GetDataKeyResponse.with { $0.dataKey = Data([9]) }) == [0x0A, 0x01, 0x09])
        #expect(try wire(Verify_GetAttestationRequest.with { $0.nonce = Data([7]) }) == [0x12, 0x01, 0x07])
        #expect(try wire(Verify_GetAttestationResponse.with { $0.attestation = Data([8]) }) == [0x0A, 0x01, 0x08])
    }

    @Test("Asterism's fields use numbers from 1000 and follow Constellation's on the wire")
    func asterismFields() throws {
        let bootKey = [UInt8](repeating: 0xB0, count: 32)
        var request = Join_IssueJoinTicketRequest.with { $0.diskUuid = "u" }
        let constellation = try wire(request)
        request.bootPublicKey = Data(bootKey)
        request.evidenceBinding = .sealedV1
        #expect(try wire(request) == constellation + tag(1000, 2) + [32] + bootKey + tag(1001, 0) + [0x01])

        let cases: [(any SwiftProtobuf.Message, [UInt8])] = [
            (Join_IssueJoinTicketResponse.with { $0.sealedKeys = Data([1]) }, tag(1000, 2)),
            (Join_IssueRejoinTicketRequest.with { $0.bootPublicKey = Data([1]) }, tag(1000, 2)),
            (Join_IssueRejoinTicketRequest.with { $0.evidenceBinding = .sealedV1 }, tag(1001, 0)),
            (Join_IssueRejoinTicketResponse.with { $0.sealedKeys = Data([1]) }, tag(1000, 2)),
            (Init_InitRequest.with { $0.sealedMasterSecret = Data([1]) }, tag(1000, 2)),
            (Init_InitRequest.with { $0.operatorPublicKey = Data([1]) }, tag(1001, 2)),
            (Recoverproto_RecoverMessage.with { $0.sealedMasterSecret = Data([1]) }, tag(1000, 2)),
            (Verify_GetAttestationRequest.with { $0.binding = .sealedV1 }, tag(1000, 0)),
            (Verify_GetAttestationResponse.with { $0.bootPublicKey = Data([1]) }, tag(1000, 2)),
        ]
        for (message, expected) in cases {
            let bytes: [UInt8] = try message.serializedBytes()
            #expect(Array(bytes.prefix(2)) == expected, "\(type(of: message))")
        }
        // The zero values mean Constellation's behaviour and are not sent.
        #expect(Join_EvidenceBinding.constellation.rawValue == 0)
        #expect(Verify_AttestationBinding.constellation.rawValue == 0)
        #expect(try wire(Join_IssueJoinTicketRequest.with { $0.evidenceBinding = .constellation }) == [])
    }

    @Test("An Asterism field from the peer is kept when this side reads Constellation's fields only")
    func unknownAsterismFieldSurvives() throws {
        // A future Asterism field (1999) reaches an older Asterism build: proto3 keeps it as unknown.
        let bytes: [UInt8] = [0x0A, 0x01, 0x75] + tag(1999, 2) + [0x01, 0x00]
        let decoded = try Join_IssueRejoinTicketRequest(serializedBytes: bytes)
        #expect(decoded.diskUuid == "u")
        #expect(decoded.bootPublicKey.isEmpty)
        #expect(try wire(decoded) == bytes)
    }

    @Test("gRPC paths and call types are Constellation's")
    func grpcMethods() {
        let methods: [(MethodDescriptor, String, MethodDescriptor.RPCType)] = [
            (Join_API.Method.IssueJoinTicket.descriptor, "join.API/IssueJoinTicket", .unary),
            (Join_API.Method.IssueRejoinTicket.descriptor, "join.API/IssueRejoinTicket", .unary),
            (Init_API.Method.Init.descriptor, "init.API/Init", .serverStreaming),
            (Recoverproto_API.Method.Recover.descriptor, "recoverproto.API/Recover", .unary),
            (Kms_API.Method.GetDataKey.descriptor, "kms.API/GetDataKey", .unary),
            (Verify_API.Method.GetAttestation.descriptor, "verify.API/GetAttestation", .unary),
        ]
        for (descriptor, path, type) in methods {
            #expect(descriptor.fullyQualifiedMethod == path)
            #expect(descriptor.type == type, "\(path)")
        }
    }

    @Test("init.API/Init, whose Swift method is the escaped `init`, streams a log line then success in process")
    func initRoundTrip() async throws {
        let transport = InProcessTransport()
        let received = try await withGRPCServer(transport: transport.server, services: [EchoInitService()]) { _ in
            try await withGRPCClient(transport: transport.client) { client in
                try await Init_API.Client(wrapping: client).`init`(.with { $0.clusterName = "c1" }) { response in
                    var kinds: [Init_InitResponse.OneOf_Kind?] = []
                    for try await message in response.messages { kinds.append(message.kind) }
                    return kinds
                }
            }
        }
        #expect(
            received == [.log(.with { $0.log = Data("c1".utf8) }), .initSuccess(.with { $0.clusterID = Data([1]) })]
        )
    }
}

/// An Init service that echoes the cluster name as a log line, then reports success.
struct EchoInitService: Init_API.SimpleServiceProtocol {
    /// Streams one log message and one success message.
    func `init`(
        request: Init_InitRequest,
        response: RPCWriter<Init_InitResponse>,
        context: ServerContext
    ) async throws {
        try await response.write(.with { $0.log = .with { $0.log = Data(request.clusterName.utf8) } })
        try await response.write(.with { $0.initSuccess = .with { $0.clusterID = Data([1]) } })
    }
}
