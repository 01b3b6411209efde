import AgentdModel
import AgentdServer
import TOMLKit
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// agentd's configuration: built-in defaults, then the config file
/// (/etc/agentd/agentd.toml when installed), then AGENTD_* environment
/// variables, then command-line flags; each later source wins.
struct DaemonConfig: Codable, Equatable {
    struct Sandbox: Codable, Equatable {
        var cgroupDriver: String = "auto"
        var cgroupParent: String = "auto"
        var defaultImage: String = "default"
        var memoryMB: Int = 512
        var cpus: Double = 1
        var pids: Int = 256
        var tmpMB: Int = 256
        var openFiles: Int = 1024
        var netnsPool: Int = 4
        var warmPool: Int = 2
        var spareRoots: Int = 2
        var startTimeoutS: Int = 30
        var adoptRunning: Bool = true
        var allow32Bit: Bool = false

        enum CodingKeys: String, CodingKey {
            case cgroupDriver = "cgroup_driver", cgroupParent = "cgroup_parent", defaultImage = "default_image"
            case memoryMB = "memory_mb", cpus, pids, tmpMB = "tmp_mb", openFiles = "open_files", netnsPool = "netns_pool"
            case warmPool = "warm_pool", spareRoots = "spare_roots", startTimeoutS = "start_timeout_s", adoptRunning = "adopt_running", allow32Bit = "allow_32bit"
        }
    }

    struct Exec: Codable, Equatable {
        var defaultTimeoutS: Int = 600
        var maxOutputBytes: Int = 8 << 20

        enum CodingKeys: String, CodingKey { case defaultTimeoutS = "default_timeout_s", maxOutputBytes = "max_output_bytes" }
    }

    struct Gateway: Codable, Equatable {
        var url: String = ""
        var key: String = ""
        var timeoutS: Int = 300
        var maxAttempts: Int = 5
        var stream: String = "auto"

        enum CodingKeys: String, CodingKey {
            case url, key, timeoutS = "timeout_s", maxAttempts = "max_attempts", stream
        }
    }

    struct Worker: Codable, Equatable {
        var concurrency: Int = 4
        var leaseSeconds: Int = 30
        var maxSteps: Int = 50
        var maxRunSeconds: Int = 3600
        var maxToolOutputBytes: Int = 16384
        var toolTimeoutS: Int = 300
        var contextChars: Int = 400_000
        var harnessPort: Int = 4000

        enum CodingKeys: String, CodingKey {
            case concurrency, leaseSeconds = "lease_seconds", maxSteps = "max_steps", maxRunSeconds = "max_run_seconds"
            case maxToolOutputBytes = "max_tool_output_bytes", toolTimeoutS = "tool_timeout_s"
            case contextChars = "context_chars", harnessPort = "harness_port"
        }
    }

    /// Connections and requests: how slow, idle or large a client may be.
    struct HTTP: Codable, Equatable {
        var idleTimeoutS: Int = 60
        var headerTimeoutS: Int = 10
        var minBodyRate: Int = 1024
        var writeStallTimeoutS: Int = 60
        var maxConnections: Int = 10_000
        var bodyMemoryMB: Int = 64

        enum CodingKeys: String, CodingKey {
            case idleTimeoutS = "idle_timeout_s", headerTimeoutS = "header_timeout_s", minBodyRate = "min_body_rate"
            case writeStallTimeoutS = "write_stall_timeout_s", maxConnections = "max_connections"
            case bodyMemoryMB = "body_memory_mb"
        }
    }

    var stateDir: String = "/var/lib/agentd"
    var runDir: String = ""
    var listen: String = "127.0.0.1:8787"
    var socket: String = ""
    var socketGroup: String = "agentd"
    var logLevel: String = "info"
    var idleStopSeconds: Int = 900
    /// Free space kept on the state directory's file system for the
    /// database: below it, sandboxes do not start and uploads are refused.
    var diskReserveMB: Int = 512
    var sandbox = Sandbox()
    var exec = Exec()
    var gateway = Gateway()
    var worker = Worker()
    var http = HTTP()

    enum CodingKeys: String, CodingKey {
        case stateDir = "state_dir", runDir = "run_dir", listen, socket, socketGroup = "socket_group"
        case logLevel = "log_level", idleStopSeconds = "idle_stop_seconds", sandbox, exec, gateway, worker, http
        case diskReserveMB = "disk_reserve_mb"
    }

