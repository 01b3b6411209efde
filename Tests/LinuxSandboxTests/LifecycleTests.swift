import Logging
import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

@Suite("Lifecycle and bad input (as root)", .serialized)
struct LifecycleTests {
    @Test func badInputIsAClearErrorAndLeavesNothingBehind() async throws {
        try await TestEnvironment.withBackend { b in
            var missing = TestEnvironment.spec
            missing.image = "no-such-image"
            await expectError(.notFound, field: "image") { try await b.create(TestEnvironment.id(), spec: missing) }

            var absurd = TestEnvironment.spec
            absurd.limits.memoryBytes = 1 << 60
            await expectError(.invalidArgument, field: "memory") { try await b.create(TestEnvironment.id(), spec: absurd) }
            absurd = TestEnvironment.spec
            absurd.limits.cpuMillis = 1_000_000
            await expectError(.invalidArgument, field: "cpus") { try await b.create(TestEnvironment.id(), spec: absurd) }
            absurd = TestEnvironment.spec
            absurd.limits.pids = 0
            await expectError(.invalidArgument, field: "pids") { try await b.create(TestEnvironment.id(), spec: absurd) }

            let ghost = TestEnvironment.id("ghost")
            await expectError(.notFound) { try await b.start(ghost) }
            await expectError(.notFound) { _ = try await b.exec(ghost, ExecRequest(command: .shell("true"))) }
            await expectError(.notFound) { _ = try await b.status(ghost) }

            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            await expectError(.notFound, field: "command") {
                _ = try await b.run(id, ExecRequest(command: .argv(["/no/such/program"])))
            }
            await expectError(.notFound, field: "cwd") {
                _ = try await b.run(id, ExecRequest(command: .argv(["true"]), cwd: "/no/such/dir"))
            }
            await expectError(.invalidArgument, field: "command") { _ = try await b.run(id, ExecRequest(command: .argv([]))) }
            await expectError(.invalidArgument, field: "path") { _ = try await b.readAll(id, path: "../../x") }
            // After all of that the sandbox still works.
            #expect(try await b.sh(id, "echo ok") == "ok\n")
            let created = try await b.list().map(\.id)
            #expect(created == [id], "failed creates left records: \(created)")
        }
    }

    /// The daemon's hard limit on open files, and defaults asking for more.
    private func openFilesSetting() -> (limit: Int, defaults: ResourceLimits) {
        var hard = rlimit()
        #expect(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &hard) == 0)
        let limit = Int(clamping: hard.rlim_max)
        #expect(limit < 1_048_576, "the test needs a hard limit on open files below the largest valid request")
        var defaults = ResourceLimits.defaults
        defaults.openFiles = 1_048_576
        return (limit, defaults)
    }

    /// More open files than the daemon's hard limit can only be given with
    /// CAP_SYS_RESOURCE in the host's user namespace: asked for, it is a
    /// clear error at create (not an EPERM from the sandbox's setup at
    /// start); as a default, it is lowered to the hard limit.
    @Test func openFilesBeyondTheHostsLimit() async throws {
        let (limit, defaults) = openFilesSetting()
        let canRaise = LinuxSandboxBackend.hasEffectiveCapability(24)
        try await TestEnvironment.withBackend(warm: 0, defaultLimits: defaults) { b in
            var asked = TestEnvironment.spec
            asked.limits.openFiles = limit + 1
            if canRaise {
                let id = try await b.started(TestEnvironment.id(), asked)
                #expect(try await b.sh(id, "ulimit -n") == "\(limit + 1)\n")
                try await b.destroy(id)
            } else {
                await expectError(.invalidArgument, field: "open_files") { try await b.create(TestEnvironment.id(), spec: asked) }
            }
            // The default (above the hard limit here) is lowered.
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            #expect(try await b.sh(id, "ulimit -n") == "\(canRaise ? 1_048_576 : limit)\n")
            try await b.destroy(id)
            #expect(try await b.list().isEmpty, "failed creates left records")
        }
    }

