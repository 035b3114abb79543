import CCap
import Glibc
import KeydPlatform
import Testing

// Capabilities.reduce and the ProcessHardening setters are not called here: they would cripple
// the test runner itself. keyd's integration test covers them through the keyd binary.

@Suite("Capabilities")
struct CapabilitiesTests {
    @Test(
        "named capabilities carry the kernel's numbers",
        arguments: [
            (Capability.chown, CAP_CHOWN), (.dacOverride, CAP_DAC_OVERRIDE), (.dacReadSearch, CAP_DAC_READ_SEARCH),
            (.fowner, CAP_FOWNER), (.kill, CAP_KILL), (.setgid, CAP_SETGID), (.setuid, CAP_SETUID),
            (.setpcap, CAP_SETPCAP), (.netBindService, CAP_NET_BIND_SERVICE), (.netAdmin, CAP_NET_ADMIN),
            (.ipcLock, CAP_IPC_LOCK), (.sysRawio, CAP_SYS_RAWIO), (.sysPtrace, CAP_SYS_PTRACE),
            (.sysAdmin, CAP_SYS_ADMIN), (.mknod, CAP_MKNOD), (.auditWrite, CAP_AUDIT_WRITE),
            (.setfcap, CAP_SETFCAP), (.bpf, CAP_BPF),
        ]
    )
    func numbers(capability: Capability, value: Int32) {
        #expect(capability.rawValue == value)
    }

    @Test("names print like capabilities(7) and parse back")
    func names() throws {
        #expect(Capability.sysAdmin.description == "cap_sys_admin")
        #expect(Capability.ipcLock.name == "cap_ipc_lock")
        #expect(Capability(rawValue: 99).name == "cap_99")
        #expect(Capability(name: "cap_sys_admin") == .sysAdmin)
        #expect(Capability(name: "net_admin") == .netAdmin)
        #expect(Capability(name: "cap_nonsense") == nil)
        // Our table agrees with libcap's for every capability the kernel knows.
        for capability in Capabilities.all() {
            guard let text = cap_to_name(capability.rawValue) else { continue }
            defer { cap_free(text) }
            #expect(String(cString: text) == capability.name)
        }
    }

    @Test("the last capability agrees with libcap")
    func lastCapability() {
        let last = Capabilities.lastCapability()
        #expect(last >= CAP_SYS_ADMIN)
        #expect(last == cap_max_bits() - 1)
        #expect(Capabilities.all().count == Int(last) + 1)
    }

    @Test("current() reads the sets; effective is within permitted")
    func current() throws {
        let sets = try Capabilities.current()
        #expect(sets.effective.isSubset(of: sets.permitted))
        #expect(sets.ambient.isSubset(of: sets.permitted))
        #expect(try Capabilities.hasEffective(.sysAdmin) == sets.effective.contains(.sysAdmin))
        #expect(!sets.description.isEmpty)
    }

    @Test(.enabled(if: geteuid() == 0, "needs root: root holds cap_sys_admin"))
    func rootHoldsSysAdmin() throws {
        let sets = try Capabilities.current()
        #expect(sets.permitted.contains(.sysAdmin))
        #expect(sets.effective.contains(.sysAdmin))
        #expect(try Capabilities.hasEffective(.sysAdmin))
    }
}

@Suite("Process hardening (read-only checks)")
struct ProcessHardeningTests {
    @Test("the getters answer without changing anything")
    func getters() throws {
        _ = try ProcessHardening.noNewPrivileges()
        _ = try ProcessHardening.isDumpable()
        let limits = try ProcessHardening.openFileLimit()
        #expect(limits.soft <= limits.hard)
    }

    @Test("raiseOpenFileLimit never lowers and stops at the hard limit")
    func openFileLimit() throws {
        let before = try ProcessHardening.openFileLimit()
        #expect(try ProcessHardening.raiseOpenFileLimit(to: 1) == before.soft)
        #expect(try ProcessHardening.openFileLimit().soft == before.soft)
        let raised = try ProcessHardening.raiseOpenFileLimit(to: before.hard)
        #expect(raised == before.hard)
        #expect(try ProcessHardening.openFileLimit().soft == before.hard)
    }
}
