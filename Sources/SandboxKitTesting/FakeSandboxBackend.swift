import SandboxKit
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A `SandboxBackend` in memory, for tests of everything above the backend
/// without root, namespaces or cgroups: sandboxes are records with a state
/// and a file tree, and `exec` runs a tiny shell (`echo`, `true`, `false`,
/// `exit N`, `cat PATH`, `pwd`, `;`-separated).  It keeps the contract's
/// rules (a sandbox must exist, run for exec and files; not-found for unknown
/// ids; paths resolved like the real backend) so that what passes here means
/// something, and lets a test make it misbehave (`failStatus`, `stopByItself`).
public actor FakeSandboxBackend: SandboxBackend {
    struct Sandbox {
        var spec: SandboxSpec
        var state: SandboxState = .stopped
        var startedAt: Date?
        let createdAt = Date()
        var files: [String: [UInt8]] = [:]
        var directories: Set<String> = ["/", "/workspace", "/tmp"]
    }

    private var sandboxes: [SandboxID: Sandbox] = [:]
    /// What `status` throws instead of answering (a backend in trouble).
    public var statusFailure: SandboxError?
    public private(set) var starts = 0
    public nonisolated let unexpectedStops: AsyncStream<UnexpectedStop>
    private nonisolated let stops: AsyncStream<UnexpectedStop>.Continuation
    public let defaults: ResourceLimits
    public let images: [String]

    public init(images: [String] = ["default"],
                defaults: ResourceLimits = ResourceLimits(memoryBytes: 512 << 20, pids: 1024, cpuMillis: 1000)) {
        self.images = images
        self.defaults = defaults
        (unexpectedStops, stops) = AsyncStream.makeStream()
    }

    public func failStatus(_ error: SandboxError?) { statusFailure = error }

    /// The sandbox stops without anyone asking, and says why.
    public func stopByItself(_ id: SandboxID, cause: UnexpectedStop.Cause, message: String) {
        guard sandboxes[id]?.state == .running else { return }
        sandboxes[id]?.state = .stopped
        sandboxes[id]?.startedAt = nil
        stops.yield(UnexpectedStop(id: id, cause: cause, message: message))
    }

    /// The sandbox stops and nobody is told (what a lost write leaves behind:
    /// the backend and the record disagree).
    public func stopSilently(_ id: SandboxID) {
        sandboxes[id]?.state = .stopped
        sandboxes[id]?.startedAt = nil
    }

    public func info() async -> BackendInfo {
        BackendInfo(name: "fake", cgroupDriver: "none", seccomp: "none", userNamespaces: false, images: images,
                    notes: ["an in-memory backend for tests"])
    }

    private func notFound(_ id: SandboxID) -> SandboxError { SandboxError(.notFound, "no sandbox \(id)", field: "id") }

    private func statusOf(_ id: SandboxID, _ s: Sandbox) -> SandboxStatus {
        SandboxStatus(id: id, state: s.state, spec: s.spec, limits: s.spec.limits.resolved(over: defaults),
                      usage: s.state == .stopped ? nil : ResourceUsage(memoryBytes: 1 << 20, pids: 1),
                      startedAt: s.startedAt, createdAt: s.createdAt)
    }

    @discardableResult
    public func create(_ id: SandboxID, spec: SandboxSpec) async throws -> SandboxStatus {
        guard images.contains(spec.image) else {
            throw SandboxError(.notFound, "image \"\(spec.image)\" does not exist", field: "image")
        }
        if let s = sandboxes[id] { return statusOf(id, s) }
        let s = Sandbox(spec: spec)
        sandboxes[id] = s
        return statusOf(id, s)
    }

    public func update(_ id: SandboxID, spec: SandboxSpec) async throws {
        guard sandboxes[id] != nil else { throw notFound(id) }
        guard sandboxes[id]?.state == .stopped else { throw SandboxError(.conflict, "sandbox \(id) is not stopped") }
        sandboxes[id]?.spec = spec
    }

    public func start(_ id: SandboxID) async throws {
        guard let s = sandboxes[id] else { throw notFound(id) }
        guard s.state == .stopped else { return }
        sandboxes[id]?.state = .running
        sandboxes[id]?.startedAt = Date()
        starts += 1
    }

    public func stop(_ id: SandboxID) async throws {
        guard sandboxes[id] != nil else { throw notFound(id) }
        sandboxes[id]?.state = .stopped
        sandboxes[id]?.startedAt = nil
    }

    public func pause(_ id: SandboxID) async throws {
        guard sandboxes[id]?.state == .running else { throw SandboxError(.conflict, "sandbox \(id) is not running") }
        sandboxes[id]?.state = .paused
    }

    public func resume(_ id: SandboxID) async throws {
        guard sandboxes[id]?.state == .paused else { throw SandboxError(.conflict, "sandbox \(id) is not paused") }
        sandboxes[id]?.state = .running
    }

    public func destroy(_ id: SandboxID) async throws { sandboxes[id] = nil }

    public func status(_ id: SandboxID) async throws -> SandboxStatus {
        if let statusFailure { throw statusFailure }
        guard let s = sandboxes[id] else { throw notFound(id) }
        return statusOf(id, s)
    }

    public func list() async throws -> [SandboxStatus] { sandboxes.map { statusOf($0.key, $0.value) } }

    private func running(_ id: SandboxID) throws -> Sandbox {
        guard let s = sandboxes[id] else { throw notFound(id) }
        guard s.state == .running else { throw SandboxError(.conflict, "sandbox \(id) is not running") }
        return s
    }

    public func exec(_ id: SandboxID, _ request: ExecRequest) async throws -> any ExecProcess {
        let s = try running(id)
        try request.command.validate()
        var out: [UInt8] = [], err: [UInt8] = []
        var code: Int32 = 0
        let script: [String] = switch request.command {
        case .shell(let line): line.split(separator: ";").map { String($0.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
        case .argv(let argv): [argv.joined(separator: " ")]
        }
        let cwd = request.cwd ?? s.spec.workdir
        loop: for line in script where !line.isEmpty {
            let words = line.split(separator: " ").map(String.init)
            switch words[0] {
            case "echo": out += Array((words.dropFirst().joined(separator: " ") + "\n").utf8); code = 0
            case "true": code = 0
            case "false": code = 1
            case "pwd": out += Array((cwd + "\n").utf8); code = 0
            case "exit":
                code = Int32(words.dropFirst().first ?? "0") ?? 2
                break loop
            case "cat":
                for p in words.dropFirst() {
                    let path = try SandboxPath.resolve(p, workdir: cwd)
                    if let bytes = s.files[path] { out += bytes } else {
                        err += Array("cat: \(p): No such file or directory\n".utf8)
                        code = 1
                    }
                }
            default:
                err += Array("sh: \(words[0]): not found\n".utf8)
                code = 127
            }
        }
        if let stdin = request.stdin, script.first == "cat" { out += stdin }
        return FakeProcess(events: [.stdout(out), .stderr(err),
                                    .exit(ExitStatus(code: code, signal: nil, timedOut: false, durationMs: 0.1))])
    }

    private func info(_ path: String, _ s: Sandbox) -> FileInfo? {
        let name = String(path.split(separator: "/").last ?? "/")
        if let bytes = s.files[path] {
            return FileInfo(name: name, path: path, kind: .file, size: UInt64(bytes.count), mode: 0o644,
                            modifiedAt: Date())
        }
        if s.directories.contains(path) {
            return FileInfo(name: name, path: path, kind: .directory, size: 0, mode: 0o755, modifiedAt: Date())
        }
        return nil
    }

    private func parent(_ path: String) -> String {
        let parts = path.split(separator: "/").dropLast()
        return "/" + parts.joined(separator: "/")
    }

    public func listFiles(_ id: SandboxID, path: String) async throws -> [FileInfo] {
        let s = try running(id)
        let dir = try SandboxPath.resolve(path, workdir: s.spec.workdir)
        guard s.directories.contains(dir) else { throw SandboxError(.notFound, "no directory \(dir)", field: "path") }
        let children = Set(s.files.keys).union(s.directories).filter { $0 != dir && parent($0) == dir }
        return children.sorted().compactMap { info($0, s) }
    }

    public func stat(_ id: SandboxID, path: String) async throws -> FileInfo {
        let s = try running(id)
        let p = try SandboxPath.resolve(path, workdir: s.spec.workdir)
        guard let i = info(p, s) else { throw SandboxError(.notFound, "no file \(p)", field: "path") }
        return i
    }

    public func readFile(_ id: SandboxID, path: String) async throws -> ByteChunks {
        let s = try running(id)
        let p = try SandboxPath.resolve(path, workdir: s.spec.workdir)
        guard let bytes = s.files[p] else { throw SandboxError(.notFound, "no file \(p)", field: "path") }
        return ByteChunks { c in
            c.yield(bytes)
            c.finish()
        }
    }

    @discardableResult
    public func writeFile(_ id: SandboxID, path: String, mode: UInt32, contents: ByteChunks) async throws -> FileInfo {
        let s = try running(id)
        let p = try SandboxPath.resolve(path, workdir: s.spec.workdir)
        guard !s.directories.contains(p) else { throw SandboxError(.conflict, "\(p) is a directory", field: "path") }
        var bytes: [UInt8] = []
        for try await chunk in contents { bytes += chunk }
        var dir = parent(p)
        while dir != "/" {
            sandboxes[id]?.directories.insert(dir)
            dir = parent(dir)
        }
        sandboxes[id]?.files[p] = bytes
        return FileInfo(name: String(p.split(separator: "/").last ?? ""), path: p, kind: .file,
                        size: UInt64(bytes.count), mode: mode, modifiedAt: Date())
    }

    public func removeFile(_ id: SandboxID, path: String, recursive: Bool) async throws {
        let s = try running(id)
        let p = try SandboxPath.resolve(path, workdir: s.spec.workdir)
        guard info(p, s) != nil else { throw SandboxError(.notFound, "no file \(p)", field: "path") }
        sandboxes[id]?.files = s.files.filter { $0.key != p && !$0.key.hasPrefix(p + "/") }
        sandboxes[id]?.directories = s.directories.filter { $0 != p && !$0.hasPrefix(p + "/") }
    }

    public func makeDirectory(_ id: SandboxID, path: String, parents: Bool) async throws {
        let s = try running(id)
        let p = try SandboxPath.resolve(path, workdir: s.spec.workdir)
        sandboxes[id]?.directories.insert(p)
    }

    public func listenInside(_ id: SandboxID, port: UInt16) async throws -> Int32 {
        throw SandboxError(.unsupported, "the fake backend has no network")
    }
}

/// A finished command's events, replayed.
final class FakeProcess: ExecProcess {
    let events: AsyncThrowingStream<ExecEvent, any Error>

    init(events: [ExecEvent]) {
        self.events = AsyncThrowingStream { c in
            for e in events { c.yield(e) }
            c.finish()
        }
    }

    func write(stdin: [UInt8]) async throws {}
    func closeStdin() async {}
    func signal(_ signal: Int32) async {}
}
