import Foundation

/// The vectors from real machines in Tests/TestVectors (origin and licence in its README.md).
public enum TestVectors {
    /// Tests/TestVectors in the source tree.
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("TestVectors").path

    /// The TCG event logs in tpm-eventlogs, by file name; a missing one fails the tests that read it.
    public static let eventLogs = [
        "coreos_36_shielded_vm_no_secure_boot_eventlog", "crypto_agile_eventlog", "ebs_event_missing_eventlog",
        "option_rom_eventlog", "sb_cert_eventlog", "short_no_action_eventlog",
        "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
    ]

    /// The path of `relative` (such as `sev-snp/vcek-milan.der`) under the root.
    public static func path(_ relative: String) -> String { root + "/" + relative }

    /// The bytes of `relative`; throws when the file cannot be read.
    public static func bytes(_ relative: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path(relative)) else {
            throw HarnessError("cannot read test vector \(path(relative))")
        }
        return Array(data)
    }

    /// The contents of `relative` as UTF-8 text.
    public static func text(_ relative: String) throws -> String {
        String(decoding: try bytes(relative), as: UTF8.self)
    }
}
