import KeydCore
import Logging
import TrustdCore

#if canImport(Glibc)
import Glibc
#endif

/// trustd's start: the configuration file read and checked, logging set up, the daemon run. Kept in
/// the library so tests run the same path in process.
public enum TrustdMain {
    /// The default configuration file.
    public static let defaultConfigurationPath = "/etc/trustd/trustd.conf"

    /// Exit statuses: 0 stopped cleanly, 1 a service failed, 2 the configuration (or a file it names)
    /// is wrong.
    public enum ExitStatus: Int32, Sendable {
        case stopped = 0
        case failed = 1
        case badConfiguration = 2
    }

    /// Reads `path` as trustd's configuration.
    public static func loadConfiguration(_ path: String) throws -> TrustdConfiguration {
        let bytes = try BoundedFile.read(path, limit: TrustdConfiguration.maxTextLength)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TrustdStartError("\(path) is not UTF-8 text")
        }
        do throws(CoreError) {
            return try TrustdConfiguration.parse(text)
        } catch {
            throw TrustdStartError("\(path): \(error.message)")
        }
    }

    /// Runs trustd with the configuration at `path`; with `checkOnly`, only reads and checks it.
    public static func run(configurationPath path: String, checkOnly: Bool, logLevel: Logger.Level) async -> ExitStatus
    {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        var logger = Logger(label: "trustd")
        logger.logLevel = logLevel
        let configuration: TrustdConfiguration
        do {
            configuration = try loadConfiguration(path)
        } catch {
            logger.critical("configuration refused: \(error)")
            return .badConfiguration
        }
        if checkOnly {
            logger.info("configuration \(path) is valid")
            return .stopped
        }
        logger.info(
            "trustd starting",
            metadata: [
                "configuration": "\(path)", "role": "\(configuration.role)", "keyd": "\(configuration.keydSocket)",
            ]
        )
        do {
            try await TrustdDaemon(configuration: configuration, logger: logger).run()
            logger.info("trustd stopped")
            return .stopped
        } catch let error as TrustdStartError {
            logger.critical("cannot start: \(error)")
            return .badConfiguration
        } catch {
            logger.critical("trustd failed: \(error)")
            return .failed
        }
    }
}
