import ArgumentParser

@main
struct Agentd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agentd",
        abstract: "Run AI agents for several teams, each session in its own Linux sandbox.",
        version: AgentdVersion.string,
        subcommands: [Serve.self, SandboxCommand.self, ImageCommand.self, OpenAPICommand.self])
}

enum AgentdVersion {
    static let string = "0.1.0"
}
