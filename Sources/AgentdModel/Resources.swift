#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// The resources of the HTTP API (../shared/API.md) as they travel on the
// wire.  Field names are snake_case; the daemon, agentctl and the tests all
// use these types.

public struct Team: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var createdAt: Date
    /// What the team may use at most (set by admins); nil fields: no limit.
    public var quotas: TeamQuotas
    /// What it uses now (on `GET /v1/teams/{id}` only).
    public var usage: TeamUsage?

    enum CodingKeys: String, CodingKey { case id, name, quotas, usage, createdAt = "created_at" }

    public init(id: String, name: String, createdAt: Date, quotas: TeamQuotas = TeamQuotas(), usage: TeamUsage? = nil) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.quotas = quotas
        self.usage = usage
    }
}

/// A team's limits.  Each is checked where it is used up, with a 409 (a
/// count that only the team can lower: sessions) or a 429 (one that frees
/// itself as work ends) naming the quota; `concurrent_runs` holds queued
/// runs back in the queue instead.
public struct TeamQuotas: Codable, Sendable, Equatable {
    /// Sessions that exist.
    public var sessions: Int?
    /// Sandboxes running or paused at once.
    public var runningSandboxes: Int?
    /// Runs being worked on at once (more wait in the queue).
    public var concurrentRuns: Int?
    /// Runs waiting in the queue.
    public var queuedRuns: Int?
    /// Memory limits of the running sandboxes, summed, in MiB.
    public var memoryMB: Int?
    /// CPU limits of the running sandboxes, summed.
    public var cpus: Double?

    enum CodingKeys: String, CodingKey {
        case sessions, cpus
        case runningSandboxes = "running_sandboxes", concurrentRuns = "concurrent_runs", queuedRuns = "queued_runs"
        case memoryMB = "memory_mb"
    }

    public static let fields: Set<String> = ["sessions", "running_sandboxes", "concurrent_runs", "queued_runs",
                                             "memory_mb", "cpus"]

    public init(sessions: Int? = nil, runningSandboxes: Int? = nil, concurrentRuns: Int? = nil, queuedRuns: Int? = nil,
                memoryMB: Int? = nil, cpus: Double? = nil) {
        self.sessions = sessions
        self.runningSandboxes = runningSandboxes
        self.concurrentRuns = concurrentRuns
        self.queuedRuns = queuedRuns
        self.memoryMB = memoryMB
        self.cpus = cpus
    }

    public var isEmpty: Bool { self == TeamQuotas() }
}

/// What a team uses now, beside its quotas.
public struct TeamUsage: Codable, Sendable, Equatable {
    public var sessions: Int
    public var runningSandboxes: Int
    public var concurrentRuns: Int
    public var queuedRuns: Int
    public var memoryMB: Int
    public var cpus: Double

    enum CodingKeys: String, CodingKey {
        case sessions, cpus
        case runningSandboxes = "running_sandboxes", concurrentRuns = "concurrent_runs", queuedRuns = "queued_runs"
        case memoryMB = "memory_mb"
    }

    public init(sessions: Int, runningSandboxes: Int, concurrentRuns: Int, queuedRuns: Int, memoryMB: Int,
                cpus: Double) {
        self.sessions = sessions
        self.runningSandboxes = runningSandboxes
        self.concurrentRuns = concurrentRuns
        self.queuedRuns = queuedRuns
        self.memoryMB = memoryMB
        self.cpus = cpus
    }
}

public struct APIKeyInfo: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var teamID: String
    public var role: Role
    /// The first characters of the key, to tell keys apart.
    public var prefix: String
    public var createdAt: Date
    public var revokedAt: Date?
    public var lastUsedAt: Date?
    /// Present only in the answer to a create: the only time it is shown.
    public var key: String?

    enum CodingKeys: String, CodingKey {
        case id, name, role, prefix, key
        case teamID = "team_id", createdAt = "created_at", revokedAt = "revoked_at", lastUsedAt = "last_used_at"
    }

    public init(id: String, name: String, teamID: String, role: Role, prefix: String, createdAt: Date,
                revokedAt: Date? = nil, lastUsedAt: Date? = nil, key: String? = nil) {
        self.id = id
        self.name = name
        self.teamID = teamID
        self.role = role
        self.prefix = prefix
        self.createdAt = createdAt
        self.revokedAt = revokedAt
        self.lastUsedAt = lastUsedAt
        self.key = key
    }
}

