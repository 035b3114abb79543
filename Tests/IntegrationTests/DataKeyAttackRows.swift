import Foundation
import KeydClient
import KeydCore
import KeydProtocol
import Testing

/// The data-key rows of the malicious-trustd table (issue 16): `dataKey.release` and `dataKey.open`
/// sent by a test on trustd's uid, with the challenge purposes, IDs, lengths and envelopes keyd must refuse.
extension MaliciousTrustdReleaseTests {
    static let dataKeyID = "k8s-secrets"

    static let dataKeyRows: [Row] =
        [
            Row(
                name: "key.release with a dataKey challenge",
                attack: { scene in
                    let trustd = try scene.server.trustd()
                    let challenge = try scene.challenge(trustd, .dataKey)
                    return try scene.genuineRelease(trustd, challenge).status
                },
                expected: .invalidArgument,
                audited: .record(["\"key.release\"", "\"invalidArgument\"", "was issued for dataKey"])
            ),
            Row(
                name: "dataKey.release with a join challenge",
                attack: { scene in
                    let trustd = try scene.server.trustd()
                    return try scene.dataKeyRelease(trustd, try scene.challenge(trustd, .join)).status
                },
                expected: .invalidArgument,
                audited: .record(["\"dataKey.release\"", "\"invalidArgument\"", "was issued for join"])
            ),
            Row(
                name: "dataKey.release and dataKey.open granted: HKDF(master, salt, key-dek/<id>, length)",
                needsJoiner: true,
                target: .joiner,
                attack: { scene in
                    let (opened, status) = try scene.joinerDataKey(id: dataKeyID, length: 48)
                    let expected = ClusterSecret.hkdf(
                        scene.secret.master,
                        salt: scene.secret.salt,
                        info: "key-dek/" + dataKeyID,
                        length: 48
                    )
                    #expect(opened == expected, "the data key is keyd's derivation under key-dek/")
                    return status
                },
                expected: .ok,
                audited: .record(["\"dataKey.open\"", "\"granted\"", "\"dataKeyID\":\"\(dataKeyID)\""])
            ),
            Row(
                name: "dataKey.open asking for another ID than the envelope binds",
                needsJoiner: true,
                target: .joiner,
                attack: { scene in
                    try scene.openOnJoiner(try scene.joinerEnvelope(id: dataKeyID, length: 32), id: "other")
                },
                expected: .envelopeRejected,
                audited: .record(["\"dataKey.open\"", "\"envelopeRejected\"", "not other of 32"])
            ),
            Row(
                name: "dataKey.open of an envelope sealed to another node's boot key",
                needsJoiner: true,
                target: .joiner,
                attack: { scene in
                    // A genuine release of the serving keyd, sealed to the attacker's key for the joining disk.
                    let trustd = try scene.server.trustd()
                    let challenge = try scene.challenge(trustd, .dataKey)
                    let joined = try scene.joinEvidence(nonce: ClusterSecret.random(32))
                    let claims = try scene.claims(nonce: challenge.nonce, diskUUID: joined.diskUUID)
                    let released = try scene.dataKeyRelease(trustd, challenge, claims: claims)
                    let envelope = try released.decodePayload(.dataKeyRelease, DataKeyReleaseAnswer.read).envelope
                    return try scene.openOnJoiner(envelope)
                },
                expected: .envelopeRejected,
                audited: .record(["\"dataKey.open\"", "\"envelopeRejected\"", "HPKE open failed"])
            ),
            Row(
                name: "dataKey.open of a key envelope (purpose join) sealed to this keyd",
                needsJoiner: true,
                target: .joiner,
                attack: { scene in
                    let trustd = try scene.server.trustd()
                    let challenge = try scene.challenge(trustd, .join)
                    let joined = try scene.joinEvidence(nonce: challenge.nonce)
                    let claims = try scene.claims(
                        nonce: challenge.nonce,
                        bootPublicKey: joined.bootPublicKey,
                        diskUUID: joined.diskUUID
                    )
                    let released = try scene.release(trustd, challenge, evidence: joined.document, claims: claims)
                    let envelope = try released.decodePayload(.keyRelease, KeyReleaseAnswer.read).envelope
                    return try scene.openOnJoiner(envelope)
                },
                expected: .envelopeRejected,
                audited: .record(["\"dataKey.open\"", "\"envelopeRejected\"", "purpose"])
            ),
            Row(
                name: "dataKey.open for a node name this keyd never attested",
                needsJoiner: true,
                target: .joiner,
                attack: { scene in
                    // The software AK quotes the joiner's boot key and disk under another node's name.
                    let trustd = try scene.server.trustd()
                    let challenge = try scene.challenge(trustd, .dataKey)
                    let joined = try scene.joinEvidence(nonce: ClusterSecret.random(32))
                    let claims = try scene.claims(
                        nonce: challenge.nonce,
                        bootPublicKey: joined.bootPublicKey,
                        diskUUID: joined.diskUUID,
                        nodeName: "worker-9"
                    )
                    let released = try scene.dataKeyRelease(trustd, challenge, claims: claims)
                    let envelope = try released.decodePayload(.dataKeyRelease, DataKeyReleaseAnswer.read).envelope
                    return try scene.openOnJoiner(envelope)
                },
                expected: .envelopeRejected,
                audited: .record(["\"dataKey.open\"", "\"envelopeRejected\"", "attested no join"])
            ),
            Row(
                name: "dataKey.open from the admin",
                attack: { scene in
                    let request = DataKeyOpenRequest(dataKeyID: dataKeyID, length: 32, envelope: [1])
                    return try scene.send(try scene.server.admin(), .dataKeyOpen(request)).status
                },
                expected: .denied,
                audited: .record(["\"dataKey.open\"", "\"denied\"", "\"class\":\"admin\""])
            ),
        ]
        + [
            ("../x", 32, "outside [A-Za-z0-9._-]"), ("", 32, "0 bytes is outside 1…128"),
            (String(repeating: "a", count: 129), 32, "129 bytes is outside 1…128"),
            (".measurementSecret", 32, "starts with '.'"), ("k8s", 15, "15 is outside 16…64"),
            ("k8s", 65, "65 is outside 16…64"),
        ].map { id, length, reason in
            Row(
                name: "dataKey.release of ID \"\(id.prefix(12))\" (\(id.utf8.count) bytes), length \(length)",
                attack: { scene in
                    let trustd = try scene.server.trustd()
                    let challenge = try scene.challenge(trustd, .dataKey)
                    return try scene.dataKeyRelease(trustd, challenge, id: id, length: UInt8(length)).status
                },
                expected: .invalidArgument,
                audited: .record(["\"dataKey.release\"", "\"invalidArgument\"", reason])
            )
        }
}

