import AgentdModel
import AgentdStore
import SandboxKit
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Settings of the domain layer (from the config file, environment, flags).
public struct CoreConfig: Sendable {
    public var stateDirectory: String
    /// Stop a sandbox nobody used for this long (files kept).
    public var idleStopAfter: Duration
    public var execDefaultTimeout: Duration
    public var execMaxTimeout: Duration
    /// Per stream, in a non-streamed exec answer.
    public var execMaxOutputBytes: Int
    public var defaultImage: String
    /// CONTAINER_ENV_X=v of agentd's own environment, as X=v.
    public var containerEnv: [String: String]
    public var hostMemoryBytes: UInt64
    public var hostCPUs: Int
    /// Free space kept for the database on the state directory's file
    /// system: below it, sandboxes do not start and uploads are refused (507).
    public var diskReserveBytes: UInt64

    public init(stateDirectory: String, idleStopAfter: Duration = .seconds(900), execDefaultTimeout: Duration = .seconds(600),
                execMaxTimeout: Duration = .seconds(86400), execMaxOutputBytes: Int = 8 << 20,
                defaultImage: String = "default", containerEnv: [String: String] = [:],
                hostMemoryBytes: UInt64 = 1 << 34, hostCPUs: Int = 1, diskReserveBytes: UInt64 = 512 << 20) {
        self.diskReserveBytes = diskReserveBytes
        self.stateDirectory = stateDirectory
        self.idleStopAfter = idleStopAfter
        self.execDefaultTimeout = execDefaultTimeout
        self.execMaxTimeout = execMaxTimeout
        self.execMaxOutputBytes = execMaxOutputBytes
        self.defaultImage = defaultImage
        self.containerEnv = containerEnv
        self.hostMemoryBytes = hostMemoryBytes
        self.hostCPUs = hostCPUs
    }

    /// The CONTAINER_ENV_ passthrough from an environment.
    public static func containerEnv(from environment: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in environment where k.hasPrefix("CONTAINER_ENV_") {
            let name = String(k.dropFirst("CONTAINER_ENV_".count))
            if EnvName.isValid(name) { out[name] = v }
        }
        return out
    }
}

/// The tools the built-in agent loop offers; an agent picks among them.
public enum BuiltinTool: String, CaseIterable, Sendable {
    case exec, readFile = "read_file", writeFile = "write_file", listFiles = "list_files", editFile = "edit_file"
}

public final class AgentService: Sendable {
    let store: Store
    let config: CoreConfig
    /// Names of the images that exist now.
    let images: @Sendable () async -> [String]

    public init(store: Store, config: CoreConfig, images: @escaping @Sendable () async -> [String]) {
        self.store = store
        self.config = config
        self.images = images
    }

    public func list(_ caller: Identity) async throws -> [Agent] {
        try await store.agents(teamID: caller.scope)
    }

    public func get(_ caller: Identity, id: String) async throws -> Agent {
        try Validate.id(id, .agent, field: "id")
        guard let a = try await store.agent(id: id, teamID: caller.scope) else { throw AgentdError.notFound("agent") }
        return a
    }

    public func create(_ caller: Identity, _ input: AgentInput) async throws -> Agent {
        try caller.require(.owner, "create agents")
        var team = caller.teamID
        if let t = input.teamID {
            try Validate.id(t, .team, field: "team_id")
            guard caller.isAdmin || t == caller.teamID else { throw AgentdError.notFound("team", field: "team_id") }
            guard try await !store.teams(id: t).isEmpty else { throw AgentdError.notFound("team", field: "team_id") }
            team = t
        }
        guard let name = input.name else { throw AgentdError.invalid("name is required", field: "name") }
        guard let model = input.model else { throw AgentdError.invalid("model is required", field: "model") }
        let now = Date()
        let agent = Agent(id: Identifier.make(.agent), teamID: team, name: name, model: model,
                          systemPrompt: input.systemPrompt ?? "", tools: input.tools ?? BuiltinTool.allCases.map(\.rawValue),
                          sandbox: input.sandbox ?? AgentSandbox(image: config.defaultImage), env: input.env ?? [:],
                          secrets: input.secrets ?? [], harness: input.harness, limits: input.limits ?? AgentLimits(),
                          createdAt: now, updatedAt: now)
        try await validate(agent)
        do {
            try await store.createAgent(agent, audit: caller.audit("create", "agent", agent.id, team: team))
        } catch StoreError.conflict {
            throw AgentdError.conflict("an agent named \(name) exists in this team", field: "name")
        }
        return agent
    }

