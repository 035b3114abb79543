import KeydProtocol
import Testing

@testable import KeydCore

/// Table tests for the permission table: every row of PROTOCOL.md, decided for every peer and phase.
@Suite struct PermissionTableTests {
    /// One expected row: kind, peers, phases, once policy (a transcription of PROTOCOL.md).
    struct Row: Sendable, CustomTestStringConvertible {
        let kind: RequestKind
        let peers: Set<PeerClass>
        let phases: Set<Phase>
        let once: OncePolicy
        var testDescription: String { kind.description }
    }

    static let all = Set(Phase.allCases)
    static let rows: [Row] = [
        Row(kind: .hello, peers: [.trustd, .admin], phases: all, once: .perConnection),
        Row(kind: .status, peers: [.trustd, .admin], phases: all, once: .unlimited),
        Row(kind: .bootKeyGet, peers: [.trustd], phases: all, once: .unlimited),
        Row(kind: .evidenceIssue, peers: [.trustd], phases: all, once: .unlimited),
        Row(kind: .challengeIssue, peers: [.trustd], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .keyRelease, peers: [.trustd], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .envelopeAccept, peers: [.trustd], phases: [.awaitingKEK], once: .perBoot),
        Row(kind: .initAccept, peers: [.trustd], phases: [.awaitingKEK], once: .perBoot),
        Row(kind: .joinEvidenceIssue, peers: [.trustd], phases: all, once: .unlimited),
        Row(kind: .compatRelease, peers: [.trustd], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .dataKeyRelease, peers: [.trustd], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .dataKeyOpen, peers: [.trustd], phases: all, once: .unlimited),
        Row(kind: .diskInspect, peers: [.trustd, .admin], phases: all, once: .unlimited),
        Row(kind: .diskFormat, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .diskBind, peers: [.admin], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .diskOpen, peers: [.admin], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .diskClose, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .diskReset, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .kekImport, peers: [.admin], phases: [.awaitingKEK, .locked], once: .unlimited),
        Row(kind: .kekLock, peers: [.admin], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .auditRead, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .auditVerify, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .tpmStatus, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .tpmEvidence, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .policySet, peers: [.trustd, .admin], phases: [.holdingKEK], once: .unlimited),
        Row(kind: .policyGet, peers: [.admin], phases: all, once: .unlimited),
        Row(kind: .operatorKeyPin, peers: [.admin], phases: [.awaitingKEK, .locked], once: .unlimited),
    ]

    @Test func everyKindHasARow() {
        #expect(Set(Self.rows.map(\.kind)) == Set(RequestKind.allCases))
    }

    @Test(arguments: rows)
    func rowMatchesProtocolDocument(_ row: Row) {
        let permission = PermissionTable.permission(for: row.kind)
        #expect(permission.peers == row.peers)
        #expect(permission.phases == row.phases)
        #expect(permission.once == row.once)
    }

    @Test(arguments: rows)
    func decisionsForEveryPeerAndPhase(_ row: Row) {
        for peer in PeerClass.allCases {
            for phase in Phase.allCases {
                let fresh = PermissionTable.evaluate(
                    row.kind,
                    peer: peer,
                    phase: phase,
                    usedThisConnection: false,
                    usedThisBoot: false
                )
                let expected: PermissionVerdict =
                    !row.peers.contains(peer) ? .denied : (row.phases.contains(phase) ? .allowed : .wrongPhase)
                #expect(fresh == expected, "\(row.kind) \(peer) \(phase)")

                let repeated = PermissionTable.evaluate(
                    row.kind,
                    peer: peer,
                    phase: phase,
                    usedThisConnection: true,
                    usedThisBoot: true
                )
                if !row.peers.contains(peer) {
                    #expect(repeated == .denied)
                } else if row.once == .unlimited {
                    #expect(repeated == fresh)
                } else {
                    #expect(repeated == .alreadyUsed)
                }
            }
        }
    }

    @Test func strangerIsDeniedEverything() {
        for kind in RequestKind.allCases {
            for phase in Phase.allCases {
                #expect(
                    PermissionTable.evaluate(
                        kind,
                        peer: .stranger,
                        phase: phase,
                        usedThisConnection: false,
                        usedThisBoot: false
                    ) == .denied
                )
            }
        }
    }

    @Test func onceScopesAreIndependent() {
        // Per-boot requests ignore the connection flag; per-connection ones ignore the boot flag.
        #expect(
            PermissionTable.evaluate(
                .initAccept,
                peer: .trustd,
                phase: .awaitingKEK,
                usedThisConnection: true,
                usedThisBoot: false
            ) == .allowed
        )
        #expect(
            PermissionTable.evaluate(
                .hello,
                peer: .trustd,
                phase: .awaitingKEK,
                usedThisConnection: false,
                usedThisBoot: true
            ) == .allowed
        )
    }

    @Test(arguments: [
        (ListenerRole.trustd, UInt32(998), UInt32(998), PeerClass.trustd),
        (.trustd, 1000, 997, .trustd),
        (.trustd, 0, 0, .stranger),
        (.admin, 0, 0, .admin),
        (.admin, 998, 998, .stranger),
        (.admin, 1000, 4242, .admin),
        (.trustd, 65534, 65534, .stranger),
    ])
    func classifier(_ listener: ListenerRole, _ uid: UInt32, _ gid: UInt32, _ expected: PeerClass) {
        let classifier = PeerClassifier(trustdUIDs: [998], trustdGIDs: [997], adminUIDs: [0], adminGIDs: [4242])
        #expect(classifier.classify(listener: listener, uid: uid, gid: gid) == expected)
    }
}
