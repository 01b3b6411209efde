/// What a sandbox is made of: the same description for every backend (a Linux
/// sandbox on this host, a pod through agent-sandbox).  Plain data, `Codable`
/// so it can be stored with the session and sent over the wire.

/// An opaque, path-safe identifier chosen by the caller (agentd uses the
/// session id).
public struct SandboxID: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: String

    /// Letters, digits, `_` and `-`, 1 to 64 characters: safe as a file name,
    /// a cgroup name and a hostname label.
    public init(_ rawValue: String) throws(SandboxError) {
        guard Self.isValid(rawValue) else {
            throw SandboxError(.invalidArgument, "sandbox id must be 1-64 characters of [A-Za-z0-9_-]", field: "id")
        }
        self.rawValue = rawValue
    }

    public static func isValid(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 64 else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D
        }
    }

    public init(from decoder: any Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        try self.init(s)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    public var description: String { rawValue }
    public static func < (a: SandboxID, b: SandboxID) -> Bool { a.rawValue < b.rawValue }
}

/// Resource limits.  `nil` means the backend's default, never "unlimited".
public struct ResourceLimits: Sendable, Codable, Equatable {
    /// Memory limit in bytes (cgroup memory.max).
    public var memoryBytes: UInt64?
    /// Swap the sandbox may use on top of memory (cgroup memory.swap.max).
    public var swapBytes: UInt64?
    /// Maximum number of processes and threads (cgroup pids.max).
    public var pids: Int?
    /// CPU bandwidth in thousandths of a CPU: 500 is half a CPU (cgroup cpu.max).
    public var cpuMillis: Int?
    /// Proportional block-IO weight 1-10000 (cgroup io.weight), where available.
    public var ioWeight: Int?
    /// Open files per process (RLIMIT_NOFILE).
    public var openFiles: Int?
    /// Size of the private /tmp (tmpfs) in bytes.
    public var tmpBytes: UInt64?

    public init(memoryBytes: UInt64? = nil, swapBytes: UInt64? = nil, pids: Int? = nil, cpuMillis: Int? = nil,
                ioWeight: Int? = nil, openFiles: Int? = nil, tmpBytes: UInt64? = nil) {
        self.memoryBytes = memoryBytes
        self.swapBytes = swapBytes
        self.pids = pids
        self.cpuMillis = cpuMillis
        self.ioWeight = ioWeight
        self.openFiles = openFiles
        self.tmpBytes = tmpBytes
    }

    /// Defaults applied where a field is nil.
    public static let defaults = ResourceLimits(
        memoryBytes: 512 << 20, swapBytes: 0, pids: 256, cpuMillis: 1000, ioWeight: nil,
        openFiles: 1024, tmpBytes: 256 << 20)

    /// This spec's values, falling back to `defaults` field by field.
    public func resolved(over defaults: ResourceLimits = .defaults) -> ResourceLimits {
        ResourceLimits(
            memoryBytes: memoryBytes ?? defaults.memoryBytes,
            swapBytes: swapBytes ?? defaults.swapBytes,
            pids: pids ?? defaults.pids,
            cpuMillis: cpuMillis ?? defaults.cpuMillis,
            ioWeight: ioWeight ?? defaults.ioWeight,
            openFiles: openFiles ?? defaults.openFiles,
            tmpBytes: tmpBytes ?? defaults.tmpBytes)
    }

    /// Hard bounds that make a limit absurd rather than merely large.
    public func validate(hostMemory: UInt64, hostCPUs: Int) throws(SandboxError) {
        if let m = memoryBytes {
            guard m >= 4 << 20 else { throw SandboxError(.invalidArgument, "memory must be at least 4M", field: "memory") }
            guard m <= hostMemory else {
                throw SandboxError(.invalidArgument, "memory \(m) bytes exceeds the host's \(hostMemory) bytes", field: "memory")
            }
        }
        if let s = swapBytes, s > hostMemory * 4 {
            throw SandboxError(.invalidArgument, "swap \(s) bytes is beyond any sane limit", field: "swap")
        }
        if let p = pids {
            guard (1...4_194_304).contains(p) else {
                throw SandboxError(.invalidArgument, "pids must be between 1 and 4194304", field: "pids")
            }
        }
        if let c = cpuMillis {
            guard c >= 10 else { throw SandboxError(.invalidArgument, "cpus must be at least 0.01", field: "cpus") }
            guard c <= hostCPUs * 1000 else {
                throw SandboxError(.invalidArgument, "cpus \(Double(c) / 1000) exceeds the host's \(hostCPUs)", field: "cpus")
            }
        }
        if let w = ioWeight, !(1...10000).contains(w) {
            throw SandboxError(.invalidArgument, "io weight must be between 1 and 10000", field: "io_weight")
        }
        if let f = openFiles, !(16...1_048_576).contains(f) {
            throw SandboxError(.invalidArgument, "open files must be between 16 and 1048576", field: "open_files")
        }
        if let t = tmpBytes, t > hostMemory {
            throw SandboxError(.invalidArgument, "tmp size exceeds the host's memory", field: "tmp")
        }
    }
}