/// An agent's sandbox settings.
public struct AgentSandbox: Codable, Sendable, Equatable {
    public var image: String
    public var memoryMB: Int?
    public var cpus: Double?
    public var pids: Int?
    public var tmpMB: Int?
    /// "none": loopback only.  (Harness agents also reach the model gateway,
    /// through agentd's relay on the sandbox's loopback, during their runs.)
    public var network: String
    public var userNamespace: Bool
    public var readOnlyRoot: Bool

    enum CodingKeys: String, CodingKey {
        case image, cpus, pids, network
        case memoryMB = "memory_mb", tmpMB = "tmp_mb", userNamespace = "user_namespace", readOnlyRoot = "read_only_root"
    }

    public init(image: String = "default", memoryMB: Int? = nil, cpus: Double? = nil, pids: Int? = nil,
                tmpMB: Int? = nil, network: String = "none", userNamespace: Bool = false, readOnlyRoot: Bool = false) {
        self.image = image
        self.memoryMB = memoryMB
        self.cpus = cpus
        self.pids = pids
        self.tmpMB = tmpMB
        self.network = network
        self.userNamespace = userNamespace
        self.readOnlyRoot = readOnlyRoot
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        image = try c.decodeIfPresent(String.self, forKey: .image) ?? "default"
        memoryMB = try c.decodeIfPresent(Int.self, forKey: .memoryMB)
        cpus = try c.decodeIfPresent(Double.self, forKey: .cpus)
        pids = try c.decodeIfPresent(Int.self, forKey: .pids)
        tmpMB = try c.decodeIfPresent(Int.self, forKey: .tmpMB)
        network = try c.decodeIfPresent(String.self, forKey: .network) ?? "none"
        userNamespace = try c.decodeIfPresent(Bool.self, forKey: .userNamespace) ?? false
        readOnlyRoot = try c.decodeIfPresent(Bool.self, forKey: .readOnlyRoot) ?? false
    }

    public static let fields: Set<String> = ["image", "memory_mb", "cpus", "pids", "tmp_mb", "network",
                                             "user_namespace", "read_only_root"]
}

/// Agents that bring their own loop: a command run in the sandbox for each
/// message (the message on stdin).
public struct AgentHarness: Codable, Sendable, Equatable {
    public var command: [String]
    public var timeoutS: Int?

    enum CodingKeys: String, CodingKey { case command, timeoutS = "timeout_s" }

    public init(command: [String], timeoutS: Int? = nil) {
        self.command = command
        self.timeoutS = timeoutS
    }

    public static let fields: Set<String> = ["command", "timeout_s"]
}

/// Per-run limits of the agent loop.
public struct AgentLimits: Codable, Sendable, Equatable {
    public var maxSteps: Int?
    public var maxRunSeconds: Int?
    public var maxToolOutputBytes: Int?
    public var toolTimeoutS: Int?

    enum CodingKeys: String, CodingKey {
        case maxSteps = "max_steps", maxRunSeconds = "max_run_seconds", maxToolOutputBytes = "max_tool_output_bytes"
        case toolTimeoutS = "tool_timeout_s"
    }

    public init(maxSteps: Int? = nil, maxRunSeconds: Int? = nil, maxToolOutputBytes: Int? = nil,
                toolTimeoutS: Int? = nil) {
        self.maxSteps = maxSteps
        self.maxRunSeconds = maxRunSeconds
        self.maxToolOutputBytes = maxToolOutputBytes
        self.toolTimeoutS = toolTimeoutS
    }

