#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public enum SandboxState: String, Sendable, Codable {
    /// Created (its files exist) but no process runs.
    case stopped
    case running
    /// Every process frozen; memory kept.
    case paused
}

/// Current consumption, read from the sandbox's cgroup (or the pod's metrics).
public struct ResourceUsage: Sendable, Equatable, Codable {
    public var memoryBytes: UInt64?
    public var memoryPeakBytes: UInt64?
    public var cpuMicros: UInt64?
    public var pids: Int?
    public var oomKills: Int?

    public init(memoryBytes: UInt64? = nil, memoryPeakBytes: UInt64? = nil, cpuMicros: UInt64? = nil, pids: Int? = nil,
                oomKills: Int? = nil) {
        self.memoryBytes = memoryBytes
        self.memoryPeakBytes = memoryPeakBytes
        self.cpuMicros = cpuMicros
        self.pids = pids
        self.oomKills = oomKills
    }
}

public struct SandboxStatus: Sendable, Equatable {
    public var id: SandboxID
    public var state: SandboxState
    public var spec: SandboxSpec
    /// The limits in force (the spec's, with the backend's defaults filled in).
    public var limits: ResourceLimits
    public var usage: ResourceUsage?
    public var startedAt: Date?
    public var createdAt: Date

    public init(id: SandboxID, state: SandboxState, spec: SandboxSpec, limits: ResourceLimits, usage: ResourceUsage?,
                startedAt: Date?, createdAt: Date) {
        self.id = id
        self.state = state
        self.spec = spec
        self.limits = limits
        self.usage = usage
        self.startedAt = startedAt
        self.createdAt = createdAt
    }
}

/// A sandbox that stopped when nobody asked it to, and why: what its
/// session's transcript says (an event), so that no sandbox vanishes
/// silently.
public struct UnexpectedStop: Sendable, Equatable {
    public enum Cause: String, Sendable {
        /// The kernel's OOM killer ended it (its memory limit was reached).
        case outOfMemory = "oom_killed"
        /// Its init was killed by a signal from outside (not by agentd).
        case killed
        /// Its init exited by itself.
        case exited
        /// It is gone and the backend cannot tell how (it was adopted after
        /// a restart, so its exit status went to no one).
        case lost
    }

    public var id: SandboxID
    public var cause: Cause
    /// One sentence for people: "killed by signal 9 from outside agentd".
    public var message: String

    public init(id: SandboxID, cause: Cause, message: String) {
        self.id = id
        self.cause = cause
        self.message = message
    }
}

/// What a backend can do on this host, reported by the daemon.
public struct BackendInfo: Sendable, Equatable, Codable {
    public var name: String
    /// e.g. "cgroup v2", "cgroup v1 (hybrid host)", "none".
    public var cgroupDriver: String
    public var seccomp: String
    public var userNamespaces: Bool
    public var images: [String]
    public var notes: [String]

    public init(name: String, cgroupDriver: String, seccomp: String, userNamespaces: Bool, images: [String],
                notes: [String]) {
        self.name = name
        self.cgroupDriver = cgroupDriver
        self.seccomp = seccomp
        self.userNamespaces = userNamespaces
        self.images = images
        self.notes = notes
    }
}

/// The one interface agentd uses for sandboxes.  Backends: `LinuxSandbox`
/// (namespaces on this host) and, for clusters, an agent-sandbox backend that
/// drives pods.  Every operation is async and streams what can be large, so a
/// backend whose sandboxes live elsewhere fits without changes to callers.
public protocol SandboxBackend: Sendable {
    /// Sandboxes that stopped without being asked to, as they are noticed
    /// (one consumer: the daemon's session service).
    var unexpectedStops: AsyncStream<UnexpectedStop> { get }
    func info() async -> BackendInfo

    /// Record a sandbox and prepare its persistent files; it starts stopped.
    /// Creating an id that exists with the same spec is a no-op.
    @discardableResult
    func create(_ id: SandboxID, spec: SandboxSpec) async throws -> SandboxStatus
    /// Replace the spec of a stopped sandbox (applies at next start).
    func update(_ id: SandboxID, spec: SandboxSpec) async throws
    func start(_ id: SandboxID) async throws
    /// Stop every process; the files stay.
    func stop(_ id: SandboxID) async throws
    func pause(_ id: SandboxID) async throws
    func resume(_ id: SandboxID) async throws
    /// Stop and remove everything, files included.  Unknown ids are a no-op.
    func destroy(_ id: SandboxID) async throws
    func status(_ id: SandboxID) async throws -> SandboxStatus
    func list() async throws -> [SandboxStatus]

    /// Run a command in a running sandbox.
    func exec(_ id: SandboxID, _ request: ExecRequest) async throws -> any ExecProcess

    func listFiles(_ id: SandboxID, path: String) async throws -> [FileInfo]
    func stat(_ id: SandboxID, path: String) async throws -> FileInfo
    /// Stream a file's content (chunks of at most 64 KiB).
    func readFile(_ id: SandboxID, path: String) async throws -> ByteChunks
    /// Write a file from a stream, replacing it atomically when complete;
    /// missing parent directories are created.
    @discardableResult
    func writeFile(_ id: SandboxID, path: String, mode: UInt32, contents: ByteChunks) async throws -> FileInfo
    func removeFile(_ id: SandboxID, path: String, recursive: Bool) async throws
    func makeDirectory(_ id: SandboxID, path: String, parents: Bool) async throws

    /// A listening TCP socket on the running sandbox's own loopback
    /// (127.0.0.1:`port`), owned by the caller.  This is how agentd offers
    /// one service (the model gateway, for harness agents) to a sandbox
    /// whose network is otherwise loopback only: agentd accepts and forwards.
    /// Backends whose sandboxes run elsewhere throw `.unsupported` and reach
    /// the same end with a network policy.
    func listenInside(_ id: SandboxID, port: UInt16) async throws -> Int32
}

extension SandboxBackend {
    /// Run a command to completion and collect its output.
    public func run(_ id: SandboxID, _ request: ExecRequest, limit: Int = 16 << 20) async throws -> ExecResult {
        try await exec(id, request).collect(limit: limit)
    }

    /// Write bytes held in memory.
    @discardableResult
    public func writeFile(_ id: SandboxID, path: String, mode: UInt32 = 0o644, bytes: [UInt8]) async throws -> FileInfo {
        let stream = ByteChunks { c in
            c.yield(bytes)
            c.finish()
        }
        return try await writeFile(id, path: path, mode: mode, contents: stream)
    }

    /// Read a whole file into memory, refusing more than `limit` bytes.
    public func readAll(_ id: SandboxID, path: String, limit: Int = 64 << 20) async throws -> [UInt8] {
        var out: [UInt8] = []
        for try await chunk in try await readFile(id, path: path) {
            out.append(contentsOf: chunk)
            if out.count > limit { throw SandboxError(.invalidArgument, "file is larger than \(limit) bytes", field: "path") }
        }
        return out
    }
}