/// What the sandbox's network may reach.
public enum NetworkPolicy: Sendable, Equatable, Codable {
    /// Its own network namespace with only loopback, up.  The default.
    case none
    /// Loopback plus a link that reaches only these `host:port` destinations.
    /// (Reserved: backends that cannot enforce it refuse it.)
    case allowlist([String])

    enum CodingKeys: String, CodingKey { case mode, allow }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        switch try c.decode(String.self, forKey: .mode) {
        case "none": self = .none
        case "allowlist": self = .allowlist(try c.decodeIfPresent([String].self, forKey: .allow) ?? [])
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .mode, in: c, debugDescription: "unknown network mode \(other)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .none: try c.encode("none", forKey: .mode)
        case .allowlist(let hosts):
            try c.encode("allowlist", forKey: .mode)
            try c.encode(hosts, forKey: .allow)
        }
    }
}

public struct SandboxSpec: Sendable, Codable, Equatable {
    /// Root filesystem image: a name known to the backend (`default`,
    /// `minimal`, ...) or, for the Linux backend, an absolute directory.
    public var image: String
    /// Hostname inside the sandbox.
    public var hostname: String
    public var limits: ResourceLimits
    public var network: NetworkPolicy
    /// Run in a user namespace: root inside maps to an unprivileged host range.
    public var userNamespace: Bool
    /// Environment every command starts with (requests may add to it).
    public var env: [String: String]
    /// Working directory of commands, absolute inside the sandbox.
    public var workdir: String
    /// Make everything but /workspace, /tmp and /dev/shm read-only.
    public var readOnlyRoot: Bool

    public init(image: String = "default", hostname: String = "sandbox", limits: ResourceLimits = ResourceLimits(),
                network: NetworkPolicy = .none, userNamespace: Bool = false, env: [String: String] = [:],
                workdir: String = "/workspace", readOnlyRoot: Bool = false) {
        self.image = image
        self.hostname = hostname
        self.limits = limits
        self.network = network
        self.userNamespace = userNamespace
        self.env = env
        self.workdir = workdir
        self.readOnlyRoot = readOnlyRoot
    }

    /// Checks that need no host knowledge.
    public func validate() throws(SandboxError) {
        guard !image.isEmpty, !image.contains("\0") else {
            throw SandboxError(.invalidArgument, "image must be a name or an absolute directory", field: "image")
        }
        if !image.hasPrefix("/") && !ImageName.isValid(image) {
            throw SandboxError(.invalidArgument, "image name must be 1-64 characters of [a-z0-9._-]", field: "image")
        }
        guard Hostname.isValid(hostname) else {
            throw SandboxError(.invalidArgument, "hostname must be 1-63 characters of [A-Za-z0-9-]", field: "hostname")
        }
        guard workdir.hasPrefix("/"), !workdir.contains("\0"), SandboxPath.isContained(workdir) else {
            throw SandboxError(.invalidArgument, "workdir must be an absolute path inside the sandbox", field: "workdir")
        }
        for (k, v) in env {
            guard EnvName.isValid(k) else {
                throw SandboxError(.invalidArgument, "environment variable name \"\(k)\" is not valid", field: "env")
            }
            guard !v.contains("\0") else {
                throw SandboxError(.invalidArgument, "environment variable \(k) contains a NUL byte", field: "env")
            }
        }
    }
}

public enum ImageName {
    public static func isValid(_ s: String) -> Bool {
        // The first character is a letter or digit: names starting with a
        // dot are agentd's own (images/.versions).
        guard let first = s.utf8.first, s.utf8.count <= 64,
              (first >= 0x30 && first <= 0x39) || (first >= 0x61 && first <= 0x7A) else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }
}

public enum Hostname {
    public static func isValid(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 63, !s.hasPrefix("-"), !s.hasSuffix("-") else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D
        }
    }

    /// A valid hostname made from any string (a session name, an id).
    public static func sanitize(_ s: String) -> String {
        var out = ""
        for ch in s.lowercased().unicodeScalars {
            if out.utf8.count >= 63 { break }
            if (ch >= "a" && ch <= "z") || (ch >= "0" && ch <= "9") {
                out.unicodeScalars.append(ch)
            } else if !out.isEmpty && !out.hasSuffix("-") {
                out += "-"
            }
        }
        while out.hasSuffix("-") { out.removeLast() }
        return out.isEmpty ? "sandbox" : out
    }
}

public enum EnvName {
    public static func isValid(_ s: String) -> Bool {
        guard let first = s.utf8.first, s.utf8.count <= 255 else { return false }
        guard first == 0x5F || (first >= 0x41 && first <= 0x5A) || (first >= 0x61 && first <= 0x7A) else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
        }
    }
}
