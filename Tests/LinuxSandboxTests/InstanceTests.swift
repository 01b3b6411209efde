import Logging
import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// Several agentd instances on one host (a daemon, `agentd sandbox run`,
/// the tests, the benchmarks) never touch each other's sandboxes, and a
/// sandbox that stops by itself is reported with its cause.
@Suite(.serialized) struct InstanceTests {
    @Test func theInstanceTagIsStablePerStateDirectoryAndDiffersBetweenThem() {
        let a = InstanceTag.of(stateDirectory: "/var/lib/agentd")
        #expect(a == InstanceTag.of(stateDirectory: "/var/lib/agentd"))
        #expect(a != InstanceTag.of(stateDirectory: "/var/lib/agentd2"))
        #expect(a.count == 12 && a.allSatisfy(\.isHexDigit))
    }

    @Test func theCauseOfAnUnexpectedStopIsExplained() {
        let limit: UInt64 = 256 << 20
        #expect(LinuxSandboxBackend.explain(.signaled(SIGKILL), oomKills: 1, memoryLimit: limit).0 == .outOfMemory)
        #expect(LinuxSandboxBackend.explain(.signaled(SIGKILL), oomKills: 1, memoryLimit: limit).1.contains("256 MiB"))
        #expect(LinuxSandboxBackend.explain(nil, oomKills: 2, memoryLimit: nil).0 == .outOfMemory)
        let killed = LinuxSandboxBackend.explain(.signaled(SIGKILL), oomKills: 0, memoryLimit: limit)
        #expect(killed.0 == .killed && killed.1.contains("signal 9 (SIGKILL)"))
        // A signal other than SIGKILL is not the OOM killer's, whatever the count.
        #expect(LinuxSandboxBackend.explain(.signaled(SIGTERM), oomKills: 3, memoryLimit: limit).0 == .killed)
        let exited = LinuxSandboxBackend.explain(.exited(3), oomKills: nil, memoryLimit: nil)
        #expect(exited.0 == .exited && exited.1.contains("code 3"))
        #expect(LinuxSandboxBackend.explain(nil, oomKills: nil, memoryLimit: nil).0 == .lost)
    }

    /// A second backend on the same cgroup parent (another state directory)
    /// starts (recovery), runs a sandbox and warm shells, and closes: the
    /// first one's sandbox runs on, untouched and unreported.  Then it is
    /// killed from outside, and the first backend says so.
    @Test func anotherInstanceOnTheSameCgroupParentLeavesOurSandboxesAlone() async throws {
        try await TestEnvironment.withBackend(warm: 1) { backend in
            let id = try await backend.started(TestEnvironment.id(), TestEnvironment.spec)
            _ = try await backend.sh(id, "echo alive > /tmp/marker")
            let startedAt = try await backend.status(id).startedAt

            var logger = Logger(label: "test-second")
            logger.logLevel = .error
            let state = TestEnvironment.root + "/second-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
            var config = backend.config
            config.stateDirectory = state
            config.runDirectory = state + "/run"
            for _ in 0..<2 {
                let second = try await LinuxSandboxBackend.open(config: config, logger: logger)
                await second.settlePools()
                let other = try await second.started(TestEnvironment.id("other"), TestEnvironment.spec)
                #expect(try await second.sh(other, "echo other") == "other\n")
                // The first time it leaves its sandbox running (as a crash
                // would), so that the second open recovers it; then it closes.
                await second.shutdown()
            }
            let last = try await LinuxSandboxBackend.open(config: config, logger: logger)
            for s in try await last.list() { try await last.destroy(s.id) }
            await last.close()
            try? Posix.removeTree(state)

            #expect(try await backend.status(id).state == .running)
            #expect(try await backend.status(id).startedAt == startedAt)
            #expect(try await backend.sh(id, "cat /tmp/marker") == "alive\n")

            // Killed from outside agentd: reported, with its cause.
            let cgroup = try #require(await backend.runtimeCgroup(id))
            backend.cgroups.kill(cgroup)
            let report = await withTaskGroup(of: UnexpectedStop?.self) { group in
                group.addTask {
                    for await stop in backend.unexpectedStops where stop.id == id { return stop }
                    return nil
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(10))
                    return nil
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            #expect(report?.cause == .killed, "\(String(describing: report))")
            #expect(report?.message.contains("signal 9") == true)
            #expect(try await backend.status(id).state == .stopped)
        }
    }
}