    public func update(_ caller: Identity, id: String, _ input: AgentInput) async throws -> Agent {
        try caller.require(.owner, "change agents")
        var agent = try await get(caller, id: id)
        if input.teamID != nil && input.teamID != agent.teamID {
            throw AgentdError.conflict("an agent cannot move to another team", field: "team_id")
        }
        if let v = input.name { agent.name = v }
        if let v = input.model { agent.model = v }
        if let v = input.systemPrompt { agent.systemPrompt = v }
        if let v = input.tools { agent.tools = v }
        if let v = input.sandbox { agent.sandbox = v }
        if let v = input.env { agent.env = v }
        if let v = input.secrets { agent.secrets = v }
        if let v = input.harness { agent.harness = v.command.isEmpty ? nil : v }
        if let v = input.limits { agent.limits = v }
        agent.updatedAt = Date()
        try await validate(agent)
        do {
            try await store.updateAgent(agent, audit: caller.audit("update", "agent", agent.id, team: agent.teamID))
        } catch StoreError.conflict {
            throw AgentdError.conflict("an agent named \(agent.name) exists in this team", field: "name")
        }
        return agent
    }

    public func delete(_ caller: Identity, id: String) async throws {
        try caller.require(.owner, "delete agents")
        try Validate.id(id, .agent, field: "id")
        do {
            guard try await store.deleteAgent(id: id, teamID: caller.scope, audit: caller.audit("delete", "agent", id))
            else { throw AgentdError.notFound("agent") }
        } catch StoreError.conflict(let message) {
            throw AgentdError.conflict(message)
        }
    }

    func validate(_ a: Agent) async throws {
        try Validate.name(a.name, field: "name")
        try Rules.model.check(a.model, field: "model")
        try Rules.systemPrompt.check(a.systemPrompt, field: "system_prompt")
        let known = Set(BuiltinTool.allCases.map(\.rawValue))
        for t in a.tools where !known.contains(t) {
            throw AgentdError.invalid("unknown tool \"\(t)\"; known tools: \(known.sorted().joined(separator: ", "))",
                                      field: "tools")
        }
        guard Set(a.tools).count == a.tools.count else { throw AgentdError.invalid("tools are repeated", field: "tools") }
        for (k, v) in a.env {
            try Rules.userEnvName.check(k, field: "env")
            try Rules.envValue.check(v, field: "env")
        }
        for s in a.secrets { try Validate.envName(s, field: "secrets") }
        try await validateSandbox(a.sandbox)
        if let h = a.harness {
            guard !h.command.isEmpty, h.command.allSatisfy({ Rules.argument.accepts($0) }) else {
                throw AgentdError.invalid("harness.command must be a non-empty argv list", field: "harness.command")
            }
            if let t = h.timeoutS { try Rules.harnessTimeout.check(t, field: "harness.timeout_s") }
        }
        let l = a.limits
        if let v = l.maxSteps { try Rules.maxSteps.check(v, field: "limits.max_steps") }
        if let v = l.maxRunSeconds { try Rules.maxRunSeconds.check(v, field: "limits.max_run_seconds") }
        if let v = l.maxToolOutputBytes { try Rules.maxToolOutputBytes.check(v, field: "limits.max_tool_output_bytes") }
        if let v = l.toolTimeoutS { try Rules.toolTimeout.check(v, field: "limits.tool_timeout_s") }
    }

    /// The document's rules first (400), then what depends on this host:
    /// an image that is not here (404) and limits beyond the host (409).
    func validateSandbox(_ s: AgentSandbox) async throws {
        try Rules.image.check(s.image, field: "sandbox.image")
        if let m = s.memoryMB { try Rules.memoryMB.check(m, field: "sandbox.memory_mb") }
        if let c = s.cpus { try Rules.cpus.check(c, field: "sandbox.cpus") }
        if let p = s.pids { try Rules.pids.check(p, field: "sandbox.pids") }
        if let t = s.tmpMB { try Rules.tmpMB.check(t, field: "sandbox.tmp_mb") }
        try Rules.network.check(s.network, field: "sandbox.network")
        let available = await images()
        guard available.contains(s.image) else {
            throw AgentdError(status: 404, code: "not_found",
                              message: "image \"\(s.image)\" does not exist (images: \(available.joined(separator: ", ")))",
                              field: "sandbox.image")
        }
        let hostMB = Int(config.hostMemoryBytes >> 20)
        if let m = s.memoryMB, m > hostMB {
            throw AgentdError.exceedsHost("sandbox.memory_mb is more than the host's \(hostMB) MiB", field: "sandbox.memory_mb")
        }
        if let t = s.tmpMB, t > hostMB {
            throw AgentdError.exceedsHost("sandbox.tmp_mb is more than the host's \(hostMB) MiB", field: "sandbox.tmp_mb")
        }
        if let c = s.cpus, c > Double(config.hostCPUs) {
            throw AgentdError.exceedsHost("sandbox.cpus is more than the host's \(config.hostCPUs)", field: "sandbox.cpus")
        }
    }

