// sandbox-bench: agentd's sandbox start and exec latency against bubblewrap,
// measured side by side in one run, and the host memory of many sandboxes.
//
//   swift run -c release sandbox-bench --image-dir DIR [--runs 500] [--concurrent 200] [--warm-pool 2]
//                                      [--allow-32bit]          (--help: every option)
//
// Three backends run side by side with bubblewrap: agentd as configured by
// default (warm shells and spare roots), without warm shells (every start
// clones; the root's overlay is a spare mounted ahead), and with both pools
// off (every start clones and mounts everything).
// Before each timed section (bubblewrap's too) both backends' pool refills
// are waited for: the figures are those of a start on a host that is not
// already starting sandboxes back to back (a burst drains the pool; starts
// then go cold, which is the pool-off row).
//
// Prints a Markdown table (BENCHMARKS.md records it with the command).
import ArgumentParser
import BenchSupport
import CAgentdSandbox
import LinuxSandbox
import Logging
import NIOCore
import NIOPosix
import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox-bench",
        abstract: "agentd's sandbox start and exec latency beside bubblewrap's, and the memory of many sandboxes.")

    @Option(help: "A root filesystem with /bin/true (rootfs/build minimal), absolute.") var imageDir: String
    @Option(help: "Scratch state directories go under this one.") var stateDir = "/tmp/agentd-bench"
    /// Sockets and runtime records; agentd's is /run/agentd, a tmpfs.
    @Option(help: "Where sockets go (default: under the state directory).") var runDir = ""
    @Option(help: "Timed starts per configuration.") var runs = 500
    @Option(help: "Sandboxes running at once for the memory figure (0: skip).") var concurrent = 200
    @Option(help: "The bubblewrap to compare with.") var bwrap = "/usr/bin/bwrap"
    @Option(help: "auto, v2, v1 or none.") var cgroupDriver = "auto"
    /// "nio": Swift concurrency on NIO's event loops, as agentd runs it;
    /// "default": the Swift runtime's own thread pool.
    @Option(help: "nio (Swift concurrency on NIO's event loops, as agentd runs) or default.") var executor = "nio"
    @Option(help: "Warm shells of the default configuration.") var warmPool = 2
    @Option(help: "Spare roots of the default configuration.") var spareRoots = 2
    /// The seccomp filter with the 32-bit ABIs (agentd's `allow_32bit`).
    @Flag(name: .customLong("allow-32bit"), help: "The seccomp filter with the 32-bit ABIs.") var allow32Bit = false

    func validate() throws {
        guard imageDir.hasPrefix("/") else {
            throw ValidationError("--image-dir must be an absolute path to a root filesystem")
        }
    }
}

