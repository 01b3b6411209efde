import CAgentdSandbox
import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// A cold start's two halves (`Spawner.beginSpawn`, `PendingSpawn.finish`):
/// the work done between them, and a start abandoned there, leave no child
/// and no mount behind.
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

    private func withDevNull(_ body: (Int32) throws -> Void) throws {
        try TestEnvironment.requireRoot()
        let mountsBefore = try Posix.readFile("/proc/mounts")
        let fd = try Posix.open("/dev/null", O_RDWR)
        defer { Posix.close(fd) }
        try body(fd)
        #expect(try Posix.readFile("/proc/mounts") == mountsBefore, "host mounts changed")
    }

    @Test func theWorkBetweenTheHalvesRunsWhileTheChildSetsUp() throws {
        try withDevNull { devNull in
            let pending = try Spawner.beginSpawn(spec(devNull))
            let pid = pending.pid
            #expect(pid > 0)
            let done = try pending.finish { () throws(SandboxError) -> Int in 42 }
            #expect(done.value == 42)
            #expect(done.pid == pid)
            var status: Int32 = 0
            #expect(waitpid(pid, &status, __WALL) == pid)
            #expect(status == 0, "the child's /bin/true exited with status \(status)")
            Posix.close(done.pidfd)
        }
    }

    @Test func whenTheWorkBetweenTheHalvesFailsTheChildIsKilledAndReaped() throws {
        try withDevNull { devNull in
            let pending = try Spawner.beginSpawn(spec(devNull))
            let pid = pending.pid
            var thrown: SandboxError? = nil
            do throws(SandboxError) {
                _ = try pending.finish { () throws(SandboxError) -> Int in
                    throw SandboxError(.system, "write memory.max: Invalid argument")
                }
            } catch {
                thrown = error
            }
            #expect(thrown?.message == "write memory.max: Invalid argument", "the work's error is the start's")
            #expect(gone(pid), "the child \(pid) was left behind")
        }
    }

    @Test func aStartAbandonedBetweenTheHalvesLeavesNoChild() throws {
        try withDevNull { devNull in
            var pid: pid_t = -1
            do {
                let pending = try Spawner.beginSpawn(spec(devNull))
                pid = pending.pid
            }
            #expect(pid > 0)
            #expect(gone(pid), "the child \(pid) of a dropped spawn was left behind")
        }
    }

    @Test func aFailingStepIsReportedByFinish() throws {
        try withDevNull { devNull in
            var s = spec(devNull)
            s.execPath = "/no/such/program"
            let pending = try Spawner.beginSpawn(s)
            let pid = pending.pid
            var thrown: SandboxError? = nil
            do throws(SandboxError) {
                _ = try pending.finish { () throws(SandboxError) -> Int in 1 }
            } catch {
                thrown = error
            }
            #expect(thrown?.errno == ENOENT, "\(String(describing: thrown))")
            #expect(gone(pid))
        }
    }
}
