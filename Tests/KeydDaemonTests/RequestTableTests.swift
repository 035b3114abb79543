import KeydCore
import KeydPlatform
import KeydProtocol
import KeydTestSamples
import Testing

@testable import KeydDaemon

/// keyd's request table in process: every kind the session dispatches gets an answer of its own
/// kind and sequence; a kind this keyd's configuration does not serve answers `unsupported` and uses nothing up.
@Suite struct RequestTableTests {
    /// The kinds a keyd with the default configuration does not serve: Constellation compatibility is off.
    static let unserved: Set<RequestKind> = [.compatRelease]

    @Test(arguments: Array(unserved))
    func unservedKindsAnswerUnsupportedAndSpendNothing(kind: RequestKind) throws {
        let keyd = try InProcessKeyd()
        let served = keyd.service.requestsServed
        let request = RequestSamples.request(kind)
        let identity = PermissionTable.permission(for: kind).peers.contains(.trustd) ? keyd.trustd : keyd.admin
        let answer = try keyd.perform(request, as: identity)
        #expect(answer.status == .unsupported && answer.kind == kind.rawValue)
        #expect(keyd.service.usedThisBoot.isEmpty)
        #expect(keyd.service.requestsServed == served)
    }

    @Test(arguments: [(15, 32), (0, 32), (32, 31), (16, 0)])
    func secretUnderItsMinimumIsInvalidArgument(master: Int, salt: Int) throws {
        let keyd = try InProcessKeyd()
        let answer = try keyd.importKEK(
            master: [UInt8](repeating: 0x11, count: master),
            salt: [UInt8](repeating: 0x22, count: salt)
        )
        #expect(answer.status == .invalidArgument && answer.kind == RequestKind.kekImport.rawValue)
        #expect(keyd.service.phase == .awaitingKEK)
        let record = try #require(keyd.auditLines.last)
        #expect(record.contains("\"event\":\"kek.import\"") && record.contains("\"status\":\"invalidArgument\""))
        #expect(record.contains("\"masterSecret.length\":\"\(master)\",\"salt.length\":\"\(salt)\""))
    }

    @Test func everyServedKindIsAnsweredWithItsKindAndCounted() throws {
        let keyd = try InProcessKeyd()
        for kind in RequestKind.allCases where kind != .hello && !Self.unserved.contains(kind) {
            let before = keyd.service.requestsServed
            let request = RequestSamples.request(kind)
            let identity = PermissionTable.permission(for: kind).peers.contains(.admin) ? keyd.admin : keyd.trustd
            let answer =
                kind == .kekImport ? try keyd.importKEK(KnownSecret()) : try keyd.perform(request, as: identity)
            #expect(answer.kind == kind.rawValue, "\(kind)")
            #expect(answer.status != .unsupported, "\(kind)")
            #expect(keyd.service.requestsServed == before + 1, "\(kind)")
        }
    }
}