    /// The sandbox spec of a session of this agent.
    static func sandboxSpec(_ a: Agent, hostname: String) -> SandboxSpec {
        let s = a.sandbox
        let limits = ResourceLimits(
            memoryBytes: s.memoryMB.flatMap { Checked.bytes(mebibytes: $0) }, pids: s.pids,
            cpuMillis: s.cpus.flatMap { Checked.int($0 * 1000, in: 1...1_000_000) },
            tmpBytes: s.tmpMB.flatMap { Checked.bytes(mebibytes: $0) })
        return SandboxSpec(image: s.image, hostname: hostname, limits: limits, network: .none,
                           userNamespace: s.userNamespace, readOnlyRoot: s.readOnlyRoot)
    }
}

/// Secrets: write-only through the API, encrypted at rest.
public final class SecretService: Sendable {
    let store: Store
    let box: SecretBox

    public init(store: Store, box: SecretBox) {
        self.store = store
        self.box = box
    }

    public func set(_ caller: Identity, name: String, value: String, agentID: String?) async throws -> SecretInfo {
        try caller.require(.owner, "manage secrets")
        try Rules.userEnvName.check(name, field: "name")
        try Rules.secretValue.check(value, field: "value")
        var team = caller.teamID
        if let agentID {
            try Validate.id(agentID, .agent, field: "agent_id")
            guard let agent = try await store.agent(id: agentID, teamID: caller.scope) else {
                throw AgentdError.notFound("agent", field: "agent_id")
            }
            team = agent.teamID
        }
        let sealed = try box.seal(Array(value.utf8), team: team, agent: agentID, name: name)
        return try await store.putSecret(id: Identifier.make(.secret), teamID: team, agentID: agentID, name: name,
                                         ciphertext: sealed,
                                         audit: caller.audit("set", "secret", name, team: team,
                                                             detail: agentID.map { "agent \($0)" }))
    }

    public func list(_ caller: Identity) async throws -> [SecretInfo] {
        try caller.require(.member, "list secrets")
        return try await store.secrets(teamID: caller.scope).map(\.info)
    }

    public func delete(_ caller: Identity, name: String, agentID: String?) async throws {
        try caller.require(.owner, "manage secrets")
        try Rules.userEnvName.check(name, field: "name")
        var team = caller.teamID
        if let agentID {
            try Validate.id(agentID, .agent, field: "agent_id")
            guard let agent = try await store.agent(id: agentID, teamID: caller.scope) else {
                throw AgentdError.notFound("agent", field: "agent_id")
            }
            team = agent.teamID
        }
        guard try await store.deleteSecret(teamID: team, agentID: agentID, name: name,
                                           audit: caller.audit("delete", "secret", name, team: team))
        else { throw AgentdError.notFound("secret") }
    }

    /// Decrypted secrets for a sandbox of `agent`: (team-wide, agent's own).
    func values(for agent: Agent) async throws -> (team: [String: String], agent: [String: String]) {
        var team: [String: String] = [:], own: [String: String] = [:]
        let wanted = Set(agent.secrets)
        for rec in try await store.secretsForAgent(teamID: agent.teamID, agentID: agent.id) {
            if !wanted.isEmpty && !wanted.contains(rec.info.name) { continue }
            let plain = try box.open(rec.ciphertext, team: rec.info.teamID, agent: rec.info.agentID, name: rec.info.name)
            let value = String(decoding: plain, as: UTF8.self)
            if rec.info.agentID == nil { team[rec.info.name] = value } else { own[rec.info.name] = value }
        }
        return (team, own)
    }
}
