import Synchronization

/// The one owner of "in use" for session sandboxes.
///
/// Everything that uses a session's sandbox holds a lease from here while it
/// does: an API exec (until its process ends), a file transfer (until its
/// stream ends), a run from its claim to its end (model steps, tools and a
/// harness command alike).  The idle stopper stops only a sandbox that
/// nobody holds and nobody used for the idle time, and a stop and a new
/// lease never interleave: a lease asked for while the idle stop runs waits
/// for it (the holder then starts the sandbox again).  An event stream does
/// not hold a lease: reading the transcript does not use the sandbox.
public actor SandboxLeases {
    private struct Use {
        var holders = 0
        var lastUsed = ContinuousClock.now
        var stopping: Task<Void, Never>?
    }

    private var uses: [String: Use] = [:]

    public init() {}

    /// A lease on session `id`'s sandbox; release it when done.
    public func acquire(_ id: String) async -> SandboxLease {
        // Wait out a stop in progress.  Once its task is done the stop is
        // over, even if `stopIfIdle` has not yet cleared it (waiting on a
        // finished task does not yield: looping on it would spin here).
        while let stop = uses[id]?.stopping {
            await stop.value
            if uses[id]?.stopping == stop { break }
        }
        uses[id, default: Use()].holders += 1
        uses[id]?.lastUsed = .now
        return SandboxLease(sessionID: id, leases: self)
    }

    fileprivate func release(_ id: String) {
        guard var use = uses[id] else { return }
        use.holders = max(0, use.holders - 1)
        use.lastUsed = .now
        uses[id] = use
    }

    /// Count a use that is over already (a start asked for by a client).
    public func touch(_ id: String) {
        uses[id, default: Use()].lastUsed = .now
    }

    /// Run `stop` if nobody holds the sandbox and nobody used it for
    /// `idleFor`; leases asked for meanwhile wait until it is done.  A
    /// sandbox this process has not seen used yet (found running at start)
    /// gets a whole idle period from now.  Returns whether it ran `stop`.
    public func stopIfIdle(_ id: String, idleFor: Duration, stop: @escaping @Sendable () async -> Void) async -> Bool {
        guard let use = uses[id] else {
            uses[id] = Use()
            return false
        }
        guard use.holders == 0, use.stopping == nil, ContinuousClock.now - use.lastUsed > idleFor else { return false }
        let task = Task { await stop() }
        uses[id]?.stopping = task
        await task.value
        uses[id]?.stopping = nil
        uses[id]?.lastUsed = .now
        return true
    }

    public func holders(_ id: String) -> Int { uses[id]?.holders ?? 0 }

    /// When the sandbox was last used; nil if never seen by this process.
    public func lastUse(_ id: String) -> ContinuousClock.Instant? { uses[id]?.lastUsed }

    /// The session is gone.
    public func forget(_ id: String) {
        guard uses[id]?.holders ?? 0 == 0 else { return }
        uses[id] = nil
    }
}

/// One holder's claim on a session's sandbox, released once (explicitly,
/// or when the lease is dropped, as a safety net).
public final class SandboxLease: Sendable {
    public let sessionID: String
    private let leases: SandboxLeases
    private let released = Atomic<Bool>(false)

    fileprivate init(sessionID: String, leases: SandboxLeases) {
        self.sessionID = sessionID
        self.leases = leases
    }

    public func release() async {
        guard !released.exchange(true, ordering: .relaxed) else { return }
        await leases.release(sessionID)
    }

    deinit {
        guard !released.load(ordering: .relaxed) else { return }
        let (leases, id) = (leases, sessionID)
        Task { await leases.release(id) }
    }
}
