/// keyd's command line: `keyd --state-dir DIR [--socket PATH --admin-socket PATH] [--config FILE] [--tcti TCTI]`.
public struct Options: Equatable, Sendable {
    /// Directory holding the audit log (and later the sealed KEK and header backups).
    public var stateDirectory: String
    /// trustd socket path when keyd binds it itself.
    public var socketPath: String?
    /// Admin socket path when keyd binds it itself.
    public var adminSocketPath: String?
    /// Optional configuration file.
    public var configPath: String?
    /// TCTI overriding the configuration's `tpm-tcti`.
    public var tcti: String? = nil

    public static let usage = """
        Usage: keyd --state-dir DIR [--socket PATH --admin-socket PATH] [--config FILE] [--tcti TCTI]
               keyd --version | --help

        keyd is Asterism's privileged key daemon. Under systemd it takes its two sockets
        from socket activation (names "keyd" and "admin"); run by hand it binds --socket
        (for trustd) and --admin-socket (for keydctl) itself.

        Options:
          --state-dir DIR       keyd's private state (audit log); created 0700 if missing
          --socket PATH         trustd socket to bind when not socket-activated
          --admin-socket PATH   admin socket to bind when not socket-activated
          --config FILE         configuration (key = value lines; see README)
          --tcti TCTI           the TPM's TCTI, overriding tpm-tcti (device:/dev/tpmrm0,
                                swtpm:host=127.0.0.1,port=2321); never auto-probed
        """

    /// What the command line asked for.
    public enum Parsed: Equatable, Sendable {
        case run(Options)
        case help
        case version
    }

    /// Parses arguments (without the program name); errors name the offending argument.
    public static func parse(_ arguments: [String]) throws(KeydError) -> Parsed {
        var state: String?
        var socket: String?
        var admin: String?
        var config: String?
        var tcti: String?
        var index = 0
        func value(_ flag: String) throws(KeydError) -> String {
            index += 1
            guard index < arguments.count, !arguments[index].isEmpty else { throw .usage("\(flag) needs a value") }
            return arguments[index]
        }
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "--help", "-h": return .help
            case "--version": return .version
            case "--state-dir": state = try value(argument)
            case "--socket": socket = try value(argument)
            case "--admin-socket": admin = try value(argument)
            case "--config": config = try value(argument)
            case "--tcti":
                let named = try value(argument)
                guard let colon = named.firstIndex(of: ":"), colon != named.startIndex else {
                    throw .usage("--tcti needs a named TCTI such as device:/dev/tpmrm0, got '\(named)'")
                }
                tcti = named
            default: throw .usage("unknown argument '\(argument)'")
            }
            index += 1
        }
        guard let state else { throw .usage("--state-dir is required") }
        guard (socket == nil) == (admin == nil) else { throw .usage("--socket and --admin-socket go together") }
        for path in [state, socket, admin, config].compactMap({ $0 }) where !path.hasPrefix("/") {
            throw .usage("path '\(path)' must be absolute")
        }
        return .run(
            Options(stateDirectory: state, socketPath: socket, adminSocketPath: admin, configPath: config, tcti: tcti)
        )
    }
}

/// keyd's one error type for start-up failures; the loop itself never throws to the top.
public struct KeydError: Error, CustomStringConvertible {
    public let description: String
    /// Exit status when this error ends keyd.
    public let exitCode: Int32

    /// A command-line mistake (exit 64).
    public static func usage(_ message: String) -> KeydError { KeydError(description: message, exitCode: 64) }
    /// A start-up failure (exit 1).
    public static func startup(_ message: String) -> KeydError { KeydError(description: message, exitCode: 1) }
}
