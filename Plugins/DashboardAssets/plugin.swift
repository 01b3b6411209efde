import Foundation
import PackagePlugin

/// Compiles the dashboard's assets (Sources/AgentdServer/Dashboard/) into
/// the AgentdServer module at build time, so that no build can ship a
/// dashboard older than its sources.
@main
struct DashboardAssets: BuildToolPlugin {
    static let assets = [("indexHTML", "index.html"), ("appJS", "app.js"), ("appCSS", "app.css")]

    func createBuildCommands(context: PluginContext, target: Target) async throws -> [Command] {
        // (Target.directoryURL needs tools version 6.1; the package is 6.0.)
        let directory = context.package.directoryURL.appending(path: "Sources/\(target.name)/Dashboard")
        let inputs = Self.assets.map { directory.appending(path: $0.1) }
        let output = context.pluginWorkDirectoryURL.appending(path: "DashboardAssets.swift")
        return [.buildCommand(
            displayName: "Embedding the dashboard's assets",
            executable: try context.tool(named: "embed-dashboard").url,
            arguments: [output.path()] + zip(Self.assets, inputs).map { "\($0.0.0)=\($0.1.path())" },
            inputFiles: inputs,
            outputFiles: [output])]
    }
}
