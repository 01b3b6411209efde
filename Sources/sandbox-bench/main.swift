// sandbox-bench: agentd's sandbox start and exec latency against bubblewrap,
// measured side by side in one run, and the host memory of many sandboxes.
//
//   swift run -c release sandbox-bench --image-dir DIR [--runs 500] [--concurrent 200]
//
// Prints a Markdown table (BENCHMARKS.md records it with the command).
import CAgentdSandbox
import LinuxSandbox
import Logging
import NIOCore
import NIOPosix
import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var imageDir = ""
    var stateDir = "/tmp/agentd-bench"
    var runs = 500
    var concurrent = 200
    var bwrap = "/usr/bin/bwrap"
    var cgroupDriver = "auto"
    /// "nio": Swift concurrency on NIO's event loops, as agentd runs it;
    /// "default": the Swift runtime's own thread pool.
    var executor = "nio"

    static func parse() -> Options {
        var o = Options()
        var args = CommandLine.arguments.dropFirst()
        while let a = args.popFirst() {
            switch a {
            case "--image-dir": o.imageDir = args.popFirst() ?? ""
            case "--state-dir": o.stateDir = args.popFirst() ?? o.stateDir
            case "--runs": o.runs = Int(args.popFirst() ?? "") ?? o.runs
            case "--concurrent": o.concurrent = Int(args.popFirst() ?? "") ?? o.concurrent
            case "--bwrap": o.bwrap = args.popFirst() ?? o.bwrap
            case "--cgroup-driver": o.cgroupDriver = args.popFirst() ?? o.cgroupDriver
            case "--executor": o.executor = args.popFirst() ?? o.executor
            default:
                complain("usage: sandbox-bench --image-dir DIR [--runs N] [--concurrent N] [--state-dir DIR] "
                         + "[--bwrap PATH] [--cgroup-driver auto|v2|v1|none] [--executor nio|default]")
                exit(2)
            }
        }
        guard o.imageDir.hasPrefix("/") else {
            complain("sandbox-bench: --image-dir must be an absolute path to a root filesystem")
            exit(2)
        }
        return o
    }
}

