import ArgumentParser
import Attestation
import Foundation
import KeydCore
import Synchronization

/// The operator CLI: the cluster's lifecycle (`asterism init|verify|recover`), `asterism keygen`,
/// `asterism policy sign|verify|show|from-evidence|push`, `asterism attestation verify snp|tpm|constellation`,
/// `asterism atls probe`.
///
/// `main()` is ArgumentParser's dispatch (`parseAsRoot`, then the command's `run()`) with the exit statuses the
/// README documents; `execute(_:)` runs the same path in process and returns what it printed.
public struct Asterism: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "asterism",
        abstract:
            "Asterism operator tool: initialize, verify and recover a cluster; the operator key and signed measurement policies; node evidence verified offline; attested TLS endpoints probed.",
        discussion: """
            EXIT STATUS
              0  valid: the evidence or signature verified, the server is attested, or the file was written
              1  refused: a policy or signature check failed, or nodes disagree (the output names it)
              2  usage, parse or connection error
            """,
        subcommands: [
            InitCommand.self, ClusterVerifyCommand.self, RecoverCommand.self, Keygen.self, PolicyCommand.self,
            AttestationCommand.self, ATLSCommand.self,
        ]
    )

    public init() {}

    /// The exit statuses of the README and the root help.
    public enum ExitStatus {
        /// The evidence or signature verified, the server is attested, or the command wrote its file.
        public static let valid: Int32 = 0
        /// A policy or signature check failed, or nodes disagree.
        public static let refused: Int32 = 1
        /// A usage, parse or connection error (ArgumentParser's own status for usage errors is 64).
        public static let error: Int32 = 2
    }

    /// What a run printed and its exit status.
    public struct Outcome: Sendable, Equatable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// Parses and runs `arguments` (without the program name) in process, as `main()` does; returns what it printed.
    public static func execute(_ arguments: [String]) -> Outcome {
        let capture = CapturedOutput()
        let status = Console.$capture.withValue(capture) { dispatch(arguments) }
        return capture.outcome(status: status)
    }

    /// ArgumentParser's `main()` with asterism's exit statuses: a usage error exits 2, not the library's 64.
    public static func main() {
        Foundation.exit(dispatch(nil))
    }

    /// Parses `arguments` (nil: the process's), runs the command, prints any message as `exit(withError:)` would,
    /// and returns the exit status.
    static func dispatch(_ arguments: [String]?) -> Int32 {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            return ExitStatus.valid
        } catch {
            let code = exitCode(for: error)
            let status = code == .validationFailure ? ExitStatus.error : code.rawValue
            let message = fullMessage(for: error)
            if !message.isEmpty { Console.write(message + "\n", error: status != 0) }
            return status
        }
    }
}

/// Where commands print: the process's standard output and error, or `Asterism.execute`'s capture.
enum Console {
    @TaskLocal static var capture: CapturedOutput?

    /// Writes `text` to standard error when `error`, else to standard output.
    static func write(_ text: String, error: Bool) {
        guard !text.isEmpty else { return }
        if let capture {
            capture.append(text, error: error)
        } else {
            (error ? FileHandle.standardError : FileHandle.standardOutput).write(Data(text.utf8))
        }
    }
}

/// The text a run in process printed.
final class CapturedOutput: Sendable {
    private let text = Mutex<(stdout: String, stderr: String)>(("", ""))

    func append(_ line: String, error: Bool) {
        text.withLock { error ? $0.stderr.append(line) : $0.stdout.append(line) }
    }

    func outcome(status: Int32) -> Asterism.Outcome {
        text.withLock { Asterism.Outcome(status: status, stdout: $0.stdout, stderr: $0.stderr) }
    }
}

extension Asterism.Outcome {
    /// A successful run that printed `stdout`.
    static func printed(_ stdout: String) -> Self {
        Self(status: Asterism.ExitStatus.valid, stdout: stdout, stderr: "")
    }

    /// A refusal (exit 1): what was checked on standard output, why on standard error.
    static func refused(_ stdout: String, reason: String) -> Self {
        Self(status: Asterism.ExitStatus.refused, stdout: stdout, stderr: "asterism: \(reason)\n")
    }

    /// A usage, parse or connection error (exit 2) with its message on standard error.
    static func failed(_ error: any Error) -> Self {
        Self(status: Asterism.ExitStatus.error, stdout: "", stderr: "asterism: \(ReportRendering.describe(error))\n")
    }
}

