import ArgumentParser
import Logging
import Trustd

#if canImport(Glibc)
import Glibc
#endif

/// `trustd [--config PATH] [--check-config] [--log-level LEVEL]`.
@main
struct TrustdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trustd",
        abstract: "Asterism's unprivileged node daemon: JoinService, join client and VerificationService over aTLS."
    )

    @Option(name: .customLong("config"), help: "The configuration file.")
    var configurationPath = TrustdMain.defaultConfigurationPath

    @Flag(name: .customLong("check-config"), help: "Read and check the configuration, then exit.")
    var checkOnly = false

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError(
                "--log-level: '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical"
            )
        }
        let status = await TrustdMain.run(configurationPath: configurationPath, checkOnly: checkOnly, logLevel: level)
        if status != .stopped { throw ExitCode(status.rawValue) }
    }
}
