import Glibc
import KeydPlatform
import Testing

@Suite("StateDirectory")
struct StateDirectoryTests {
    /// A state directory made in a fresh temporary directory.
    static func withState<R>(_ body: (StateDirectory, String) throws -> R) throws -> R {
        try withTemporaryDirectory { directory in
            let path = directory + "/state"
            return try body(try StateDirectory(path: path, creatingWith: 0o700), path)
        }
    }

    @Test("opening creates the directory once with the exact mode, then leaves it")
    func createsOnce() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/state"
            _ = try StateDirectory(path: path, creatingWith: 0o750)
            #expect(fileMode(path)?.type == S_IFDIR)
            #expect(fileMode(path)?.permissions == 0o750)
            _ = try StateDirectory(path: path, creatingWith: 0o700)
            #expect(fileMode(path)?.permissions == 0o750)
        }
    }

    @Test("a symlink or a file at the state directory's path is refused")
    func refusesLinkAndFile() throws {
        try withTemporaryDirectory { directory in
            #expect(mkdir(directory + "/real", 0o700) == 0)
            #expect(Glibc.symlink(directory + "/real", directory + "/link") == 0)
            // O_DIRECTORY | O_NOFOLLOW on a symlink fails with ENOTDIR: the link is never followed.
            #expect(throws: SystemError.errno(ENOTDIR, call: "open")) {
                _ = try StateDirectory(path: directory + "/link", creatingWith: 0o700)
            }
            let file = try StateDirectory(path: directory + "/real", creatingWith: 0o700)
            try file.writeAtomically("plain", bytes: [1], mode: 0o600)
            #expect(throws: SystemError.errno(ENOTDIR, call: "open")) {
                _ = try StateDirectory(path: directory + "/real/plain", creatingWith: 0o700)
            }
        }
    }

    @Test("atomic write: round trip, exact mode despite the umask, no temporary left")
    func atomicWrite() throws {
        try Self.withState { state, path in
            try state.writeAtomically("kek.sealed", bytes: Array("first".utf8), mode: 0o600)
            #expect(try state.read("kek.sealed", limit: 100) == Array("first".utf8))
            #expect(fileMode(path + "/kek.sealed")?.permissions == 0o600)

            // 0o664 survives a typical 022 umask: the mode is set explicitly.
            try state.writeAtomically("kek.sealed", bytes: Array("second, longer".utf8), mode: 0o664)
            #expect(try state.read("kek.sealed", limit: 100) == Array("second, longer".utf8))
            #expect(fileMode(path + "/kek.sealed")?.permissions == 0o664)
            #expect(fileMode(path + "/kek.sealed")?.type == S_IFREG)

            try state.writeAtomically("kek.sealed", bytes: [], mode: 0o600)
            #expect(try state.read("kek.sealed", limit: 0) == [])
            #expect(try state.entries() == ["kek.sealed"])
        }
    }

    @Test("read refuses a file over the limit", arguments: [0, 1, 4095, 4096, 4097, 100_000])
    func readLimit(size: Int) throws {
        try Self.withState { state, path in
            let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
            try state.writeAtomically("blob", bytes: bytes, mode: 0o600)
            #expect(try state.read("blob", limit: size) == bytes)
            #expect(try state.read("blob", limit: size + 1) == bytes)
            if size > 0 {
                let error = #expect(throws: SystemError.self) { try state.read("blob", limit: size - 1) }
                #expect(error?.code == .fileTooLarge)
                #expect(
                    error?.description == "readWholeFile(\(path)/blob): file size \(size) exceeds limit \(size - 1)"
                )
            }
        }
    }

    @Test("a missing file reads as nil; remove says whether there was one")
    func missing() throws {
        try Self.withState { state, _ in
            #expect(try state.read("absent", limit: 10) == nil)
            #expect(try !state.contains("absent"))
            #expect(try !state.remove("absent"))
            try state.writeAtomically("present", bytes: [7], mode: 0o600)
            #expect(try state.contains("present"))
            #expect(try state.remove("present"))
            #expect(try state.read("present", limit: 10) == nil)
        }
    }

    @Test("a symlink, a FIFO or a directory where a file is expected is refused at once, and nothing is followed")
    func refusesOtherEntries() throws {
        try Self.withState { state, path in
            let outside = path + "/../outside"
            try StateDirectory(path: path + "/..", creatingWith: 0o700).writeAtomically(
                "outside",
                bytes: Array("keep".utf8),
                mode: 0o600
            )
            #expect(Glibc.symlink(outside, path + "/audit.log") == 0)
            #expect(mkfifo(path + "/kek.sealed", 0o600) == 0)
            #expect(mkdir(path + "/dir", 0o700) == 0)
            for name in ["audit.log", "kek.sealed", "dir"] {
                let error = #expect(throws: SystemError.self) { try state.read(name, limit: 100) }
                #expect(error?.code == .unexpectedFileType, "\(name)")
            }
            let error = #expect(throws: SystemError.self) { try state.openLog("audit.log", mode: 0o600) }
            #expect(error?.code == .unexpectedFileType)
            #expect(error?.description.contains("symbolic link") == true, "\(String(describing: error))")
            var info = stat()
            #expect(stat(outside, &info) == 0 && info.st_size == 4)
        }
    }

    @Test("names that are not one path component are refused", arguments: ["", ".", "..", "a/b", "../x", "a\u{0}b"])
    func refusesNames(name: String) throws {
        try Self.withState { state, _ in
            let error = #expect(throws: SystemError.self) { try state.read(name, limit: 10) }
            #expect(error?.code == .invalidFileName)
            #expect(throws: SystemError.self) { try state.writeAtomically(name, bytes: [], mode: 0o600) }
            #expect(throws: SystemError.self) { try state.remove(name) }
            #expect(throws: SystemError.self) { _ = try state.subdirectory(name, creatingWith: 0o700) }
        }
    }

    @Test(
        "subdirectories: created with the mode, reopened, a symlinked one refused; the pinned path reaches the same file"
    )
    func subdirectories() throws {
        try Self.withState { state, path in
            #expect(try state.existingSubdirectory("headers") == nil)
            let headers = try state.subdirectory("headers", creatingWith: 0o700)
            #expect(fileMode(path + "/headers")?.permissions == 0o700)
            try headers.writeAtomically("x.device", bytes: Array("/dev/vdb".utf8), mode: 0o600)
            #expect(try state.existingSubdirectory("headers")?.read("x.device", limit: 100) == Array("/dev/vdb".utf8))
            let bytes = try headers.withPinnedPath("x.device") { pinned in
                #expect(pinned.hasPrefix("/proc/self/fd/"))
                return try readWholeFile(path: pinned, limit: 100)
            }
            #expect(bytes == Array("/dev/vdb".utf8))
            try headers.rename("x.device", to: "y.device")
            #expect(try headers.entries() == ["y.device"])

            #expect(Glibc.symlink("/tmp", path + "/linked") == 0)
            let error = #expect(throws: SystemError.self) { _ = try state.subdirectory("linked", creatingWith: 0o700) }
            #expect(error?.code == .unexpectedFileType)
        }
    }

    @Test("the log appends, reads back from the start, is cut through its descriptor, and reopens at the end")
    func log() throws {
        try Self.withState { state, path in
            let file = try state.openLog("audit.log", mode: 0o600)
            try file.append(Array("one\n".utf8))
            try file.append(Array("two\nthr".utf8))
            try file.sync()
            #expect(try file.readAll(limit: 100) == Array("one\ntwo\nthr".utf8))
            try file.truncate(to: 8)
            try file.append(Array("three\n".utf8))
            #expect(try file.readAll(limit: 100) == Array("one\ntwo\nthree\n".utf8))
            let again = try state.openLog("audit.log", mode: 0o600)
            try again.append(Array("four\n".utf8))
            #expect(try state.read("audit.log", limit: 100) == Array("one\ntwo\nthree\nfour\n".utf8))
            #expect(fileMode(path + "/audit.log")?.permissions == 0o600)
        }
    }
}

