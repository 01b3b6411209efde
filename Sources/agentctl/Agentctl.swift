import AgentdModel
import ArgumentParser
import Foundation

@main
struct Agentctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentctl",
        abstract: "Command line for agentd: teams, keys, agents, secrets, sessions, chat, exec and files.",
        discussion: """
            Connects to the local agentd over its Unix socket (as root, with the admin key) unless --url/AGENTD_URL \
            and --key/AGENTD_KEY are given. --json prints the API's JSON. Shell completions: \
            agentctl --generate-completion-script bash|zsh|fish.
            """,
        version: AgentctlVersion.string,
        subcommands: [StatusCmd.self, Teams.self, Keys.self, Agents.self, Secrets.self, Sessions.self, Chat.self,
                      Messages.self, Events.self, Runs.self, Cancel.self, ExecCmd.self, Copy.self, Files.self,
                      Remove.self, SandboxCmd.self])

    /// Every subcommand ends here on failure: one line, a non-zero exit.
    static func main() async {
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot(hoistGlobalOptions(Array(CommandLine.arguments.dropFirst())))
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let e as CLIError {
            Out.err("agentctl: \(e.description)\n")
            Foundation.exit(e.code)
        } catch {
            exit(withError: error)
        }
    }
}

/// --url, --socket, --key and --json may come before the subcommand too
/// (`agentctl --url U sessions`): they are passed on through the environment.
func hoistGlobalOptions(_ args: [String]) -> [String] {
    var rest = args[...]
    let names = ["--url": "AGENTD_URL", "--socket": "AGENTD_SOCKET", "--key": "AGENTD_KEY"]
    while let first = rest.first {
        if first == "--json" {
            setenv("AGENTCTL_JSON", "1", 1)
            rest = rest.dropFirst()
        } else if let env = names[first], rest.count >= 2 {
            setenv(env, rest[rest.startIndex + 1], 1)
            rest = rest.dropFirst(2)
        } else if let eq = first.firstIndex(of: "="), let env = names[String(first[..<eq])] {
            setenv(env, String(first[first.index(after: eq)...]), 1)
            rest = rest.dropFirst()
        } else {
            break
        }
    }
    return Array(rest)
}

protocol APICommand: AsyncParsableCommand {
    var conn: Connection { get }
}

struct StatusCmd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Daemon status.")
    @OptionGroup var conn: Connection

    func run() async throws {
        let s = try await conn.client().call(.GET, "/v1/status", as: StatusInfo.self)
        if conn.json { return Out.json(s) }
        Out.line("agentd \(s.version)")
        Out.line("cgroups:   \(s.cgroupDriver)")
        Out.line("seccomp:   \(s.seccomp)")
        Out.line("images:    \(s.images.joined(separator: ", "))")
        Out.line("sandboxes: \(s.sandboxesRunning) running")
        Out.line("runs:      \(s.runsActive) active, \(s.runsQueued) queued")
        for n in s.notes { Out.line("note:      \(n)") }
    }
}

// MARK: teams and keys

