import AgentdModel
import AgentdStore
import SandboxKit

/// Input checks shared by the services; each failure names its field.
enum Validate {
    /// Names of teams, keys, agents (`Rules.name`, as documented).
    static func name(_ s: String, field: String) throws {
        try Rules.name.check(s, field: field)
    }

    /// Text without NUL, counted in characters as the document's maxLength.
    static func text(_ s: String, field: String, max: Int, allowEmpty: Bool = true) throws {
        try FieldRule.text(maxLength: max, minLength: allowEmpty ? 0 : 1).check(s, field: field)
    }

    static func envName(_ s: String, field: String) throws {
        guard Rules.envName.accepts(s) else {
            throw AgentdError.invalid("\"\(s.prefix(64))\" is not a valid environment variable name", field: field)
        }
    }

    static func id(_ s: String, _ prefix: IDPrefix, field: String) throws {
        guard Rules.id(prefix).accepts(s) else {
            throw AgentdError.invalid("\(field) is not a valid \(prefix.rawValue)_ id", field: field)
        }
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}

extension AgentdError {
    /// Any layer's error as an API error, where it has a meaning for the
    /// client (the store's "gone" and "conflict", which a race with a
    /// concurrent delete can surface anywhere); nil for the rest (a 500).
    public static func translate(_ error: any Error) -> AgentdError? {
        switch error {
        case let e as AgentdError: return e
        case let e as SandboxError: return .from(e)
        case StoreError.notFound(let what): return .notFound(what)
        case StoreError.conflict(let message): return .conflict(message)
        case StoreError.quotaExceeded(let quota, let message): return .quota(quota, message)
        case StoreError.diskFull: return .insufficientStorage("the state directory's file system is full: nothing "
                                                             + "was written; free space on it (agentd recovers by itself)")
        default: return nil
        }
    }

    /// The state directory's file system is (nearly) full.
    public static func insufficientStorage(_ message: String) -> AgentdError {
        AgentdError(status: 507, code: "insufficient_storage", message: message)
    }

    /// A team quota would be exceeded: 409 for what only the team can
    /// lower (sessions), 429 for what frees itself as work ends (running
    /// sandboxes, their memory and CPUs, queued runs).  `field` names the
    /// quota.
    public static func quota(_ quota: String, _ message: String) -> AgentdError {
        AgentdError(status: quota == "sessions" ? 409 : 429, code: "quota_exceeded",
                    message: "team quota \(quota): " + message, field: quota)
    }

    /// The sandbox layer's errors, as API errors.  System failures keep
    /// their details in the log, not in the answer.
    public static func from(_ e: SandboxError) -> AgentdError {
        switch e.kind {
        case .invalidArgument: return .invalid(e.message, field: e.field)
        case .notFound:
            return AgentdError(status: 404, code: "not_found", message: e.message, field: e.field)
        case .conflict: return .conflict(e.message, field: e.field)
        case .unsupported: return AgentdError(status: 501, code: "unsupported", message: e.message, field: e.field)
        case .system: return .internal("the sandbox failed (\(e.stage ?? "system")); see the daemon log")
        }
    }
}
