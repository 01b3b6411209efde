import AgentdModel
import SandboxKit

/// What each team's running sandboxes hold (count, memory, CPUs), and the
/// admission of a new one against the team's quotas.
///
/// A start is admitted here before the backend starts anything, and the
/// reservation is made in the same step as the check (an actor call with no
/// suspension), so concurrent starts of one team cannot both slip under a
/// quota.  A sandbox holds its share while it runs or is paused; every stop
/// (asked for, idle, unexpected) and every delete releases it.
actor TeamAdmission {
    struct Held: Sendable {
        var team: String
        var memoryMB: Int
        var cpus: Double
    }

    private var held: [String: Held] = [:]

    /// Reserve room for session `session`'s sandbox, or throw the quota it
    /// would exceed (a 429: room frees itself as sandboxes stop).
    func admit(session: String, team: String, limits: ResourceLimits, quotas: TeamQuotas) throws(AgentdError) {
        guard held[session] == nil else { return }
        let mine = Self.share(team: team, limits)
        let used = usage(team)
        if let cap = quotas.runningSandboxes, used.count + 1 > cap {
            throw AgentdError.quota("running_sandboxes", "the team has \(used.count) sandboxes running, its quota is "
                                    + "\(cap): stop one, or retry when one stops")
        }
        if let cap = quotas.memoryMB, used.memoryMB + mine.memoryMB > cap {
            throw AgentdError.quota("memory_mb", "the team's running sandboxes hold \(used.memoryMB) MiB, this one "
                                    + "needs \(mine.memoryMB) MiB more, its quota is \(cap) MiB")
        }
        if let cap = quotas.cpus, used.cpus + mine.cpus > cap + 1e-9 {
            throw AgentdError.quota("cpus", "the team's running sandboxes hold \(Self.format(used.cpus)) CPUs, this "
                                    + "one needs \(Self.format(mine.cpus)) more, its quota is \(Self.format(cap))")
        }
        held[session] = mine
    }

    /// Record a sandbox found running (recovery after a restart): it holds
    /// its share whatever the quotas say now.
    func record(session: String, team: String, limits: ResourceLimits) {
        held[session] = Self.share(team: team, limits)
    }

    func release(session: String) {
        held[session] = nil
    }

    func usage(_ team: String) -> (count: Int, memoryMB: Int, cpus: Double) {
        var count = 0, memory = 0, cpus = 0.0
        for h in held.values where h.team == team {
            count += 1
            memory += h.memoryMB
            cpus += h.cpus
        }
        return (count, memory, cpus)
    }

    static func share(team: String, _ limits: ResourceLimits) -> Held {
        Held(team: team, memoryMB: Int(clamping: (limits.memoryBytes ?? 0) >> 20),
             cpus: Double(limits.cpuMillis ?? 0) / 1000)
    }

    static func format(_ x: Double) -> String {
        x == x.rounded() ? String(Int(x)) : String((x * 100).rounded() / 100)
    }
}
