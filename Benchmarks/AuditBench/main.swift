// audit-bench: keyd's audit log under load (issue 13).
//   1. keyd's start time with an audit log of --megabytes (default 1024) of valid keyed records beside the
//      start time with an empty log, in the same run: keyd streams and checks every line's MAC before READY.
//   2. Audit records written per 10,000 routine trustd requests (disk.inspect of the configured state
//      disk, status), and per 2,000 refused ones (a path named), counted in the log before, right after,
//      and after keyd stops (the summary and the repeats are written at stop).
//
// The log is made here with KeydCore's own chain code under an audit key that the bench seals into the
// software TPM at keyd's audit-key handle, so keyd unseals the same key and checks every MAC.
import ArgumentParser
import AsterismTestSupport
import BenchSupport
import Foundation
import KeydClient
import KeydCore
import KeydPlatform
import KeydProtocol

#if canImport(Glibc)
import Glibc
#endif

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit-bench",
        abstract: "keyd's start time with a large audit log; audit records per 10,000 routine requests."
    )

    @OptionGroup var keyd: KeydBinaryOption
    @Option(help: ArgumentHelp("Size of the large audit log in MiB.", valueName: "n"))
    var megabytes = 1024
    @Option(help: ArgumentHelp("Routine trustd requests to send.", valueName: "n"))
    var requests = 10_000
}

let options = Options.parseOrExit()

/// A fresh scratch directory.
func scratch(_ name: String) -> String {
    var template = Array("/tmp/audit-bench-\(name)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp: errno \(errno)") }
    return String(cString: made)
}

/// keyd on `tpm` in `directory` (trustd and admin mapped to this euid); returns its pid, the seconds
/// from spawn to READY=1, and the harness pieces.
@MainActor func startKeyd(
    directory: String,
    tpm: SoftwareTPM,
    extra: [String] = []
) throws -> (pid: pid_t, seconds: Double) {
    let config = directory + "/keyd.conf"
    let lines = ["admin-uids = \(geteuid())", "trustd-uids = \(geteuid())", "tpm-tcti = \(tpm.tcti)"] + extra
    try (lines.joined(separator: "\n") + "\n").write(toFile: config, atomically: true, encoding: .utf8)
    let notification = try ReadinessNotification()
    var environment = ProcessInfo.processInfo.environment
    environment["NOTIFY_SOCKET"] = notification.address
    let log = open(directory + "/keyd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    defer { close(log) }
    let start = monotonicNanoseconds()
    let pid = try Spawn.start(
        options.keyd.path,
        [
            "--state-dir", directory + "/state", "--socket", directory + "/keyd.sock", "--admin-socket",
            directory + "/admin.sock", "--config", config,
        ],
        stdoutFD: log,
        stderrFD: log,
        environment: environment
    )
    guard notification.waitForReady(seconds: 600, stillRunning: { Spawn.isRunning(pid) }) else {
        throw HarnessError("keyd did not start; see \(directory)/keyd.log")
    }
    return (pid, elapsedSeconds(from: start, to: monotonicNanoseconds()))
}

/// Stops keyd with SIGTERM and waits for it.
func stop(_ pid: pid_t) {
    kill(pid, SIGTERM)
    _ = Spawn.wait(pid)
}

/// Writes `megabytes` MiB of a valid chain under `link` (genesis with `counterBase`) to `state/audit.log`.
func writeLog(state: String, link: AuditLink, counterBase: UInt64, megabytes: Int) throws -> UInt64 {
    try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
    chmod(state, 0o700)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: state + "/audit.log").creatingFile())
    defer { try? handle.close() }
    let keydPeer = AuditPeer(peerClass: .keyd, uid: 0, gid: 0, pid: 1)
    let admin = AuditPeer(peerClass: .admin, uid: 0, gid: 0, pid: 812)
    var chain = AuditChain(link: link)
    var buffer: [UInt8] = chain.append(
        event: .auditChain,
        decision: .granted,
        status: "ok",
        peer: keydPeer,
        detail: AuditChain.genesisDetail(link: link, counterBase: counterBase, reason: "audit-bench"),
        time: 1_795_614_641
    )
    var written = 0
    let target = megabytes << 20
    while written + buffer.count < target {
        buffer += chain.append(
            event: .request(.diskInspect),
            decision: .refused,
            status: "diskBusy",
            peer: admin,
            detail: [("device", "/dev/disk/by-id/virtio-state"), ("uuid", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")],
            time: 1_795_614_641 + Int64(chain.nextSequence)
        )
        if buffer.count >= 4 << 20 {
            handle.write(Data(buffer))
            written += buffer.count
            buffer.removeAll(keepingCapacity: true)
        }
    }
    handle.write(Data(buffer))
    return chain.nextSequence
}

extension URL {
    /// This file URL after creating an empty file there.
    func creatingFile() -> URL {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        return self
    }
}

/// The lines of `state/audit.log` (the last segment) and of any closed segments.
func auditRecordCount(state: String) -> Int {
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: state)) ?? []).filter {
        $0.hasPrefix("audit.log")
    }
    return names.reduce(0) { total, name in
        total + ((try? String(contentsOfFile: state + "/" + name, encoding: .utf8))?.split(separator: "\n").count ?? 0)
    }
}