    static let topKeys: Set<String> = ["state_dir", "run_dir", "listen", "socket", "socket_group", "log_level",
                                       "idle_stop_seconds", "disk_reserve_mb", "sandbox", "exec", "gateway", "worker",
                                       "http"]
    static let nestedKeys: [String: Set<String>] = [
        "sandbox": ["cgroup_driver", "cgroup_parent", "default_image", "memory_mb", "cpus", "pids", "tmp_mb",
                    "open_files", "netns_pool", "warm_pool", "spare_roots", "start_timeout_s", "adopt_running", "allow_32bit"],
        "exec": ["default_timeout_s", "max_output_bytes"],
        "http": ["idle_timeout_s", "header_timeout_s", "min_body_rate", "write_stall_timeout_s", "max_connections",
                 "body_memory_mb"],
        "gateway": ["url", "key", "timeout_s", "max_attempts", "stream"],
        "worker": ["concurrency", "lease_seconds", "max_steps", "max_run_seconds", "max_tool_output_bytes",
                   "tool_timeout_s", "context_chars", "harness_port"],
    ]

    /// The file's settings over the defaults; unknown keys are errors (a
    /// typo must not silently fall back to a default).
    static func load(file path: String) throws -> DaemonConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError("cannot read \(path)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw ConfigError("\(path):\(e.source.begin.line): invalid TOML")
        }
        let json = table.convert(to: .json)
        guard case .object(let top)? = try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(json.utf8)) else {
            throw ConfigError("\(path): not a TOML table")
        }
        for k in top.keys where !topKeys.contains(k) { throw ConfigError("\(path): unknown setting \"\(k)\"") }
        for (section, keys) in nestedKeys {
            guard let v = top[section] else { continue }
            guard case .object(let inner) = v else { throw ConfigError("\(path): [\(section)] must be a table") }
            for k in inner.keys where !keys.contains(k) {
                throw ConfigError("\(path): unknown setting \"\(section).\(k)\"")
            }
        }
        var merged = try JSONValue.from(DaemonConfig())
        if case .object(var base) = merged {
            for (k, v) in top {
                if case .object(let inner) = v, case .object(var b)? = base[k] {
                    for (ik, iv) in inner { b[ik] = iv }
                    base[k] = .object(b)
                } else {
                    base[k] = v
                }
            }
            merged = .object(base)
        }
        do {
            return try merged.decode(DaemonConfig.self)
        } catch {
            throw ConfigError("\(path): a setting has the wrong type (\(error))")
        }
    }

    /// AGENTD_* environment variables over the current values.
    mutating func applyEnvironment(_ env: [String: String]) throws {
        if let v = env["AGENTD_STATE_DIR"] { stateDir = v }
        if let v = env["AGENTD_RUN_DIR"] { runDir = v }
        if let v = env["AGENTD_LISTEN"] { listen = v }
        if let v = env["AGENTD_SOCKET"] { socket = v }
        if let v = env["AGENTD_LOG_LEVEL"] { logLevel = v }
        if let v = env["AGENTD_IDLE_STOP_SECONDS"] {
            guard let n = Int(v) else { throw ConfigError("AGENTD_IDLE_STOP_SECONDS must be an integer") }
            idleStopSeconds = n
        }
        if let v = env["AGENTD_DISK_RESERVE_MB"] {
            guard let n = Int(v) else { throw ConfigError("AGENTD_DISK_RESERVE_MB must be an integer") }
            diskReserveMB = n
        }
        if let v = env["AGENTD_CGROUP_DRIVER"] { sandbox.cgroupDriver = v }
        if let v = env["AGENTD_CGROUP_PARENT"] { sandbox.cgroupParent = v }
        if let v = env["AGENTD_GATEWAY_URL"] { gateway.url = v }
        if let v = env["AGENTD_GATEWAY_KEY"] { gateway.key = v }
        if let v = env["AGENTD_GATEWAY_STREAM"] { gateway.stream = v }
        if let v = env["AGENTD_WORKER_CONCURRENCY"] {
            guard let n = Int(v) else { throw ConfigError("AGENTD_WORKER_CONCURRENCY must be an integer") }
            worker.concurrency = n
        }
    }

    func validate() throws {
        guard stateDir.hasPrefix("/") else { throw ConfigError("state_dir must be an absolute path") }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(logLevel) else {
            throw ConfigError("log_level must be one of trace, debug, info, notice, warning, error, critical")
        }
        guard (0...31_536_000).contains(idleStopSeconds) else {
            throw ConfigError("idle_stop_seconds must be 0 (never) to 31536000 (a year)")
        }
        guard (0...(1 << 24)).contains(diskReserveMB) else {
            throw ConfigError("disk_reserve_mb must be 0 (none) to 16777216")
        }
        guard ["auto", "v1", "v2", "none"].contains(sandbox.cgroupDriver) else {
            throw ConfigError("sandbox.cgroup_driver must be auto, v1, v2 or none")
        }
        // Upper bounds too: every number here is converted (to bytes, to
        // milliseconds) where an out-of-range value would trap or wrap.
        guard (16...(1 << 24)).contains(sandbox.memoryMB), (8...(1 << 22)).contains(sandbox.pids),
              sandbox.cpus.isFinite, sandbox.cpus >= 0.01, sandbox.cpus <= 4096,
              (1...(1 << 24)).contains(sandbox.tmpMB) else {
            throw ConfigError("sandbox limits out of range (memory_mb 16 to 16777216, pids 8 to 4194304, "
                              + "cpus 0.01 to 4096, tmp_mb 1 to 16777216)")
        }
        guard (16...1_048_576).contains(sandbox.openFiles) else {
            throw ConfigError("sandbox.open_files must be 16 to 1048576")
        }
        guard (0...64).contains(sandbox.netnsPool) else { throw ConfigError("sandbox.netns_pool must be 0 to 64") }
        guard (0...64).contains(sandbox.warmPool) else { throw ConfigError("sandbox.warm_pool must be 0 to 64") }
        guard (0...64).contains(sandbox.spareRoots) else { throw ConfigError("sandbox.spare_roots must be 0 to 64") }
        guard (1...3600).contains(sandbox.startTimeoutS) else {
            throw ConfigError("sandbox.start_timeout_s must be 1 to 3600")
        }
        guard (1...86400).contains(exec.defaultTimeoutS), (1024...(1 << 30)).contains(exec.maxOutputBytes) else {
            throw ConfigError("exec.default_timeout_s must be 1 to 86400 and exec.max_output_bytes 1024 to 1073741824")
        }
        if !gateway.url.isEmpty {
            guard let u = URLComponents(string: gateway.url), ["http", "https"].contains(u.scheme ?? ""),
                  !(u.host ?? "").isEmpty else {
                throw ConfigError("gateway.url must be an http(s) URL, e.g. http://127.0.0.1:4000/v1")
            }
        }
        guard (1...86400).contains(gateway.timeoutS), (1...20).contains(gateway.maxAttempts) else {
            throw ConfigError("gateway.timeout_s must be 1 to 86400 and gateway.max_attempts 1 to 20")
        }
        guard ["auto", "always", "never"].contains(gateway.stream) else {
            throw ConfigError("gateway.stream must be auto, always or never")
        }
        guard (1...256).contains(worker.concurrency) else { throw ConfigError("worker.concurrency must be 1 to 256") }
        guard (3...3600).contains(worker.leaseSeconds), (1...1000).contains(worker.maxSteps),
              (1...86400).contains(worker.maxRunSeconds), (1...86400).contains(worker.toolTimeoutS),
              (256...(16 << 20)).contains(worker.maxToolOutputBytes), (1000...(1 << 30)).contains(worker.contextChars) else {
            throw ConfigError("worker limits out of range (lease_seconds 3 to 3600, max_steps 1 to 1000, "
                              + "max_run_seconds and tool_timeout_s 1 to 86400, max_tool_output_bytes 256 to 16777216, "
                              + "context_chars 1000 to 1073741824)")
        }
        guard (1...65535).contains(worker.harnessPort) else { throw ConfigError("worker.harness_port must be 1 to 65535") }
        guard (1...86400).contains(http.idleTimeoutS), (1...3600).contains(http.headerTimeoutS),
              (0...(1 << 30)).contains(http.minBodyRate), (1...86400).contains(http.writeStallTimeoutS),
              (16...1_000_000).contains(http.maxConnections), (1...65536).contains(http.bodyMemoryMB) else {
            throw ConfigError("http settings out of range (idle_timeout_s 1 to 86400, header_timeout_s 1 to 3600, "
                              + "min_body_rate 0 to 1073741824, write_stall_timeout_s 1 to 86400, "
                              + "max_connections 16 to 1000000, body_memory_mb 1 to 65536)")
        }
        _ = try listenAddress()
    }

    var connectionLimits: ConnectionLimits {
        var l = ConnectionLimits()
        l.idleTimeout = .seconds(http.idleTimeoutS)
        l.headerTimeout = .seconds(http.headerTimeoutS)
        l.minBodyRate = http.minBodyRate
        l.writeStallTimeout = .seconds(http.writeStallTimeoutS)
        l.maxConnections = http.maxConnections
        l.bodyMemory = http.bodyMemoryMB << 20
        return l
    }

    var resolvedRunDir: String { runDir.isEmpty ? (stateDir == "/var/lib/agentd" ? "/run/agentd" : stateDir + "/run") : runDir }
    var resolvedSocket: String { socket.isEmpty ? resolvedRunDir + "/agentd.sock" : socket }

    /// "HOST:PORT" (an IPv6 host in brackets); "" or "none" disables TCP.
    func listenAddress() throws -> (host: String, port: Int)? {
        if listen.isEmpty || listen == "none" { return nil }
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw ConfigError("listen must be HOST:PORT, e.g. 127.0.0.1:8787")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ConfigError("listen needs a host, e.g. 127.0.0.1:8787") }
        return (host, port)
    }
}

struct ConfigError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

func processEnvironment() -> [String: String] {
    var out: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") { out[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
        p += 1
    }
    return out
}
