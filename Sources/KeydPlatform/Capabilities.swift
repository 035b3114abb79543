import CCap
import CKeydShims
import Glibc

/// A Linux capability number (`cap_value_t`), printed as its name, e.g. "cap_sys_admin".
public struct Capability: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The kernel's number for the capability.
    public let rawValue: cap_value_t

    /// Any capability number, including ones newer than the names below.
    public init(rawValue: cap_value_t) {
        self.rawValue = rawValue
    }

    /// The capability with this name ("cap_sys_admin" or "sys_admin"), if it is known.
    public init?(name: String) {
        let bare = name.hasPrefix("cap_") ? String(name.dropFirst(4)) : name
        guard let index = Capability.names.firstIndex(of: bare) else { return nil }
        self.rawValue = cap_value_t(index)
    }

    public static func < (lhs: Capability, rhs: Capability) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The name as capabilities(7) spells it, e.g. "cap_sys_admin"; "cap_41" for unnamed numbers.
    public var name: String {
        if rawValue >= 0 && Int(rawValue) < Capability.names.count {
            return "cap_" + Capability.names[Int(rawValue)]
        }
        return "cap_\(rawValue)"
    }

    public var description: String { name }

    // Numbers from <linux/capability.h>; they are kernel ABI and never change.
    public static let chown = Capability(rawValue: 0)
    public static let dacOverride = Capability(rawValue: 1)
    public static let dacReadSearch = Capability(rawValue: 2)
    public static let fowner = Capability(rawValue: 3)
    public static let fsetid = Capability(rawValue: 4)
    public static let kill = Capability(rawValue: 5)
    public static let setgid = Capability(rawValue: 6)
    public static let setuid = Capability(rawValue: 7)
    public static let setpcap = Capability(rawValue: 8)
    public static let netBindService = Capability(rawValue: 10)
    public static let netAdmin = Capability(rawValue: 12)
    public static let netRaw = Capability(rawValue: 13)
    public static let ipcLock = Capability(rawValue: 14)
    public static let sysModule = Capability(rawValue: 16)
    public static let sysRawio = Capability(rawValue: 17)
    public static let sysChroot = Capability(rawValue: 18)
    public static let sysPtrace = Capability(rawValue: 19)
    public static let sysAdmin = Capability(rawValue: 21)
    public static let sysResource = Capability(rawValue: 24)
    public static let mknod = Capability(rawValue: 27)
    public static let auditWrite = Capability(rawValue: 29)
    public static let setfcap = Capability(rawValue: 31)
    public static let bpf = Capability(rawValue: 39)

    /// Names without the "cap_" prefix, indexed by number (0...40, CAP_LAST_CAP of Linux 5.9+).
    private static let names = [
        "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
        "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
        "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
        "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
        "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
        "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
    ]
}

/// The capability sets of the calling thread.
public struct CapabilitySets: Hashable, Sendable, CustomStringConvertible {
    /// What the thread may use now.
    public var effective: Set<Capability>
    /// What the thread may raise into effective.
    public var permitted: Set<Capability>
    /// What may pass to a program it executes (with file or ambient capabilities).
    public var inheritable: Set<Capability>
    /// What passes to any program it executes.
    public var ambient: Set<Capability>
    /// The limit on what any program it executes can gain.
    public var bounding: Set<Capability>

    /// Sets from known values.
    public init(
        effective: Set<Capability>,
        permitted: Set<Capability>,
        inheritable: Set<Capability>,
        ambient: Set<Capability>,
        bounding: Set<Capability>
    ) {
        self.effective = effective
        self.permitted = permitted
        self.inheritable = inheritable
        self.ambient = ambient
        self.bounding = bounding
    }

    public var description: String {
        func list(_ set: Set<Capability>) -> String {
            set.isEmpty ? "none" : set.sorted().map(\.name).joined(separator: ",")
        }
        return "effective=\(list(effective)) permitted=\(list(permitted)) inheritable=\(list(inheritable)) "
            + "ambient=\(list(ambient)) bounding=\(list(bounding))"
    }
}

/// Reading and reducing the calling thread's capabilities with libcap.
public enum Capabilities {
    /// The highest capability number the running kernel knows (/proc/sys/kernel/cap_last_cap).
    public static func lastCapability() -> cap_value_t {
        if let bytes = try? readWholeFile(path: "/proc/sys/kernel/cap_last_cap", limit: 32) {
            let text = String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
            if let value = parseDecimal(text), value < 1024 { return cap_value_t(value) }
        }
        return cap_max_bits() - 1
    }

    /// Every capability number the running kernel knows.
    public static func all() -> [Capability] {
        (0...lastCapability()).map(Capability.init(rawValue:))
    }

    /// The calling thread's effective, permitted, inheritable, ambient and bounding sets.
    public static func current() throws -> CapabilitySets {
        guard let state = cap_get_proc() else {
            throw SystemError.errno(Glibc.errno, call: "cap_get_proc")
        }
        defer { _ = cap_free(UnsafeMutableRawPointer(state)) }
        var sets = CapabilitySets(effective: [], permitted: [], inheritable: [], ambient: [], bounding: [])
        for capability in all() {
            if try flag(state, capability, CAP_EFFECTIVE) { sets.effective.insert(capability) }
            if try flag(state, capability, CAP_PERMITTED) { sets.permitted.insert(capability) }
            if try flag(state, capability, CAP_INHERITABLE) { sets.inheritable.insert(capability) }
            if cap_get_ambient(capability.rawValue) == 1 { sets.ambient.insert(capability) }
            if cap_get_bound(capability.rawValue) == 1 { sets.bounding.insert(capability) }
        }
        return sets
    }