/// Runs async work to its end from a synchronous command: the work runs as a task while the calling thread waits.
/// - Important: The caller's thread blocks; in-process callers in an async context call from a thread of
///   their own, so the work always finds a free thread of the cooperative pool.
enum Blocking {
    /// The result of `work`.
    static func run<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Task.detached {
            do { box.set(.success(try await work())) } catch { box.set(.failure(error)) }
            done.signal()
        }
        done.wait()
        return try box.get().get()
    }

    /// The task's result, set once before the semaphore is signalled.
    private final class ResultBox<T: Sendable>: Sendable {
        private let value = Mutex<Result<T, any Error>?>(nil)
        func set(_ result: Result<T, any Error>) { value.withLock { $0 = result } }
        func get() -> Result<T, any Error> {
            guard let result = value.withLock({ $0 }) else { preconditionFailure("signalled without a result") }
            return result
        }
    }
}

/// A command whose work ends in an outcome, which its `run()` prints and exits with.
protocol OutcomeCommand: ParsableCommand {
    /// What the command prints and its exit status.
    func outcome() -> Asterism.Outcome
}

extension OutcomeCommand {
    /// Prints the outcome; a status other than 0 ends the command with it.
    func run() throws {
        let outcome = outcome()
        Console.write(outcome.stdout, error: false)
        Console.write(outcome.stderr, error: true)
        if outcome.status != Asterism.ExitStatus.valid { throw ExitCode(outcome.status) }
    }
}

/// A command whose work is to produce an attestation report: exit 0 when valid, 1 when refused, 2 on a bad input.
protocol ReportingCommand: OutcomeCommand {
    /// The report and whether to print it as JSON.
    func makeReport() throws -> (AttestationReport, Bool)
}

extension ReportingCommand {
    func outcome() -> Asterism.Outcome {
        do {
            let (report, json) = try makeReport()
            let text = json ? ReportRendering.json(report) : ReportRendering.text(report)
            return Asterism.Outcome(
                status: report.isValid ? Asterism.ExitStatus.valid : Asterism.ExitStatus.refused,
                stdout: text,
                stderr: ""
            )
        } catch {
            let message = "asterism: \(ReportRendering.describe(error))\n"
            return Asterism.Outcome(status: Asterism.ExitStatus.error, stdout: "", stderr: message)
        }
    }
}

struct AttestationCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attestation",
        abstract: "Attestation evidence tools.",
        subcommands: [VerifyCommand.self]
    )
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Validate evidence files; exit 0 when valid, 1 when refused, 2 on a usage or parse error.",
        subcommands: [VerifySNP.self, VerifyTPM.self, VerifyConstellation.self]
    )
}

/// Shared output option.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print the structured result as JSON.")
    var json = false
}

struct VerifySNP: ParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "snp",
        abstract: "Verify an AMD SEV-SNP attestation report and its AMD chain."
    )

    @Option(name: .long, help: "Raw 1184-byte attestation report.") var report: String
    @Option(name: .long, help: "VCEK (or VLEK) certificate, DER or PEM.") var vcek: String
    @Option(name: .customLong("ask-ark"), help: "PEM bundle: ASK then ARK, as AMD KDS serves it.") var askArk: String
    @Option(name: .long, help: "Validation time, RFC 3339 (default: now).") var at: String?
    @Flag(name: .customLong("allow-debug"), help: "Accept guests whose policy allows debugging.") var allowDebug = false
    @Option(name: .customLong("report-data"), help: "Expected report_data, hex of 64 bytes.") var reportData: String?
    @Option(name: .long, help: "Allowed VMPL (repeatable).") var vmpl: [UInt32] = []
    @Option(name: .long, help: "Allowed launch measurement, hex of 48 bytes (repeatable).") var measurement: [String] =
        []
    @Option(name: .customLong("id-key-digest"), help: "Allowed ID-key digest, hex of 48 bytes (repeatable).")
    var idKeyDigest: [String] = []
    @Option(
        name: .customLong("min-tcb"),
        help: "Minimum reported TCB: bootloader=N,tee=N,snp=N,microcode=N[,fmc=N] (components left out are 0)."
    )
    var minTCB: String?
    @OptionGroup var output: OutputOptions

    func makeReport() throws -> (AttestationReport, Bool) {
        let time = try at.map(CLIInput.time) ?? Date()
        var policy = SNPPolicy(allowDebug: allowDebug)
        if let minTCB { policy.minimumTCB = try CLIInput.tcb(minTCB) }
        if let reportData { policy.expectedReportData = try CLIInput.hex(reportData, "--report-data", count: 64) }
        if !vmpl.isEmpty { policy.allowedVMPLs = Set(vmpl) }
        if !measurement.isEmpty {
            policy.allowedMeasurements = Set(try measurement.map { try CLIInput.hex($0, "--measurement", count: 48) })
        }
        if !idKeyDigest.isEmpty {
            policy.allowedIDKeyDigests = Set(try idKeyDigest.map { try CLIInput.hex($0, "--id-key-digest", count: 48) })
        }
        let result = try SNPValidator.validate(
            report: try CLIInput.file(report),
            vcek: try CLIInput.file(vcek),
            askArk: String(decoding: try CLIInput.file(askArk), as: UTF8.self),
            policy: policy,
            at: time
        )
        return (result, output.json)
    }
}