struct Teams: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "teams", abstract: "Teams.",
                                                    subcommands: [Create.self, List.self, Show.self, Quota.self],
                                                    defaultSubcommand: List.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a team (admin).")
        @OptionGroup var conn: Connection
        @Argument var name: String

        func run() async throws {
            let t = try await conn.client().call(.POST, "/v1/teams", body: ["name": name], as: Team.self)
            conn.json ? Out.json(t) : Out.line(t.id)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List teams.")
        @OptionGroup var conn: Connection

        func run() async throws {
            let p = try await conn.client().call(.GET, "/v1/teams", as: Page<Team>.self)
            if conn.json { return Out.json(p.data) }
            Out.table(["ID", "NAME", "CREATED"], p.data.map { [$0.id, $0.name, Out.date($0.createdAt)] })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A team's quotas beside what it uses now.")
        @OptionGroup var conn: Connection
        @Argument(help: "Team id.") var team: String

        func run() async throws {
            let t = try await conn.client().call(.GET, "/v1/teams/\(team)", as: Team.self)
            if conn.json { return Out.json(t) }
            Out.line("\(t.id)  \(t.name)")
            Teams.printQuotas(t)
        }
    }

    struct Quota: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a team's quotas (admin). Options not given keep their value; --unset removes a limit.")
        @OptionGroup var conn: Connection
        @Argument(help: "Team id.") var team: String
        @Option(help: "Sessions that may exist.") var sessions: Int?
        @Option(name: .customLong("running-sandboxes"), help: "Sandboxes running or paused at once.")
        var runningSandboxes: Int?
        @Option(name: .customLong("concurrent-runs"), help: "Runs worked on at once (more wait in the queue).")
        var concurrentRuns: Int?
        @Option(name: .customLong("queued-runs"), help: "Runs waiting in the queue.") var queuedRuns: Int?
        @Option(name: .customLong("memory-mb"), help: "Memory of the running sandboxes, summed, in MiB.")
        var memoryMB: Int?
        @Option(help: "CPUs of the running sandboxes, summed.") var cpus: Double?
        @Option(help: "Remove a limit (repeatable): sessions, running-sandboxes, concurrent-runs, queued-runs, memory-mb, cpus, or all.")
        var unset: [String] = []

        func run() async throws {
            let client = try conn.client()
            var q = try await client.call(.GET, "/v1/teams/\(team)", as: Team.self).quotas
            for name in unset {
                switch name {
                case "all": q = TeamQuotas()
                case "sessions": q.sessions = nil
                case "running-sandboxes": q.runningSandboxes = nil
                case "concurrent-runs": q.concurrentRuns = nil
                case "queued-runs": q.queuedRuns = nil
                case "memory-mb": q.memoryMB = nil
                case "cpus": q.cpus = nil
                default: throw CLIError("unknown quota \(name)")
                }
            }
            if let sessions { q.sessions = sessions }
            if let runningSandboxes { q.runningSandboxes = runningSandboxes }
            if let concurrentRuns { q.concurrentRuns = concurrentRuns }
            if let queuedRuns { q.queuedRuns = queuedRuns }
            if let memoryMB { q.memoryMB = memoryMB }
            if let cpus { q.cpus = cpus }
            struct Patch: Encodable { var quotas: TeamQuotas }
            let t = try await client.call(.PATCH, "/v1/teams/\(team)", body: Patch(quotas: q), as: Team.self)
            if conn.json { return Out.json(t) }
            Teams.printQuotas(t)
        }
    }

    static func printQuotas(_ t: Team) {
        func limit(_ v: Int?) -> String { v.map(String.init) ?? "-" }
        let q = t.quotas
        let u = t.usage
        Out.table(["QUOTA", "USED", "LIMIT"], [
            ["sessions", u.map { String($0.sessions) } ?? "", limit(q.sessions)],
            ["running_sandboxes", u.map { String($0.runningSandboxes) } ?? "", limit(q.runningSandboxes)],
            ["concurrent_runs", u.map { String($0.concurrentRuns) } ?? "", limit(q.concurrentRuns)],
            ["queued_runs", u.map { String($0.queuedRuns) } ?? "", limit(q.queuedRuns)],
            ["memory_mb", u.map { String($0.memoryMB) } ?? "", limit(q.memoryMB)],
            ["cpus", u.map { String($0.cpus) } ?? "", q.cpus.map { String($0) } ?? "-"],
        ])
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "API keys.",
                                                    subcommands: [Create.self, List.self, Revoke.self],
                                                    defaultSubcommand: List.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; it is printed once.")
        @OptionGroup var conn: Connection
        @Option var name: String
        @Option(help: "admin, owner, member or viewer.") var role: String
        @Option(name: .customLong("team"), help: "Team id (default: the caller's team).") var team: String?

        func run() async throws {
            struct In: Encodable {
                var name: String
                var role: String
                var team_id: String?
            }
            let k = try await conn.client().call(.POST, "/v1/keys", body: In(name: name, role: role, team_id: team),
                                                 as: APIKeyInfo.self)
            if conn.json { return Out.json(k) }
            Out.line(k.key ?? "")
            Out.err("key \(k.id) (\(k.role.rawValue)) in team \(k.teamID); it is not shown again\n")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (never their values).")
        @OptionGroup var conn: Connection

        func run() async throws {
            let p = try await conn.client().call(.GET, "/v1/keys", as: Page<APIKeyInfo>.self)
            if conn.json { return Out.json(p.data) }
            Out.table(["ID", "NAME", "ROLE", "TEAM", "PREFIX", "REVOKED"],
                      p.data.map { [$0.id, $0.name, $0.role.rawValue, $0.teamID, $0.prefix + "…", Out.date($0.revokedAt)] })
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key; it stops working at once.")
        @OptionGroup var conn: Connection
        @Argument var id: String

        func run() async throws {
            _ = try await conn.client().raw(.DELETE, "/v1/keys/\(id)")
            if !conn.json { Out.line("revoked \(id)") }
        }
    }
}
