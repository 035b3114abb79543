import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension Trait where Self == ConditionTrait {
    /// The test starts its own software TPM (`swtpm`, installed by scripts/install-deps).
    static var needsSwtpm: Self {
        .enabled(if: access("/usr/bin/swtpm", X_OK) == 0, "needs swtpm (scripts/install-deps installs it)")
    }
}
