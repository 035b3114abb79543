// The shared harness (Spawn, SoftwareTPM, HarnessError, TestVectors) is visible to every file of this target.
@_exported import AsterismTestSupport
import Foundation
import Testing

extension Trait where Self == ConditionTrait {
    /// Needs swtpm and tpm2-tools to make real quotes.
    static var needsSwtpm: Self {
        .enabled(
            if: FileManager.default.fileExists(atPath: "/usr/bin/swtpm")
                && FileManager.default.fileExists(atPath: "/usr/bin/tpm2_quote"),
            "needs swtpm and tpm2-tools (/usr/bin/swtpm, /usr/bin/tpm2_quote)"
        )
    }
}