struct VerifyTPM: ParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(commandName: "tpm", abstract: "Verify a TPM 2.0 quote.")

    @Option(name: .long, help: "Raw TPMS_ATTEST (tpm2_quote -m).") var attest: String
    @Option(name: .long, help: "Raw TPMT_SIGNATURE (tpm2_quote -s).") var signature: String
    @Option(name: .customLong("ak-public"), help: "The AK: raw TPMT_PUBLIC or TPM2B_PUBLIC.") var akPublic: String
    @Option(name: .long, help: "PCR values as JSON {\"sha256\": {\"<index>\": \"<hex>\"}}.") var pcrs: String
    @Option(name: .customLong("event-log"), help: "Raw TCG event log to replay against the quoted PCRs.") var eventLog:
        String?
    @Option(name: .long, help: "Expected qualifying data (tpm2_quote -q), hex; without it freshness is not checked.")
    var nonce: String?
    @Flag(name: .customLong("allow-sha1"), help: "Accept a quote over the SHA-1 bank.") var allowSHA1 = false
    @Option(
        name: .customLong("ak-digest"),
        help: "Trusted AK: hex SHA-256 of its DER SubjectPublicKeyInfo (repeatable)."
    ) var akDigest: [String] = []
    @Flag(
        name: .customLong("insecure-trust-document-ak"),
        help: "Trust the AK given, unauthenticated (development only)."
    )
    var insecureTrustDocumentAK = false
    @Option(name: .long, help: "Expected PCR values, Constellation's measurements JSON.") var measurements: String?
    @OptionGroup var output: OutputOptions

    func makeReport() throws -> (AttestationReport, Bool) {
        let trust = AKTrust(
            allowedKeyDigests: Set(try akDigest.map { try CLIInput.hex($0, "--ak-digest", count: 32) }),
            insecureTrustDocumentAK: insecureTrustDocumentAK
        )
        var policy = TPMQuotePolicy(
            akTrust: trust,
            expectedQualifyingData: try nonce.map { try CLIInput.hex($0, "--nonce", count: nil) },
            allowSHA1: allowSHA1
        )
        if let measurements { policy.measurements = try Measurements(json: try CLIInput.file(measurements)) }
        let evidence = TPMQuoteEvidence(
            akPublic: try TPMTPublic(anyEncoding: try CLIInput.file(akPublic)),
            attest: try TPMSAttest(bytes: try CLIInput.file(attest)),
            signature: try TPMTSignature(bytes: try CLIInput.file(signature)),
            pcrValues: try CLIInput.pcrs(try CLIInput.file(pcrs)),
            eventLog: try eventLog.map(CLIInput.file)
        )
        return (
            TPMQuoteValidator.validate(evidence, policy: policy, context: ValidationContext(time: Date())), output.json
        )
    }
}

struct VerifyConstellation: ParsableCommand, ReportingCommand {
    static let configuration = CommandConfiguration(
        commandName: "constellation",
        abstract: "Verify a Constellation qemu-vtpm attestation document."
    )

    @Option(name: .long, help: "The JSON attestation document.") var document: String
    @Option(name: .long, help: "The verifier's nonce, hex.") var nonce: String
    @Option(name: .long, help: "Expected PCR values, Constellation's measurements JSON.") var measurements: String
    @Option(name: .customLong("user-data"), help: "Expected user data, hex (default: not checked).") var userData:
        String?
    @Flag(
        name: .customLong("insecure-trust-document-ak"),
        help: "Trust the AK inside the document, as Constellation's qemu-vtpm validator does (development only)."
    )
    var insecureTrustDocumentAK = false
    @OptionGroup var output: OutputOptions

