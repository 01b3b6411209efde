import SandboxKit

/// Input constraints declared once: the services validate with `check`, and
/// the OpenAPI document shows `schema`, so the two cannot drift (a test also
/// runs each rule's pattern, as a regular expression, against its check).
public struct FieldRule: Sendable {
    /// The JSON Schema of the field, for the OpenAPI document.
    public let schema: JSONValue
    /// What the field must be, for error messages: "1 to 64 characters ...".
    public let rule: String
    let test: @Sendable (String) -> Bool
    /// Integer rules: the range.
    public var range: ClosedRange<Int>? = nil

    /// True when `s` satisfies the rule.
    public func accepts(_ s: String) -> Bool { test(s) }

    /// Throws a 400 naming `field` unless `s` satisfies the rule.
    public func check(_ s: String, field: String) throws {
        guard test(s) else { throw AgentdError.invalid("\(field) must be \(rule)", field: field) }
    }

    public static func string(pattern: String, rule: String, minLength: Int = 1, maxLength: Int,
                              _ test: @escaping @Sendable (String) -> Bool) -> FieldRule {
        FieldRule(schema: .object(["type": .string("string"), "pattern": .string(pattern),
                                   "minLength": .number(Double(minLength)), "maxLength": .number(Double(maxLength))]),
                  rule: rule, test: test)
    }

    public static func integer(_ range: ClosedRange<Int>) -> FieldRule {
        FieldRule(schema: .object(["type": .string("integer"), "minimum": .number(Double(range.lowerBound)),
                                   "maximum": .number(Double(range.upperBound))]),
                  rule: "an integer from \(range.lowerBound) to \(range.upperBound)",
                  test: { Int($0).map(range.contains) ?? false }, range: range)
    }

    /// Throws a 400 naming `field` unless `v` is in the rule's range.
    public func check(_ v: Int, field: String) throws {
        guard let range, range.contains(v) else { throw AgentdError.invalid("\(field) must be \(rule)", field: field) }
    }

    /// Text without NUL, `minLength` to `maxLength` characters (Unicode
    /// scalars, as JSON Schema counts them).
    public static func text(maxLength: Int, minLength: Int = 0) -> FieldRule {
        FieldRule(schema: .object(["type": .string("string"), "pattern": .string("^[^\\u0000]*$"),
                                   "minLength": .number(Double(minLength)), "maxLength": .number(Double(maxLength))]),
                  rule: minLength > 0 ? "\(minLength) to \(maxLength) characters without NUL"
                                      : "at most \(maxLength) characters without NUL",
                  test: { s in
                      let n = s.unicodeScalars.count
                      return n >= minLength && n <= maxLength && !s.unicodeScalars.contains { $0.value == 0 }
                  })
    }

    /// Numbers: finite, from `min` (or above it) to `max`.
    public static func number(min: Double, exclusiveMin: Bool = false, max: Double) -> FieldRule {
        FieldRule(schema: .object(["type": .string("number"), exclusiveMin ? "exclusiveMinimum" : "minimum": .number(min),
                                   "maximum": .number(max)]),
                  rule: "a number " + (exclusiveMin ? "above \(min)" : "from \(min)") + " to \(max)",
                  test: { Double($0).map { $0.isFinite && (exclusiveMin ? $0 > min : $0 >= min) && $0 <= max } ?? false },
                  numbers: exclusiveMin ? min.nextUp...max : min...max)
    }

    /// Number rules: the range.
    public var numbers: ClosedRange<Double>? = nil

    /// Throws a 400 naming `field` unless `v` is finite and in range.
    public func check(_ v: Double, field: String) throws {
        guard let numbers, v.isFinite, numbers.contains(v) else {
            throw AgentdError.invalid("\(field) must be \(rule)", field: field)
        }
    }

    public static func oneOf(_ values: [String]) -> FieldRule {
        let set = Set(values)
        return FieldRule(schema: .object(["type": .string("string"), "enum": .array(values.map(JSONValue.string))]),
                         rule: "one of " + values.joined(separator: ", "), test: { set.contains($0) })
    }
}

public enum Rules {
    static func isAlnum(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
    }

    /// An id of one kind: `agt_` and 8 to 64 letters and digits.
    public static func id(_ prefix: IDPrefix) -> FieldRule {
        .string(pattern: "^\(prefix.rawValue)_[0-9A-Za-z]{8,64}$", rule: "a \(prefix.rawValue)_ id",
                minLength: prefix.rawValue.utf8.count + 9, maxLength: prefix.rawValue.utf8.count + 65) {
            Identifier.isValid($0, prefix)
        }
    }

    /// Names of teams, keys and agents.
    public static let name = FieldRule.string(
        pattern: "^[A-Za-z0-9._-]([A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?$",
        rule: "1 to 64 letters, digits, spaces, '.', '_' or '-', not starting or ending with a space", maxLength: 64
    ) { s in
        let b = Array(s.utf8)
        guard let first = b.first, let last = b.last, b.count <= 64, first != 0x20, last != 0x20 else { return false }
        return b.allSatisfy { isAlnum($0) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D || $0 == 0x20 }
    }

