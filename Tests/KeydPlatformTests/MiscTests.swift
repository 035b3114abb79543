import CCryptsetup
import CKeydShims
import CTSS2
import Glibc
import KeydPlatform
import Testing

@Suite("Errors, clocks, randomness, signals")
struct MiscTests {
    @Test("SystemError descriptions name the call, the context and the errno")
    func errorDescription() {
        let error = SystemError.errno(EADDRINUSE, call: "bind", context: "/run/keyd/keyd.sock")
        #expect(error.description == "bind(/run/keyd/keyd.sock): Address already in use (errno 98)")
        #expect(error.errno == EADDRINUSE)
        #expect(
            SystemError.errno(EPERM, call: "cap_set_proc").description
                == "cap_set_proc: Operation not permitted (errno 1)"
        )
        // Equality uses the code (and errno) only.
        #expect(error == SystemError.errno(EADDRINUSE, call: "other"))
        #expect(error != SystemError.errno(EACCES, call: "bind", context: "/run/keyd/keyd.sock"))
        #expect(SystemError.fileTooLarge(path: "/a", size: 2, limit: 1).errno == 0)
    }

    @Test("the monotonic clock does not go back; the wall clock is past 2024")
    func clocks() {
        let first = MonotonicClock.nowNanoseconds()
        let second = MonotonicClock.nowNanoseconds()
        #expect(second >= first)
        #expect(WallClock.nowSeconds() > 1_704_067_200)
    }

    @Test("SecureRandom fills small and large buffers", arguments: [1, 32, 1 << 20])
    func random(count: Int) throws {
        var a = [UInt8](repeating: 0, count: count)
        var b = [UInt8](repeating: 0, count: count)
        try a.withUnsafeMutableBytes { try SecureRandom.fill($0) }
        try b.withUnsafeMutableBytes { try SecureRandom.fill($0) }
        // Equal for 1 byte one time in 256; for 32 bytes and more, never in practice.
        if count >= 32 {
            #expect(a != b)
            #expect(a.contains { $0 != 0 })
        }
    }

    @Test("SecureMemory.wipe zeroes in place")
    func wipe() {
        var bytes: [UInt8] = [1, 2, 3, 4, 5]
        SecureMemory.wipe(&bytes)
        #expect(bytes == [0, 0, 0, 0, 0])
        var more: [UInt8] = [9, 9, 9]
        more.withUnsafeMutableBytes { SecureMemory.wipe(UnsafeMutableRawBufferPointer(rebasing: $0[1...])) }
        #expect(more == [9, 0, 0])
    }

    @Test("SignalFD turns a blocked signal into a readable event")
    func signalFD() throws {
        // raise() signals the calling thread, which SignalFD has just made block SIGUSR2; a
        // process-directed kill() could land on another thread and end the test runner.
        let signals = try SignalFD(signals: [SIGUSR2])
        defer { try? signals.close() }
        #expect(try signals.readSignal() == nil)
        #expect(raise(SIGUSR2) == 0)
        #expect(try waitReadable(signals.fd, milliseconds: 1000))
        #expect(try signals.readSignal() == SIGUSR2)
        #expect(try signals.readSignal() == nil)
    }
}

@Suite("C library modules")
struct CModuleTests {
    @Test("CTSS2: a policy failure is told apart whatever session or parameter number it carries")
    func tss2() {
        // 0x99D: TPM layer, format one, session 1, TPM2_RC_POLICY_FAIL (0x09D); 0x1C4 is VALUE on parameter 1.
        let policy: TSS2_RC = 0x99D
        #expect(asterism_tpm2_rc_is_format_one(policy))
        #expect(asterism_tpm2_rc_error(policy) == asterism_tpm2_rc_policy_fail())
        #expect(TPMResponse.isPolicyFailure(policy))
        #expect(TPMResponse.isPolicyFailure(TSS2_RC(asterism_tpm2_rc_pcr_changed())))
        #expect(!TPMResponse.isPolicyFailure(0x1C4))
        let text = Tss2_RC_Decode(policy).map { String(cString: $0) } ?? ""
        #expect(text.hasPrefix("tpm:session(1)"))
        #expect(asterism_esys_tr_none() == ESYS_TR_NONE)
        #expect(asterism_tpm2_alg_sha256() == 0x000B)
    }

    @Test("CCryptsetup: string and flag macros are reachable")
    func cryptsetup() {
        #expect(String(cString: asterism_crypt_luks2()) == "LUKS2")
        #expect(String(cString: asterism_crypt_kdf_pbkdf2()) == "pbkdf2")
        #expect(asterism_crypt_any_slot() == -1)
        #expect(asterism_crypt_pbkdf_no_benchmark() == 2)
        #expect(CRYPT_LOG_ERROR == 1)
    }
}
