// statedisk-bench: the state disk's unlock check with Asterism's profile beside Constellation's,
// in one run, plus format and re-key times and each profile's peak memory.
//
// Each profile runs in a child process (this program re-executed with `--measure PROFILE`), so
// its peak RSS comes from wait4's rusage; a child that does nothing gives the baseline.
import ArgumentParser
import BenchSupport
import Glibc
import KeydCore
import KeydDaemon
import KeydPlatform

/// The command line; `--measure` and `--dir` are how the parent runs a child.
struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "statedisk-bench",
        abstract:
            "The state disk's unlock check, Asterism's profile beside Constellation's (needs root; --rounds 31 by default)."
    )

    @OptionGroup var rounds: RoundsOption
    @Option(help: .hidden) var measure: String?
    @Option(help: .hidden) var dir = "/tmp"
}

/// A random 32-byte key, as keyd uses for the state disk.
func randomKey() -> [UInt8] {
    var key = [UInt8](repeating: 0, count: 32)
    key.withUnsafeMutableBytes { try! SecureRandom.fill($0) }
    return key
}

/// Child: format, verify `rounds` times, re-key; prints one RESULT line.
func measure(_ name: String, directory: String, rounds: Int) throws {
    guard name != "none" else {
        print("RESULT none")
        return
    }
    guard let profile = DiskProfile.named(name) else { throw BenchFailure("unknown profile \(name)") }
    let image = directory + "/\(name).img"
    let fd = open(image, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o600)
    guard fd >= 0, ftruncate(fd, 64 << 20) == 0 else { throw BenchFailure("cannot create \(image)") }
    close(fd)
    let first = randomKey()
    let second = randomKey()

    var start = monotonicNanoseconds()
    _ = try first.withUnsafeBytes {
        try LUKS2Volume.format(
            path: image,
            parameters: LUKS2FormatParameters(profile: profile, label: "bench"),
            passphrase: $0
        )
    }
    let formatTime = elapsedMilliseconds(since: start)

    var verifies: [Double] = []
    for _ in 0..<rounds {
        let volume = try LUKS2Volume(path: image, kdf: profile.kdf)
        start = monotonicNanoseconds()
        let slot = try first.withUnsafeBytes { try volume.verify(key: $0) }
        verifies.append(elapsedMilliseconds(since: start))
        guard slot != nil else { throw BenchFailure("\(name): key did not verify") }
    }

    // Re-key in keyd's order: add, verify, mark initialized, remove the old keyslot.
    start = monotonicNanoseconds()
    let volume = try LUKS2Volume(path: image, kdf: profile.kdf)
    let oldSlot = try first.withUnsafeBytes { try volume.verify(key: $0) }
    _ = try first.withUnsafeBytes { old in
        try second.withUnsafeBytes { new in try volume.addKeyslot(existing: old, new: new, kdf: profile.kdf) }
    }
    guard try second.withUnsafeBytes({ try volume.verify(key: $0) }) != nil else {
        throw BenchFailure("\(name): new key did not verify")
    }
    _ = try volume.setToken(json: StateDiskToken(kind: profile.tokenKind, initialized: true).json, id: 0)
    if let oldSlot { try volume.destroyKeyslot(oldSlot) }
    let rekeyTime = elapsedMilliseconds(since: start)
    unlink(image)
    print("RESULT \(name) \(formatTime) \(SortedSamples(verifies).median) \(verifies.count) \(rekeyTime)")
}

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Parent: runs each profile in a child and prints the table.
func runAll(rounds: [String: Int]) throws {
    guard geteuid() == 0 else { throw BenchFailure("needs root: libcryptsetup keyslot operations on file images") }
    var template = Array("/tmp/statedisk-bench-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw BenchFailure("mkdtemp failed") }
    let directory = String(cString: made)
    defer { rmdir(directory) }
    let me = String(cString: realpath("/proc/self/exe", nil))

    var results: [String: (fields: [String], maxRSSKiB: Int)] = [:]
    for name in ["none", "asterism", "constellation"] {
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { throw BenchFailure("pipe failed") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
        let arguments = [me, "--measure", name, "--dir", directory, "--rounds", "\(rounds[name] ?? 1)"]
        let argv = arguments.map { strdup($0) } + [nil]
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, me, &actions, nil, argv, environ)
        for argument in argv { free(argument) }
        posix_spawn_file_actions_destroy(&actions)
        close(pipeFDs[1])
        guard spawned == 0 else { throw BenchFailure("posix_spawn: \(spawned)") }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
            if n <= 0 { break }
            output += buffer[0..<n]
        }
        close(pipeFDs[0])
        var status: Int32 = 0
        var usage = rusage()
        wait4(pid, &status, 0, &usage)
        let text = String(decoding: output, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("RESULT ") }) else {
            throw BenchFailure("\(name) child failed (status \(status)): \(text)")
        }
        results[name] = (line.split(separator: " ").dropFirst(2).map(String.init), Int(usage.ru_maxrss))
    }

    func number(_ profile: String, _ index: Int) -> Double { Double(results[profile]!.fields[index]) ?? .nan }
    let baseline = results["none"]!.maxRSSKiB
    print("statedisk-bench (libcryptsetup on sparse 64 MiB file images, one child process per profile)")
    print(
        "profile         format ms   unlock check p50 ms (runs)   re-key ms   peak RSS KiB (over baseline \(baseline))"
    )
    for name in ["asterism", "constellation"] {
        let row = results[name]!
        let columns: [String] = [
            pad(name, 13),
            lpad(fixed(number(name, 0)), 9),
            lpad(fixed(number(name, 1)) + " (\(row.fields[2]))", 26),
            lpad(fixed(number(name, 3)), 9),
            lpad("\(row.maxRSSKiB) (+\(row.maxRSSKiB - baseline))", 20),
        ]
        let line = columns.joined(separator: "   ")
        print(line)
    }
    let speedup = number("constellation", 1) / number("asterism", 1)
    print("")
    print(
        "unlock check: Asterism \(fixed(speedup))x faster than Constellation (goal >= 100x): \(verdict(speedup >= 100))"
    )
    print(
        "unlock check p50 \(fixed(number("asterism", 1))) ms (goal <= 15 ms): \(verdict(number("asterism", 1) <= 15))"
    )
    print(
        "BENCH statedisk asterism_verify_p50_ms=\(fixed(number("asterism", 1))) constellation_verify_p50_ms=\(fixed(number("constellation", 1))) speedup=\(fixed(speedup)) asterism_format_ms=\(fixed(number("asterism", 0))) constellation_format_ms=\(fixed(number("constellation", 0))) asterism_rekey_ms=\(fixed(number("asterism", 3))) constellation_rekey_ms=\(fixed(number("constellation", 3))) asterism_peak_kib=\(results["asterism"]!.maxRSSKiB) constellation_peak_kib=\(results["constellation"]!.maxRSSKiB) baseline_peak_kib=\(baseline)"
    )
}

let options = Options.parseOrExit()
do {
    if let name = options.measure {
        try measure(name, directory: options.dir, rounds: options.rounds.rounds(default: 1))
    } else {
        let asterismRounds = options.rounds.rounds(default: 31)
        try runAll(rounds: ["none": 1, "asterism": asterismRounds, "constellation": 3])
    }
} catch {
    print("statedisk-bench: \(error)")
    exit(1)
}