    /// Model names as the gateway knows them: printable ASCII, no spaces.
    public static let model = FieldRule.string(
        pattern: "^[!-~]{1,256}$", rule: "a model name without spaces (e.g. gpt-4o-mini), at most 256 characters",
        maxLength: 256
    ) { s in
        !s.isEmpty && s.utf8.count <= 256 && s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// Environment variable names that a client may set (AGENTD_ is agentd's).
    public static let userEnvName = FieldRule.string(
        pattern: "^(?!AGENTD_)[A-Za-z_][A-Za-z0-9_]{0,254}$",
        rule: "an environment variable name ([A-Za-z_][A-Za-z0-9_]*) not starting with AGENTD_", maxLength: 255
    ) { s in envName.accepts(s) && !s.hasPrefix("AGENTD_") }

    /// Session list cursors, as `next_cursor` gives them.
    public static let cursor = FieldRule.string(
        pattern: "^[0-9]{1,18}:ses_[0-9A-Za-z]{8,64}$", rule: "a next_cursor of an earlier page", maxLength: 88
    ) { s in
        let parts = s.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, (1...18).contains(parts[0].utf8.count),
              parts[0].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return false }
        return Identifier.isValid(String(parts[1]), .session)
    }

    /// Environment variable names (secrets, env).
    public static let envName = FieldRule.string(
        pattern: "^[A-Za-z_][A-Za-z0-9_]{0,254}$", rule: "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
        maxLength: 255
    ) { s in EnvName.isValid(s) }

    /// Image names: a lower-case letter or digit, then those and . _ -.
    public static let image = FieldRule.string(
        pattern: "^[a-z0-9][a-z0-9._-]{0,63}$", rule: "an image name like \"default\"", maxLength: 64
    ) { s in ImageName.isValid(s) }

    /// A path inside a sandbox, as the files routes take it: absolute or
    /// relative to /workspace, no `..` component (nothing may climb, and a
    /// path that could is refused whole), not into /proc, /sys or /dev, no
    /// NUL.  (Names of more than 255 bytes are refused too: NAME_MAX counts
    /// bytes, which a pattern cannot.  Symlinks that lead out are refused
    /// when the path is resolved.)
    public static let sandboxPath = FieldRule.string(
        pattern: #"^(?!/+(proc|sys|dev)(/|$))(?!(.*/)?\.\.(/|$))/*([^/\u0000]{1,255}/+)*[^/\u0000]{0,255}$"#,
        rule: "a path inside the sandbox without NUL, '..' components or /proc, /sys, /dev", maxLength: 4096
    ) { s in
        guard !s.isEmpty, s.utf8.count <= 4096, !s.utf8.contains(0) else { return false }
        let parts = s.split(separator: "/", omittingEmptySubsequences: true)
        if s.hasPrefix("/"), let first = parts.first, ["proc", "sys", "dev"].contains(first) { return false }
        return parts.allSatisfy { $0 != ".." && $0.unicodeScalars.count <= 255 }
    }

    // Texts, by field.
    public static let systemPrompt = FieldRule.text(maxLength: 256 * 1024)
    public static let envValue = FieldRule.text(maxLength: 128 * 1024)
    public static let secretValue = FieldRule.text(maxLength: 64 * 1024)
    public static let title = FieldRule.text(maxLength: 256)
    public static let titleQuery = FieldRule.text(maxLength: 256)
    public static let content = FieldRule.text(maxLength: 1 << 20, minLength: 1)
    public static let cwd = FieldRule.text(maxLength: 4096, minLength: 1)
    public static let stdin = FieldRule.text(maxLength: 16 << 20)

    // Numbers of an agent's spec (the sandbox's also fit the host: checked
    // at create, a 409 when they do not).
    public static let memoryMB = FieldRule.integer(16...(1 << 24))
    public static let cpus = FieldRule.number(min: 0.01, max: 4096)
    public static let pids = FieldRule.integer(8...65536)
    public static let tmpMB = FieldRule.integer(1...(1 << 24))
    public static let harnessTimeout = FieldRule.integer(1...86400)
    public static let maxSteps = FieldRule.integer(1...1000)
    public static let maxRunSeconds = FieldRule.integer(1...86400)
    public static let maxToolOutputBytes = FieldRule.integer(256...(16 << 20))
    public static let toolTimeout = FieldRule.integer(1...86400)
    public static let execTimeout = FieldRule.number(min: 0.001, max: 86400)

    // A team's quotas (0 allows none; absent or null: no limit).
    public static let quotaSessions = FieldRule.integer(0...10_000_000)
    public static let quotaRunningSandboxes = FieldRule.integer(0...1_000_000)
    public static let quotaConcurrentRuns = FieldRule.integer(0...100_000)
    public static let quotaQueuedRuns = FieldRule.integer(0...10_000_000)
    public static let quotaMemoryMB = FieldRule.integer(0...(1 << 30))
    public static let quotaCPUs = FieldRule.number(min: 0, max: 1_048_576)

    public static let network = FieldRule.oneOf(["none"])
    /// A shell command line, or any argument after the first.
    public static let commandString = FieldRule.text(maxLength: 128 * 1024)
    /// One argument of a command: no NUL, not empty.
    public static let argument = FieldRule.text(maxLength: 128 * 1024, minLength: 1)

    public static let sessionStatus = FieldRule.oneOf(["idle", "queued", "running"])
    public static let sandboxAction = FieldRule.oneOf(["start", "stop", "pause", "resume", "restart"])
    public static let sessionsLimit = FieldRule.integer(1...500)
    public static let messagesLimit = FieldRule.integer(1...10000)
    public static let runsLimit = FieldRule.integer(1...200)
    /// Event sequence numbers: up to 2^53 - 1, the largest integer a JSON
    /// number carries exactly (the document's maximum must mean what it says).
    public static let seq = FieldRule.integer(0...9_007_199_254_740_991)
}
