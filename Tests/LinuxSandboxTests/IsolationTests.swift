import CAgentdSandbox
import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// What a program inside a sandbox can see and do, asserted from inside.
@Suite("Isolation (as root, real sandboxes)", .serialized)
struct IsolationTests {
    @Test(arguments: [true, false]) func ownPidNamespaceUnderInit(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let pids = try await b.sh(id, "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '")
            // init (1), sh, ls, grep, sort, tr: nothing from the host.
            let numbers = pids.split(separator: " ").compactMap { Int($0) }
            #expect(numbers.first == 1)
            #expect(numbers.allSatisfy { $0 < 50 }, "host processes visible: \(pids)")
            let comm = try await b.sh(id, "cat /proc/1/comm")
            #expect(comm.trimmed == "agentd-init")
            #expect(try await b.sh(id, "hostname").trimmed == "testbox")
        }
    }

    @Test(arguments: [true, false]) func cannotSeeHostOrOtherSandboxFiles(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let marker = "/tmp/agentd-host-secret-\(getpid())"
            try Posix.writeFileAtomically(marker, Array("secret".utf8), durable: false)
            defer { unlink(marker) }
            let a = try await b.started(TestEnvironment.id("a"), TestEnvironment.spec)
            let c = try await b.started(TestEnvironment.id("c"), TestEnvironment.spec)
            _ = try await b.sh(a, "echo mine > /workspace/a-only; echo x > /tmp/a-tmp")
            let r = try await b.run(c, ExecRequest(command: .shell(
                "test -e \(marker) && echo host; test -e /workspace/a-only && echo a; test -e /tmp/a-tmp && echo t; " +
                "grep -rl secret /tmp /workspace 2>/dev/null; echo done")))
            #expect(r.stdoutString == "done\n")
            // The host's root is not reachable through /proc either.
            let up = try await b.run(a, ExecRequest(command: .shell("ls /proc/1/root/ | grep -c agentd-host-secret")))
            #expect(up.stdoutString.trimmed == "0" || up.status.code != 0)
        }
    }

    @Test(arguments: [true, false]) func noCapabilitiesNoNewPrivsSeccompFiltered(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let status = try await b.sh(id, "agentd-probe status")
            for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                #expect(status.contains("\(set):\t0000000000000000"), "\(set) not empty: \(status)")
            }
            #expect(status.contains("NoNewPrivs:\t1"))
            #expect(status.contains("Seccomp:\t2"))
            // A claimed warm shell waits under the profile without the calls
            // of its claim and adds their seal after them (SeccompProfile.claimCalls).
            #expect(status.contains("Seccomp_filters:\t\(warm ? 2 : 1)"), "\(status)")
        }
    }

    /// The two filters of a warm start deny exactly what the whole profile
    /// does: the seal is the claim's calls, the waiting profile the rest.
    @Test func theWarmProfileAndTheClaimSealPartitionTheProfile() {
        func names(_ rules: [SeccompProfile.Rule]) -> [String] {
            rules.map { "\($0.name) \($0.errno) \(String(describing: $0.masked))" }.sorted()
        }
        #expect(names(SeccompProfile.warmRules + SeccompProfile.sealRules) == names(SeccompProfile.rules))
        #expect(Set(SeccompProfile.sealRules.map(\.name)) == SeccompProfile.claimCalls)
        #expect(SeccompProfile.sealRules.allSatisfy { $0.errno == EPERM && $0.masked == nil })
        #expect(!SeccompProfile.warmRules.contains { SeccompProfile.claimCalls.contains($0.name) })
    }

    @Test(arguments: [true, false]) func forbiddenSystemCallsFailPolitely(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let result = probeResults(try await b.sh(id, "agentd-probe syscalls"))
            for call in ["mount", "umount2", "unshare", "unshare_user", "setns", "ptrace", "keyctl", "add_key",
                         "request_key", "bpf", "kexec_load", "userfaultfd", "perf_event_open", "open_by_handle_at",
                         "init_module", "swapon", "reboot", "settimeofday", "acct", "syslog", "pivot_root",
                         "clone_newuser", "chroot", "sethostname", "move_mount"] {
                #expect(result[call] == "EPERM", "\(call) -> \(result[call] ?? "missing")")
            }
            #expect(result["io_uring_setup"] == "ENOSYS")
            #expect(result["clone3"] == "ENOSYS")
            #expect(result["fork"] == "OK", "plain fork must work")
        }
    }

    /// "name errno-name" lines of `agentd-probe` as a dictionary.
    private func probeResults(_ out: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
        }
        return result
    }

    #if arch(x86_64)
    /// By default the 32-bit ABIs do not exist for a sandboxed program: even
    /// getpid through `int 0x80` fails, so no rule can be bypassed through
    /// them.  (The host kernel has IA32 emulation; the next test shows it.)
    @Test(arguments: [true, false]) func systemCallsThroughThe32BitABIsFailWithENOSYS(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let result = probeResults(try await b.sh(id, "agentd-probe compat"))
            for call in ["i386_getpid", "i386_unshare", "i386_keyctl", "i386_ptrace", "x32_unshare"] {
                #expect(result[call] == "ENOSYS", "\(call) -> \(result[call] ?? "missing")")
            }
            #expect(await b.info().seccomp.contains("32-bit ABIs denied"))
        }
    }

    /// With `allow_32bit` the i386 ABI works and the profile's rules hold
    /// there too (a filter for x86_64 alone would let `int 0x80` through).
    @Test func allowed32BitABIsAreFilteredLikeTheNativeOne() async throws {
        try await TestEnvironment.withBackend(warm: 1, allow32Bit: true) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let result = probeResults(try await b.sh(id, "agentd-probe compat"))
            #expect(result["i386_getpid"] == "OK", "the host kernel has no IA32 emulation: \(result)")
            for call in ["i386_unshare", "i386_keyctl", "i386_ptrace", "x32_unshare"] {
                #expect(result[call] == "EPERM", "\(call) -> \(result[call] ?? "missing")")
            }
        }
    }
    #endif

    @Test(arguments: [true, false]) func imageIsReadOnlyWorkspacePersistsAcrossStopStart(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            _ = try await b.sh(id, "echo persisted > /workspace/keep.txt; echo changed > /etc/agentd-image-test")
            // The image itself is untouched: the write went to this sandbox's upper layer.
            #expect(!Posix.exists(TestEnvironment.imagePath + "/etc/agentd-image-test"))
            try await b.stop(id)
            #expect(try await b.status(id).state == .stopped)
            try await b.start(id)
            #expect(try await b.sh(id, "cat /workspace/keep.txt") == "persisted\n")
            #expect(try await b.sh(id, "cat /etc/agentd-image-test") == "changed\n")

            // With a read-only root, writing to the image's files fails outright.
            var ro = TestEnvironment.spec
            ro.readOnlyRoot = true
            let r = try await b.started(TestEnvironment.id("ro"), ro)
            #expect(try await b.sh(r, "agentd-probe write /etc/x || true").trimmed == "EROFS")
            #expect(try await b.sh(r, "agentd-probe write /workspace/x").trimmed == "ok")
            #expect(try await b.sh(r, "agentd-probe write /tmp/x").trimmed == "ok")
        }
    }

    /// Pooled namespaces get lo up from the pool's holder; without the pool
    /// (or when it runs dry) the clone child brings it up.
    @Test(arguments: zip([0, 2, 0], [0, 0, 1])) func onlyLoopbackAndItIsUp(pool: Int, warm: Int) async throws {
        try await TestEnvironment.withBackend(pool: pool, warm: warm) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            #expect(try await b.sh(id, "ls /sys/class/net | tr '\\n' ' '") == "lo ")
            let flags = try await b.sh(id, "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags")
            let hex = flags.split(separator: "\n").last.map(String.init) ?? ""
            #expect((Int(hex.dropFirst(2), radix: 16) ?? 0) & 1 == 1, "lo is not up: \(flags)")
            let devs = try await b.sh(id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
            #expect(devs == "lo\n")
        }
    }

    @Test(arguments: [true, false]) func maskedAndReadOnlyProcPaths(warm: Bool) async throws {
        try await TestEnvironment.withBackend(warm: warm ? 1 : 0) { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            for path in MountPlan.hostMaskedFiles {
                #expect(try await b.sh(id, "wc -c < \(path)").trimmed == "0", "\(path) is not empty")
            }
            for path in MountPlan.hostMaskedDirectories {
                #expect(try await b.sh(id, "ls -A \(path) | wc -l").trimmed == "0", "\(path) is not empty")
            }
            let w = try await b.run(id, ExecRequest(command: .shell("echo 1 > /proc/sys/kernel/domainname")))
            #expect(w.status.code != 0)
            #expect(w.stderrString.contains("Read-only") || w.stderrString.contains("denied"))
            let devs = try await b.sh(id, "ls /dev | tr '\\n' ' '")
            #expect(devs == "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ")
        }
    }

    /// (User namespace mode always starts cold: WarmShellTests checks that.)
    @Test func userNamespaceMapsRootToUnprivilegedRange() async throws {
        try await TestEnvironment.withBackend(warm: 0) { b in
            var spec = TestEnvironment.spec
            spec.userNamespace = true
            let id = try await b.started(TestEnvironment.id(), spec)
            let map = try await b.sh(id, "cat /proc/self/uid_map").split(whereSeparator: { $0 == " " || $0 == "\n" })
            #expect(map == ["0", "100000", "65536"])
            #expect(try await b.sh(id, "id -u").trimmed == "0")
            // Image files appear owned by the sandbox's root, not by nobody.
            #expect(try await b.sh(id, "stat -c %u /bin/busybox").trimmed == "0")
            _ = try await b.sh(id, "echo hi > /workspace/owned")
            let st = try await b.stat(id, path: "/workspace/owned")
            #expect(st.size == 3)
            let host = b.config.stateDirectory + "/sandboxes/\(id)/upper/workspace/owned"
            let mode = agentd_stat_mode(host)
            #expect(mode >= 0)
            var sb = stat()
            #expect(lstat(host, &sb) == 0 && sb.st_uid == 100_000, "host owner of a sandbox file must be the mapped uid")
            let probe = try await b.sh(id, "agentd-probe status")
            #expect(probe.contains("CapEff:\t0000000000000000"))
        }
    }

    /// Found by the API fuzzer: the second user-namespace sandbox of a
    /// backend failed to start (EINVAL attaching the image), because one
    /// detached idmapped tree was shared and the first start used it up.
    @Test func severalUserNamespaceSandboxesStartOneAfterAnother() async throws {
        try await TestEnvironment.withBackend(warm: 0) { b in
            var spec = TestEnvironment.spec
            spec.userNamespace = true
            var ids: [SandboxID] = []
            for _ in 0..<3 {
                let id = try await b.started(TestEnvironment.id(), spec)
                #expect(try await b.sh(id, "id -u").trimmed == "0")
                ids.append(id)
            }
            // Files uploaded by the daemon are created as the sandbox's root
            // (its root file system lives in its user namespace, where the
            // daemon's own ids have no mapping: EOVERFLOW, found by the fuzzer).
            _ = try await b.writeFile(ids[1], path: "/workspace/up/loaded.txt", bytes: Array("from the host".utf8))
            #expect(try await b.sh(ids[1], "cat /workspace/up/loaded.txt; stat -c ' %u' /workspace/up/loaded.txt") == "from the host 0\n")
            // And again after a stop: the next start makes its own tree too.
            try await b.stop(ids[0])
            try await b.start(ids[0])
            #expect(try await b.sh(ids[0], "stat -c %u /bin/busybox").trimmed == "0")
        }
    }
}
