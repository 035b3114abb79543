import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// utime + stime in seconds of a /proc `stat` file (a process's or a thread's); 0 when unreadable.
func processCPUSeconds(statPath: String) -> Double {
    guard let text = try? String(contentsOfFile: statPath, encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return 0 }
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU seconds so far of this process's children named `command` (swtpm: it does keyd's TPM counter
/// increments, one per audit commit).
func childrenCPUSeconds(named command: String) -> Double {
    let me = getpid()
    var total = 0.0
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(entry) != nil {
        guard let text = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"),
            text[text.index(after: open)..<close] == command
        else { continue }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 1, Int32(fields[1]) == me else { continue }
        total += processCPUSeconds(statPath: "/proc/\(entry)/stat")
    }
    return total
}

/// CPU seconds of this process's threads by the group they were registered in (threads found in no
/// group count as "other"), so a run can say what the JoinService's threads used beside the clients'.
final class ThreadGroups: Sendable {
    private let groups = Mutex<[(name: String, threads: Set<Int32>)]>([])

    /// Registers `threads` as group `name`.
    func add(_ name: String, threads: Set<Int32>) { groups.withLock { $0.append((name, threads)) } }

    /// CPU seconds so far per group name, "other" for the rest, and "process" for the whole process.
    func snapshot() -> [String: Double] {
        let known = groups.withLock { $0 }
        var seconds: [String: Double] = ["other": 0, "process": processCPUSeconds(statPath: "/proc/self/stat")]
        for group in known { seconds[group.name] = 0 }
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        var threadTotal = 0.0
        for task in tasks {
            guard let tid = Int32(task) else { continue }
            let cpu = processCPUSeconds(statPath: "/proc/self/task/\(task)/stat")
            threadTotal += cpu
            let name = known.first { $0.threads.contains(tid) }?.name ?? "other"
            seconds[name, default: 0] += cpu
        }
        // Threads that already exited count in the process's total only.
        seconds["other", default: 0] += max(0, seconds["process", default: 0] - threadTotal)
        return seconds
    }
}
