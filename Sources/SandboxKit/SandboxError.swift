/// The one error type of the sandbox layer.  Callers switch on `kind`; the
/// HTTP layer maps kinds to status codes in exactly one place.
public struct SandboxError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        /// The caller asked for something malformed or out of bounds (4xx).
        case invalidArgument = "invalid_argument"
        /// No such sandbox, image, file or directory (404).
        case notFound = "not_found"
        /// The sandbox is not in a state that allows this (409).
        case conflict
        /// The host cannot do this (a missing kernel feature, no cgroup controller).
        case unsupported
        /// Something failed on the host; `stage` and `errno` say where.
        case system
    }

    public var kind: Kind
    public var message: String
    /// The request field the error is about, when there is one.
    public var field: String?
    /// Where it failed (`"pivot_root"`, `"cgroup attach"`, a path), for logs.
    public var stage: String?
    /// The errno, when a system call failed.
    public var errno: Int32?

    public init(_ kind: Kind, _ message: String, field: String? = nil, stage: String? = nil, errno: Int32? = nil) {
        self.kind = kind
        self.message = message
        self.field = field
        self.stage = stage
        self.errno = errno
    }

    public var description: String {
        var s = message
        if let stage { s += " [\(stage)]" }
        if let errno { s += " (errno \(errno))" }
        return s
    }
}
