import AgentdModel
import ArgumentParser
import Foundation

/// One path segment, percent-encoded.
func seg(_ s: String) -> String {
    var allowed = CharacterSet.urlPathAllowed
    allowed.remove("/")
    return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
}

struct AgentOptions: ParsableArguments {
    @Option(help: "Agent name.") var name: String?
    @Option(help: "Model name at the gateway.") var model: String?
    @Option(name: .customLong("system-prompt"), help: "System prompt.") var systemPrompt: String?
    @Option(name: .customLong("system-prompt-file"), help: "Read the system prompt from a file.") var systemPromptFile: String?
    @Option(help: "Comma-separated tools (exec, read_file, write_file, list_files, edit_file).") var tools: String?
    @Option(help: "Sandbox image.") var image: String?
    @Option(name: .customLong("memory-mb"), help: "Sandbox memory limit in MiB.") var memoryMB: Int?
    @Option(help: "Sandbox CPU limit, e.g. 0.5.") var cpus: Double?
    @Option(help: "Sandbox process limit.") var pids: Int?
    @Flag(name: .customLong("userns"), help: "Run the sandbox in a user namespace.") var userns = false
    @Option(name: .customLong("env"), help: "NAME=VALUE for the sandbox (repeatable).") var env: [String] = []
    @Option(name: .customLong("secret"), help: "Secret name the agent receives (repeatable; none: all).") var secrets: [String] = []
    @Option(name: .customLong("harness"), help: "Run this shell command per message instead of the built-in loop.")
    var harness: String?
    @Option(name: .customLong("max-steps"), help: "Maximum steps per run.") var maxSteps: Int?
    @Option(name: .customLong("from-json"), help: "A JSON file with the agent's fields (flags override it).")
    var fromJSON: String?

