/// The one error type of the daemon's domain.  The HTTP layer turns it into
/// `{"error": {"code", "message", "field"}}` with `status`, in one place.
public struct AgentdError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var code: String
    public var message: String
    public var field: String?
    /// Seconds for a `Retry-After` header (429, 503, 507).
    public var retryAfter: Int?

    public init(status: Int, code: String, message: String, field: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retryAfter = retryAfter
    }

    public var description: String { "\(code): \(message)" + (field.map { " (field \($0))" } ?? "") }

    public static func invalid(_ message: String, field: String? = nil) -> AgentdError {
        AgentdError(status: 400, code: "invalid_request", message: message, field: field)
    }

    public static func notFound(_ what: String, field: String? = nil) -> AgentdError {
        AgentdError(status: 404, code: "not_found", message: "\(what) not found", field: field)
    }

    public static let unauthorized = AgentdError(
        status: 401, code: "unauthorized", message: "a valid API key is required (Authorization: Bearer <key>)")

    public static func forbidden(_ message: String) -> AgentdError {
        AgentdError(status: 403, code: "forbidden", message: message)
    }

    public static func conflict(_ message: String, field: String? = nil) -> AgentdError {
        AgentdError(status: 409, code: "conflict", message: message, field: field)
    }

    /// Valid, but more than this host has (memory, CPUs).
    public static func exceedsHost(_ message: String, field: String) -> AgentdError {
        AgentdError(status: 409, code: "exceeds_host", message: message, field: field)
    }

    public static func tooLarge(_ message: String) -> AgentdError {
        AgentdError(status: 413, code: "payload_too_large", message: message)
    }

    public static func unavailable(_ message: String) -> AgentdError {
        AgentdError(status: 503, code: "unavailable", message: message)
    }

    public static func `internal`(_ message: String = "internal error") -> AgentdError {
        AgentdError(status: 500, code: "internal", message: message)
    }
}

public struct ErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var field: String?
    }

    public var error: Detail

    public init(_ e: AgentdError) {
        error = Detail(code: e.code, message: e.message, field: e.field)
    }
}