    /// Whether the calling thread has `capability` in its effective set.
    public static func hasEffective(_ capability: Capability) throws -> Bool {
        guard let state = cap_get_proc() else {
            throw SystemError.errno(Glibc.errno, call: "cap_get_proc")
        }
        defer { _ = cap_free(UnsafeMutableRawPointer(state)) }
        return try flag(state, capability, CAP_EFFECTIVE)
    }

    /// Keeps only `keeping` (as far as it is permitted now) and proves that the rest is gone.
    ///
    /// Steps: (a) with CAP_SETPCAP, drop every other capability from the bounding set; (b) set
    /// effective = permitted = kept ∩ permitted, inheritable = ∅, clear the ambient set; (c) read
    /// the sets back and compare; (d) try to raise one dropped capability, which must fail with
    /// EPERM. Returns the verified sets.
    ///
    /// - Important: capabilities belong to a thread. Call this before the process starts a second
    ///   thread; it throws if /proc/self/status shows more than one.
    @discardableResult
    public static func reduce(keeping: Set<Capability>) throws -> CapabilitySets {
        let threads = try threadCount()
        guard threads == 1 else {
            throw SystemError.verificationFailed(
                call: "Capabilities.reduce",
                "process has \(threads) threads, capabilities are per thread: reduce before starting any"
            )
        }
        let before = try current()
        let target = keeping.intersection(before.permitted)

        // (a) Bounding set: needs CAP_SETPCAP in effective; without it the set cannot shrink.
        let canShrinkBounding = before.effective.contains(.setpcap)
        if canShrinkBounding {
            for capability in before.bounding.subtracting(keeping).sorted() {
                try syscall("cap_drop_bound", capability.name) { cap_drop_bound(capability.rawValue) }
            }
        }

        // (b) Effective, permitted and inheritable in one cap_set_proc, then ambient.
        try setProcess(effective: target, permitted: target, call: "cap_set_proc")
        try syscall("cap_reset_ambient") { cap_reset_ambient() }

        // (c) Read back.
        let after = try current()
        var problems: [String] = []
        if after.effective != target {
            problems.append("effective is \(names(after.effective)), wanted \(names(target))")
        }
        if after.permitted != target {
            problems.append("permitted is \(names(after.permitted)), wanted \(names(target))")
        }
        if !after.inheritable.isEmpty { problems.append("inheritable is \(names(after.inheritable)), wanted none") }
        if !after.ambient.isEmpty { problems.append("ambient is \(names(after.ambient)), wanted none") }
        if canShrinkBounding && !after.bounding.isSubset(of: keeping) {
            problems.append("bounding still holds \(names(after.bounding.subtracting(keeping)))")
        }
        guard problems.isEmpty else {
            throw SystemError.verificationFailed(call: "Capabilities.reduce", problems.joined(separator: "; "))
        }

        // (d) Prove it: raising a dropped capability must fail with EPERM.
        let dropped =
            before.permitted.subtracting(target).min()
            ?? Set(all()).subtracting(target).min()
        if let dropped {
            var raised = target
            raised.insert(dropped)
            do {
                try setProcess(effective: raised, permitted: raised, call: "cap_set_proc(raise \(dropped.name))")
            } catch let error as SystemError where error.errno == EPERM {
                return after
            }
            throw SystemError.verificationFailed(
                call: "Capabilities.reduce",
                "\(dropped.name) could be raised again after it was dropped"
            )
        }
        return after
    }

    /// Sets effective and permitted as given and inheritable to empty, with one cap_set_proc.
    private static func setProcess(effective: Set<Capability>, permitted: Set<Capability>, call: String) throws {
        guard let state = cap_init() else {
            throw SystemError.errno(Glibc.errno, call: "cap_init")
        }
        defer { _ = cap_free(UnsafeMutableRawPointer(state)) }
        try setFlag(state, CAP_EFFECTIVE, effective)
        try setFlag(state, CAP_PERMITTED, permitted)
        try syscall(call) { cap_set_proc(state) }
    }

    /// Raises `capabilities` in one flag of a cap_t (which cap_init left all clear).
    private static func setFlag(_ state: cap_t, _ which: cap_flag_t, _ capabilities: Set<Capability>) throws {
        let values = capabilities.map(\.rawValue)
        if values.isEmpty { return }
        try values.withUnsafeBufferPointer { buffer in
            _ = try syscall("cap_set_flag") {
                cap_set_flag(state, which, Int32(buffer.count), buffer.baseAddress, CAP_SET)
            }
        }
    }

    /// Reads one flag of one capability from a cap_t.
    private static func flag(_ state: cap_t, _ capability: Capability, _ which: cap_flag_t) throws -> Bool {
        var value = CAP_CLEAR
        try syscall("cap_get_flag", capability.name) { cap_get_flag(state, capability.rawValue, which, &value) }
        return value == CAP_SET
    }

    /// Names of a set, sorted, for messages.
    private static func names(_ set: Set<Capability>) -> String {
        set.isEmpty ? "none" : set.sorted().map(\.name).joined(separator: ",")
    }

    /// The Threads: line of /proc/self/status.
    internal static func threadCount() throws -> Int {
        let bytes = try readWholeFile(path: "/proc/self/status", limit: 64 * 1024)
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Threads:") {
            let number = line.dropFirst("Threads:".count).filter { !$0.isWhitespace }
            if let count = parseDecimal(String(number)) { return count }
        }
        throw SystemError.verificationFailed(call: "Capabilities.reduce", "no Threads: line in /proc/self/status")
    }
}