// MARK: 1. Start time

print("audit-bench: keyd start time with a large audit log (release keyd: \(options.keyd.path))")
do {
    let tpm = try SoftwareTPM()
    // Baseline: an empty state directory on the same TPM.
    let empty = scratch("empty")
    let (baselinePID, baseline) = try startKeyd(directory: empty, tpm: tpm)
    stop(baselinePID)
    tpm.stop()
    try tpm.start()

    // The audit key keyd will unseal: sealed here, with keyd's default PCR selection, at its handle.
    let configuration = KeydConfiguration()
    let device = try TPMDevice(tcti: tpm.tcti)
    let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
    let name = try key.withUnsafeBytes {
        try device.sealPersistent(
            $0,
            selection: PCRSelection(configuration.tpmPCRs)!,
            handle: configuration.tpmAuditKeyHandle
        )
    }
    let counter = try device.readCounter(index: configuration.tpmAuditCounterIndex) ?? 0
    let link = key.withUnsafeBytes { AuditLink.keyed(keyBytes: $0, keyName: name) }
    let large = scratch("large")
    let generated = monotonicNanoseconds()
    let records = try writeLog(state: large + "/state", link: link, counterBase: counter, megabytes: options.megabytes)
    let generation = elapsedSeconds(from: generated, to: monotonicNanoseconds())
    tpm.stop()
    try tpm.start()
    let (largePID, seconds) = try startKeyd(directory: large, tpm: tpm)
    let rss =
        (try? String(contentsOfFile: "/proc/\(largePID)/status", encoding: .utf8))?
        .split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? "VmHWM: ?"
    stop(largePID)
    print("  empty log:                        start \(fixed(baseline * 1000, 1)) ms")
    print(
        "  \(options.megabytes) MiB log (\(records) keyed records, made in \(fixed(generation, 1)) s): start \(fixed(seconds, 2)) s,"
            + " \(fixed(Double(options.megabytes) / max(seconds - baseline, 0.001), 0)) MiB/s checked, peak \(rss.split(separator: " ").dropFirst().joined(separator: " "))"
    )
    try? FileManager.default.removeItem(atPath: large)
    try? FileManager.default.removeItem(atPath: empty)
}

// MARK: 2. Records per routine requests

print(
    "audit-bench: audit records per \(options.requests) routine trustd requests (disk.inspect of the state disk, status)"
)
do {
    let tpm = try SoftwareTPM()
    let directory = scratch("routine")
    let image = directory + "/state.img"
    _ = FileManager.default.createFile(atPath: image, contents: nil)
    truncate(image, 32 << 20)
    let (pid, _) = try startKeyd(directory: directory, tpm: tpm, extra: ["state-disk-device = \(image)"])
    let state = directory + "/state"
    let before = auditRecordCount(state: state)
    let trustd = try KeydConnection(path: directory + "/keyd.sock")
    var statuses: [StatusCode: Int] = [:]
    let started = monotonicNanoseconds()
    for index in 0..<options.requests {
        let answer = try trustd.roundTrip(index % 2 == 0 ? .diskInspect(device: "") : .status)
        statuses[answer.status, default: 0] += 1
    }
    let seconds = elapsedSeconds(from: started, to: monotonicNanoseconds())
    trustd.close()
    let routine = auditRecordCount(state: state)
    // Refusals: trustd naming a path, each on its own connection (denied closes it).
    for _ in 0..<2000 {
        let probe = try KeydConnection(path: directory + "/keyd.sock")
        _ = try? probe.roundTrip(.diskInspect(device: "/etc/shadow"))
        probe.close()
    }
    let refused = auditRecordCount(state: state)
    stop(pid)
    let after = auditRecordCount(state: state)
    print(
        "  answers: \(statuses.map { "\($0.key) \($0.value)" }.sorted().joined(separator: ", ")) in \(fixed(seconds, 2)) s"
    )
    print("  records written for \(options.requests) routine requests: \(routine - before)")
    print("  records written for 2000 refused path probes: \(refused - routine)")
    print("  records written at stop (audit.summary, audit.repeated, keyd.stop): \(after - refused)")
    try? FileManager.default.removeItem(atPath: directory)
}
