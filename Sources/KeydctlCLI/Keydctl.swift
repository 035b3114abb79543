import ArgumentParser
import Foundation
import KeydClient
import KeydProtocol

/// `keydctl`: the local administrator's client of keyd's admin socket.
public struct Keydctl: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "keydctl",
        abstract: "Administer the local keyd over its admin socket: status, audit, KEK, disk, TPM, policy.",
        discussion: """
            keydctl speaks keyd's admin protocol on a Unix socket that only root (or the \
            configured admin users) may open. Secrets are never taken from the command line: \
            `kek import` reads the master secret from a file or standard input.

            EXIT STATUS
              0   success
              1   keyd refused the request (any status but ok), or audit verify
                  found a problem
              2   keyd unreachable, or the connection or protocol failed
              3   unreadable or invalid input file (secret, signed policy,
                  operator key), or an output file that cannot be written
              64  usage error

            Errors go to standard error as one line: `keydctl: <message>`.
            """,
        subcommands: [Status.self, Audit.self, Kek.self, Disk.self, TPM.self, Policy.self]
    )

    @OptionGroup var socket: SocketOptions

    public init() {}
}

/// `--socket PATH`, on every command.
public struct SocketOptions: ParsableArguments {
    /// The admin socket used when neither the flag nor `KEYD_ADMIN_SOCKET` is given.
    public static let defaultPath = "/run/keyd/admin.sock"
    /// The environment variable read when `--socket` is absent.
    public static let environmentVariable = "KEYD_ADMIN_SOCKET"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Path of keyd's admin socket (default: $KEYD_ADMIN_SOCKET, else /run/keyd/admin.sock).",
            valueName: "path"
        )
    )
    public var socket: String?

    public init() {}

    /// The path to connect to: the flag, else the environment variable, else the default.
    public func path(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let socket { return socket }
        if let value = environment[Self.environmentVariable], !value.isEmpty { return value }
        return Self.defaultPath
    }

    public func validate() throws {
        let path = path()
        // sun_path holds 108 bytes with the terminating zero.
        guard !path.isEmpty, path.utf8.count < 108 else {
            throw ValidationError("socket path of \(path.utf8.count) bytes; it must be 1...107 bytes")
        }
    }

    /// Connects and says hello.
    func connect(timeoutMilliseconds: Int = 10_000) throws(KeydClientError) -> KeydConnection {
        try KeydConnection(path: path(), timeoutMilliseconds: timeoutMilliseconds)
    }
}

/// Runs `body`, turning its failure into one `keydctl: …` line on stderr and the documented exit status.
func reporting(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as KeydctlError {
        try fail(error.description, error)
    } catch let error as KeydClientError {
        try fail(error.description, error)
    }
}

private func fail(_ message: String, _ error: any Error) throws -> Never {
    FileHandle.standardError.write(Data("keydctl: \(Report.printable(message))\n".utf8))
    throw ExitCode(ExitStatus.code(for: error))
}

/// Prints one line to stdout.
func printLine(_ line: String) { print(line) }

/// `keydctl status`.
public struct Status: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Show keyd's phase, KEK state, policy version, counters and audit head.",
        discussion: "The KEK state follows from the phase: absent (awaitingKEK), held (holdingKEK), locked (locked)."
    )

    @OptionGroup var socket: SocketOptions
    @Flag(help: "Print one JSON object (camelCase keys, hashes in hex).")
    var json = false

    public init() {}

    public func run() throws {
        try reporting {
            try AdminActions.status(try socket.connect(), json: json, write: printLine)
        }
    }
}

/// `keydctl audit`.
public struct Audit: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Read and verify keyd's hash-chained audit log.",
        subcommands: [AuditShow.self, AuditVerify.self]
    )

    @OptionGroup var socket: SocketOptions

    public init() {}
}

/// `keydctl audit show`.
public struct AuditShow: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print audit records, one per line.",
        discussion: """
            Records are read from keyd in pages of up to \(Limits.maxAuditRecordsPerRead). The table \
            shows seq, time, event, decision, status, peer class and detail; --json prints the \
            records exactly as keyd stores them, as one JSON array.
            """
    )

    @OptionGroup var socket: SocketOptions
    @Option(help: ArgumentHelp("First record to show, from 0.", valueName: "n"))
    var from: UInt64 = 0
    @Option(help: ArgumentHelp("Most records to show (default: all to the end).", valueName: "n"))
    var limit: UInt64?
    @Flag(help: "Print a JSON array of the record objects.")
    var json = false

    public init() {}

    public func validate() throws {
        if let limit, limit == 0 { throw ValidationError("--limit must be at least 1") }
    }

    public func run() throws {
        try reporting {
            try AdminActions.auditShow(try socket.connect(), from: from, limit: limit, json: json, write: printLine)
        }
    }
}

/// `keydctl audit verify`.
public struct AuditVerify: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Have keyd re-read its audit log and check the hash chain.",
        discussion: "Exits with status 1 when the log is not intact, after printing what is wrong and where."
    )

    @OptionGroup var socket: SocketOptions
    @Flag(help: "Print one JSON object (camelCase keys, hashes in hex).")
    var json = false

    public init() {}

    public func run() throws {
        try reporting {
            try AdminActions.auditVerify(try socket.connect(), json: json, write: printLine)
        }
    }
}

/// `keydctl kek`.
public struct Kek: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Import or lock keyd's key-encryption key.",
        subcommands: [KekImport.self, KekLock.self]
    )

    @OptionGroup var socket: SocketOptions

    public init() {}
}

/// `keydctl kek import`.
public struct KekImport: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Give keyd the cluster's master secret, from which it derives the KEK.",
        discussion: """
            The file is Constellation's master-secret JSON: {"key":"<base64>","salt":"<base64>"} \
            (standard base64 with padding; key 16...64 bytes, salt 32...64 bytes; file at most \
            \(MasterSecretFile.maxFileSize) bytes). The secret is never accepted on the command \
            line. keydctl wipes its copies of the file and the decoded bytes after sending them.
            """
    )

    @OptionGroup var socket: SocketOptions
    @Option(help: ArgumentHelp("Master-secret JSON file; - reads standard input.", valueName: "path"))
    var file: String

    public init() {}

    public func run() throws {
        try reporting {
            // Check the secret before connecting: bad input never reaches keyd.
            let secret = try MasterSecretFile.read(path: file)
            try AdminActions.importKEK(try socket.connect(), secret)
            printLine("kek imported: keyd holds the KEK")
        }
    }
}

/// `keydctl kek lock`.
public struct KekLock: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Zero the KEK inside keyd; key release stops until the next import.",
    )

    @OptionGroup var socket: SocketOptions

    public init() {}

    public func run() throws {
        try reporting {
            try socket.connect().lockKEK()
            printLine("kek locked: keyd zeroed the KEK")
        }
    }
}
