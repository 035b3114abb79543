import ArgumentParser
import BenchSupport
import Foundation

/// lifecycle-bench: `make demo`'s three-node scenario (scripts/demo: network namespaces, swtpm, keyd, trustd per
/// node) run `--runs` times with this build's binaries; prints, over the runs, the median, minimum and maximum of
/// the time from `asterism init` to node 1 holding the cluster key, from a worker's trustd start to its join
/// done (disk opened), and from a node's restart (swtpm, keyd, trustd) to its rejoin's disk opened, beside a
/// restart without a join (a control plane up to its listeners, its keyd waiting for a key) as the baseline.
/// Needs root.
@main
struct LifecycleBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lifecycle-bench",
        abstract: "Times of the cluster lifecycle (scripts/demo), medians with min and max over the runs."
    )

    @Option(help: "How many times the scenario runs.") var runs = 10
    @Option(help: "scripts/demo (default: found from the working directory).") var script = "scripts/demo"
    @Option(help: "Where keyd, keydctl, trustd and asterism are (default: this program's directory).") var bin: String?

    func validate() throws {
        guard (1...100).contains(runs) else { throw ValidationError("--runs must be 1…100") }
        guard getuid() == 0 else { throw ValidationError("lifecycle-bench needs root (network namespaces)") }
    }

    func run() throws {
        let directory = bin ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        var samples: [String: [Double]] = [:]
        var scenario: [Double] = []
        print("lifecycle-bench: \(runs) runs of \(script) (3 nodes in network namespaces), load \(loadAverage())")
        for run in 1...runs {
            let timings = FileManager.default.temporaryDirectory.appending(path: "lifecycle-\(UUID())").path
            defer { try? FileManager.default.removeItem(atPath: timings) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["BIN=\(directory)", "DEMO_TIMINGS=\(timings)", "bash", script]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            let started = Date()
            try process.run()
            let text = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                FileHandle.standardError.write(text)
                throw ExitCode(process.terminationStatus)
            }
            scenario.append(Date().timeIntervalSince(started))
            for line in try String(contentsOfFile: timings, encoding: .utf8).split(separator: "\n") {
                let parts = line.split(separator: " ")
                guard parts.count == 2, let seconds = Double(parts[1]) else { continue }
                samples[String(parts[0]), default: []].append(seconds)
            }
            print("  run \(run): scenario \(fixed(scenario.last! , 1)) s")
        }
        let rows: [(String, String)] = [
            ("init_to_ready", "asterism init → node 1 holds the KEK"),
            ("start_to_joined", "worker trustd start → joined, disk opened"),
            ("restart_to_disk_opened", "node restart → rejoin opened the disk"),
            ("restart_to_listening_without_join", "baseline: node restart → listening, no join"),
        ]
        print("\n  \(pad("", 46))\(lpad("median", 10))\(lpad("min", 10))\(lpad("max", 10))  (ms, \(runs) runs)")
        for (key, label) in rows {
            let sorted = SortedSamples((samples[key] ?? []).map { $0 * 1000 })
            guard !sorted.values.isEmpty else { continue }
            print(
                "  \(pad(label, 46))\(lpad(fixed(sorted.median, 0), 10))\(lpad(fixed(sorted.minimum, 0), 10))"
                    + "\(lpad(fixed(sorted.maximum, 0), 10))"
            )
        }
        let whole = SortedSamples(scenario)
        print(
            "  \(pad("whole scenario (s; goal < 180 s)", 46))\(lpad(fixed(whole.median, 1), 10))"
                + "\(lpad(fixed(whole.minimum, 1), 10))\(lpad(fixed(whole.maximum, 1), 10))  \(verdict(whole.maximum < 180))"
        )
    }
}
