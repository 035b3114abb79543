import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

/// `--keyd PATH`: the keyd binary a bench starts, by default the keyd built beside the bench.
public struct KeydBinaryOption: ParsableArguments {
    @Option(
        name: .customLong("keyd"),
        help: ArgumentHelp("The keyd binary to start (default: keyd beside this program).", valueName: "path")
    )
    var given: String?

    public init() {}

    /// The keyd binary as an absolute path.
    public var path: String {
        let path = given ?? (directory(of: executablePath()) + "/keyd")
        return path.hasPrefix("/") ? path : currentDirectory() + "/" + path
    }

    public func validate() throws {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw ValidationError("no keyd binary at \(path)")
        }
    }
}

/// `--seconds S`: how long each figure is measured; each bench passes its own default.
public struct SecondsOption: ParsableArguments {
    @Option(
        name: .customLong("seconds"),
        help: ArgumentHelp("Seconds each figure is measured for (default: the bench's own).", valueName: "s")
    )
    var given: Double?

    public init() {}

    /// The seconds given, or `fallback`.
    public func seconds(default fallback: Double) -> Double { given ?? fallback }

    public func validate() throws {
        if let given, !(given > 0 && given <= 3600) { throw ValidationError("--seconds \(given) outside (0, 3600]") }
    }
}

/// `--rounds N`: how many times a bench repeats its measurement and reports the median; each bench
/// passes its own default.
public struct RoundsOption: ParsableArguments {
    @Option(
        name: .customLong("rounds"),
        help: ArgumentHelp(
            "Rounds of measurement, reported as their median (default: the bench's own).",
            valueName: "n"
        )
    )
    var given: Int?

    public init() {}

    /// The rounds given, or `fallback`.
    public func rounds(default fallback: Int) -> Int { given ?? fallback }

    public func validate() throws {
        if let given, !(1...100_000).contains(given) { throw ValidationError("--rounds \(given) outside 1...100000") }
    }
}

/// The path of the running program (/proc/self/exe), or its first argument.
public func executablePath() -> String {
    guard let resolved = realpath("/proc/self/exe", nil) else { return CommandLine.arguments[0] }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// Everything before the last "/" of `path` ("." when there is none).
func directory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return String(path[..<slash])
}

/// The working directory, or "." if it cannot be read.
func currentDirectory() -> String {
    guard let cwd = getcwd(nil, 0) else { return "." }
    defer { free(cwd) }
    return String(cString: cwd)
}
