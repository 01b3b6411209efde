import AgentdModel
import ArgumentParser
import LinuxSandbox
import Logging
import SandboxKit
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

struct SandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Drive sandboxes directly (for operators and tests).",
        subcommands: [SandboxRun.self])
}

/// `agentd sandbox run`: one command in a fresh sandbox that is removed
/// afterwards, streaming output and exiting with the command's status.
struct SandboxRun: AsyncParsableCommand {
    static let maxTimeout: Duration = .seconds(31_536_000)
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one command in a fresh sandbox and remove it afterwards.",
        discussion: "Exits with the command's exit code, or 128+N when it was killed by signal N.")

    @OptionGroup var state: StateOptions

    @Option(name: .customLong("rootfs"), help: "Image name (under STATE/images) or an absolute directory.")
    var rootfs: String = "default"

    @Option(help: "Memory limit, e.g. 256M.")
    var memory: String?

    @Option(help: "Maximum number of processes.")
    var pids: Int?

    @Option(help: "CPU limit in CPUs, e.g. 0.5.")
    var cpus: String?

    @Option(help: "Network mode: none (loopback only).")
    var net: String = "none"

    @Flag(help: "Run in a user namespace (root inside maps to an unprivileged host range).")
    var userns = false

    @Flag(name: .customLong("readonly-root"), help: "Make everything but /workspace and /tmp read-only.")
    var readOnlyRoot = false

    @Option(help: "Kill the command (and its process group) after this many seconds.")
    var timeout: Double?

    @Option(name: .customLong("env"), help: "Environment variable NAME=VALUE (repeatable).")
    var env: [String] = []

    @Option(help: "Working directory inside the sandbox.")
    var cwd: String?

    @Option(help: "Hostname inside the sandbox.")
    var hostname: String = "sandbox"

    @Flag(name: .customLong("allow-32bit"), help: "Let the command make system calls through the 32-bit ABIs (denied by default).")
    var allow32Bit = false

    @Option(name: .customLong("cgroup-driver"), help: "auto, v2, v1 or none.")
    var cgroupDriver: String = "auto"

    @Option(name: .customLong("cgroup-parent"),
            help: "The cgroup the sandbox goes under (default: $AGENTD_CGROUP_PARENT, else as agentd serve).")
    var cgroupParent: String?

    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).")
    var command: [String] = []

    func spec() throws -> SandboxSpec {
        var limits = ResourceLimits()
        if let memory {
            guard let b = Units.parseBytes(memory) else { throw ValidationError("--memory \(memory) is not a size like 256M") }
            limits.memoryBytes = b
        }
        if let pids { limits.pids = pids }
        if let cpus {
            guard let c = Units.parseCPUs(cpus) else { throw ValidationError("--cpus \(cpus) is not a number of CPUs") }
            limits.cpuMillis = c
        }
        guard net == "none" else { throw ValidationError("--net \(net): only \"none\" is supported") }
        var environment: [String: String] = [:]
        for e in env {
            guard let eq = e.firstIndex(of: "=") else { throw ValidationError("--env \(e) is not NAME=VALUE") }
            environment[String(e[..<eq])] = String(e[e.index(after: eq)...])
        }
        return SandboxSpec(image: rootfs.hasPrefix("/") || rootfs.hasPrefix(".") ? state.absolute(rootfs) : rootfs,
                           hostname: hostname, limits: limits, network: .none, userNamespace: userns,
                           env: environment, readOnlyRoot: readOnlyRoot)
    }

    func run() async throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { throw ValidationError("give the command after --, e.g. agentd sandbox run -- /bin/true") }
        let spec = try spec()
        if let timeout, Checked.duration(seconds: timeout, max: Self.maxTimeout) == nil {
            throw ValidationError("--timeout must be more than 0 and at most 31536000 seconds")
        }

        var logger = Logger(label: "agentd")
        logger.logLevel = .warning
        let backend: LinuxSandboxBackend
        do {
            backend = try await LinuxSandboxBackend.open(
                config: LinuxSandboxConfig(stateDirectory: state.resolvedStateDir, runDirectory: state.resolvedRunDir,
                                           cgroupDriver: cgroupDriver,
                                           cgroupParent: cgroupParent
                                               ?? getenv("AGENTD_CGROUP_PARENT").map { String(cString: $0) } ?? "auto",
                                           networkNamespacePool: 0, warmPool: 0, spareRoots: 0, allow32Bit: allow32Bit),
                logger: logger)
        } catch let e as SandboxError {
            fail(e.message)
        }
        let id = try SandboxID("run-" + String(UInt64.random(in: 0...UInt64.max), radix: 36))
        var stdinBytes: [UInt8]? = nil
        if isatty(0) == 0 { stdinBytes = readStandardInput() }

        let code: Int32
        do {
            try await backend.create(id, spec: spec)
            try await backend.start(id)
            let process = try await backend.exec(id, ExecRequest(
                command: .argv(argv), cwd: cwd, stdin: stdinBytes,
                timeout: timeout.flatMap { Checked.duration(seconds: $0, max: Self.maxTimeout) }))
            code = try await withThrowingTaskGroup(of: Int32?.self) { group in
                group.addTask {
                    for try await event in process.events {
                        switch event {
                        case .stdout(let b): writeAll(1, b)
                        case .stderr(let b): writeAll(2, b)
                        case .exit(let status):
                            if status.timedOut { writeAll(2, Array("agentd: timed out after \(timeout ?? 0) s\n".utf8)) }
                            return status.shellCode
                        }
                    }
                    return 1
                }
                group.addTask {
                    // SIGINT/SIGTERM: stop the command; cleanup follows below.
                    for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                        await process.signal(SIGKILL)
                        return nil
                    }
                    return nil
                }
                var result: Int32 = 130
                while let r = try await group.next() {
                    if let r { result = r }
                    group.cancelAll()
                    break
                }
                return result
            }
        } catch let e as SandboxError {
            try? await backend.destroy(id)
            await backend.shutdown(removingEmptyCgroupParent: true)
            fail(e.message, code: e.kind == .notFound ? 127 : 125)
        }
        // Not close(): sandboxes of this state directory that a stopped
        // daemon left running (and this run adopted) must keep running.  The
        // cgroup parent goes if this run was the last thing in it.
        try? await backend.destroy(id)
        await backend.shutdown(removingEmptyCgroupParent: true)
        throw ExitCode(code)
    }
}

func readStandardInput(limit: Int = 256 << 20) -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while out.count < limit {
        let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        off += n
    }
}

/// One readable line on stderr and a non-zero exit.
func fail(_ message: String, code: Int32 = 1) -> Never {
    writeAll(2, Array("agentd: \(message)\n".utf8))
    exit(code)
}
