import ArgumentParser
import KeydCore

/// `keydctl policy`.
public struct Policy: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Show or replace keyd's signed measurement policy, or pin the operator key that signs it.",
        discussion: """
            keyd releases keys only under a measurement policy signed by the pinned operator key \
            (Ed25519 or ECDSA P-256). A new policy must carry a higher version than the one in \
            force; keyd checks the signature and the version and audits its decision.
            """,
        subcommands: [PolicyShow.self, PolicySet.self, PolicyPinOperatorKey.self]
    )

    @OptionGroup var socket: SocketOptions

    public init() {}
}

/// `keydctl policy show`.
public struct PolicyShow: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the pinned operator key and the policy in force (version, SHA-256, canonical JSON).",
        discussion: """
            The SHA-256 is over the policy's JSON bytes as signed, the digest keydctl status shows. \
            The canonical JSON is the policy as keyd reads it: sorted members, lowercase hex. \
            Without a key or a policy, that part says none; the exit status is 0.
            """
    )

    @OptionGroup var socket: SocketOptions
    @Flag(help: "Print one JSON object (camelCase keys, hashes in hex, the policy as a nested object).")
    var json = false

    public init() {}

    public func run() throws {
        try reporting {
            try AdminActions.policyShow(try socket.connect(), json: json, write: printLine)
        }
    }
}

/// `keydctl policy set`.
public struct PolicySet: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Replace the policy in force with a signed policy of a higher version.",
        discussion: """
            The file is the signed policy: {"policy":"<base64 of the policy JSON>","signature":"<base64>"} \
            (standard base64 with padding; file at most \(PolicyFiles.maximumSignedPolicyLength) bytes, \
            policy JSON at most \(MeasurementPolicy.maximumLength)), the signature by the operator key \
            over "asterism-policy-v1\\n" followed by the policy bytes. keydctl checks that the file and \
            the policy in it parse before sending anything; keyd checks the signature and the version. \
            keyd takes a policy only while it holds the KEK.
            """
    )

    @OptionGroup var socket: SocketOptions
    @Argument(help: ArgumentHelp("The signed policy file; - reads standard input.", valueName: "signed-policy-file"))
    var file: String

    public init() {}

    public func run() throws {
        try reporting {
            // Check the file before connecting: a bad one never reaches keyd.
            let checked = try PolicyFiles.readSignedPolicy(path: file)
            try AdminActions.setPolicy(try socket.connect(), checked, write: printLine)
        }
    }
}

/// `keydctl policy pin-operator-key`.
public struct PolicyPinOperatorKey: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "pin-operator-key",
        abstract: "Pin the operator's public key, before keyd holds a KEK; a pinned key is never replaced.",
        discussion: """
            For a cluster whose KEK arrives by kek import rather than init.accept. The file is a PEM \
            PUBLIC KEY (Ed25519 or ECDSA P-256, as openssl pkey -pubout writes it) or keyd's wire \
            form (algorithm byte 1 or 2, then the key); at most \(PolicyFiles.maximumKeyFileLength) \
            bytes. keydctl prints the SHA-256 of the key's wire form, as keyd's audit records name it.
            """
    )

    @OptionGroup var socket: SocketOptions
    @Argument(help: ArgumentHelp("The public key file; - reads standard input.", valueName: "key-file"))
    var file: String

    public init() {}

    public func run() throws {
        try reporting {
            let key = try PolicyFiles.readOperatorKey(path: file)
            try AdminActions.pinOperatorKey(try socket.connect(), key, write: printLine)
        }
    }
}
