import AsterismTestSupport
import Attestation
import BenchKeyd
import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// What join-bench asks of its keyd beside the shared launcher.
extension ServingKeyd {
    /// Pins a new operator key, imports a random KEK and sets a signed policy (version 1) that enforces
    /// PCRs 4, 8, 9, 11, 12 and 13 at the values `issuers` report and allow-lists exactly their AKs.
    func serve(issuers: [SoftwareTPMEvidenceIssuer]) throws {
        let admin = try KeydConnection(path: adminSocket)
        defer { admin.close() }
        let operatorKey = Curve25519.Signing.PrivateKey()
        _ = try admin.call(.operatorKeyPin(operatorKey: OperatorKey(operatorKey.publicKey).encoded))
        let masterSecret = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let salt = (0..<32).map { _ in UInt8.random(in: 0...255) }
        try masterSecret.withUnsafeBytes { secret in
            try salt.withUnsafeBytes { salt in try admin.importKEK(masterSecret: secret, salt: salt) }
        }
        let draft = try MeasurementPolicy(
            version: 1,
            measurements: Measurements(
                Dictionary(
                    uniqueKeysWithValues: [4, 8, 9, 11, 12, 13].map {
                        ($0, Measurements.Expected(value: issuers[0].pcrs[$0]!))
                    }
                )
            ),
            allowedAKDigests: Set(issuers.map(\.akDigest))
        )
        let signed = SignedPolicy(
            policy: draft.json,
            signature: Array(try operatorKey.signature(for: SignedPolicy.signedMessage(draft.json)))
        )
        _ = try admin.call(.policySet(signedPolicy: signed.encoded))
        let ready = try admin.status()
        guard ready.phase == .holdingKEK, ready.policyVersion == 1 else {
            throw BenchFailure("keyd is not serving releases: phase \(ready.phase), policy \(ready.policyVersion)")
        }
    }
}

/// A bench run that cannot go on: what went wrong.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
