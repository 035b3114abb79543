import KeydProtocol
import Testing

/// The native TPM evidence document (PROTOCOL.md): round trip and strict refusals.
struct EvidenceDocumentTests {
    static let sample = NativeEvidenceDocument(
        akPublic: [0x00, 0x23, 0x00, 0x0B] + Array(repeating: 7, count: 80),
        attest: [0xFF, 0x54, 0x43, 0x47] + Array(repeating: 1, count: 120),
        signature: [0x00, 0x18] + Array(repeating: 2, count: 70),
        pcrs: [(0, Array(repeating: 0, count: 32)), (7, Array(repeating: 9, count: 32))],
        userDataDigest: Array(repeating: 5, count: 32),
        eventLog: Array(repeating: 3, count: 70_000)
    )

    @Test func roundTripWithAnEventLogLargerThanARequestFrame() throws {
        let bytes = Self.sample.encoded
        #expect(bytes.prefix(6) == [0x41, 0x45, 0x56, 0x44, 0x00, 0x01])
        #expect(try NativeEvidenceDocument(decoding: bytes) == Self.sample)
        // It travels in one answer frame.
        let frame = AnswerFrame.encode(
            answering: .tpmEvidence,
            sequence: 3,
            status: .ok,
            EvidenceAnswer(document: bytes).write
        )
        let decoded = try AnswerFrame.decode(body: Array(frame.dropFirst(4)))
        #expect(
            try decoded.payload.withUnsafeBytes { raw in
                var r = WireReader(raw)
                return try EvidenceAnswer.read(&r).document
            } == bytes
        )
    }

    @Test(
        "malformed documents are refused",
        arguments: [
            "bad magic", "version 2", "trailing byte", "truncated", "SHA-1 bank", "descending PCRs",
            "event log over the limit",
        ]
    )
    func refused(name: String) {
        var bytes = Self.sample.encoded
        let bank = 6 + 2 + 84 + 2 + 124 + 2 + 72
        switch name {
        case "bad magic": bytes[0] = 0x42
        case "version 2": bytes[5] = 2
        case "trailing byte": bytes.append(0)
        case "truncated": bytes.removeLast()
        case "SHA-1 bank": bytes[bank + 1] = 0x04
        case "descending PCRs": bytes[bank + 2 + 1 + 33] = 0
        default: bytes[bytes.count - 70_000 - 3] = 0x04  // the u32 length's second byte: 70000 + 2^24
        }
        #expect(throws: ProtocolError.self, "\(name)") { try NativeEvidenceDocument(decoding: bytes) }
    }

    @Test func statusAnswerCarriesTheTPMAndSealedKEKState() throws {
        let answer = StatusAnswer(
            protocolVersion: 1,
            phase: .holdingKEK,
            peerClass: .admin,
            uptimeSeconds: 1,
            requestsServed: 2,
            connections: 3,
            auditRecords: 4,
            auditHead: Array(repeating: 0, count: 32),
            auditIntact: true,
            keydVersion: "x",
            tpmAvailable: true,
            sealedKEK: .unsealFailed
        )
        var w = WireWriter()
        answer.write(&w)
        let read = try w.bytes.withUnsafeBytes { raw in
            var r = WireReader(raw)
            return try StatusAnswer.read(&r)
        }
        #expect(read == answer && read.sealedKEK == .unsealFailed && read.tpmAvailable)
    }
}