    func input(base: AgentSandbox?) throws -> AgentInput {
        var a = AgentInput()
        if let fromJSON {
            guard let data = FileManager.default.contents(atPath: fromJSON) else { throw CLIError("cannot read \(fromJSON)") }
            do { a = try AgentdJSON.decoder.decode(AgentInput.self, from: data) } catch {
                throw CLIError("\(fromJSON) is not an agent description: \(error)")
            }
        }
        if let name { a.name = name }
        if let model { a.model = model }
        if let systemPrompt { a.systemPrompt = systemPrompt }
        if let systemPromptFile {
            guard let s = try? String(contentsOfFile: systemPromptFile, encoding: .utf8) else {
                throw CLIError("cannot read \(systemPromptFile)")
            }
            a.systemPrompt = s
        }
        if let tools { a.tools = tools.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        if image != nil || memoryMB != nil || cpus != nil || pids != nil || userns {
            var sb = a.sandbox ?? base ?? AgentSandbox()
            if let image { sb.image = image }
            if let memoryMB { sb.memoryMB = memoryMB }
            if let cpus { sb.cpus = cpus }
            if let pids { sb.pids = pids }
            if userns { sb.userNamespace = true }
            a.sandbox = sb
        }
        if !env.isEmpty {
            var e = a.env ?? [:]
            for kv in env {
                guard let eq = kv.firstIndex(of: "=") else { throw CLIError("--env \(kv) is not NAME=VALUE") }
                e[String(kv[..<eq])] = String(kv[kv.index(after: eq)...])
            }
            a.env = e
        }
        if !secrets.isEmpty { a.secrets = secrets }
        if let harness { a.harness = AgentHarness(command: ["/bin/sh", "-c", harness]) }
        if let maxSteps { a.limits = AgentLimits(maxSteps: maxSteps) }
        return a
    }
}

struct Agents: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "agents", abstract: "Agents.",
                                                    subcommands: [Create.self, List.self, Get.self, Update.self, Delete.self],
                                                    defaultSubcommand: List.self)

    static func show(_ a: Agent, json: Bool) {
        if json { return Out.json(a) }
        Out.line("\(a.id)  \(a.name)")
        Out.line("  model:   \(a.model)")
        Out.line("  tools:   \(a.tools.joined(separator: ", "))")
        let s = a.sandbox
        Out.line("  sandbox: image \(s.image), memory \(s.memoryMB.map { "\($0) MiB" } ?? "default"), cpus \(s.cpus.map { "\($0)" } ?? "default"), pids \(s.pids.map { "\($0)" } ?? "default")\(s.userNamespace ? ", user namespace" : "")")
        if !a.env.isEmpty { Out.line("  env:     \(a.env.keys.sorted().joined(separator: ", "))") }
        if !a.secrets.isEmpty { Out.line("  secrets: \(a.secrets.joined(separator: ", "))") }
        if let h = a.harness { Out.line("  harness: \(h.command.joined(separator: " "))") }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an agent.")
        @OptionGroup var conn: Connection
        @OptionGroup var options: AgentOptions
        @Option(name: .customLong("team"), help: "Team id (admins only; default: the caller's).") var team: String?

        func run() async throws {
            var input = try options.input(base: nil)
            if let team { input.teamID = team }
            let a = try await conn.client().call(.POST, "/v1/agents", body: input, as: Agent.self)
            conn.json ? Out.json(a) : Out.line(a.id)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List agents.")
        @OptionGroup var conn: Connection

        func run() async throws {
            let p = try await conn.client().call(.GET, "/v1/agents", as: Page<Agent>.self)
            if conn.json { return Out.json(p.data) }
            Out.table(["ID", "NAME", "MODEL", "IMAGE", "TEAM"],
                      p.data.map { [$0.id, $0.name, $0.model, $0.sandbox.image, $0.teamID] })
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show an agent.")
        @OptionGroup var conn: Connection
        @Argument var id: String

        func run() async throws {
            show(try await conn.client().call(.GET, "/v1/agents/\(seg(id))", as: Agent.self), json: conn.json)
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change an agent (only the fields given).")
        @OptionGroup var conn: Connection
        @Argument var id: String
        @OptionGroup var options: AgentOptions

        func run() async throws {
            let client = try conn.client()
            let current = try await client.call(.GET, "/v1/agents/\(seg(id))", as: Agent.self)
            let input = try options.input(base: current.sandbox)
            show(try await client.call(.PATCH, "/v1/agents/\(seg(id))", body: input, as: Agent.self), json: conn.json)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an agent (it must have no sessions).")
        @OptionGroup var conn: Connection
        @Argument var id: String

        func run() async throws {
            _ = try await conn.client().raw(.DELETE, "/v1/agents/\(seg(id))")
            if !conn.json { Out.line("deleted \(id)") }
        }
    }
}

struct Secrets: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "secrets", abstract: "Secrets (write-only).",
                                                    subcommands: [Set.self, List.self, Delete.self],
                                                    defaultSubcommand: List.self)

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a secret; the value is read from standard input (or --from-file), never the command line.")
        @OptionGroup var conn: Connection
        @Argument var name: String
        @Option(name: .customLong("agent"), help: "Only for this agent (default: the whole team).") var agent: String?
        @Option(name: .customLong("from-file"), help: "Read the value from this file.") var fromFile: String?

        func run() async throws {
            var value: String
            if let fromFile {
                guard let data = FileManager.default.contents(atPath: fromFile) else { throw CLIError("cannot read \(fromFile)") }
                value = String(decoding: data, as: UTF8.self)
            } else {
                if isatty(0) != 0 { Out.err("value for \(name) (then Enter): ") }
                value = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                if isatty(0) != 0 || value.hasSuffix("\n") && value.filter({ $0 == "\n" }).count == 1 {
                    value = value.trimmingCharacters(in: .newlines)
                }
            }
            struct In: Encodable {
                var value: String
                var agent_id: String?
            }
            let s = try await conn.client().call(.PUT, "/v1/secrets/\(seg(name))", body: In(value: value, agent_id: agent),
                                                 as: SecretInfo.self)
            conn.json ? Out.json(s) : Out.line("set \(s.name)\(s.agentID.map { " for agent \($0)" } ?? " for the team")")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List secret names (never values).")
        @OptionGroup var conn: Connection

        func run() async throws {
            let p = try await conn.client().call(.GET, "/v1/secrets", as: Page<SecretInfo>.self)
            if conn.json { return Out.json(p.data) }
            Out.table(["NAME", "SCOPE", "UPDATED"], p.data.map { [$0.name, $0.agentID ?? "team", Out.date($0.updatedAt)] })
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a secret.")
        @OptionGroup var conn: Connection
        @Argument var name: String
        @Option(name: .customLong("agent")) var agent: String?

        func run() async throws {
            _ = try await conn.client().raw(.DELETE, "/v1/secrets/\(seg(name))", query: ["agent_id": agent])
            if !conn.json { Out.line("deleted \(name)") }
        }
    }
}
