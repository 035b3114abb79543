import Glibc
import KeydCore
import KeydPlatform
import KeydProtocol
import Testing

@testable import KeydDaemon

/// The state-disk re-key (`disk.bind`) in process, on image files: its order, and a failure injected
/// after each step, which must restore the header so that the first-boot key still binds.
@Suite(.serialized) struct RekeyInProcessTests {
    /// A keyd holding `secret` with a freshly formatted image; returns the image and its UUID.
    static func formatted(_ keyd: InProcessKeyd, _ secret: KnownSecret) throws -> (image: String, uuid: String) {
        let image = try keyd.makeImage()
        #expect(try keyd.importKEK(secret).status == .ok)
        let formatted = try keyd.perform(.diskFormat(device: image))
        try #require(formatted.status == .ok, "format: \(formatted.status)")
        let header = try #require(try LUKS2Volume.inspect(path: image))
        return (image, header.uuid)
    }

    /// The inspect report's JSON text.
    static func report(_ keyd: InProcessKeyd, _ image: String) throws -> String {
        let answer = try keyd.perform(.diskInspect(device: image))
        let report = try answer.decodePayload(.diskInspect, DiskInspectAnswer.read)
        return String(decoding: report.report, as: UTF8.self)
    }

    @Test func bindRunsTheStepsInOrderAndTheDerivedKeyOpensAlone() throws {
        let keyd = try InProcessKeyd()
        let secret = KnownSecret()
        let (image, uuid) = try Self.formatted(keyd, secret)
        #expect(try !secret.diskKeyOpens(image, uuid: uuid))
        #expect(try keyd.perform(.diskBind(device: image)).status == .ok)
        #expect(try secret.diskKeyOpens(image, uuid: uuid))
        let header = try #require(try LUKS2Volume.inspect(path: image))
        #expect(header.keyslots.count == 1)
        let record = try #require(keyd.auditLines.last { $0.contains("\"disk.bind\"") })
        #expect(record.contains("steps addNewKeyslot,markTokenInitialized,removeOldKeyslot"), "\(record)")
        // The first-boot keyslot record is gone; a second bind finds the work done.
        #expect(try keyd.service.stateDisk.headers().read(uuid + ".first-boot-keyslot", limit: 4096) == nil)
        #expect(try keyd.perform(.diskBind(device: image)).status == .ok)
        #expect(keyd.auditLines.last { $0.contains("\"disk.bind\"") }?.contains("already bound") == true)
    }

    @Test(arguments: StateDiskRekey.Step.allCases.filter { $0 != .done })
    func failureAfterAStepRestoresTheHeaderAndTheFirstBootKeyStillBinds(step: StateDiskRekey.Step) throws {
        let keyd = try InProcessKeyd()
        let secret = KnownSecret()
        let (image, uuid) = try Self.formatted(keyd, secret)
        keyd.service.stateDisk.fault = FaultInjection(parsing: "rekey:\(step):fail")
        try #require(keyd.service.stateDisk.fault?.step == step)

        let failed = try keyd.perform(.diskBind(device: image))
        #expect(failed.status == .internal)
        let record = try #require(keyd.auditLines.last { $0.contains("\"disk.bind\"") })
        #expect(
            record.contains("injected fault after re-key step \(step)") && record.contains("header restored"),
            "\(record)"
        )
        let restored = try Self.report(keyd, image)
        #expect(restored.contains("\"initialized\":false") && restored.contains("\"keyslots\":[0]"), "\(restored)")
        #expect(restored.contains("\"firstBootKeyHeld\":true"))
        #expect(try !secret.diskKeyOpens(image, uuid: uuid))

        // The fault fires once: the same service, still holding the first-boot key, now binds.
        #expect(try keyd.perform(.diskBind(device: image)).status == .ok)
        #expect(try secret.diskKeyOpens(image, uuid: uuid))
        #expect(try Self.report(keyd, image).contains("\"initialized\":true"))
    }
}