    /// In a user namespace the sandbox never holds CAP_SYS_RESOURCE over
    /// the host's limits: the same, whatever the daemon holds.
    @Test func openFilesBeyondTheHostsLimitInUserNamespaceMode() async throws {
        let (limit, defaults) = openFilesSetting()
        try await TestEnvironment.withBackend(warm: 0, defaultLimits: defaults) { b in
            var asked = TestEnvironment.spec
            asked.userNamespace = true
            asked.limits.openFiles = limit + 1
            await expectError(.invalidArgument, field: "open_files") { try await b.create(TestEnvironment.id(), spec: asked) }
            var plain = TestEnvironment.spec
            plain.userNamespace = true
            let id = try await b.started(TestEnvironment.id(), plain)
            #expect(try await b.sh(id, "ulimit -n") == "\(limit)\n")
            try await b.destroy(id)
            #expect(try await b.list().isEmpty, "failed creates left records")
        }
    }

    @Test func stopKillsEverythingAndDestroyRemovesFiles() async throws {
        try await TestEnvironment.withBackend { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            _ = try await b.exec(id, ExecRequest(command: .shell("sleep 1000")))
            _ = try await b.sh(id, "setsid sleep 1000 >/dev/null 2>&1 & echo")
            try await b.stop(id)
            #expect(try await b.status(id).state == .stopped)
            #expect(await b.cgroupNames().isEmpty)
            try await b.destroy(id)
            #expect(!Posix.exists(b.config.stateDirectory + "/sandboxes/\(id)"))
            await expectError(.notFound) { _ = try await b.status(id) }
        }
    }

    @Test func aRestartedBackendReadoptsRunningSandboxes() async throws {
        try TestEnvironment.requireRoot()
        let parent = "agentd-test-adopt-\(getpid())"
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let state = TestEnvironment.root + "/adopt"
        let config = LinuxSandboxConfig(stateDirectory: state, runDirectory: state + "/run",
                                        cgroupParent: parent, networkNamespacePool: 0)
        defer { try? Posix.removeTree(state) }
        let first = try await LinuxSandboxBackend.open(config: config, logger: logger)
        // One backend per state directory.
        await expectError(.conflict, field: "state_dir") {
            _ = try await LinuxSandboxBackend.open(config: config, logger: logger)
        }
        let id = try await first.started(TestEnvironment.id(), TestEnvironment.spec)
        _ = try await first.sh(id, "echo before > /workspace/f")
        let longRunning = try await first.exec(id, ExecRequest(command: .shell("sleep 1000")))
        _ = longRunning
        // The "daemon" goes away without stopping its sandboxes.
        await first.shutdown()

        let second = try await LinuxSandboxBackend.open(config: config, logger: logger)
        #expect(try await second.status(id).state == .running)
        #expect(try await second.sh(id, "cat /workspace/f; ps -o comm | grep -c sleep") == "before\n1\n")
        await second.shutdown()

        // A backend told not to adopt stops them, keeping their files.
        var noAdopt = config
        noAdopt.adoptRunning = false
        let third = try await LinuxSandboxBackend.open(config: noAdopt, logger: logger)
        #expect(try await third.status(id).state == .stopped)
        #expect(await third.cgroupNames().isEmpty)
        try await third.start(id)
        #expect(try await third.sh(id, "cat /workspace/f") == "before\n")
        try await third.destroy(id)
        await third.close()
    }
}

func expectError(_ kind: SandboxError.Kind, field: String? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                 _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected a \(kind) error", sourceLocation: sourceLocation)
    } catch let e as SandboxError {
        #expect(e.kind == kind, "\(e)", sourceLocation: sourceLocation)
        if let field { #expect(e.field == field, "\(e)", sourceLocation: sourceLocation) }
        #expect(!e.message.isEmpty, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected SandboxError, got \(error)", sourceLocation: sourceLocation)
    }
}