func complain(_ s: String) {
    let line = Array((s + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

struct Samples {
    var ns: [UInt64] = []
    mutating func add(_ v: UInt64) { ns.append(v) }
    func percentile(_ p: Double) -> Double {
        let s = ns.sorted()
        guard !s.isEmpty else { return 0 }
        let i = min(s.count - 1, Int((Double(s.count) * p).rounded(.up)) - 1)
        return Double(s[max(0, i)]) / 1e6
    }
    var mean: Double { ns.isEmpty ? 0 : Double(ns.reduce(0, +)) / Double(ns.count) / 1e6 }
}

func fmt(_ ms: Double) -> String {
    let v = (ms * 1000).rounded() / 1000
    return "\(v) ms"
}

/// One bubblewrap sandbox running /bin/true, spawned and waited for.
func runBwrap(_ o: Options) -> Int32 {
    spawnAndWait(o.bwrap, [o.bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", o.imageDir, "/",
                           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/", "/bin/true"])
}

/// posix_spawn and wait: the wait status, or -1.
func spawnAndWait(_ path: String, _ argv: [String]) -> Int32 {
    var cargs = argv.map { strdup($0) }
    cargs.append(nil)
    defer { cargs.forEach { free($0) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, path, nil, nil, &cargs, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

func meminfo(_ key: String) -> UInt64 {
    guard let f = fopen("/proc/meminfo", "r") else { return 0 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix(key + ":") {
            let digits = s.dropFirst(key.count + 1).filter { $0.isNumber }
            return (UInt64(digits) ?? 0) * 1024
        }
    }
    return 0
}

func dropCaches() {
    sync()
    if let f = fopen("/proc/sys/vm/drop_caches", "w") {
        fputs("3\n", f)
        fclose(f)
    }
}

@main
struct Bench {
    static func main() async throws {
        let o = Options.parse()
        // agentd puts Swift concurrency on NIO's event loops (Agentd.main);
        // measure the sandbox layer the way it runs there.
        let onEventLoops = o.executor == "nio"
            && NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let backend = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: o.stateDir, runDirectory: o.stateDir + "/run",
                                       cgroupDriver: o.cgroupDriver, cgroupParent: "agentd-bench",
                                       networkNamespacePool: 8),
            logger: logger)
        let spec = SandboxSpec(image: o.imageDir, hostname: "bench",
                               limits: ResourceLimits(memoryBytes: 64 << 20, pids: 64, cpuMillis: 1000))
        let info = await backend.info()
        print("# seccomp: \(info.seccomp)")
        print("# sandbox-bench: \(o.runs) runs, cgroup driver: \(info.cgroupDriver), executor: \(onEventLoops ? "NIO event loops" : "Swift's pool"), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs")
        print()

        // Warm up both (page cache, pools).
        for i in 0..<20 {
            let id = try SandboxID("warm\(i)")
            try await backend.create(id, spec: spec)
            try await backend.start(id)
            _ = try await backend.run(id, ExecRequest(command: .argv(["/bin/true"])))
            try await backend.destroy(id)
            _ = runBwrap(o)
        }

        var cold = Samples(), bw = Samples(), create = Samples(), start = Samples(), firstExec = Samples(),
            teardown = Samples()
        for i in 0..<o.runs {
            let id = try SandboxID("cold\(i)")
            let t0 = now()
            try await backend.create(id, spec: spec)
            let t1 = now()
            try await backend.start(id)
            let t2 = now()
            let r = try await backend.run(id, ExecRequest(command: .argv(["/bin/true"])))
            let t3 = now()
            guard r.status.code == 0 else { fatalError("sandbox /bin/true exited \(r.status)") }
            cold.add(t3 - t0)
            create.add(t1 - t0)
            start.add(t2 - t1)
            firstExec.add(t3 - t2)
            let t4 = now()
            try await backend.destroy(id)
            teardown.add(now() - t4)

            let b0 = now()
            let st = runBwrap(o)
            bw.add(now() - b0)
            guard st == 0 else { fatalError("bwrap exited with status \(st)") }
        }

        // exec into one running sandbox
        let warmID = try SandboxID("exec")
        try await backend.create(warmID, spec: spec)
        try await backend.start(warmID)
        var exec = Samples(), bare = Samples()
        for _ in 0..<20 { _ = try await backend.run(warmID, ExecRequest(command: .argv(["/bin/true"]))) }
        let hostTrue = o.imageDir + "/bin/true"
        for _ in 0..<o.runs {
            let t0 = now()
            let r = try await backend.run(warmID, ExecRequest(command: .argv(["/bin/true"])))
            exec.add(now() - t0)
            guard r.status.code == 0 else { fatalError("exec exited \(r.status)") }
            // The same program spawned on the host, no sandbox: what the
            // program itself costs, so agentd's share of an exec shows.
            let b0 = now()
            guard spawnAndWait(hostTrue, ["true"]) == 0 else { fatalError("\(hostTrue) failed on the host") }
            bare.add(now() - b0)
        }
        try await backend.destroy(warmID)

        print("| measurement | p50 | p99 | mean |")
        print("|---|---|---|---|")
        print("| agentd cold create-to-first-exit of /bin/true | \(fmt(cold.percentile(0.5))) | \(fmt(cold.percentile(0.99))) | \(fmt(cold.mean)) |")
        print("| &nbsp;&nbsp;create (record, directories) | \(fmt(create.percentile(0.5))) | \(fmt(create.percentile(0.99))) | \(fmt(create.mean)) |")
        print("| &nbsp;&nbsp;start (cgroup, clone, mounts, seccomp, init) | \(fmt(start.percentile(0.5))) | \(fmt(start.percentile(0.99))) | \(fmt(start.mean)) |")
        print("| &nbsp;&nbsp;first exec to exit | \(fmt(firstExec.percentile(0.5))) | \(fmt(firstExec.percentile(0.99))) | \(fmt(firstExec.mean)) |")
        print("| bubblewrap --unshare-all /bin/true (baseline) | \(fmt(bw.percentile(0.5))) | \(fmt(bw.percentile(0.99))) | \(fmt(bw.mean)) |")
        print("| agentd exec of /bin/true into a running sandbox | \(fmt(exec.percentile(0.5))) | \(fmt(exec.percentile(0.99))) | \(fmt(exec.mean)) |")
        print("| the image's /bin/true spawned on the host, no sandbox (reference: the program's own cost) | \(fmt(bare.percentile(0.5))) | \(fmt(bare.percentile(0.99))) | \(fmt(bare.mean)) |")
        print("| agentd teardown (stop, cgroup, files; not in the cold figure) | \(fmt(teardown.percentile(0.5))) | \(fmt(teardown.percentile(0.99))) | \(fmt(teardown.mean)) |")
        print()
        let ratio = cold.percentile(0.5) / bw.percentile(0.5)
        print("ratio agentd cold p50 / bubblewrap p50: \((ratio * 100).rounded() / 100)")

        // Many sandboxes at once: host memory per sandbox.
        if o.concurrent > 0 {
            dropCaches()
            let before = meminfo("MemAvailable")
            var ids: [SandboxID] = []
            for i in 0..<o.concurrent {
                let id = try SandboxID("many\(i)")
                try await backend.create(id, spec: spec)
                try await backend.start(id)
                ids.append(id)
            }
            // Every one answers.
            for id in ids {
                let r = try await backend.run(id, ExecRequest(command: .argv(["/bin/true"])))
                guard r.status.code == 0 else { fatalError("sandbox \(id) failed") }
            }
            dropCaches()
            let after = meminfo("MemAvailable")
            let per = before > after ? Double(before - after) / Double(o.concurrent) : 0
            print()
            print("\(o.concurrent) sandboxes running at once: host memory per sandbox \((per / 1024 / 1024 * 100).rounded() / 100) MiB (MemAvailable before/after, page cache dropped)")
            for id in ids { try await backend.destroy(id) }
        }
        await backend.close()
    }
}
