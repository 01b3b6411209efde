import Logging
import SandboxKit
import Testing
@testable import LinuxSandbox
import CAgentdSandbox
#if canImport(Glibc)
import Glibc
#endif

/// Warm shells: sandboxes pre-cloned with their namespaces, cgroup and
/// kernel file systems, claimed by a start (see agentd_sandbox.h).  The
/// isolation and limit suites run every test on both paths; these check what
/// is particular to the pool.
@Suite("Warm shells (as root, real sandboxes)", .serialized)
struct WarmShellTests {
    /// True while `pid` exists and is not a zombie.
    static func alive(_ pid: pid_t) -> Bool {
        guard let stat = try? Posix.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
            return false
        }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }

    static func waitGone(_ pid: pid_t, seconds: Double = 5) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if !alive(pid) { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return !alive(pid)
    }

    @Test func aClaimedShellBecomesTheSessionsSandbox() async throws {
        try await TestEnvironment.withBackend(warm: 2) { b in
            let shells = await b.pooledWarmShells
            #expect(shells.count == 2)
            for shell in shells { #expect(Self.alive(shell.pid)) }
            var spec = TestEnvironment.spec
            spec.hostname = "warmbox"
            spec.limits.tmpBytes = 8 << 20
            spec.workdir = "/workspace/deep/dir"
            let id = try await b.started(TestEnvironment.id(), spec)
            #expect(await b.startCounts().warm == 1)
            #expect(try await b.sh(id, "hostname").trimmed == "warmbox")
            #expect(try await b.sh(id, "pwd").trimmed == "/workspace/deep/dir")
            // The session's /tmp, not a staging one.
            let tmp = try await b.sh(id, "grep ' /tmp ' /proc/mounts")
            #expect(tmp.contains("size=8192k"), "\(tmp)")
            // /proc, /dev and /sys were moved into the root: nothing of the
            // staging directory is left in the sandbox's mount table.
            let mounts = try await b.sh(id, "cat /proc/self/mountinfo")
            #expect(!mounts.contains("/warm"), "\(mounts)")
            for point in [" /proc ", " /dev ", " /sys ", " /dev/pts ", " /dev/shm "] {
                #expect(mounts.contains(point), "\(point) missing: \(mounts)")
            }
            // The root was moved over the shell's staging tmpfs (see
            // child_pivot): the overlay is the only mount at /, and there is
            // no way up out of it.
            let roots = mounts.split(separator: "\n").filter { $0.split(separator: " ").dropFirst(4).first == "/" }
            #expect(roots.count == 1 && roots.allSatisfy { $0.contains(" - overlay ") }, "\(roots)")
            let up = try await b.sh(id, "cd /../..; pwd; ls -a")
            #expect(up.hasPrefix("/\n") && up.contains("workspace") && !up.contains("sandbox"), "\(up)")
            // The init runs at the normal scheduling policy (the shell waited
            // at SCHED_IDLE): field 41 of /proc/1/stat is the policy, 0 = OTHER.
            let policy = try await b.sh(id, "sed 's/.*) //' /proc/1/stat | cut -d' ' -f39").trimmed
            #expect(policy == "0", "init's scheduling policy is \(policy)")
            // The socket was renamed to the sandbox's; no warm socket of the
            // claimed shell is left.
            let run = b.config.runDirectory
            #expect(Posix.exists(run + "/\(id).sock"))
            let leftovers = Posix.listDirectory(run).filter { $0.hasPrefix(".warm-") }
            #expect(leftovers.count <= 2)
            // Files written persist across stop and a (warm or cold) start.
            _ = try await b.sh(id, "echo kept > /workspace/deep/dir/f")
            try await b.stop(id)
            await b.settlePools()
            try await b.start(id)
            #expect(try await b.sh(id, "cat /workspace/deep/dir/f").trimmed == "kept")
            #expect(await b.startCounts().warm == 2)
        }
    }

    @Test func releasedShellsExitAndLeaveNothing() async throws {
        try TestEnvironment.requireRoot()
        let state = TestEnvironment.root + "/" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let parent = "agentd-test-warm-\(getpid())"
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let b = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: state, cgroupParent: parent, networkNamespacePool: 0,
                                       warmPool: 3, spareRoots: 3),
            logger: logger)
        // A create sets the image spare roots are made for.
        let primer = TestEnvironment.id("primer")
        try await b.create(primer, spec: TestEnvironment.spec)
        try await b.destroy(primer)
        await b.settlePools()
        let pids = await b.pooledWarmShells.map(\.pid)
        #expect(pids.count == 3)
        #expect(await b.pooledSpareRoots.count == 3)
        let cgroups = b.cgroups.existing()
        #expect(cgroups.count == 3 && cgroups.allSatisfy { $0.hasPrefix(".sandbox-") }, "\(cgroups)")
        #expect(await b.cgroupNames().isEmpty, "pooled shells' cgroups count as leaks")
        await b.close()
        for pid in pids { #expect(await Self.waitGone(pid), "warm shell \(pid) still runs") }
        #expect(Posix.listDirectory(state + "/run").filter { $0.hasPrefix(".warm-") }.isEmpty)
        #expect(Posix.listDirectory(state + "/sandboxes").isEmpty, "spare roots left")
        #expect(await b.unattachedRootsClosed == 3, "spare roots' mounts still open")
        #expect(!CgroupMounts.read().v1.values.contains { Posix.exists($0 + "/" + parent) }, "cgroup parent left")
        if let v2 = CgroupMounts.read().v2 { #expect(!Posix.exists(v2 + "/" + parent), "cgroup v2 parent left") }
        try? Posix.removeTree(state)
    }

    /// When agentd dies its end of the claim socket closes: the shell exits
    /// on its own, it does not linger as an orphan.
    @Test func aShellExitsWhenItsClaimSocketCloses() async throws {
        try await TestEnvironment.withBackend(warm: 0) { b in
            let factory = WarmShellFactory(cgroups: b.cgroups, runDirectory: b.config.runDirectory,
                                           staging: b.warmStagingDirectory, initFD: b.initBinary.fd,
                                           lastCap: b.lastCap, seccomp: b.warmSeccomp)
            let shell = try factory.make(cgroup: ".sandbox-orphantest")
            let pid = shell.pid
            #expect(Self.alive(pid))
            let pidfd = shell.withHandle { w -> Int32 in
                Glibc.close(w.claim_fd)  // what the kernel does when agentd dies
                w.claim_fd = -1
                return w.pidfd
            }
            // It exits by itself; reap it through the pidfd.
            var info = siginfo_t()
            let rc = waitid(idtype_t(rawValue: 3), id_t(pidfd), &info, WEXITED)
            #expect(rc == 0)
            #expect(info._sifields._sigchld.si_status == 0, "the shell did not exit cleanly")
            shell.withHandle { w in w.pid = -1 }  // reaped above
            WarmShellFactory.discard(shell, cgroups: b.cgroups)
            #expect(!Self.alive(pid))
        }
    }

    @Test func aDeadShellFallsBackToAColdStart() async throws {
        try await TestEnvironment.withBackend(warm: 1) { b in
            let shells = await b.pooledWarmShells
            try #require(shells.count == 1)
            let pid = shells[0].pid
            _ = shells[0].withHandle { agentd_pidfd_signal($0.pidfd, SIGKILL) }
            var spec = TestEnvironment.spec
            spec.hostname = "fallback"
            let id = try await b.started(TestEnvironment.id(), spec)
            #expect(try await b.sh(id, "hostname").trimmed == "fallback")
            let counts = await b.startCounts()
            #expect(counts.warm == 0 && counts.cold == 1)
            #expect(!Self.alive(pid))
            // Its socket and cgroup went with it.
            #expect(!Posix.exists(shells[0].socketPath))
            #expect(!b.cgroups.existing().contains(shells[0].cgroup))
            // Now the next one goes warm again.
            await b.settlePools()
            let next = try await b.started(TestEnvironment.id("next"), spec)
            #expect(try await b.sh(next, "hostname").trimmed == "fallback")
            #expect(await b.startCounts().warm == 1)
        }
    }

    /// A shell that fails while it sets up its claim (here: the working
    /// directory is a file) is spent and the start goes cold, which fails
    /// the same way: a clear error, and nothing of either attempt is left.
    @Test func aClaimThatFailsInTheShellIsAClearErrorAndLeavesNothing() async throws {
        try await TestEnvironment.withBackend(warm: 1) { b in
            let shells = await b.pooledWarmShells
            try #require(shells.count == 1)
            var spec = TestEnvironment.spec
            spec.workdir = "/bin/busybox"
            let id = TestEnvironment.id()
            try await b.create(id, spec: spec)
            var thrown: SandboxError? = nil
            do { try await b.start(id) } catch { thrown = error as? SandboxError }
            #expect(thrown?.stage?.hasPrefix("chdir") == true, "\(String(describing: thrown))")
            #expect(thrown?.errno == ENOTDIR, "\(String(describing: thrown))")
            #expect(!Self.alive(shells[0].pid), "the failed shell was left running")
            #expect(!b.cgroups.existing().contains(shells[0].cgroup))
            #expect(try await b.status(id).state != .running)
            try await b.destroy(id)
            // The pool refills and the next start is warm.
            await b.settlePools()
            _ = try await b.started(TestEnvironment.id("next"), TestEnvironment.spec)
            #expect(await b.startCounts().warm == 1)
        }
    }

    @Test func userNamespaceModeStartsCold() async throws {
        try await TestEnvironment.withBackend(warm: 1) { b in
            var spec = TestEnvironment.spec
            spec.userNamespace = true
            let id = try await b.started(TestEnvironment.id(), spec)
            #expect(try await b.sh(id, "cat /proc/self/uid_map").contains("100000"))
            let counts = await b.startCounts()
            #expect(counts.warm == 0 && counts.cold == 1)
            #expect(await b.pooledWarmShells.count == 1, "the pool was used or emptied")
            // A plain start after it claims the shell.
            _ = try await b.started(TestEnvironment.id("plain"), TestEnvironment.spec)
            #expect(await b.startCounts().warm == 1)
        }
    }

    @Test func aRestartedBackendRemovesWarmLeftovers() async throws {
        try TestEnvironment.requireRoot()
        let state = TestEnvironment.root + "/" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let parent = "agentd-test-warmleft-\(getpid())"
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let config = LinuxSandboxConfig(stateDirectory: state, cgroupParent: parent, networkNamespacePool: 0,
                                        warmPool: 0, spareRoots: 0)
        let first = try await LinuxSandboxBackend.open(config: config, logger: logger)
        // What a killed agentd leaves: a warm shell's cgroup and socket.
        let mine = warmCgroupPrefix + first.instance + "-leftover"
        let cg = try first.cgroups.prepareWarm(mine)
        cg.close()
        let sock = config.runDirectory + "/.warm-" + first.instance + "-leftover.sock"
        Posix.close(try LinuxSandboxBackend.listenSocket(sock))
        // Another agentd's (another instance tag) on the same parent and run
        // directory: not ours to remove.
        let theirs = warmCgroupPrefix + "0123456789ab-theirs"
        try first.cgroups.prepareWarm(theirs).close()
        let theirSock = config.runDirectory + "/.warm-0123456789ab-theirs.sock"
        Posix.close(try LinuxSandboxBackend.listenSocket(theirSock))
        // and a spare root's directory (its mount went with the process).
        let spare = state + "/sandboxes/" + SpareRoot.prefix + "leftover"
        try Posix.makeDirectories(spare + "/upper/workspace")
        try Posix.makeDirectories(spare + "/work/work")
        await first.shutdown()
        #expect(first.cgroups.existing().contains(mine))
        let second = try await LinuxSandboxBackend.open(config: config, logger: logger)
        #expect(second.cgroups.existing() == [theirs])
        #expect(!Posix.exists(sock))
        #expect(Posix.exists(theirSock))
        #expect(!Posix.exists(spare))
        try second.cgroups.remove(theirs)
        _ = unlink(theirSock)
        await second.close()
        try? Posix.removeTree(state)
    }

    // MARK: spare roots

    @Test func aCreateTakesASpareRootThatTheStartAttaches() async throws {
        try await TestEnvironment.withBackend(warm: 2) { b in
            let spares = await b.pooledSpareRoots
            try #require(spares.count == 2)
            let id = TestEnvironment.id()
            var spec = TestEnvironment.spec
            spec.workdir = "/workspace/sub"
            try await b.create(id, spec: spec)
            let prepared = try #require(await b.preparedRoot(id), "the create took no spare root")
            #expect(!Posix.exists(prepared.directory), "the spare's directory was not renamed")
            let dir = b.config.stateDirectory + "/sandboxes/\(id)"
            #expect(Posix.isDirectory(dir + "/upper") && Posix.isDirectory(dir + "/work"))
            try await b.start(id)
            #expect(await b.preparedRoot(id) == nil)
            #expect(await b.startCounts().warm == 1)
            #expect(try await b.sh(id, "pwd").trimmed == "/workspace/sub")
            // The root is the overlay on the sandbox's layers: a file written
            // in the sandbox is in its upper layer on the host, under its
            // directory's new name.
            let rootMount = try await b.sh(id, "grep ' / ' /proc/mounts")
            #expect(rootMount.contains(" / overlay "), "\(rootMount)")
            _ = try await b.sh(id, "echo kept > /workspace/sub/f")
            #expect(try Posix.readFile(dir + "/upper/workspace/sub/f") == "kept\n")
            // The image stays read-only below it.
            let lower = try await b.sh(id, "echo x > /bin/x 2>&1; ls /bin/x && echo upper")
            #expect(lower.contains("upper"))
            #expect(!Posix.exists(TestEnvironment.imagePath + "/bin/x"), "the image was written")
            // A restart mounts the overlay anew on the same layers.
            try await b.stop(id)
            try await b.start(id)
            #expect(try await b.sh(id, "cat /workspace/sub/f; ls /bin/x").contains("kept"))
            // The pool was refilled.
            await b.settlePools()
            #expect(await b.pooledSpareRoots.count == 2)
        }
    }

    @Test func aColdStartAttachesAPreparedRootToo() async throws {
        try await TestEnvironment.withBackend(warm: 1) { b in
            let id = TestEnvironment.id()
            try await b.create(id, spec: TestEnvironment.spec)
            try #require(await b.preparedRoot(id) != nil)
            await b.dropWarmShells()
            try await b.start(id)
            let counts = await b.startCounts()
            #expect(counts.warm == 0 && counts.cold == 1)
            _ = try await b.sh(id, "echo cold > /workspace/f")
            #expect(try Posix.readFile(b.config.stateDirectory + "/sandboxes/\(id)/upper/workspace/f") == "cold\n")
            // (withBackend expects a warm start with the pool on.)
            await b.settlePools()
            _ = try await b.started(TestEnvironment.id("warm"), TestEnvironment.spec)
        }
    }

    /// Spare roots are their own pool: with no warm shells, a create still
    /// takes one and the (cold) start attaches it; with no spares, a start
    /// mounts its root.
    @Test(arguments: [0, 2]) func spareRootsWithoutWarmShells(spares: Int) async throws {
        try await TestEnvironment.withBackend(warm: 0, spares: spares) { b in
            let id = TestEnvironment.id()
            try await b.create(id, spec: TestEnvironment.spec)
            #expect((await b.preparedRoot(id) != nil) == (spares > 0))
            try await b.start(id)
            #expect(await b.startCounts().cold == 1)
            let rootMount = try await b.sh(id, "grep ' / ' /proc/mounts")
            #expect(rootMount.contains(" / overlay "), "\(rootMount)")
            _ = try await b.sh(id, "echo kept > /workspace/f")
            #expect(try Posix.readFile(b.config.stateDirectory + "/sandboxes/\(id)/upper/workspace/f") == "kept\n")
            try await b.stop(id)
            try await b.start(id)
            #expect(try await b.sh(id, "cat /workspace/f") == "kept\n")
            await b.settlePools()
            #expect(await b.pooledSpareRoots.count == spares)
            #expect(await b.pooledWarmShells.isEmpty)
        }
    }

    @Test func aSandboxDestroyedBeforeItsStartReleasesItsRoot() async throws {
        try await TestEnvironment.withBackend(warm: 1) { b in
            let closed = await b.unattachedRootsClosed
            let id = TestEnvironment.id()
            try await b.create(id, spec: TestEnvironment.spec)
            try #require(await b.preparedRoot(id) != nil)
            try await b.destroy(id)
            #expect(!Posix.exists(b.config.stateDirectory + "/sandboxes/\(id)"))
            await b.settlePools()
            // The pool is full again and the destroyed one's mount is closed.
            #expect(await b.pooledSpareRoots.count == 1)
            #expect(await b.unattachedRootsClosed == closed + 1, "a prepared root's mount is still open")
        }
    }

    @Test func sparesFollowTheImageOfTheLastCreate() async throws {
        try await TestEnvironment.withBackend(warm: 1) { b in
            let old = await b.pooledSpareRoots
            try #require(old.count == 1)
            // The same files under another path: another image to agentd.
            let link = b.config.stateDirectory + "/other-image"
            #expect(symlink(TestEnvironment.imagePath, link) == 0)
            var spec = TestEnvironment.spec
            spec.image = link
            let id = TestEnvironment.id()
            try await b.create(id, spec: spec)
            #expect(await b.preparedRoot(id) == nil, "a spare of another image was used")
            // Spares are made for the new image; the other's is kept.
            await b.settlePools()
            var spares = await b.pooledSpareRoots
            #expect(spares.map(\.image).sorted() == [link, TestEnvironment.imagePath].sorted())
            try await b.start(id)
            #expect(try await b.sh(id, "echo ok").trimmed == "ok")
            // Back to the first image: its spare is there.
            let back = TestEnvironment.id("back")
            try await b.create(back, spec: TestEnvironment.spec)
            #expect(await b.preparedRoot(back)?.image == TestEnvironment.imagePath)
            // At most twice the pool is kept: a third image's spare pushes
            // out the oldest of another.
            let third = b.config.stateDirectory + "/third-image"
            #expect(symlink(TestEnvironment.imagePath, third) == 0)
            spec.image = third
            try await b.create(TestEnvironment.id("third"), spec: spec)
            await b.settlePools()
            spares = await b.pooledSpareRoots
            #expect(spares.count == 2 && spares.contains { $0.image == third }, "\(spares.map(\.image))")
            // An update to another image before the first start drops the
            // prepared root (its lower layer is the old image).
            let next = TestEnvironment.id("next")
            try await b.create(next, spec: spec)
            try #require(await b.preparedRoot(next) != nil)
            try await b.update(next, spec: TestEnvironment.spec)
            #expect(await b.preparedRoot(next) == nil)
            try await b.start(next)
            #expect(try await b.sh(next, "echo ok").trimmed == "ok")
        }
    }
}
