import Foundation
import Logging
import SandboxKit
import Testing
@testable import LinuxSandbox

@Suite("cgroup delegation (as root)", .serialized)
struct CgroupDelegationTests {
    @Test func theDelegatedSubtreeIsUsedOnlyWhenTheDaemonSitsInAChildOfItsUnit() {
        #expect(CgroupDetection.delegatedParent("/system.slice/agentd.service/daemon")
            == "system.slice/agentd.service/sandboxes")
        #expect(CgroupDetection.delegatedParent("/system.slice/run-r1.scope/daemon") == "system.slice/run-r1.scope/sandboxes")
        // In the unit's own cgroup (systemd < 254): that cgroup must stay a leaf.
        #expect(CgroupDetection.delegatedParent("/system.slice/agentd.service") == nil)
        #expect(CgroupDetection.delegatedParent("/user.slice/user-0.slice/session-3.scope") == nil)
        #expect(CgroupDetection.delegatedParent("/") == nil)
        #expect(CgroupDetection.delegatedParent("/daemon") == nil)
        #expect(CgroupDetection.delegatedParent("/system.slice/foo.slice/daemon") == nil)
    }

    /// On cgroup v2 (the VM tier; a hybrid host has no v2 controllers): a
    /// "unit" cgroup with a process in its `daemon` child, as systemd 254+
    /// makes it; sandboxes go to `<unit>/sandboxes` with their limits, beside
    /// the daemon, and nothing is left afterwards.
    @Test func sandboxesLiveBesideTheDaemonInItsDelegatedSubtree() async throws {
        try TestEnvironment.requireRoot()
        guard let mount = CgroupMounts.read().v2,
              ((try? Posix.readFile(mount + "/cgroup.controllers")) ?? "").contains("memory")
        else {
            // The host tier on a hybrid host; the VM tier runs this for real.
            #expect(getenv("AGENTD_EXPECT_CGROUP").map { String(cString: $0) } != "v2",
                    "cgroup v2 was expected to have controllers here")
            return
        }
        let unit = "agentd-deleg-\(getpid()).service"
        try Posix.makeDirectories(mount + "/" + unit + "/daemon")
        // posix_spawn, not Foundation's Process: its exit monitoring needs a
        // run loop (a CFSocket) and blocks a cooperative thread waiting.
        var sleeper: pid_t = 0
        let arena = CArena()
        let spawned = posix_spawn(&sleeper, "/bin/sleep", nil, nil, arena.stringArray(["/bin/sleep", "60"]), nil)
        try #require(spawned == 0, "spawn /bin/sleep")
        defer {
            kill(sleeper, SIGKILL)
            var status: Int32 = 0
            while waitpid(sleeper, &status, 0) < 0 && errno == EINTR {}
            _ = rmdir(mount + "/" + unit + "/daemon")
            _ = rmdir(mount + "/" + unit)
        }
        try Posix.writeFile(mount + "/" + unit + "/daemon/cgroup.procs", "\(sleeper)")

        let driver = try CgroupDetection.driver(choice: .v2, parent: "auto", selfCgroup: "/" + unit + "/daemon")
        let parent = unit + "/sandboxes"
        #expect((driver as? CgroupV2Driver)?.root == mount + "/" + parent)
        #expect(driver.notes.contains { $0.contains("delegated") })

        let state = TestEnvironment.root + "/delegation"
        defer { try? Posix.removeTree(state) }
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let b = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: state, runDirectory: state + "/run", cgroupDriver: "v2",
                                       cgroupParent: parent, networkNamespacePool: 0),
            logger: logger)
        let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
        let memoryMax = try Posix.readFile(mount + "/" + parent + "/" + id.rawValue + "/memory.max")
        #expect(memoryMax.trimmingCharacters(in: .whitespacesAndNewlines) == String(128 << 20))
        // The daemon stayed in its leaf; the unit holds no process itself.
        #expect(try Posix.readFile(mount + "/" + unit + "/daemon/cgroup.procs").contains("\(sleeper)"))
        #expect(try Posix.readFile(mount + "/" + unit + "/cgroup.procs").isEmpty)
        try await b.destroy(id)
        await b.close()
        #expect(!Posix.exists(mount + "/" + parent), "the sandboxes cgroup is removed when empty")
    }
}
