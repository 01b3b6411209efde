// embed-dashboard: the build tool behind the DashboardAssets plugin.  It
// writes a Swift file with each dashboard asset as a raw string literal
// (SwiftPM's resource embedding makes byte-array literals that take the
// compiler minutes; a string literal takes it nothing).
//
//   embed-dashboard OUTPUT NAME=PATH...
import Foundation

let args = CommandLine.arguments.dropFirst()
guard let output = args.first, args.count > 1 else {
    FileHandle.standardError.write(Data("usage: embed-dashboard OUTPUT NAME=PATH...\n".utf8))
    exit(2)
}
var lines = ["// Generated at build time by the DashboardAssets plugin from Sources/AgentdServer/Dashboard/.",
             "", "enum DashboardAssets {"]
for pair in args.dropFirst() {
    let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2, let text = try? String(contentsOfFile: parts[1], encoding: .utf8) else {
        FileHandle.standardError.write(Data("embed-dashboard: cannot read \(pair)\n".utf8))
        exit(1)
    }
    // Enough #s that the literal cannot end inside the text.
    var delimiter = "#"
    while text.contains("\"\"\"" + delimiter) || text.contains("\\" + delimiter) { delimiter += "#" }
    var body = text
    while body.hasSuffix("\n") { body.removeLast() }
    lines.append("    static let \(parts[0]): String = \(delimiter)\"\"\"")
    lines.append(body)
    lines.append("\"\"\"\(delimiter)")
    lines.append("")
}
lines.append("}")
let generated = lines.joined(separator: "\n") + "\n"
// Unchanged output keeps its timestamp: nothing downstream rebuilds.
if (try? String(contentsOfFile: output, encoding: .utf8)) != generated {
    do {
        try generated.write(toFile: output, atomically: true, encoding: .utf8)
    } catch {
        FileHandle.standardError.write(Data("embed-dashboard: cannot write \(output): \(error)\n".utf8))
        exit(1)
    }
}
