import ArgumentParser
import KeydClient
import KeydProtocol

/// `keydctl disk`.
public struct Disk: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Inspect, format, bind, open, close and reset the node's LUKS2 state disk through keyd.",
        discussion: """
            keyd performs every disk operation and audits it; keydctl only asks. No key is \
            shown or accepted here: the first-boot passphrase stays in keyd's memory and the \
            bound key is derived from the imported KEK.
            """,
        subcommands: [DiskInspect.self, DiskFormat.self, DiskBind.self, DiskOpen.self, DiskClose.self, DiskReset.self]
    )

    @OptionGroup var socket: SocketOptions

    /// Disk operations wait this long for keyd: Constellation's argon2id keyslots take seconds each.
    static let timeoutMilliseconds = 120_000

    public init() {}
}

/// `--device PATH`, on every disk command.
public struct DeviceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Absolute path of the state disk (block device or image file).", valueName: "path"))
    public var device: String

    public init() {}

    public func validate() throws {
        guard device.hasPrefix("/"), device.utf8.count <= Limits.maxDevicePath else {
            throw ValidationError("--device must be an absolute path of at most \(Limits.maxDevicePath) bytes")
        }
    }
}

/// `keydctl disk inspect`.
public struct DiskInspect: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show whether the device holds LUKS2, its UUID, profile, token state and keyslots.",
        discussion: "A header that fits no known profile is refused by keyd (exit status 1)."
    )

    @OptionGroup var socket: SocketOptions
    @OptionGroup var device: DeviceOptions
    @Flag(help: "Print keyd's JSON report unchanged.")
    var json = false

    public init() {}

    public func run() throws {
        try reporting {
            let answer = try socket.connect().inspectDisk(device: device.device)
            let report = String(decoding: answer.report, as: UTF8.self)
            printLine(json ? report : Report.printable(report))
        }
    }
}

/// `keydctl disk format`.
public struct DiskFormat: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "format",
        abstract: "First-boot format of a device without LUKS2, with a random passphrase kept in keyd's memory.",
        discussion: """
            keyd refuses a device that already holds LUKS2, and formats a device without it only \
            when its configuration says disk-allow-initialize = true.
            """
    )

    @OptionGroup var socket: SocketOptions
    @OptionGroup var device: DeviceOptions

    public init() {}

    public func run() throws {
        try reporting {
            try socket.connect(timeoutMilliseconds: Disk.timeoutMilliseconds).formatDisk(device: device.device)
            printLine("disk formatted: \(device.device) (first-boot passphrase held in keyd's memory)")
        }
    }
}

/// `keydctl disk bind`.
public struct DiskBind: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bind",
        abstract: "Re-key the disk from its first-boot passphrase to the key derived from the imported KEK.",
        discussion: "The derived key is HKDF-SHA-256(master secret, salt, \"key-\" + lowercase UUID, 32 bytes)."
    )

    @OptionGroup var socket: SocketOptions
    @OptionGroup var device: DeviceOptions

    public init() {}

    public func run() throws {
        try reporting {
            try socket.connect(timeoutMilliseconds: Disk.timeoutMilliseconds).bindDisk(device: device.device)
            printLine("disk bound: \(device.device) opens with the KEK-derived key")
        }
    }
}

/// `keydctl disk open`.
public struct DiskOpen: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "open",
        abstract: "Verify the KEK-derived key and activate /dev/mapper/<name> where a device mapper exists.",
        discussion: "Without a kernel device mapper keyd only verifies the key and says activation is unavailable."
    )

    @OptionGroup var socket: SocketOptions
    @OptionGroup var device: DeviceOptions
    @Option(help: ArgumentHelp("Mapping name (A-Z a-z 0-9 . _ -).", valueName: "name"))
    var name: String = "state"

    public init() {}

    public func run() throws {
        try reporting {
            let answer = try socket.connect(timeoutMilliseconds: Disk.timeoutMilliseconds).openDisk(
                device: device.device,
                mappingName: name
            )
            printLine(
                answer.activated
                    ? "disk opened: /dev/mapper/\(name)"
                    : "disk key verified: activation unavailable here (no device mapper)"
            )
        }
    }
}

/// `keydctl disk close`.
public struct DiskClose: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "close",
        abstract: "Remove the mapping /dev/mapper/<name>.",
        discussion:
            "Without a kernel device mapper nothing can be mapped: keyd answers diskActivationUnavailable (exit status 1)."
    )

    @OptionGroup var socket: SocketOptions
    @Option(help: ArgumentHelp("Mapping name (A-Z a-z 0-9 . _ -).", valueName: "name"))
    var name: String = "state"

    public init() {}

    public func run() throws {
        try reporting {
            try socket.connect().closeDisk(mappingName: name)
            printLine("disk closed: /dev/mapper/\(name) removed")
        }
    }
}

/// `keydctl disk reset`.
public struct DiskReset: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Mark the state disk for re-initialization; the next disk format starts it afresh.",
        discussion: """
            keyd backs up the header, then sets the state-disk token to not initialized. Data on \
            the disk stays readable with its current key until disk format replaces the header.
            """
    )

    @OptionGroup var socket: SocketOptions
    @OptionGroup var device: DeviceOptions

    public init() {}

    public func run() throws {
        try reporting {
            try socket.connect().resetDisk(device: device.device)
            printLine("disk marked for reset: \(device.device) (the next disk format re-initializes it)")
        }
    }
}
