// Test-only fault injection for the state-disk re-key. Everything here is under `#if DEBUG`, so
// release builds (`swift build -c release`) contain neither the hook nor the environment read.
#if DEBUG
#if canImport(Glibc)
import Glibc
#endif
import KeydCore

/// A fault armed from `KEYD_FAULT_INJECT=rekey:<step>:<action>` at start, for crash-safety tests.
///
/// `<step>` is a ``StateDiskRekey/Step`` name other than `done`; `<action>` is `fail` (the step
/// throws after doing its work, once, so the restore path runs) or `kill` (keyd sends itself
/// SIGKILL right after the step).
struct FaultInjection: Equatable {
    /// The environment variable that arms the hook.
    static let variable = "KEYD_FAULT_INJECT"

    /// What happens after the step.
    enum Action: String { case fail, kill }

    /// The re-key step after which the fault fires.
    let step: StateDiskRekey.Step
    /// The fault.
    let action: Action

    /// Parses `rekey:<step>:<action>`; nil when `text` is malformed.
    init?(parsing text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, parts[0] == "rekey",
            let step = StateDiskRekey.Step.allCases.first(where: { $0 != .done && $0.description == parts[1] }),
            let action = Action(rawValue: parts[2])
        else { return nil }
        self.step = step
        self.action = action
    }

    /// The fault armed by the environment, read once; exits (64) on a malformed value so a typo never
    /// silently disarms a test.
    static func fromEnvironment() -> FaultInjection? {
        guard let raw = getenv(variable) else { return nil }
        let text = String(cString: raw)
        guard let fault = FaultInjection(parsing: text) else {
            Log.error(
                "Malformed fault injection",
                ["variable": variable, "value": text, "expected": "rekey:<step>:<fail|kill>"]
            )
            exit(64)
        }
        Log.warning(
            "Fault injection armed (debug build only)",
            ["variable": variable, "rekey.step": fault.step.description, "action": fault.action.rawValue]
        )
        return fault
    }
}

extension KeydError {
    /// The failure a `fail` fault injects after `step`.
    static func injectedFault(after step: StateDiskRekey.Step) -> KeydError {
        KeydError(description: "injected fault after re-key step \(step)", exitCode: 1)
    }
}
#endif