func now() -> UInt64 { nowNanoseconds() }

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
        let o: Options
        do {
            o = try Options.parse()
        } catch {
            Options.exit(withError: error)
        }
        // agentd puts Swift concurrency on NIO's event loops (Agentd.main);
        // measure the sandbox layer the way it runs there.
        let onEventLoops = o.executor == "nio"
            && NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        func open(_ name: String, warm: Int, spares: Int) async throws -> LinuxSandboxBackend {
            try await LinuxSandboxBackend.open(
                config: LinuxSandboxConfig(stateDirectory: o.stateDir + "/" + name,
                                           runDirectory: (o.runDir.isEmpty ? o.stateDir + "/" + name : o.runDir)
                                               + "/" + name + "/run",
                                           cgroupDriver: o.cgroupDriver, cgroupParent: "agentd-bench-" + name,
                                           networkNamespacePool: 8, warmPool: warm, spareRoots: spares,
                                           allow32Bit: o.allow32Bit),
                logger: logger)
        }
        let backend = try await open("warm", warm: o.warmPool, spares: o.spareRoots)
        let spareBackend = try await open("sp", warm: 0, spares: o.spareRoots)
        let coldBackend = try await open("cold", warm: 0, spares: 0)
        let spec = SandboxSpec(image: o.imageDir, hostname: "bench",
                               limits: ResourceLimits(memoryBytes: 64 << 20, pids: 64, cpuMillis: 1000))
        let info = await backend.info()
        print("# seccomp: \(info.seccomp)")
        print("# sandbox-bench: \(o.runs) runs, cgroup driver: \(info.cgroupDriver), executor: \(onEventLoops ? "NIO event loops" : "Swift's pool"), warm pool \(o.warmPool), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs")
        print()

        /// Both backends' refills done (they run in the background, delayed
        /// after a start): no timed section, bubblewrap's included, shares
        /// the CPUs with one.
        func settle() async {
            await backend.settlePools()
            await spareBackend.settlePools()
            await coldBackend.settlePools()
        }

        /// One timed create, start, first exec of /bin/true (then an untimed destroy).
        struct Start { var total: UInt64, create: UInt64, start: UInt64, exec: UInt64, teardown: UInt64 }
        func timedStart(_ b: LinuxSandboxBackend, _ id: SandboxID) async throws -> Start {
            await settle()
            let t0 = now()
            try await b.create(id, spec: spec)
            let t1 = now()
            try await b.start(id)
            let t2 = now()
            let r = try await b.run(id, ExecRequest(command: .argv(["/bin/true"])))
            let t3 = now()
            guard r.status.code == 0 else { fatalError("sandbox /bin/true exited \(r.status)") }
            try await b.destroy(id)
            return Start(total: t3 - t0, create: t1 - t0, start: t2 - t1, exec: t3 - t2, teardown: now() - t3)
        }

        // Warm up all four (page cache, pools).
        for i in 0..<20 {
            _ = try await timedStart(backend, try SandboxID("warmup\(i)"))
            _ = try await timedStart(spareBackend, try SandboxID("warmup\(i)"))
            _ = try await timedStart(coldBackend, try SandboxID("warmup\(i)"))
            _ = runBwrap(o)
        }

        var cold = Samples(), bw = Samples(), create = Samples(), start = Samples(), firstExec = Samples(),
            teardown = Samples()
        var warm = Samples(), warmCreate = Samples(), warmStart = Samples(), warmExec = Samples()
        var spare = Samples(), spareCreate = Samples(), spareStart = Samples(), spareExec = Samples()
        for i in 0..<o.runs {
            let w = try await timedStart(backend, try SandboxID("w\(i)"))
            warm.add(w.total)
            warmCreate.add(w.create)
            warmStart.add(w.start)
            warmExec.add(w.exec)

            let p = try await timedStart(spareBackend, try SandboxID("s\(i)"))
            spare.add(p.total)
            spareCreate.add(p.create)
            spareStart.add(p.start)
            spareExec.add(p.exec)

            let c = try await timedStart(coldBackend, try SandboxID("c\(i)"))
            cold.add(c.total)
            create.add(c.create)
            start.add(c.start)
            firstExec.add(c.exec)
            teardown.add(c.teardown)

            await settle()
            let b0 = now()
            let st = runBwrap(o)
            bw.add(now() - b0)
            guard st == 0 else { fatalError("bwrap exited with status \(st)") }
        }
        let counts = await backend.startCounts()
        guard counts.warm >= o.runs || o.warmPool == 0 else {
            fatalError("only \(counts.warm) of \(o.runs) starts claimed a warm shell")
        }
        await spareBackend.close()
        await coldBackend.close()

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

        func row(_ name: String, _ x: Samples) {
            print("| \(name) | \(fmt(x.percentile(0.5))) | \(fmt(x.percentile(0.99))) | \(fmt(x.mean)) |")
        }
        print("| measurement | p50 | p99 | mean |")
        print("|---|---|---|---|")
        row("agentd create-to-first-exit of /bin/true (default: warm pool of \(o.warmPool))", warm)
        row("&nbsp;&nbsp;create (record; a spare root renamed to the sandbox's)", warmCreate)
        row("&nbsp;&nbsp;start (claim a warm shell: attach the prepared root, move mounts, pivot, seccomp, init)", warmStart)
        row("&nbsp;&nbsp;first exec to exit", warmExec)
        row("agentd create-to-first-exit of /bin/true, no warm shells (clone, namespaces, mounts; the root a spare)", spare)
        row("&nbsp;&nbsp;create (record; a spare root renamed to the sandbox's)", spareCreate)
        row("&nbsp;&nbsp;start (cgroup, clone, attach the root, mounts, seccomp, init)", spareStart)
        row("&nbsp;&nbsp;first exec to exit", spareExec)
        row("agentd create-to-first-exit of /bin/true, pools off (cold: clone, namespaces, all mounts)", cold)
        row("&nbsp;&nbsp;create (record, directories)", create)
        row("&nbsp;&nbsp;start (cgroup, clone, mounts, seccomp, init)", start)
        row("&nbsp;&nbsp;first exec to exit", firstExec)
        row("bubblewrap --unshare-all /bin/true (baseline)", bw)
        row("agentd exec of /bin/true into a running sandbox", exec)
        row("the image's /bin/true spawned on the host, no sandbox (reference: the program's own cost)", bare)
        row("agentd teardown (stop, cgroup, files; not in the figures above)", teardown)
        print()
        func ratio(_ a: Samples) -> Double { (a.percentile(0.5) / bw.percentile(0.5) * 100).rounded() / 100 }
        print("ratio agentd p50 / bubblewrap p50: \(ratio(warm)) (default), \(ratio(spare)) (no warm shells), "
              + "\(ratio(cold)) (pools off)")

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
