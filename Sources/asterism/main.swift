// asterism entry point: the commands live in AsterismCLI so tests can run and render them in process.
import AsterismCLI

Asterism.main()
