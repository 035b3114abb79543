import Glibc
import KeydPlatform
import Testing

@Suite("Files")
struct FilesTests {
    @Test("atomic write: round trip, exact mode despite the umask, no temporary left")
    func atomicWrite() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/state"
            try writeFileAtomically(path: path, bytes: Array("first".utf8), mode: 0o600)
            #expect(try readWholeFile(path: path, limit: 100) == Array("first".utf8))
            #expect(fileMode(path)?.permissions == 0o600)

            // 0o664 survives a typical 022 umask: the mode is set explicitly.
            try writeFileAtomically(path: path, bytes: Array("second, longer".utf8), mode: 0o664)
            #expect(try readWholeFile(path: path, limit: 100) == Array("second, longer".utf8))
            #expect(fileMode(path)?.permissions == 0o664)
            #expect(fileMode(path)?.type == S_IFREG)

            try writeFileAtomically(path: path, bytes: [], mode: 0o600)
            #expect(try readWholeFile(path: path, limit: 0) == [])

            var entries: [String] = []
            if let dir = opendir(directory) {
                while let entry = readdir(dir) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) {
                        String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
                    }
                    if name != "." && name != ".." { entries.append(name) }
                }
                closedir(dir)
            }
            #expect(entries == ["state"])
        }
    }

    @Test("atomic write into a missing directory fails and names the path")
    func atomicWriteMissingDirectory() throws {
        let error = #expect(throws: SystemError.self) {
            try writeFileAtomically(path: "/tmp/keyd-no-such-dir/x", bytes: [1], mode: 0o600)
        }
        #expect(error == SystemError.errno(ENOENT, call: "open"))
        #expect(error?.description.contains("/tmp/keyd-no-such-dir/.x.tmp-") == true)
    }

    @Test("readWholeFile refuses a file over the limit", arguments: [0, 1, 4095, 4096, 4097, 100_000])
    func readLimit(size: Int) throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/blob"
            let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
            try writeFileAtomically(path: path, bytes: bytes, mode: 0o600)
            #expect(try readWholeFile(path: path, limit: size) == bytes)
            #expect(try readWholeFile(path: path, limit: size + 1) == bytes)
            if size > 0 {
                let error = #expect(throws: SystemError.self) { try readWholeFile(path: path, limit: size - 1) }
                #expect(error == SystemError.fileTooLarge(path: path, size: 0, limit: 0))
                #expect(error?.description == "readWholeFile(\(path)): file size \(size) exceeds limit \(size - 1)")
            }
        }
    }

    @Test("readWholeFile enforces the limit on files whose size fstat does not report")
    func readProcLimit() throws {
        let status = try readWholeFile(path: "/proc/self/status", limit: 64 * 1024)
        #expect(String(decoding: status, as: UTF8.self).contains("Threads:"))
        #expect(throws: SystemError.fileTooLarge(path: "", size: 0, limit: 0)) {
            try readWholeFile(path: "/proc/self/status", limit: 10)
        }
    }

    @Test("readWholeFile of a missing file throws ENOENT")
    func readMissing() {
        #expect(throws: SystemError.errno(ENOENT, call: "open")) {
            try readWholeFile(path: "/tmp/keyd-test-missing-file", limit: 10)
        }
    }

    @Test("append-only file appends, syncs and reopens at the end")
    func appendOnly() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/audit.log"
            let file = try AppendOnlyFile.open(path: path, mode: 0o600)
            try file.append(Array("one\n".utf8))
            try file.append(Array("two\n".utf8))
            try file.sync()
            try file.close()
            let again = try AppendOnlyFile.open(path: path, mode: 0o600)
            try again.append(Array("three\n".utf8))
            try again.close()
            #expect(try readWholeFile(path: path, limit: 100) == Array("one\ntwo\nthree\n".utf8))
            #expect(fileMode(path)?.permissions == 0o600)
        }
    }

    @Test("append-only open refuses a symlink")
    func appendOnlyRefusesSymlink() throws {
        try withTemporaryDirectory { directory in
            let target = directory + "/target"
            let link = directory + "/audit.log"
            try writeFileAtomically(path: target, bytes: [], mode: 0o600)
            #expect(symlink(target, link) == 0)
            #expect(throws: SystemError.errno(ELOOP, call: "open")) { try AppendOnlyFile.open(path: link, mode: 0o600) }
        }
    }

    @Test("makeDirectory creates once with the exact mode, then leaves it; refuses a file")
    func makeDirectoryCases() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/run"
            #expect(try makeDirectory(path: path, mode: 0o750) == true)
            #expect(fileMode(path)?.type == S_IFDIR)
            #expect(fileMode(path)?.permissions == 0o750)
            #expect(try makeDirectory(path: path, mode: 0o700) == false)
            #expect(fileMode(path)?.permissions == 0o750)
            try fsyncDirectory(path: path)

            let file = directory + "/file"
            try writeFileAtomically(path: file, bytes: [], mode: 0o600)
            #expect(throws: SystemError.refusedExistingFile(call: "mkdir", path: file, found: "")) {
                try makeDirectory(path: file, mode: 0o700)
            }
        }
    }
}

@Suite("DeviceLock")
struct DeviceLockTests {
    @Test("a held lock makes a second one EBUSY at once; releasing frees it; a missing path is ENOENT")
    func exclusive() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/disk.img"
            try writeFileAtomically(path: path, bytes: [1, 2, 3], mode: 0o600)
            let held = try DeviceLock(path: path)
            let isBlockDevice = held.isBlockDevice
            #expect(!isBlockDevice)
            // flock locks belong to the open file description, so a second open in this process conflicts.
            #expect(throws: SystemError.errno(EBUSY, call: "")) { _ = try DeviceLock(path: path) }
            held.release()
            let again = try DeviceLock(path: path)
            again.release()
            #expect(throws: SystemError.errno(ENOENT, call: "")) { _ = try DeviceLock(path: directory + "/missing") }
            #expect(try readWholeFile(path: path, limit: 10) == [1, 2, 3])
        }
    }
}