@Suite("Files")
struct FilesTests {
    @Test("readWholeFile enforces the limit on files whose size fstat does not report")
    func readProcLimit() throws {
        let status = try readWholeFile(path: "/proc/self/status", limit: 64 * 1024)
        #expect(String(decoding: status, as: UTF8.self).contains("Threads:"))
        #expect(throws: SystemError.fileTooLarge(path: "", size: 0, limit: 0)) {
            try readWholeFile(path: "/proc/self/status", limit: 10)
        }
    }

    @Test("readWholeFile of a missing file throws ENOENT; readWholeFileIfPresent says nil")
    func readMissing() throws {
        #expect(throws: SystemError.errno(ENOENT, call: "open")) {
            try readWholeFile(path: "/tmp/keyd-test-missing-file", limit: 10)
        }
        #expect(try readWholeFileIfPresent(path: "/tmp/keyd-test-missing-file", limit: 10) == nil)
    }
}

@Suite("DiskDevice and DeviceLock")
struct DiskDeviceTests {
    @Test("a held lock makes a second one EBUSY at once; releasing frees it; the descriptor stays open")
    func exclusive() throws {
        try withTemporaryDirectory { directory in
            let path = directory + "/disk.img"
            try StateDirectory(path: directory, creatingWith: 0o700).writeAtomically(
                "disk.img",
                bytes: [1, 2, 3],
                mode: 0o600
            )
            let device = try DiskDevice(path: path)
            #expect(device.kind == .imageFile && device.path == path)
            let held = try DeviceLock(device)
            // flock locks belong to the open file description, so a second open in this process conflicts.
            let other = try DiskDevice(path: path)
            #expect(throws: SystemError.errno(EBUSY, call: "")) { _ = try DeviceLock(other) }
            // A shared lock conflicts with the exclusive one too, and two shared locks do not.
            #expect(throws: SystemError.errno(EBUSY, call: "")) { _ = try DeviceLock(other, exclusive: false) }
            held.release()
            let shared = try DeviceLock(device, exclusive: false)
            let alsoShared = try DeviceLock(other, exclusive: false)
            shared.release()
            alsoShared.release()
            let again = try DeviceLock(other)
            again.release()
            #expect(try readWholeFile(path: device.pinnedPath, limit: 10) == [1, 2, 3])
            #expect(try readWholeFile(path: path, limit: 10) == [1, 2, 3])
        }
    }