    public static let fields: Set<String> = ["max_steps", "max_run_seconds", "max_tool_output_bytes", "tool_timeout_s"]
}

public struct Agent: Codable, Sendable, Equatable {
    public var id: String
    public var teamID: String
    public var name: String
    public var model: String
    public var systemPrompt: String
    public var tools: [String]
    public var sandbox: AgentSandbox
    public var env: [String: String]
    /// Names of secrets this agent receives; empty: all of its team's and its own.
    public var secrets: [String]
    public var harness: AgentHarness?
    public var limits: AgentLimits
    public var createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, model, tools, sandbox, env, secrets, harness, limits
        case teamID = "team_id", systemPrompt = "system_prompt", createdAt = "created_at", updatedAt = "updated_at"
    }

    public init(id: String, teamID: String, name: String, model: String, systemPrompt: String, tools: [String],
                sandbox: AgentSandbox, env: [String: String], secrets: [String], harness: AgentHarness?,
                limits: AgentLimits, createdAt: Date, updatedAt: Date) {
        self.id = id
        self.teamID = teamID
        self.name = name
        self.model = model
        self.systemPrompt = systemPrompt
        self.tools = tools
        self.sandbox = sandbox
        self.env = env
        self.secrets = secrets
        self.harness = harness
        self.limits = limits
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// Body of POST /v1/agents and PATCH /v1/agents/{id} (every field optional
/// in a PATCH).
public struct AgentInput: Codable, Sendable, Equatable {
    public var name: String?
    public var model: String?
    public var systemPrompt: String?
    public var tools: [String]?
    public var sandbox: AgentSandbox?
    public var env: [String: String]?
    public var secrets: [String]?
    public var harness: AgentHarness?
    public var limits: AgentLimits?
    /// Admins may create agents in another team.
    public var teamID: String?

    enum CodingKeys: String, CodingKey {
        case name, model, tools, sandbox, env, secrets, harness, limits
        case systemPrompt = "system_prompt", teamID = "team_id"
    }

    public init(name: String? = nil, model: String? = nil, systemPrompt: String? = nil, tools: [String]? = nil,
                sandbox: AgentSandbox? = nil, env: [String: String]? = nil, secrets: [String]? = nil,
                harness: AgentHarness? = nil, limits: AgentLimits? = nil, teamID: String? = nil) {
        self.name = name
        self.model = model
        self.systemPrompt = systemPrompt
        self.tools = tools
        self.sandbox = sandbox
        self.env = env
        self.secrets = secrets
        self.harness = harness
        self.limits = limits
        self.teamID = teamID
    }

    public static let fields: Set<String> = ["name", "model", "system_prompt", "tools", "sandbox", "env", "secrets",
                                             "harness", "limits", "team_id"]
}

public struct SecretInfo: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var teamID: String
    public var agentID: String?
    public var createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, teamID = "team_id", agentID = "agent_id", createdAt = "created_at", updatedAt = "updated_at"
    }

    public init(id: String, name: String, teamID: String, agentID: String?, createdAt: Date, updatedAt: Date) {
        self.id = id
        self.name = name
        self.teamID = teamID
        self.agentID = agentID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

public struct Usage: Codable, Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var costUSD: Double

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", costUSD = "cost_usd"
    }

    public init(promptTokens: Int = 0, completionTokens: Int = 0, costUSD: Double = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.costUSD = costUSD
    }
}

