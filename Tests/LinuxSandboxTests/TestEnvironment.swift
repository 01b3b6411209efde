import CAgentdSandbox
import Logging
import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// One state directory per test process, with the `minimal` image (busybox)
/// and the agentd-probe helper inside it, built once.
enum TestEnvironment {
    static let root = "/tmp/agentd-t\(getpid())"

    static let repository: String = {
        var path = #filePath
        for _ in 0..<3 { path = Posix.parentDirectory(path) }
        return path
    }()

    /// Build products live beside the test bundle.
    static let buildDirectory: String = {
        (try? InitBinary.ownExecutable()).map(Posix.parentDirectory) ?? repository + "/.build/debug"
    }()

    /// Cgroups of earlier test processes that were killed before cleaning
    /// up: their processes are killed and the directories removed.
    static func removeStaleTestCgroups() {
        let mounts = CgroupMounts.read()
        let roots = Array(Set(mounts.v1.values)) + (mounts.v2.map { [$0] } ?? [])
        for root in roots {
            for name in Posix.listDirectory(root) where name.hasPrefix("agentd-test-") {
                let owner = name.split(separator: "-").dropFirst(2).first.flatMap { Int32($0) } ?? 0
                if owner > 0 && kill(owner, 0) == 0 && owner != getpid() { continue }
                let parent = root + "/" + name
                for child in Posix.listDirectory(parent) where Posix.isDirectory(parent + "/" + child) {
                    let dir = parent + "/" + child
                    // A test that froze a cgroup and died: a frozen v1 task
                    // dies of SIGKILL only once thawed.
                    if Posix.exists(dir + "/freezer.state") { try? Posix.writeFile(dir + "/freezer.state", "THAWED") }
                    if Posix.exists(dir + "/cgroup.freeze") { try? Posix.writeFile(dir + "/cgroup.freeze", "0") }
                    if let procs = try? Posix.readFile(dir + "/cgroup.procs") {
                        for pid in procs.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
                    }
                    for _ in 0..<100 where rmdir(dir) != 0 { usleep(10_000) }
                }
                _ = rmdir(parent)
            }
        }
    }

    /// AGENTD_TEST_IMAGE: a ready image (with agentd-probe) to use instead of
    /// building one (the VM tier has no rootfs/build inside).
    static let prebuiltImage: String? = getenv("AGENTD_TEST_IMAGE").map { String(cString: $0) }

    static let prepared: Result<Void, any Error> = {
        do {
            removeStaleTestCgroups()
            if prebuiltImage != nil { return .success(()) }
            // State directories of earlier test processes that have exited.
            for name in Posix.listDirectory("/tmp") where name.hasPrefix("agentd-t") {
                if let pid = Int32(name.dropFirst("agentd-t".count)), pid != getpid(), kill(pid, 0) != 0 {
                    try? Posix.removeTree("/tmp/" + name)
                }
            }
            try Posix.removeTree(root)
            try Posix.makeDirectories(root + "/images")
            // The state directory goes when the test process exits (every
            // backend in it has been closed by then, its mounts gone).
            atexit { try? Posix.removeTree(TestEnvironment.root) }
            let image = root + "/images/minimal"
            let status = try Program.run(["/bin/bash", repository + "/rootfs/build", "minimal", "--out", image])
            guard status == 0 else { throw SandboxError(.system, "rootfs/build minimal failed (\(status))") }
            let probe = buildDirectory + "/agentd-probe"
            guard try Program.run(["/bin/cp", probe, image + "/bin/agentd-probe"]) == 0 else {
                throw SandboxError(.system, "cannot copy \(probe) into the test image")
            }
            return .success(())
        } catch {
            return .failure(error)
        }
    }()

    static var imagePath: String { prebuiltImage ?? root + "/images/minimal" }

    static func requireRoot() throws {
        guard geteuid() == 0 else {
            throw SandboxError(.unsupported, "the sandbox tests need root (namespaces, cgroups); run them as root")
        }
        try prepared.get()
    }

