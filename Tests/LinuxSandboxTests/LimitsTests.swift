import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// Resource limits enforced by the cgroup driver chosen on this host (v1 on a
/// hybrid host, v2 elsewhere; the VM tier runs the same checks on pure v2).
@Suite("Limits (as root, real cgroups)", .serialized)
struct LimitsTests {
    /// AGENTD_EXPECT_CGROUP=v1|v2 (set by the test runner and the VM tier)
    /// makes sure the tier runs on the driver it is meant to cover.
    @Test(arguments: [true, false]) func theExpectedCgroupDriverIsInUse(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let name = await b.info().cgroupDriver
            #expect(name != "none", "no cgroup driver: limits would not be enforced")
            if let expected = getenv("AGENTD_EXPECT_CGROUP").map({ String(cString: $0) }) {
                #expect(name.hasPrefix("cgroup \(expected)"), "driver is \(name), expected \(expected)")
            }
        }
    }

    @Test(arguments: [true, false]) func forkBombIsContainedAndHostStaysResponsive(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            var spec = TestEnvironment.spec
            spec.limits.pids = 32
            let id = try await b.started(TestEnvironment.id(), spec)
            let bomb = try await b.exec(id, ExecRequest(command: .argv(["agentd-probe", "forkbomb", "10000"]),
                                                      timeout: .seconds(30)))
            // While it runs the host can still start processes.
            #expect(try Program.run(["/bin/true"]) == 0)
            let r = try await bomb.collect()
            let out = r.stdoutString
            let made = Int(out.split(separator: " ").dropFirst().first ?? "") ?? 0
            #expect(made > 0 && made < 32, "forked \(made): \(out)")
            #expect(out.contains("EAGAIN"))
            // The sandbox itself survives.
            #expect(try await b.sh(id, "echo alive") == "alive\n")
        }
    }

    @Test(arguments: [true, false]) func memoryHogIsOOMKilledInsideItsCgroupAlone(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            var spec = TestEnvironment.spec
            spec.limits.memoryBytes = 32 << 20
            let id = try await b.started(TestEnvironment.id(), spec)
            let r = try await b.run(id, ExecRequest(command: .argv(["agentd-probe", "memhog", "512"]),
                                                    timeout: .seconds(60)))
            #expect(r.status.signal == SIGKILL, "memhog: \(r.status) \(r.stdoutString)")
            #expect(!r.stdoutString.contains("done"))
            // Only the hog died: init and the sandbox keep working.
            #expect(try await b.sh(id, "echo alive") == "alive\n")
            let usage = try await b.status(id).usage
            #expect((usage?.oomKills ?? 0) >= 1)
        }
    }

    @Test(arguments: [true, false]) func timeoutKillsTheCommandAndItsChildren(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let r = try await b.run(id, ExecRequest(command: .shell("sleep 100 & sleep 100 & echo started; wait"),
                                                    timeout: .milliseconds(700)))
            #expect(r.status.timedOut)
            #expect(r.status.signal == SIGKILL)
            #expect(r.stdoutString == "started\n")
            #expect(r.status.durationMs < 5000)
            // No sleep survives.
            let left = try await b.sh(id, "ps -o comm | grep -c sleep || true")
            #expect(left.trimmed == "0")
        }
    }

    @Test(arguments: [true, false]) func limitsAreWrittenToTheCgroup(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            var spec = TestEnvironment.spec
            spec.limits = ResourceLimits(memoryBytes: 96 << 20, pids: 40, cpuMillis: 500)
            let id = try await b.started(TestEnvironment.id(), spec)
            let st = try await b.status(id)
            #expect(st.limits.memoryBytes == 96 << 20)
            #expect(st.limits.pids == 40)
            let u = try #require(st.usage)
            #expect((u.pids ?? 0) >= 1)
            #expect((u.memoryBytes ?? 0) > 0)
            let mounts = CgroupMounts.read()
            // A sandbox started from a warm shell keeps the shell's cgroup on
            // v2 (v2 cgroups cannot be renamed); on v1 it was renamed to the id.
            let cgroup = try #require(await b.runtimeCgroup(id))
            #expect(cgroup == id.rawValue || (mounts.v2 != nil && warm && cgroup.hasPrefix(".sandbox-")))
            if let v2 = mounts.v2, Posix.exists(v2 + "/" + b.config.cgroupParent + "/" + cgroup) {
                let d = v2 + "/" + b.config.cgroupParent + "/" + cgroup
                #expect(try Posix.readFile(d + "/memory.max").trimmed == String(96 << 20))
                #expect(try Posix.readFile(d + "/pids.max").trimmed == "40")
                #expect(try Posix.readFile(d + "/cpu.max").trimmed == "50000 100000")
            } else {
                let mem = try #require(mounts.v1["memory"])
                let pids = try #require(mounts.v1["pids"])
                #expect(try Posix.readFile("\(mem)/\(b.config.cgroupParent)/\(cgroup)/memory.limit_in_bytes").trimmed
                    == String(96 << 20))
                #expect(try Posix.readFile("\(pids)/\(b.config.cgroupParent)/\(cgroup)/pids.max").trimmed == "40")
                if let cpu = mounts.v1["cpu"] {
                    #expect(try Posix.readFile("\(cpu)/\(b.config.cgroupParent)/\(cgroup)/cpu.cfs_quota_us").trimmed
                        == "50000")
                }
            }
        }
    }

    @Test(arguments: [true, false]) func pauseFreezesAndResumeThaws(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            try await b.pause(id)
            #expect(try await b.status(id).state == .paused)
            await #expect(throws: SandboxError.self) { try await b.run(id, ExecRequest(command: .shell("true"))) }
            try await b.resume(id)
            #expect(try await b.status(id).state == .running)
            #expect(try await b.sh(id, "echo back") == "back\n")
            // Stopping a paused sandbox works too.
            try await b.pause(id)
            try await b.stop(id)
            #expect(try await b.status(id).state == .stopped)
        }
    }
}
