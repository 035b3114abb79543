// keydctl entry point: the commands live in KeydctlCLI so tests can render and parse them in process.
import KeydctlCLI

Keydctl.main()
