import AgentdModel
import Metrics
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The free space agentd keeps on its state directory's file system for
/// its own database.  Below the reserve, what would use a lot of space is
/// refused with a 507 (sandbox starts, uploads); the database's own small
/// writes (messages, events) go on in the reserve.  Nothing is sticky: the
/// next request after space returns is served.
public final class DiskReserve: Sendable {
    let path: String
    let reserve: UInt64

    public init(path: String, reserve: UInt64) {
        self.path = path
        self.reserve = reserve
    }

    /// Bytes an unprivileged writer may still use (the file system's own
    /// root reserve is not ours to count on).
    public func freeBytes() -> UInt64? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        let (free, overflow) = UInt64(s.f_bavail).multipliedReportingOverflow(by: UInt64(s.f_frsize))
        return overflow ? .max : free
    }

    /// Record the free space (the `agentd_state_free_bytes` gauge).
    @discardableResult
    public func observe() -> UInt64? {
        let free = freeBytes()
        if let free { Gauge(label: "agentd_state_free_bytes").record(Double(free)) }
        return free
    }

    /// Throw a 507 saying so when the free space is below the reserve.
    public func check(_ what: String) throws(AgentdError) {
        guard reserve > 0, let free = observe() else { return }
        guard free < reserve else { return }
        Counter(label: "agentd_low_disk_refusals_total", dimensions: [("what", what)]).increment()
        throw AgentdError.insufficientStorage(
            "\(what) refused: the state directory's file system has \(free >> 20) MiB free, below the "
            + "\(reserve >> 20) MiB agentd keeps for its database; free space on it (nothing needs a restart)")
    }
}
