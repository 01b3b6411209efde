import SandboxKit
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where a new sandbox's first process goes: a cgroup v2 directory for
/// clone3(CLONE_INTO_CGROUP), or cgroup v1 `cgroup.procs` files the child
/// writes itself into.  The caller closes the descriptors after the spawn.
struct CgroupPlacement {
    var cgroupFD: Int32 = -1
    var attachFDs: [Int32] = []
    /// v1 cannot create the child directly in its cgroups, so its cgroup
    /// namespace is made after it has moved.
    var unshareNamespaceAfterAttach = false

    func close() {
        Posix.close(cgroupFD)
        attachFDs.forEach(Posix.close)
    }
}

/// One cgroup implementation per host layout, chosen once at start
/// (habit 6: swappable backends behind one protocol).
protocol CgroupDriver: Sendable {
    /// "cgroup v2", "cgroup v1 (hybrid host)", "none".
    var name: String { get }
    /// Limits this driver cannot enforce on this host, for the daemon's report.
    var notes: [String] { get }
    func create(_ name: String, limits: ResourceLimits) throws(SandboxError)
    func placement(_ name: String) throws(SandboxError) -> CgroupPlacement
    func freeze(_ name: String) throws(SandboxError)
    func thaw(_ name: String) throws(SandboxError)
    func isFrozen(_ name: String) -> Bool
    /// SIGKILL every process in the cgroup.
    func kill(_ name: String)
    func usage(_ name: String) -> ResourceUsage
    /// Remove the cgroup, killing what is left in it.
    func remove(_ name: String) throws(SandboxError)
    /// Sandbox cgroups that exist now (for recovery after a crash).
    func existing() -> [String]
    /// Remove the parent directory if nothing is left in it.
    func removeParentIfEmpty()
    /// Make empty cgroups ahead of need, off the start path (blocking).
    func prepareSpares(count: Int)
    /// A cgroup for a warm shell, named `name` (a `warmPrefix` name, never a
    /// sandbox id), and where the shell's process goes.
    func prepareWarm(_ name: String) throws(SandboxError) -> CgroupPlacement
    /// Hand a warm shell's cgroup to sandbox `id`, with its limits; returns
    /// the cgroup's name from now on.  On failure it keeps `name`.
    func claimWarm(_ name: String, as id: String, limits: ResourceLimits) throws(SandboxError) -> String
}

/// Cgroups of warm shells (and, on cgroup v2, where they cannot be renamed,
/// of the sandboxes that claimed them) are named this prefix plus a random
/// suffix: a leading dot is never a sandbox id.
let warmCgroupPrefix = ".sandbox-"

func isSandboxCgroupName(_ name: String) -> Bool {
    SandboxID.isValid(name) || (name.hasPrefix(warmCgroupPrefix) && name.count > warmCgroupPrefix.count)
}

extension CgroupDriver {
    func prepareSpares(count: Int) {}
}

/// The lines of /proc/self/mountinfo that describe cgroup file systems.
struct CgroupMounts {
    var v2: String?
    /// controller name -> mount point, for v1 hierarchies.
    var v1: [String: String] = [:]

