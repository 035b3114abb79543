import AsterismTestSupport
import BenchKeyd
import Foundation
import KeydClient
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

/// What release-bench asks of its keyd beside the shared launcher.
extension ServingKeyd {
    /// `status` on a new admin connection (a connection held through a long mode would be closed idle).
    func status() throws -> StatusAnswer {
        let admin = try KeydConnection(path: adminSocket)
        defer { admin.close() }
        return try admin.status()
    }

    /// `key.release` records and commit groups (lines carrying an `anchor`: one write, one fsync and one
    /// TPM count each) in the audit log's segments so far.
    func auditTally() -> (releases: Int, commits: Int) {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: stateDirectory)) ?? []).filter {
            $0 == "audit.log" || $0.hasPrefix("audit.log.")
        }
        var tally = (releases: 0, commits: 0)
        for name in names {
            guard let data = FileManager.default.contents(atPath: stateDirectory + "/" + name) else { continue }
            for line in data.split(separator: UInt8(ascii: "\n")) {
                let text = String(decoding: line, as: UTF8.self)
                if text.contains(#""event":"key.release""#) { tally.releases += 1 }
                if text.contains(#","anchor":"#) { tally.commits += 1 }
            }
        }
        return tally
    }
}

/// The bench process's own CPU seconds (user and system).
func benchCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}
