import CAgentdSandbox
import NIOCore
import NIOPosix
import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// A cold start's two halves (`Spawner.beginSpawn` clones, `PendingSpawn.finish`
/// waits on an event loop for the exec): the outcome of each way a child can
/// end, and a start abandoned between them, with no child and no mount left.
@Suite struct ColdSpawnTests {
    /// A child in its own mount and pid namespaces that enters the test
    /// image (bound onto itself, then pivot_root) and execs its /bin/true.
    private func spec(_ devNull: Int32) -> SpawnSpec {
        let image = TestEnvironment.imagePath
        var s = SpawnSpec(cloneFlags: CloneFlag.newNS | CloneFlag.newPID, newRoot: image,
                          lastCap: agentd_last_cap(), argv: ["true"])
        s.ops = [.mount(source: image, target: image, fstype: nil, flags: MountPlan.msBind, data: nil)]
        s.loopbackUp = false
        s.stdio = [devNull, devNull, devNull]
        s.execPath = "/bin/true"
        return s
    }

    private func gone(_ pid: pid_t) -> Bool { kill(pid, 0) == -1 && errno == ESRCH }

    private var loop: any EventLoop { MultiThreadedEventLoopGroup.singleton.any() }

    private func withDevNull(_ body: (Int32) async throws -> Void) async throws {
        try TestEnvironment.requireRoot()
        let mountsBefore = try Posix.readFile("/proc/mounts")
        let fd = try Posix.open("/dev/null", O_RDWR)
        defer { Posix.close(fd) }
        try await body(fd)
        #expect(try Posix.readFile("/proc/mounts") == mountsBefore, "host mounts changed")
    }

    @Test func finishReturnsOnceTheChildHasExeced() async throws {
        try await withDevNull { devNull in
            let pending = try Spawner.beginSpawn(spec(devNull))
            let pid = pending.pid
            #expect(pid > 0)
            let done = try await pending.finish(on: loop, timeout: .seconds(30))
            #expect(done.pid == pid)
            var status: Int32 = 0
            #expect(waitpid(pid, &status, __WALL) == pid)
            #expect(status == 0, "the child's /bin/true exited with status \(status)")
            Posix.close(done.pidfd)
        }
    }

    @Test func aStartAbandonedBetweenTheHalvesLeavesNoChild() async throws {
        try await withDevNull { devNull in
            var pid: pid_t = -1
            do {
                let pending = try Spawner.beginSpawn(spec(devNull))
                pid = pending.pid
            }
            #expect(pid > 0)
            #expect(gone(pid), "the child \(pid) of a dropped spawn was left behind")
        }
    }

    @Test func aFailingExecIsReportedByFinish() async throws {
        try await withDevNull { devNull in
            var s = spec(devNull)
            s.execPath = "/no/such/program"
            let pending = try Spawner.beginSpawn(s)
            let pid = pending.pid
            await #expect(throws: SandboxError.self) { _ = try await pending.finish(on: loop, timeout: .seconds(30)) }
            var thrown: SandboxError? = nil
            do { _ = try await Spawner.beginSpawn(s).finish(on: loop, timeout: .seconds(30)) } catch { thrown = error as? SandboxError }
            #expect(thrown?.errno == ENOENT, "\(String(describing: thrown))")
            #expect(thrown?.stage == "exec", "\(String(describing: thrown))")
            #expect(gone(pid))
        }
    }

    /// A child that hangs in its setup (here: frozen, by starting it in a
    /// frozen cgroup; in life, a mount on a file system that does not
    /// answer) fails the start at the timeout, is killed, and once it is
    /// gone (when thawed) it is reaped, with no process or mount left.
    @Test func aChildStuckInItsSetupIsKilledAtTheTimeout() async throws {
        try await withDevNull { devNull in
            let driver = try CgroupDetection.driver(choice: .auto,
                                                    parent: "agentd-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            guard !(driver is NoCgroupDriver) else {
                Issue.record("no cgroup driver on this host: the test needs a freezer")
                return
            }
            let name = "stuck"
            try driver.create(name, limits: ResourceLimits())
            defer {
                // (Thawed first whatever happened: a frozen v1 task cannot die.)
                try? driver.thaw(name)
                try? driver.remove(name)
                driver.removeParentIfEmpty()
            }
            try driver.freeze(name)
            let placement = try driver.placement(name)
            defer { placement.close() }
            var s = spec(devNull)
            s.placement = placement
            let pending = try Spawner.beginSpawn(s)
            let pid = pending.pid
            let t0 = Posix.monotonicNanos()
            var thrown: SandboxError? = nil
            do {
                _ = try await pending.finish(on: loop, timeout: .milliseconds(300))
            } catch {
                thrown = error as? SandboxError
            }
            let waited = Double(Posix.monotonicNanos() - t0) / 1e9
            #expect(thrown?.errno == ETIMEDOUT, "\(String(describing: thrown))")
            #expect(thrown?.message.contains("did not finish setting up within") == true, "\(String(describing: thrown))")
            #expect(waited >= 0.29 && waited < 5, "the start waited \(waited) s for a 0.3 s timeout")
            // Thawed (cgroup v1: a frozen task dies of its SIGKILL only
            // then; v2 kills frozen tasks), the child is gone and reaped.
            try driver.thaw(name)
            var reaped = false
            for _ in 0..<500 {
                if gone(pid) {
                    reaped = true
                    break
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(reaped, "the killed child \(pid) was not reaped")
        }
    }

    @Test func aFailingPlanStepIsReportedWithTheStepAndLeavesNoMount() async throws {
        try await withDevNull { devNull in
            var s = spec(devNull)
            s.ops.append(.mount(source: "/no/such/source", target: TestEnvironment.imagePath + "/tmp", fstype: nil,
                                flags: MountPlan.msBind, data: nil))
            var thrown: SandboxError? = nil
            var pid: pid_t = -1
            do {
                let pending = try Spawner.beginSpawn(s)
                pid = pending.pid
                _ = try await pending.finish(on: loop, timeout: .seconds(30))
            } catch {
                thrown = error as? SandboxError
            }
            #expect(thrown?.errno == ENOENT, "\(String(describing: thrown))")
            #expect(thrown?.message.contains("/no/such/source") == true, "\(String(describing: thrown))")
            #expect(pid > 0 && gone(pid))
        }
    }
}