    static func read() -> CgroupMounts {
        var result = CgroupMounts()
        guard let text = try? Posix.readFile("/proc/self/mountinfo") else { return result }
        for line in text.split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1)
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 3 else { continue }
            let mountPoint = unescapeMountinfo(String(left[4]))
            switch right[0] {
            case "cgroup2":
                if result.v2 == nil { result.v2 = mountPoint }
            case "cgroup":
                for opt in right[2].split(separator: ",") {
                    let o = String(opt)
                    if ["memory", "pids", "cpu", "cpuacct", "freezer", "blkio"].contains(o), result.v1[o] == nil {
                        result.v1[o] = mountPoint
                    }
                }
            default:
                continue
            }
        }
        return result
    }

    static func unescapeMountinfo(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "\\"), bytes.count >= 3,
               let v = UInt8(String(decoding: bytes.prefix(3), as: UTF8.self), radix: 8) {
                out.append(v)
                bytes = bytes.dropFirst(3)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

enum CgroupDriverChoice: String, Sendable {
    case auto, v2, v1, none
}

enum CgroupDetection {
    /// The parent used when none is configured ("auto") and agentd was not
    /// given a delegated subtree: a cgroup of its own under the root.
    static let defaultParent = "agentd"

    /// Pick the driver: cgroup v2 when its controllers are usable, else the
    /// v1 hierarchies of a hybrid host, else none (no limits, reported).
    /// `parent` "auto": on v2, the delegated subtree systemd gave this
    /// process if it did (see `delegatedParent`), else `defaultParent`.
    static func driver(choice: CgroupDriverChoice, parent: String, selfCgroup: String? = ownV2Path(),
                       instance: String = "test") throws(SandboxError) -> any CgroupDriver {
        let mounts = CgroupMounts.read()
        func v2() throws(SandboxError) -> CgroupV2Driver? {
            guard let root = mounts.v2 else { return nil }
            let controllers = (try? Posix.readFile(root + "/cgroup.controllers")) ?? ""
            let set = Set(controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
            guard set.contains("memory"), set.contains("pids") else { return nil }
            var resolved = parent
            var delegated = false
            if parent == "auto" {
                if let d = selfCgroup.flatMap(delegatedParent) {
                    resolved = d
                    delegated = true
                } else {
                    resolved = defaultParent
                }
            }
            return try CgroupV2Driver(mount: root, parent: resolved, available: set, delegated: delegated)
        }
        func v1() throws(SandboxError) -> CgroupV1Driver? {
            guard mounts.v1["memory"] != nil, mounts.v1["pids"] != nil, mounts.v1["freezer"] != nil else { return nil }
            return try CgroupV1Driver(mounts: mounts.v1, parent: parent == "auto" ? defaultParent : parent,
                                      instance: instance)
        }
        switch choice {
        case .v2:
            guard let d = try v2() else {
                throw SandboxError(.unsupported, "cgroup v2 with the memory and pids controllers is not available on this host")
            }
            return d
        case .v1:
            guard let d = try v1() else {
                throw SandboxError(.unsupported, "cgroup v1 memory, pids and freezer hierarchies are not mounted")
            }
            return d
        case .none:
            return NoCgroupDriver()
        case .auto:
            if let d = try v2() { return d }
            if let d = try v1() { return d }
            return NoCgroupDriver()
        }
    }

    /// This process's cgroup v2 path ("/system.slice/agentd.service/daemon"),
    /// from the "0::" line of /proc/self/cgroup.
    static func ownV2Path() -> String? {
        guard let text = try? Posix.readFile("/proc/self/cgroup") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            return String(line.dropFirst(3))
        }
        return nil
    }

    /// The subtree to put sandboxes in when systemd delegated one to us.
    ///
    /// With `Delegate=yes` and `DelegateSubgroup=daemon` (systemd 254+),
    /// systemd starts agentd in `<unit>/daemon`; the unit's cgroup is then
    /// ours to divide, and sandboxes go to `<unit>/sandboxes`, beside the
    /// daemon (cgroup v2 allows processes only in leaves once controllers are
    /// enabled for children).  A process sitting in the unit's cgroup itself
    /// (older systemd, or no DelegateSubgroup) must not turn that cgroup into
    /// an inner node: systemd could not place the next start's process in it.
    /// Then nil, and sandboxes go under `defaultParent`.
    static func delegatedParent(_ ownPath: String) -> String? {
        let parts = ownPath.split(separator: "/")
        guard parts.count >= 2, parts.last == "daemon" else { return nil }
        let unit = parts[parts.count - 2]
        guard unit.hasSuffix(".service") || unit.hasSuffix(".scope") else { return nil }
        return parts.dropLast().joined(separator: "/") + "/sandboxes"
    }

    /// Validate a parent name: relative, no "..", no empty components.
    static func validParent(_ parent: String) -> Bool {
        let parts = parent.split(separator: "/", omittingEmptySubsequences: false)
        return !parent.isEmpty && !parent.hasPrefix("/") && parts.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }
}

/// Wait until `condition` holds, polling, for at most `timeoutMs`.
private func waitUntil(timeoutMs: Int, _ condition: () -> Bool) -> Bool {
    let deadline = Posix.monotonicNanos() + UInt64(timeoutMs) * 1_000_000
    var delay: UInt32 = 200
    while !condition() {
        if Posix.monotonicNanos() > deadline { return false }
        usleep(delay)
        delay = min(delay * 2, 20_000)
    }
    return true
}

private func readUInt(_ path: String) -> UInt64? {
    guard let s = try? Posix.readFile(path) else { return nil }
    return UInt64(s.trimmed)
}

/// A `key value` line from a flat-keyed cgroup file (cpu.stat, memory.events).
private func readKey(_ path: String, _ key: String) -> UInt64? {
    guard let s = try? Posix.readFile(path) else { return nil }
    for line in s.split(separator: "\n") {
        let parts = line.split(separator: " ")
        if parts.count == 2, parts[0] == key { return UInt64(parts[1]) }
    }
    return nil
}

private func killPIDs(in procsFile: String) {
    guard let text = try? Posix.readFile(procsFile) else { return }
    for line in text.split(separator: "\n") {
        if let pid = Int32(line) { _ = Glibc.kill(pid, SIGKILL) }
    }
}

// MARK: - cgroup v2

final class CgroupV2Driver: CgroupDriver {
    let name = "cgroup v2"
    let root: String
    let notes: [String]
    private let hasIO: Bool
    private let hasCPU: Bool

    init(mount: String, parent: String, available: Set<String>, delegated: Bool = false) throws(SandboxError) {
        guard CgroupDetection.validParent(parent) else {
            throw SandboxError(.invalidArgument, "cgroup parent \"\(parent)\" must be a relative path", field: "cgroup.parent")
        }
        root = mount + "/" + parent
        // Enable the controllers we use on every level from the mount down to
        // our parent, so each sandbox cgroup gets its own knobs.
        let wanted = ["memory", "pids", "cpu", "io"].filter(available.contains)
        func enable(_ dir: String) throws(SandboxError) {
            let current = (try? Posix.readFile(dir + "/cgroup.subtree_control")) ?? ""
            let have = Set(current.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
            guard !wanted.allSatisfy(have.contains) else { return }
            do {
                try Posix.writeFile(dir + "/cgroup.subtree_control", wanted.map { "+" + $0 }.joined(separator: " "))
            } catch {
                throw SandboxError(.unsupported, "cannot enable cgroup controllers in \(dir): \(error.message)",
                                   stage: "cgroup.subtree_control", errno: error.errno)
            }
        }
        var dir = mount
        for part in parent.split(separator: "/") {
            try enable(dir)
            dir += "/" + part
            try Posix.makeDirectory(dir)
        }
        try enable(root)
        hasIO = available.contains("io")
        hasCPU = available.contains("cpu")
        var notes: [String] = [delegated ? "sandboxes in the cgroup subtree systemd delegated: /\(parent)"
                                         : "sandboxes in the cgroup /\(parent)"]
        if !hasIO { notes.append("io controller not available: io weight is not enforced") }
        if !hasCPU { notes.append("cpu controller not available: cpu limits are not enforced") }
        self.notes = notes
    }

    private func path(_ name: String) -> String { root + "/" + name }

    func create(_ name: String, limits: ResourceLimits) throws(SandboxError) {
        let dir = path(name)
        if mkdir(dir, 0o755) < 0 && errno != EEXIST { throw Posix.error("mkdir \(dir)") }
        do {
            try writeLimits(dir, limits)
        } catch {
            _ = rmdir(dir)
            throw error
        }
    }

    func prepareWarm(_ name: String) throws(SandboxError) -> CgroupPlacement {
        let dir = path(name)
        if mkdir(dir, 0o755) < 0 { throw Posix.error("mkdir \(dir)") }
        do {
            return try placement(name)
        } catch {
            _ = rmdir(dir)
            throw error
        }
    }

    /// v2 cgroups cannot be renamed: the sandbox keeps the shell's cgroup.
    func claimWarm(_ name: String, as id: String, limits: ResourceLimits) throws(SandboxError) -> String {
        try writeLimits(path(name), limits)
        return name
    }

    private func writeLimits(_ dir: String, _ limits: ResourceLimits) throws(SandboxError) {
        do {
            if let m = limits.memoryBytes { try Posix.writeFile(dir + "/memory.max", String(m)) }
            if let s = limits.swapBytes, Posix.exists(dir + "/memory.swap.max") {
                try Posix.writeFile(dir + "/memory.swap.max", String(s))
            }
            if let p = limits.pids { try Posix.writeFile(dir + "/pids.max", String(p)) }
            if let c = limits.cpuMillis, hasCPU { try Posix.writeFile(dir + "/cpu.max", "\(c * 100) 100000") }
            if let w = limits.ioWeight, hasIO, Posix.exists(dir + "/io.weight") {
                try Posix.writeFile(dir + "/io.weight", "default \(w)")
            }
        }
    }

    func placement(_ name: String) throws(SandboxError) -> CgroupPlacement {
        CgroupPlacement(cgroupFD: try Posix.open(path(name), O_RDONLY | O_DIRECTORY))
    }

    func freeze(_ name: String) throws(SandboxError) {
        try Posix.writeFile(path(name) + "/cgroup.freeze", "1")
        guard waitUntil(timeoutMs: 5000, { readKey(path(name) + "/cgroup.events", "frozen") == 1 }) else {
            throw SandboxError(.system, "the sandbox did not freeze within 5 s", stage: "cgroup.freeze")
        }
    }

    func thaw(_ name: String) throws(SandboxError) {
        try Posix.writeFile(path(name) + "/cgroup.freeze", "0")
    }

    func isFrozen(_ name: String) -> Bool {
        readKey(path(name) + "/cgroup.events", "frozen") == 1
    }

    func kill(_ name: String) {
        let dir = path(name)
        if (try? Posix.writeFile(dir + "/cgroup.kill", "1")) == nil {
            // Before 5.14: freeze, kill each, thaw.
            try? Posix.writeFile(dir + "/cgroup.freeze", "1")
            killPIDs(in: dir + "/cgroup.procs")
            try? Posix.writeFile(dir + "/cgroup.freeze", "0")
        }
    }

    func usage(_ name: String) -> ResourceUsage {
        let dir = path(name)
        return ResourceUsage(
            memoryBytes: readUInt(dir + "/memory.current"),
            memoryPeakBytes: readUInt(dir + "/memory.peak"),
            cpuMicros: readKey(dir + "/cpu.stat", "usage_usec"),
            pids: readUInt(dir + "/pids.current").map { Int($0) },
            oomKills: readKey(dir + "/memory.events", "oom_kill").map { Int($0) })
    }

    func remove(_ name: String) throws(SandboxError) {
        let dir = path(name)
        guard Posix.exists(dir) else { return }
        if rmdir(dir) == 0 || errno == ENOENT { return }
        kill(name)
        var last: Int32 = 0
        let ok = waitUntil(timeoutMs: 5000) {
            if rmdir(dir) == 0 || errno == ENOENT { return true }
            last = errno
            return false
        }
        if !ok { throw Posix.error("rmdir \(dir)", last) }
    }

    func existing() -> [String] {
        Posix.listDirectory(root).filter { isSandboxCgroupName($0) && Posix.isDirectory(root + "/" + $0) }
    }

    func removeParentIfEmpty() {
        _ = rmdir(root)
    }
}

// MARK: - cgroup v1 (hybrid hosts)

final class CgroupV1Driver: CgroupDriver {
    let name = "cgroup v1 (hybrid host)"
    let notes: [String]
    /// Empty cgroups made ahead of need: a v1 sandbox has one directory per
    /// hierarchy, and creating five memcg/pids/cpu/freezer directories costs
    /// more than renaming them (v1 cgroups can be renamed; v2 ones cannot).
    private let spares = Mutex<[String]>([])
    /// controller -> "<mount>/<parent>"
    private let roots: [String: String]
    /// The distinct hierarchy directories (cpu and cpuacct may share one).
    private let hierarchies: [String]
    /// Swap is accounted: every memory cgroup has memory.memsw.* files.
    private let hasMemsw: Bool
    /// `.spare-<instance>-`: this agentd's spares (see InstanceTag); other
    /// instances' under the same parent are theirs.
    private let sparePrefix: String

    init(mounts: [String: String], parent: String, instance: String) throws(SandboxError) {
        guard CgroupDetection.validParent(parent) else {
            throw SandboxError(.invalidArgument, "cgroup parent \"\(parent)\" must be a relative path", field: "cgroup.parent")
        }
        var roots: [String: String] = [:]
        for c in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
            if let m = mounts[c] { roots[c] = m + "/" + parent }
        }
        self.roots = roots
        hasMemsw = mounts["memory"].map { Posix.exists($0 + "/memory.memsw.limit_in_bytes") } ?? false
        hierarchies = Array(Set(roots.values)).sorted()
        sparePrefix = ".spare-" + instance + "-"
        for h in hierarchies {
            try Posix.makeDirectories(h)
            // Our spares of an earlier run are not known to anyone: remove
            // them (only ours: another agentd may share the parent).
            for n in Posix.listDirectory(h) where n.hasPrefix(sparePrefix) { _ = rmdir(h + "/" + n) }
        }
        var notes = ["io weight is not enforced with cgroup v1"]
        if roots["cpu"] == nil { notes.append("cpu controller not mounted: cpu limits are not enforced") }
        self.notes = notes
    }

    private func dir(_ controller: String, _ name: String) -> String? {
        roots[controller].map { $0 + "/" + name }
    }

    func prepareSpares(count: Int) {
        while spares.withLock({ $0.count }) < count {
            let spare = sparePrefix + String(UInt64.random(in: 0...UInt64.max), radix: 36)
            var made: [String] = []
            for h in hierarchies {
                if mkdir(h + "/" + spare, 0o755) == 0 { made.append(h) } else { break }
            }
            guard made.count == hierarchies.count else {
                for h in made { _ = rmdir(h + "/" + spare) }
                return
            }
            spares.withLock { $0.append(spare) }
        }
    }

    /// Rename a spare into place in every hierarchy; false if none was usable.
    private func takeSpare(as name: String) -> Bool {
        guard let spare = spares.withLock({ $0.popLast() }) else { return false }
        var moved: [String] = []
        for h in hierarchies {
            if rename(h + "/" + spare, h + "/" + name) == 0 {
                moved.append(h)
            } else {
                for m in moved { _ = rename(m + "/" + name, m + "/" + spare) }
                for h2 in hierarchies { _ = rmdir(h2 + "/" + spare) }
                return false
            }
        }
        return true
    }

    func create(_ name: String, limits: ResourceLimits) throws(SandboxError) {
        if !takeSpare(as: name) {
            for h in hierarchies {
                let d = h + "/" + name
                if mkdir(d, 0o755) < 0 && errno != EEXIST {
                    let e = Posix.error("mkdir \(d)")
                    try? remove(name)
                    throw e
                }
            }
        }
        do {
            try writeLimits(name, limits)
        } catch {
            try? remove(name)
            throw error
        }
    }

    func prepareWarm(_ name: String) throws(SandboxError) -> CgroupPlacement {
        for h in hierarchies {
            let d = h + "/" + name
            if mkdir(d, 0o755) < 0 {
                let e = Posix.error("mkdir \(d)")
                try? remove(name)
                throw e
            }
        }
        do {
            return try placement(name)
        } catch {
            try? remove(name)
            throw error
        }
    }

    /// v1 cgroups can be renamed: the shell's becomes the sandbox's.
    func claimWarm(_ name: String, as id: String, limits: ResourceLimits) throws(SandboxError) -> String {
        var moved: [String] = []
        for h in hierarchies {
            guard rename(h + "/" + name, h + "/" + id) == 0 else {
                let e = Posix.error("rename cgroup \(h)/\(name)")
                for m in moved { _ = rename(m + "/" + id, m + "/" + name) }
                throw e
            }
            moved.append(h)
        }
        do {
            try writeLimits(id, limits)
        } catch {
            for m in moved { _ = rename(m + "/" + id, m + "/" + name) }
            throw error
        }
        return id
    }

    private func writeLimits(_ name: String, _ limits: ResourceLimits) throws(SandboxError) {
        do {
            if let d = dir("memory", name), let m = limits.memoryBytes {
                try Posix.writeFile(d + "/memory.limit_in_bytes", String(m))
                if hasMemsw {
                    try Posix.writeFile(d + "/memory.memsw.limit_in_bytes", String(m + (limits.swapBytes ?? 0)))
                } else if (limits.swapBytes ?? 0) == 0 {
                    // Without swap accounting, keep the cgroup from swapping at all.
                    try? Posix.writeFile(d + "/memory.swappiness", "0")
                }
            }
            if let d = dir("pids", name), let p = limits.pids { try Posix.writeFile(d + "/pids.max", String(p)) }
            // (The quota is per 100 ms, cpu.cfs_period_us's default in a
            // new cgroup, and all of ours are.)
            if let d = dir("cpu", name), let c = limits.cpuMillis {
                try Posix.writeFile(d + "/cpu.cfs_quota_us", String(c * 100))
            }
        }
    }

    func placement(_ name: String) throws(SandboxError) -> CgroupPlacement {
        var p = CgroupPlacement(unshareNamespaceAfterAttach: true)
        for h in hierarchies {
            do {
                p.attachFDs.append(try Posix.open(h + "/" + name + "/cgroup.procs", O_WRONLY))
            } catch {
                p.close()
                throw error
            }
        }
        return p
    }

    private var freezerDir: (String) -> String? { { self.dir("freezer", $0) } }

    func freeze(_ name: String) throws(SandboxError) {
        guard let d = freezerDir(name) else { throw SandboxError(.unsupported, "no freezer hierarchy") }
        try Posix.writeFile(d + "/freezer.state", "FROZEN")
        guard waitUntil(timeoutMs: 5000, {
            (try? Posix.readFile(d + "/freezer.state"))?.hasPrefix("FROZEN") == true
        }) else {
            throw SandboxError(.system, "the sandbox did not freeze within 5 s", stage: "freezer.state")
        }
    }

    func thaw(_ name: String) throws(SandboxError) {
        guard let d = freezerDir(name) else { throw SandboxError(.unsupported, "no freezer hierarchy") }
        try Posix.writeFile(d + "/freezer.state", "THAWED")
    }

    func isFrozen(_ name: String) -> Bool {
        guard let d = freezerDir(name) else { return false }
        return (try? Posix.readFile(d + "/freezer.state"))?.hasPrefix("FROZEN") == true
    }

    func kill(_ name: String) {
        guard let d = freezerDir(name) else { return }
        // Frozen processes cannot fork while we collect them; SIGKILL is
        // delivered when they thaw.
        try? Posix.writeFile(d + "/freezer.state", "FROZEN")
        killPIDs(in: d + "/cgroup.procs")
        try? Posix.writeFile(d + "/freezer.state", "THAWED")
    }

    func usage(_ name: String) -> ResourceUsage {
        var u = ResourceUsage()
        if let d = dir("memory", name) {
            u.memoryBytes = readUInt(d + "/memory.usage_in_bytes")
            u.memoryPeakBytes = readUInt(d + "/memory.max_usage_in_bytes")
            u.oomKills = readKey(d + "/memory.oom_control", "oom_kill").map { Int($0) }
        }
        if let d = dir("cpuacct", name) { u.cpuMicros = readUInt(d + "/cpuacct.usage").map { $0 / 1000 } }
        if let d = dir("pids", name) { u.pids = readUInt(d + "/pids.current").map { Int($0) } }
        return u
    }

    func remove(_ name: String) throws(SandboxError) {
        var killed = false
        for h in hierarchies {
            let d = h + "/" + name
            guard Posix.exists(d) else { continue }
            if rmdir(d) == 0 || errno == ENOENT { continue }
            if !killed {
                kill(name)
                killed = true
            }
            var last: Int32 = 0
            let ok = waitUntil(timeoutMs: 5000) {
                if rmdir(d) == 0 || errno == ENOENT { return true }
                last = errno
                return false
            }
            if !ok { throw Posix.error("rmdir \(d)", last) }
        }
    }

    func existing() -> [String] {
        guard let r = roots["freezer"] ?? hierarchies.first else { return [] }
        var names = Set<String>()
        for h in hierarchies + [r] {
            for n in Posix.listDirectory(h) where isSandboxCgroupName(n) && Posix.isDirectory(h + "/" + n) {
                names.insert(n)
            }
        }
        return names.sorted()
    }

    func removeParentIfEmpty() {
        let left = spares.withLock { s -> [String] in
            let all = s
            s = []
            return all
        }
        for spare in left {
            for h in hierarchies { _ = rmdir(h + "/" + spare) }
        }
        for h in hierarchies { _ = rmdir(h) }
    }
}

// MARK: - none

/// No usable cgroups: sandboxes run without limits, and the daemon says so.
final class NoCgroupDriver: CgroupDriver {
    let name = "none"
    let notes = ["no usable cgroup controllers: memory, pids and cpu limits are NOT enforced"]
    func create(_ name: String, limits: ResourceLimits) throws(SandboxError) {}
    func placement(_ name: String) throws(SandboxError) -> CgroupPlacement { CgroupPlacement() }
    func freeze(_ name: String) throws(SandboxError) {
        throw SandboxError(.unsupported, "pausing needs a cgroup freezer, and this host has none")
    }
    func thaw(_ name: String) throws(SandboxError) {}
    func isFrozen(_ name: String) -> Bool { false }
    func kill(_ name: String) {}
    func usage(_ name: String) -> ResourceUsage { ResourceUsage() }
    func remove(_ name: String) throws(SandboxError) {}
    func prepareWarm(_ name: String) throws(SandboxError) -> CgroupPlacement { CgroupPlacement() }
    func claimWarm(_ name: String, as id: String, limits: ResourceLimits) throws(SandboxError) -> String { id }
    func existing() -> [String] { [] }
    func removeParentIfEmpty() {}
}
