/// Input constraints declared once: the services validate with `check`, and
/// the OpenAPI document shows `schema`, so the two cannot drift (a test also
/// runs each rule's pattern, as a regular expression, against its check).
public struct FieldRule: Sendable {
    /// The JSON Schema of the field, for the OpenAPI document.
    public let schema: JSONValue
    /// What the field must be, for error messages: "1 to 64 characters ...".
    public let rule: String
    let test: @Sendable (String) -> Bool

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
                  test: { Int($0).map(range.contains) ?? false })
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

    /// Environment variable names (secrets, env).
    public static let envName = FieldRule.string(
        pattern: "^[A-Za-z_][A-Za-z0-9_]{0,254}$", rule: "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
        maxLength: 255
    ) { s in
        let b = Array(s.utf8)
        guard let first = b.first, b.count <= 255, first == 0x5F || (isAlnum(first) && !(first >= 0x30 && first <= 0x39))
        else { return false }
        return b.allSatisfy { isAlnum($0) || $0 == 0x5F }
    }

    /// Image names: a lower-case letter or digit, then those and . _ -.
    public static let image = FieldRule.string(
        pattern: "^[a-z0-9][a-z0-9._-]{0,63}$", rule: "an image name like \"default\"", maxLength: 64
    ) { s in
        let b = Array(s.utf8)
        func ok(_ c: UInt8) -> Bool { (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x7A) }
        guard let first = b.first, b.count <= 64, ok(first) else { return false }
        return b.allSatisfy { ok($0) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }
    }

    /// A path inside a sandbox, as the files routes take it.
    public static let sandboxPath = FieldRule(
        schema: .object(["type": .string("string"), "minLength": .number(1), "maxLength": .number(4096)]),
        rule: "a path of 1 to 4096 bytes", test: { !$0.isEmpty && $0.utf8.count <= 4096 })

    public static let sessionStatus = FieldRule.oneOf(["idle", "queued", "running"])
    public static let sandboxAction = FieldRule.oneOf(["start", "stop", "pause", "resume", "restart"])
    public static let sessionsLimit = FieldRule.integer(1...500)
    public static let messagesLimit = FieldRule.integer(1...10000)
    public static let runsLimit = FieldRule.integer(1...200)
    public static let seq = FieldRule.integer(0...Int(Int64.max >> 1))
}
