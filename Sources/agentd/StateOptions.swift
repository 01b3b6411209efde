import ArgumentParser
import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// Where agentd keeps its state; shared by every subcommand.
struct StateOptions: ParsableArguments {
    @Option(name: .customLong("state-dir"), help: "State directory (default: $AGENTD_STATE_DIR or /var/lib/agentd).")
    var stateDir: String?

    @Option(name: .customLong("run-dir"), help: "Runtime directory for sandbox sockets (default: /run/agentd, or STATE/run).")
    var runDir: String?

    var resolvedStateDir: String {
        if let stateDir { return absolute(stateDir) }
        if let env = getenv("AGENTD_STATE_DIR") { return absolute(String(cString: env)) }
        return "/var/lib/agentd"
    }

    var resolvedRunDir: String {
        if let runDir { return absolute(runDir) }
        if let env = getenv("AGENTD_RUN_DIR") { return absolute(String(cString: env)) }
        return resolvedStateDir == "/var/lib/agentd" ? "/run/agentd" : resolvedStateDir + "/run"
    }

    func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buf = [CChar](repeating: 0, count: 4096)
        guard getcwd(&buf, buf.count) != nil else { return path }
        let cwd = String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return cwd + "/" + path
    }
}
