import Synchronization

/// Between the API and the worker, in memory: a message queued a run (wake
/// the worker now rather than at its next poll), a user cancelled a run
/// (stop it now; the store's flag covers a run that no task holds).
public final class RunControl: Sendable {
    private struct State {
        var waiters: [CheckedContinuation<Void, Never>] = []
        var pending = false
        var cancels: [String: @Sendable () -> Void] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// A run was queued.
    public func notify() {
        let ws = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            let w = s.waiters
            s.waiters = []
            if w.isEmpty { s.pending = true }
            return w
        }
        ws.forEach { $0.resume() }
    }

    /// Wait for `notify` (or return at once if one came since the last wait),
    /// at most `timeout`.
    public func wait(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now = self.state.withLock { s -> Bool in
                        if s.pending {
                            s.pending = false
                            return true
                        }
                        s.waiters.append(c)
                        return false
                    }
                    if now { c.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
            // The sleeper ends on cancel; the waiter ends on the next notify.
            self.notifyIfWaiting()
        }
    }

    private func notifyIfWaiting() {
        let ws = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            let w = s.waiters
            s.waiters = []
            return w
        }
        ws.forEach { $0.resume() }
    }

    /// The worker holds run `id`; `cancel` stops it.
    public func register(run id: String, cancel: @escaping @Sendable () -> Void) {
        state.withLock { $0.cancels[id] = cancel }
    }

    public func unregister(run id: String) {
        _ = state.withLock { $0.cancels.removeValue(forKey: id) }
    }

    /// Stop run `id` if this process is running it.
    public func cancel(run id: String) {
        let c = state.withLock { $0.cancels[id] }
        c?()
    }
}
