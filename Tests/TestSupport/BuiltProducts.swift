import Foundation

/// Where the built executables live: beside the test bundle, or `KEYD_BIN_DIR`.
public enum BuiltProducts {
    /// The directory holding the products (found by `keyd`, which every build makes).
    public static var directory: String {
        if let overridden = ProcessInfo.processInfo.environment["KEYD_BIN_DIR"] { return overridden }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = executable.deletingLastPathComponent()
        // The XCTest bundle on Linux is a file; under `swift test` its directory holds the products.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("keyd").path),
            directory.path != "/"
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory.path
    }

    /// The privileged daemon.
    public static var keyd: String { directory + "/keyd" }
    /// keyd's admin CLI.
    public static var keydctl: String { directory + "/keydctl" }
    /// The operator CLI.
    public static var asterism: String { directory + "/asterism" }
    /// The unprivileged network daemon.
    public static var trustd: String { directory + "/trustd" }
}
