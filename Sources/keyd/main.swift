import KeydDaemon
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

// keyd's thin main: parse the command line, then run the daemon (Sources/KeydDaemon).
do {
    switch try Options.parse(Array(CommandLine.arguments.dropFirst())) {
    case .help:
        print(Options.usage)
    case .version:
        print("keyd \(KeydService.version) (protocol \(Limits.supportedVersions.upperBound))")
    case .run(let options):
        try Daemon.run(options)
    }
} catch {
    Log.error("keyd: \(error.description)")
    if error.exitCode == 64 { Log.raw(Options.usage + "\n") }
    exit(error.exitCode)
}
