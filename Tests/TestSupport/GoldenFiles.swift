import Foundation

/// Golden text files in a test target's `Golden/` folder, which the target copies as a resource.
public struct GoldenFiles {
    /// The test target's resources (its `Bundle.module`).
    let bundle: Bundle
    /// The `Golden/` folder in the source tree, which UPDATE_GOLDEN=1 rewrites.
    let source: URL

    /// Golden files of the target whose resources are `bundle` and whose folder is `source`.
    public init(bundle: Bundle, source: URL) {
        self.bundle = bundle
        self.source = source
    }

    /// The text of `Golden/<name>.txt`; with UPDATE_GOLDEN=1 in the environment, `actual` is first written there
    /// in the source tree (and read back).
    public func text(_ name: String, updatingTo actual: String? = nil) throws -> String {
        if let actual, ProcessInfo.processInfo.environment["UPDATE_GOLDEN"] == "1" {
            let file = source.appending(path: "\(name).txt")
            try actual.write(to: file, atomically: true, encoding: .utf8)
            return try String(contentsOf: file, encoding: .utf8)
        }
        guard let url = bundle.url(forResource: name, withExtension: "txt", subdirectory: "Golden") else {
            throw HarnessError("missing Golden/\(name).txt; run the test with UPDATE_GOLDEN=1")
        }
        return try String(contentsOf: url, encoding: .utf8)
    }
}