    @Test("the pinned path reopens the opened file even after the name is swapped")
    func pinned() throws {
        try withTemporaryDirectory { directory in
            let state = try StateDirectory(path: directory, creatingWith: 0o700)
            try state.writeAtomically("disk.img", bytes: [1], mode: 0o600)
            let device = try DiskDevice(path: directory + "/disk.img")
            #expect(device.pinnedPath.hasPrefix("/proc/self/fd/"))
            try state.writeAtomically("disk.img", bytes: [2], mode: 0o600)
            #expect(try readWholeFile(path: device.pinnedPath, limit: 10) == [1])
            #expect(try state.holds(device.identity) == false, "the renamed-over file is no entry any more")
            #expect(try state.holds(try DiskDevice(path: directory + "/disk.img").identity))
        }
    }

    @Test("a symlink to an image is followed; what the open finds at its end decides")
    func symlinkFollowed() throws {
        try withTemporaryDirectory { directory in
            try StateDirectory(path: directory, creatingWith: 0o700).writeAtomically(
                "disk.img",
                bytes: [7],
                mode: 0o600
            )
            #expect(Glibc.symlink(directory + "/disk.img", directory + "/by-id") == 0)
            #expect(try DiskDevice(path: directory + "/by-id").kind == .imageFile)
            #expect(Glibc.symlink(directory + "/missing", directory + "/dangling") == 0)
            #expect(throws: SystemError.errno(ENOENT, call: "")) { _ = try DiskDevice(path: directory + "/dangling") }
            #expect(Glibc.symlink(directory + "/loop", directory + "/loop") == 0)
            #expect(throws: SystemError.errno(ELOOP, call: "")) { _ = try DiskDevice(path: directory + "/loop") }
        }
    }

    @Test("a FIFO, a directory, a socket and a character device are refused at once, unopened")
    func refusedTypes() throws {
        try withTemporaryDirectory { directory in
            let fifo = directory + "/fifo"
            #expect(mkfifo(fifo, 0o666) == 0)
            let listener = try UnixListener.bind(path: directory + "/socket", mode: 0o600)
            defer { try? listener.close(unlinkingPath: true) }
            for (path, found) in [
                (fifo, "FIFO"), (directory, "directory"), (directory + "/socket", "socket"),
                ("/dev/null", "character device"),
            ] {
                let error = #expect(throws: SystemError.unexpectedFileType(call: "", path: "", found: "", expected: ""))
                {
                    _ = try DiskDevice(path: path)
                }
                #expect(error?.description.contains(found) == true, "\(error.map { "\($0)" } ?? "")")
            }
            #expect(throws: SystemError.errno(ENOENT, call: "")) { _ = try DiskDevice(path: directory + "/missing") }
            #expect(throws: SystemError.errno(ENOTDIR, call: "")) { _ = try DiskDevice(path: fifo + "/x") }
        }
    }
}
