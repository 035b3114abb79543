import AsterismTestSupport
import Attestation
import Crypto
import Foundation
import KeydClient
import KeydCore
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The serving node's keyd: the release binary on the bench's swtpm (its audit commits count on the
/// TPM), trustd and admin mapped to the bench's euid, its state, sockets and log in `directory`.
final class ServingKeyd {
    let pid: pid_t
    let directory: String
    var trustdSocket: String { directory + "/keyd.sock" }
    var adminSocket: String { directory + "/admin.sock" }
    private var running = true

    /// Starts `binary` and waits for its READY=1.
    init(binary: String, directory: String, tcti: String) throws {
        self.directory = directory
        let config = directory + "/keyd.conf"
        let lines = ["admin-uids = \(geteuid())", "trustd-uids = \(geteuid())", "tpm-tcti = \(tcti)"]
        try (lines.joined(separator: "\n") + "\n").write(toFile: config, atomically: true, encoding: .utf8)
        let notification = try ReadinessNotification()
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notification.address
        let log = open(directory + "/keyd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(log) }
        pid = try Spawn.start(
            binary,
            [
                "--state-dir", directory + "/state", "--socket", directory + "/keyd.sock", "--admin-socket",
                directory + "/admin.sock",
                "--config", config,
            ],
            stdoutFD: log,
            stderrFD: log,
            environment: environment
        )
        let pid = pid
        guard notification.waitForReady(seconds: 120, stillRunning: { Spawn.isRunning(pid) }) else {
            throw BenchFailure("keyd did not start; see \(directory)/keyd.log")
        }
    }

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

    /// Seconds keyd's (single) thread ran on a CPU and waited on a run queue for one so far
    /// (/proc/<pid>/schedstat); the rest of its time it was off CPU: in fsync, at the TPM, or idle in poll.
    var schedule: (onCPU: Double, runQueue: Double) {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/schedstat", encoding: .utf8)) ?? ""
        let fields = text.split(separator: " ").compactMap {
            Double($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard fields.count >= 2 else { return (.nan, .nan) }
        return (fields[0] / 1e9, fields[1] / 1e9)
    }

    /// SIGTERM, then its exit status.
    func stop() -> Int32 {
        guard running else { return 0 }
        running = false
        kill(pid, SIGTERM)
        return Spawn.wait(pid)
    }
}

/// A bench run that cannot go on: what went wrong.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
