import Trustd

// The daemon's entry point; the command line and service lifecycle arrive with TrustdDaemon.
await TrustdMain.run()
