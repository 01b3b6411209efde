import ArgumentParser
import NIOCore
import NIOPosix
import CRuntimeHook

@main
struct Agentd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentd",
        abstract: "Run AI agents for several teams, each session in its own Linux sandbox.",
        version: AgentdVersion.string,
        subcommands: [Serve.self, SandboxCommand.self, ImageCommand.self, AdminKeyCommand.self, OpenAPICommand.self])

    /// Swift concurrency runs on NIO's event loop threads (the same threads
    /// as the HTTP server's I/O) instead of a pool of its own: a request no
    /// longer hops between two sets of threads on its way through, which
    /// was a quarter of a cheap request's cost (context switches).  Installed
    /// before anything is enqueued; nothing in agentd blocks an event loop
    /// for long (sandbox spawns and file I/O go to NIO's thread pool).
    static func main() async {
        ConcurrencyExecutor.onEventLoops = ConcurrencyExecutor.install()
        await main(nil)
    }
}

/// Whether `Agentd.main` could put Swift concurrency on NIO's event loops
/// (reported at start).
enum ConcurrencyExecutor {
    nonisolated(unsafe) static var onEventLoops = false

    private typealias EnqueueHook = @convention(thin) (UnownedJob, @convention(thin) (UnownedJob) -> Void) -> Void

    /// NIO's own installer finds the runtime's hook with dlsym, which a
    /// statically linked runtime hides; then the hook is set here the same
    /// way, through its address (CRuntimeHook).  Each job goes to the event
    /// loop it was enqueued from (`any()` is sticky), so a request stays on
    /// the thread that read it.
    static func install() -> Bool {
        if NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() { return true }
        let slot = agentd_swift_enqueue_global_hook()
        guard let slot, slot.pointee == nil else { return false }
        let hook: EnqueueHook = { job, _ in
            MultiThreadedEventLoopGroup.singleton.any().executor.enqueue(ExecutorJob(job))
        }
        slot.pointee = unsafeBitCast(hook, to: UnsafeMutableRawPointer.self)
        return true
    }
}

enum AgentdVersion {
    static let string = "0.1.0"
}