    func makeReport() throws -> (AttestationReport, Bool) {
        let policy = TPMQuotePolicy(
            akTrust: AKTrust(insecureTrustDocumentAK: insecureTrustDocumentAK),
            measurements: try Measurements(json: try CLIInput.file(measurements))
        )
        let report = try TPMEvidenceValidator.validate(
            constellation: try CLIInput.file(document),
            nonce: try CLIInput.hex(nonce, "--nonce", count: nil),
            userData: try userData.map { try CLIInput.hex($0, "--user-data", count: nil) },
            policy: policy,
            at: Date()
        )
        return (report, output.json)
    }
}

/// Reading the CLI's inputs; every failure is a usage or parse error (exit 2).
enum CLIInput {
    struct InputError: Error, CustomStringConvertible {
        let description: String
    }

    static func file(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InputError(description: "cannot read \(path)")
        }
        return Array(data)
    }

    static func hex(_ text: String, _ option: String, count: Int?) throws -> [UInt8] {
        guard let value = bytes(fromHex: text), count == nil || value.count == count else {
            throw InputError(description: "\(option) must be hex" + (count.map { " of \($0) bytes" } ?? ""))
        }
        return value
    }

    /// `bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]`, each N a decimal 0…255; omitted components are 0.
    /// Made with Turin's layout, which holds all five; the validator compares components for the VCEK's product.
    static func tcb(_ text: String) throws -> SNPTCB {
        let names = ["bootloader", "tee", "snp", "microcode", "fmc"]
        var values: [String: UInt8] = [:]
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2, names.contains(String(pair[0])), let value = UInt8(pair[1]) else {
                throw InputError(
                    description:
                        "--min-tcb \"\(part)\" is not NAME=N with NAME one of \(names.joined(separator: ", ")) and N in 0…255"
                )
            }
            guard values.updateValue(value, forKey: String(pair[0])) == nil else {
                throw InputError(description: "--min-tcb names \(pair[0]) twice")
            }
        }
        return SNPTCB(
            bootloader: values["bootloader"] ?? 0,
            tee: values["tee"] ?? 0,
            snp: values["snp"] ?? 0,
            microcode: values["microcode"] ?? 0,
            fmc: values["fmc"] ?? 0,
            product: .turin
        )
    }

    static func time(_ text: String) throws -> Date {
        guard let date = try? Date(text, strategy: .iso8601) else {
            throw InputError(description: "--at \(text) is not an RFC 3339 time")
        }
        return date
    }

    /// `{"sha1"|"sha256": {"<index>": "<hex>"}}`.
    static func pcrs(_ json: [UInt8]) throws -> [TPMAlgorithm: [Int: [UInt8]]] {
        let object: [String: [String: String]]
        do {
            object = try JSONDecoder().decode([String: [String: String]].self, from: Data(json))
        } catch {
            throw InputError(description: "--pcrs is not {\"sha256\": {\"<index>\": \"<hex>\"}} JSON")
        }
        var banks: [TPMAlgorithm: [Int: [UInt8]]] = [:]
        for (name, values) in object {
            let bank: TPMAlgorithm
            switch name {
            case "sha1": bank = .sha1
            case "sha256": bank = .sha256
            default: throw InputError(description: "--pcrs bank \"\(name)\" is not sha1 or sha256")
            }
            for (key, hex) in values {
                guard let index = Int(key), (0...23).contains(index), let value = bytes(fromHex: hex) else {
                    throw InputError(
                        description: "--pcrs entry \"\(key)\" of \(name) is not an index 0…23 with a hex value"
                    )
                }
                banks[bank, default: [:]][index] = value
            }
        }
        return banks
    }
}

/// Human and JSON forms of a report.
enum ReportRendering {
    static func text(_ report: AttestationReport) -> String {
        var lines = ["\(report.evidence): \(report.isValid ? "VALID" : "REFUSED")"]
        for result in report.results {
            let tag =
                switch result.outcome {
                case .passed: "pass"
                case .failed: "FAIL"
                case .warned: "warn"
                case .notChecked: "skip"
                }
            lines.append("  \(tag)  \(result.policy): \(result.message)")
            if result.outcome != .passed {
                for value in result.values { lines.append("          \(value.name): \(value.value)") }
            }
        }
        for note in report.notes { lines.append("  NOTE  \(note)") }
        return lines.joined(separator: "\n") + "\n"
    }

    static func json(_ report: AttestationReport) -> String { json(encoding: report) }

    /// `value` as pretty JSON with sorted keys and a final newline.
    static func json(encoding value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data("{}".utf8), as: UTF8.self) + "\n"
    }

    /// An error's message without a type name or source location.
    static func describe(_ error: any Error) -> String {
        if let error = error as? AttestationError { return error.message }
        if let error = error as? CoreError { return error.message }
        return "\(error)"
    }
}
