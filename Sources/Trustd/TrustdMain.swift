/// trustd's entry point, kept in the library so tests can run the daemon in process.
public enum TrustdMain {
    /// Runs trustd with the process's command line.
    public static func run() async {
        print("trustd: not yet runnable; see issue 15")
    }
}