    /// A backend of its own (own cgroup parent) for one test; after `body`,
    /// every sandbox is stopped and the test checks that nothing was left:
    /// no cgroup, no mount, no process.
    static func withBackend(
        driver: String = "auto", pool: Int = 1, warm: Int = 1, spares: Int? = nil, allow32Bit: Bool = false,
        defaultLimits: ResourceLimits = .defaults,
        _ body: (LinuxSandboxBackend) async throws -> Void
    ) async throws {
        try requireRoot()
        let mountsBefore = (try? Posix.readFile("/proc/mounts")) ?? ""
        let parent = "agentd-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let state = root + "/" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let backend = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: state, runDirectory: state + "/run", cgroupDriver: driver,
                                       cgroupParent: parent, defaultLimits: defaultLimits,
                                       networkNamespacePool: pool, warmPool: warm, spareRoots: spares ?? warm,
                                       allow32Bit: allow32Bit),
            logger: logger)
        // Pools full: with `warm` > 0 the test's first start claims a warm
        // shell, and its first create a spare root (made for the image of
        // the last create: a create of the test image primes them); with 0
        // every start is cold on a root mounted by the start.
        await backend.settlePools()
        if (spares ?? warm) > 0 {
            let primer = try SandboxID("t-primer-\(UInt32.random(in: 0...UInt32.max))")
            try await backend.create(primer, spec: spec)
            try await backend.destroy(primer)
            await backend.settlePools()
            #expect(await backend.pooledSpareRoots.count == spares ?? warm, "spare roots were not made")
        }
        var failure: (any Error)? = nil
        do {
            try await body(backend)
        } catch {
            failure = error
        }
        // The path under test was the one taken.
        let counts = await backend.startCounts()
        if warm == 0 { #expect(counts.warm == 0, "a start claimed a warm shell with the pool off") }
        if warm > 0 && counts.warm + counts.cold > 0 { #expect(counts.warm > 0, "no start claimed a warm shell") }
        let sandboxes = (try? await backend.list()) ?? []
        for s in sandboxes where s.id.rawValue.hasPrefix("t-") { try? await backend.destroy(s.id) }
        #expect(await backend.cgroupNames().isEmpty, "sandbox cgroups left behind")
        await backend.close()
        try? Posix.removeTree(state)
        let mountsAfter = (try? Posix.readFile("/proc/mounts")) ?? ""
        #expect(mountsBefore == mountsAfter, "host mounts changed")
        #expect(!CgroupMounts.read().v1.values.contains { Posix.exists($0 + "/" + parent) }, "cgroup parent left")
        if let v2 = CgroupMounts.read().v2 { #expect(!Posix.exists(v2 + "/" + parent), "cgroup v2 parent left") }
        if let failure { throw failure }
    }

    static func id(_ name: String = #function) -> SandboxID {
        let clean = name.filter { $0.isLetter || $0.isNumber }.prefix(24)
        return try! SandboxID("t-\(clean)-\(UInt32.random(in: 0...UInt32.max))")
    }

    static var spec: SandboxSpec {
        SandboxSpec(image: imagePath, hostname: "testbox",
                    limits: ResourceLimits(memoryBytes: 128 << 20, pids: 64, cpuMillis: 1000))
    }
}

extension SandboxBackend {
    /// Run a shell command and return stdout, failing the test on a non-zero exit.
    func sh(_ id: SandboxID, _ script: String, timeout: Duration? = .seconds(30)) async throws -> String {
        let r = try await run(id, ExecRequest(command: .shell(script), timeout: timeout))
        #expect(r.status.code == 0, "\(script) -> \(r.status) stderr: \(r.stderrString)")
        return r.stdoutString
    }

    func started(_ id: SandboxID, _ spec: SandboxSpec) async throws -> SandboxID {
        try await create(id, spec: spec)
        try await start(id)
        return id
    }
}