extension MaliciousTrustdReleaseTests.Scene {
    /// A challenge of `purpose` from the serving keyd.
    func challenge(_ connection: KeydConnection, _ purpose: ChallengePurpose) throws -> ChallengeAnswer {
        try send(connection, .challengeIssue(purpose)).decodePayload(.challengeIssue, ChallengeAnswer.read)
    }

    /// `dataKey.release` naming `challenge`, with software evidence binding `claims` (by default the
    /// attacker's boot key and the scene's disk, as `claims(nonce:)` makes them) unless `evidence` is given.
    func dataKeyRelease(
        _ connection: KeydConnection,
        _ challenge: ChallengeAnswer,
        claims: JoinClaims? = nil,
        evidence: [UInt8]? = nil,
        id: String = MaliciousTrustdReleaseTests.dataKeyID,
        length: UInt8 = 32
    ) throws -> AnswerFrame {
        let claims = try claims ?? self.claims(nonce: challenge.nonce)
        return try send(
            connection,
            .dataKeyRelease(
                DataKeyReleaseRequest(
                    challengeID: challenge.challengeID,
                    evidence: try evidence ?? self.evidence(claims),
                    certificateKeyHash: claims.certificateKeyHash,
                    bootPublicKey: claims.bootPublicKey,
                    diskUUID: claims.diskUUID.text,
                    role: claims.role,
                    nodeName: claims.nodeName.text,
                    dataKeyID: id,
                    length: length
                )
            )
        )
    }

    /// `dataKey.open` of `envelope` on the joining keyd, asking for `id` and `length`; its status.
    func openOnJoiner(
        _ envelope: [UInt8],
        id: String = MaliciousTrustdReleaseTests.dataKeyID,
        length: UInt8 = 32
    ) throws -> StatusCode {
        try send(
            try node(.joiner).trustd(),
            .dataKeyOpen(DataKeyOpenRequest(dataKeyID: id, length: length, envelope: envelope))
        ).status
    }

    /// A data-key envelope for the joining keyd: its genuine join evidence for a dataKey challenge of the
    /// serving keyd, released there.
    func joinerEnvelope(id: String, length: UInt8) throws -> [UInt8] {
        let trustd = try server.trustd()
        let challenge = try challenge(trustd, .dataKey)
        let joined = try joinEvidence(nonce: challenge.nonce)
        let claims = try claims(nonce: challenge.nonce, bootPublicKey: joined.bootPublicKey, diskUUID: joined.diskUUID)
        let released = try dataKeyRelease(
            trustd,
            challenge,
            claims: claims,
            evidence: joined.document,
            id: id,
            length: length
        )
        return try released.decodePayload(.dataKeyRelease, DataKeyReleaseAnswer.read).envelope
    }

    /// The data key the joining keyd opens from ``joinerEnvelope(id:length:)``, and `dataKey.open`'s status.
    func joinerDataKey(id: String, length: UInt8) throws -> ([UInt8], StatusCode) {
        let envelope = try joinerEnvelope(id: id, length: length)
        let answer = try send(
            try node(.joiner).trustd(),
            .dataKeyOpen(DataKeyOpenRequest(dataKeyID: id, length: length, envelope: envelope))
        )
        guard answer.status == .ok else { return ([], answer.status) }
        let field = try answer.decodePayload(.dataKeyOpen, DataKeyOpenAnswer.read).dataKey
        return (Array(answer.payload[field.offset..<(field.offset + field.count)]), answer.status)
    }
}