public struct Session: Codable, Sendable, Equatable {
    public var id: String
    public var teamID: String
    public var agentID: String
    public var title: String
    /// idle, queued, running (a run is queued or active).
    public var status: String
    /// none, running, paused, stopped.
    public var sandboxState: String
    public var lastSeq: Int64
    public var activeRunID: String?
    public var usage: Usage
    public var createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, title, status, usage
        case teamID = "team_id", agentID = "agent_id", sandboxState = "sandbox_state", lastSeq = "last_seq"
        case activeRunID = "active_run_id", createdAt = "created_at", updatedAt = "updated_at"
    }

    public init(id: String, teamID: String, agentID: String, title: String, status: String, sandboxState: String,
                lastSeq: Int64, activeRunID: String?, usage: Usage, createdAt: Date, updatedAt: Date) {
        self.id = id
        self.teamID = teamID
        self.agentID = agentID
        self.title = title
        self.status = status
        self.sandboxState = sandboxState
        self.lastSeq = lastSeq
        self.activeRunID = activeRunID
        self.usage = usage
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

public enum EventKind: String, Codable, Sendable, CaseIterable {
    case userMessage = "user_message"
    case assistantMessage = "assistant_message"
    case assistantDelta = "assistant_delta"
    case toolCall = "tool_call"
    case toolResult = "tool_result"
    case runStatus = "run_status"
    case sandboxStatus = "sandbox_status"
    case compaction
    case error
}

public struct Event: Codable, Sendable, Equatable {
    public var seq: Int64
    public var sessionID: String
    public var runID: String?
    public var kind: EventKind
    public var createdAt: Date
    public var data: JSONValue

    enum CodingKeys: String, CodingKey {
        case seq, kind, data, sessionID = "session_id", runID = "run_id", createdAt = "created_at"
    }

    public init(seq: Int64, sessionID: String, runID: String?, kind: EventKind, createdAt: Date, data: JSONValue) {
        self.seq = seq
        self.sessionID = sessionID
        self.runID = runID
        self.kind = kind
        self.createdAt = createdAt
        self.data = data
    }
}

public enum RunState: String, Codable, Sendable, CaseIterable {
    case queued, running, succeeded, failed, cancelled

    public var isFinished: Bool { self == .succeeded || self == .failed || self == .cancelled }
}

public struct Run: Codable, Sendable, Equatable {
    public var id: String
    public var sessionID: String
    public var state: RunState
    public var error: String?
    /// seq of the user message that started it.
    public var messageSeq: Int64
    public var steps: Int
    public var usage: Usage
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// The run's events (tool calls, results, messages, status), in order.
    public var events: [Event]?

    enum CodingKeys: String, CodingKey {
        case id, state, error, steps, usage, events
        case sessionID = "session_id", messageSeq = "message_seq", createdAt = "created_at", startedAt = "started_at"
        case finishedAt = "finished_at"
    }

    public init(id: String, sessionID: String, state: RunState, error: String?, messageSeq: Int64, steps: Int,
                usage: Usage, createdAt: Date, startedAt: Date?, finishedAt: Date?, events: [Event]? = nil) {
        self.id = id
        self.sessionID = sessionID
        self.state = state
        self.error = error
        self.messageSeq = messageSeq
        self.steps = steps
        self.usage = usage
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.events = events
    }
}

public struct MessageAccepted: Codable, Sendable, Equatable {
    public var runID: String
    public var seq: Int64

    enum CodingKeys: String, CodingKey { case runID = "run_id", seq }

    public init(runID: String, seq: Int64) {
        self.runID = runID
        self.seq = seq
    }
}

/// A page of a list: `next_cursor` is set when there is more.
public struct Page<T: Codable & Sendable>: Codable, Sendable {
    public var data: [T]
    public var nextCursor: String?

    enum CodingKeys: String, CodingKey { case data, nextCursor = "next_cursor" }

    public init(data: [T], nextCursor: String?) {
        self.data = data
        self.nextCursor = nextCursor
    }
}

public struct ExecOutput: Codable, Sendable, Equatable {
    public var exitCode: Int32
    public var signal: Int32?
    public var stdout: String
    public var stderr: String
    public var timedOut: Bool
    public var durationMs: Double
    /// Output beyond the response limit was cut.
    public var truncated: Bool

    enum CodingKeys: String, CodingKey {
        case signal, stdout, stderr, truncated
        case exitCode = "exit_code", timedOut = "timed_out", durationMs = "duration_ms"
    }

    public init(exitCode: Int32, signal: Int32?, stdout: String, stderr: String, timedOut: Bool, durationMs: Double,
                truncated: Bool) {
        self.exitCode = exitCode
        self.signal = signal
        self.stdout = stdout
        self.stderr = stderr
        self.timedOut = timedOut
        self.durationMs = durationMs
        self.truncated = truncated
    }
}

public struct FileEntry: Codable, Sendable, Equatable {
    public var name: String
    public var type: String
    public var size: UInt64
    /// Octal permission string, e.g. "0644".
    public var mode: String
    public var modifiedAt: Date

    enum CodingKeys: String, CodingKey { case name, type, size, mode, modifiedAt = "modified_at" }

    public init(name: String, type: String, size: UInt64, mode: String, modifiedAt: Date) {
        self.name = name
        self.type = type
        self.size = size
        self.mode = mode
        self.modifiedAt = modifiedAt
    }
}

public struct SandboxLimitsInfo: Codable, Sendable, Equatable {
    public var memoryBytes: UInt64?
    public var pids: Int?
    public var cpus: Double?
    public var tmpBytes: UInt64?

    enum CodingKeys: String, CodingKey {
        case pids, cpus, memoryBytes = "memory_bytes", tmpBytes = "tmp_bytes"
    }

    public init(memoryBytes: UInt64?, pids: Int?, cpus: Double?, tmpBytes: UInt64?) {
        self.memoryBytes = memoryBytes
        self.pids = pids
        self.cpus = cpus
        self.tmpBytes = tmpBytes
    }
}

public struct SandboxUsageInfo: Codable, Sendable, Equatable {
    public var memoryBytes: UInt64?
    public var memoryPeakBytes: UInt64?
    public var cpuSeconds: Double?
    public var pids: Int?
    public var oomKills: Int?

    enum CodingKeys: String, CodingKey {
        case pids, memoryBytes = "memory_bytes", memoryPeakBytes = "memory_peak_bytes", cpuSeconds = "cpu_seconds"
        case oomKills = "oom_kills"
    }

    public init(memoryBytes: UInt64?, memoryPeakBytes: UInt64?, cpuSeconds: Double?, pids: Int?, oomKills: Int?) {
        self.memoryBytes = memoryBytes
        self.memoryPeakBytes = memoryPeakBytes
        self.cpuSeconds = cpuSeconds
        self.pids = pids
        self.oomKills = oomKills
    }
}

public struct SandboxInfo: Codable, Sendable, Equatable {
    /// none, running, paused, stopped.
    public var state: String
    public var image: String
    public var limits: SandboxLimitsInfo?
    public var usage: SandboxUsageInfo?
    public var startedAt: Date?
    public var idleStopAt: Date?

    enum CodingKeys: String, CodingKey {
        case state, image, limits, usage, startedAt = "started_at", idleStopAt = "idle_stop_at"
    }

    public init(state: String, image: String, limits: SandboxLimitsInfo?, usage: SandboxUsageInfo?, startedAt: Date?,
                idleStopAt: Date?) {
        self.state = state
        self.image = image
        self.limits = limits
        self.usage = usage
        self.startedAt = startedAt
        self.idleStopAt = idleStopAt
    }
}

public struct StatusInfo: Codable, Sendable, Equatable {
    public var version: String
    public var cgroupDriver: String
    public var seccomp: String
    public var images: [String]
    public var notes: [String]
    public var sandboxesRunning: Int
    public var runsActive: Int
    public var runsQueued: Int
    public var gateway: String?

    enum CodingKeys: String, CodingKey {
        case version, seccomp, images, notes, gateway
        case cgroupDriver = "cgroup_driver", sandboxesRunning = "sandboxes_running", runsActive = "runs_active"
        case runsQueued = "runs_queued"
    }

    public init(version: String, cgroupDriver: String, seccomp: String, images: [String], notes: [String],
                sandboxesRunning: Int, runsActive: Int, runsQueued: Int, gateway: String?) {
        self.version = version
        self.cgroupDriver = cgroupDriver
        self.seccomp = seccomp
        self.images = images
        self.notes = notes
        self.sandboxesRunning = sandboxesRunning
        self.runsActive = runsActive
        self.runsQueued = runsQueued
        self.gateway = gateway
    }
}

/// A command: an argv list, or a string for `/bin/sh -c`.
public enum ExecCommand: Codable, Sendable, Equatable {
    case argv([String])
    case shell(String)

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            self = .shell(s)
        } else if let a = try? c.decode([String].self) {
            self = .argv(a)
        } else {
            throw DecodingError.typeMismatch(ExecCommand.self, .init(codingPath: decoder.codingPath,
                                                                     debugDescription: "command must be a string or an array of strings"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .argv(let a): try c.encode(a)
        case .shell(let s): try c.encode(s)
        }
    }
}

/// Body of POST /v1/sessions/{id}/exec.
public struct ExecInput: Codable, Sendable, Equatable {
    public var command: ExecCommand
    public var cwd: String?
    public var env: [String: String]?
    public var timeoutS: Double?
    public var stdin: String?

    enum CodingKeys: String, CodingKey { case command, cwd, env, stdin, timeoutS = "timeout_s" }

    public init(command: ExecCommand, cwd: String? = nil, env: [String: String]? = nil, timeoutS: Double? = nil,
                stdin: String? = nil) {
        self.command = command
        self.cwd = cwd
        self.env = env
        self.timeoutS = timeoutS
        self.stdin = stdin
    }

    public static let fields: Set<String> = ["command", "cwd", "env", "timeout_s", "stdin"]
}

/// Types the API serializes often enough to skip JSONEncoder: their JSON is
/// built directly.  `AgentdModelTests` checks it equals the Codable form.
public protocol FastJSON {
    var jsonValue: JSONValue { get }
    /// `jsonValue.compactString`, or the same bytes written more directly.
    var compactJSON: String { get }
}

extension FastJSON {
    public var compactJSON: String { jsonValue.compactString }
}

extension Usage: FastJSON {
    public var jsonValue: JSONValue {
        .object(["prompt_tokens": .number(Double(promptTokens)), "completion_tokens": .number(Double(completionTokens)),
                 "cost_usd": .number(costUSD)])
    }
}

extension Session: FastJSON {
    public var jsonValue: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id), "team_id": .string(teamID), "agent_id": .string(agentID), "title": .string(title),
            "status": .string(status), "sandbox_state": .string(sandboxState), "last_seq": .number(Double(lastSeq)),
            "usage": usage.jsonValue, "created_at": .string(Timestamp.format(createdAt)),
            "updated_at": .string(Timestamp.format(updatedAt)),
        ]
        if let activeRunID { o["active_run_id"] = .string(activeRunID) }
        return .object(o)
    }

    /// The bytes of `jsonValue.compactString` (keys sorted), written without
    /// building the dictionary first: this is the API's hottest response.
    public var compactJSON: String {
        var out: [UInt8] = []
        out.reserveCapacity(320)
        func field(_ name: StaticString, first: Bool = false) {
            if !first { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            out.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            out.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        }
        out.append(UInt8(ascii: "{"))
        if let activeRunID {
            field("active_run_id", first: true)
            JSONValue.writeString(activeRunID, to: &out)
            field("agent_id")
        } else {
            field("agent_id", first: true)
        }
        JSONValue.writeString(agentID, to: &out)
        field("created_at")
        JSONValue.writeString(Timestamp.format(createdAt), to: &out)
        field("id")
        JSONValue.writeString(id, to: &out)
        field("last_seq")
        JSONValue.number(Double(lastSeq)).write(to: &out)
        field("sandbox_state")
        JSONValue.writeString(sandboxState, to: &out)
        field("status")
        JSONValue.writeString(status, to: &out)
        field("team_id")
        JSONValue.writeString(teamID, to: &out)
        field("title")
        JSONValue.writeString(title, to: &out)
        field("updated_at")
        JSONValue.writeString(Timestamp.format(updatedAt), to: &out)
        field("usage")
        usage.jsonValue.write(to: &out)
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}
