import AgentdCore
import AgentdModel
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Per-request context: Hummingbird's core plus who is calling.
public struct AgentdContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var identity: Identity?
    /// Set when the caller is a dashboard browser (cookie, not bearer key).
    public var signIn: SignIn?

    public init(source: Source) {
        coreContext = .init(source: source)
        identity = nil
        signIn = nil
    }

    /// Bodies that are collected whole (JSON) are limited; file uploads stream.
    public var maxUploadSize: Int { 1 << 20 }

    /// The caller; the auth middleware guarantees it on every protected route.
    public func caller() throws -> Identity {
        guard let identity else { throw AgentdError.unauthorized }
        return identity
    }
}

enum HTTP {
    /// What a JSON body may weigh unless its route says otherwise.
    static let maxJSONBody = 1 << 20

    static let jsonHeaders: HTTPFields = [.contentType: "application/json; charset=utf-8"]

    /// Types with a hand-written JSON form, chosen at compile time (no
    /// dynamic cast on the hot GETs).
    static func json<T: Encodable & FastJSON>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        Response(status: status, headers: jsonHeaders, body: .init(byteBuffer: ByteBuffer(string: value.compactJSON)))
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        if let fast = value as? any FastJSON {
            return Response(status: status, headers: jsonHeaders, body: .init(byteBuffer: ByteBuffer(string: fast.compactJSON)))
        }
        let bytes = try AgentdJSON.encoder.encode(value)
        return Response(status: status, headers: jsonHeaders, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func error(_ e: AgentdError) -> Response {
        let bytes = (try? AgentdJSON.encoder.encode(ErrorBody(e))) ?? Data("{}".utf8)
        var headers = jsonHeaders
        if e.status == 401 { headers[.wwwAuthenticate] = "Bearer" }
        if let seconds = e.retryAfter { headers[.retryAfter] = String(seconds) }
        return Response(status: .init(code: e.status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// Parse a JSON body strictly: `Content-Type: application/json` (415
    /// otherwise), no larger than `limit` (413 from the announced length,
    /// before reading), valid JSON, an object, no key twice, no unknown
    /// fields (nested objects too), then typed decoding with field names in
    /// errors.  The body is decoded once, straight into `T`.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, allowed: Set<String>,
                                     nested: [String: Set<String>] = [:], limit: Int = maxJSONBody) async throws -> T {
        try requireJSON(request)
        let announced = request.headers[.contentLength].flatMap { Int($0) }
        if let announced, announced > limit {
            throw AgentdError.tooLarge("the request body (\(announced) bytes) is larger than \(limit) bytes")
        }
        // Collected into one buffer sized from the announced length (a
        // buffer grown by doubling would hold up to twice the body).
        var buffer = ByteBufferAllocator().buffer(capacity: min(max(announced ?? 0, 0), limit))
        for try await chunk in request.body {
            guard buffer.readableBytes + chunk.readableBytes <= limit else {
                throw AgentdError.tooLarge("the request body is larger than \(limit) bytes")
            }
            buffer.writeImmutableBuffer(chunk)
        }
        // The body is scanned and decoded where it lies: no copy of it is
        // made (a 20 MiB exec body would otherwise be held three times).
        return try buffer.withUnsafeReadableBytes { bytes in
            guard let first = bytes.first(where: { !isJSONSpace($0) }) else {
                throw AgentdError.invalid("a JSON body is required")
            }
            guard first == UInt8(ascii: "{") else { throw AgentdError.invalid("the body must be a JSON object") }
            let scan = JSONStrict.scan(bytes)
            switch scan.problem {
            case .duplicateKey(let path, let key)?:
                let f = path.isEmpty ? key : path + "." + key
                throw AgentdError.invalid("the field \"\(f)\" appears twice", field: f)
            case .tooDeep(let depth)?:
                throw AgentdError.invalid("the body is nested deeper than \(depth) levels")
            case nil:
                break
            }
            for key in scan.keys[""] ?? [] where !allowed.contains(key) {
                throw AgentdError.invalid("unknown field \"\(key)\"", field: key)
            }
            for (key, fields) in nested {
                for k in scan.keys[key] ?? [] where !fields.contains(k) {
                    throw AgentdError.invalid("unknown field \"\(key).\(k)\"", field: "\(key).\(k)")
                }
            }
            guard let base = bytes.baseAddress else { throw AgentdError.invalid("a JSON body is required") }
            // Borrowed for the decoder's call only; it keeps no reference.
            let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none)
            do {
                return try AgentdJSON.decoder.decode(T.self, from: data)
            } catch let e as DecodingError {
                if case .dataCorrupted(let c) = e, c.codingPath.isEmpty {
                    throw AgentdError.invalid("the body is not valid JSON")
                }
                throw describe(e)
            }
        }
    }

    static func isJSONSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    /// JSON bodies must say so: `application/json` or a `+json` type, with
    /// any parameters (charset).  Anything else is a 415.
    static func requireJSON(_ request: Request) throws {
        let type = request.headers[.contentType].map {
            String($0.split(separator: ";", maxSplits: 1).first ?? "").trimmingSpaces.lowercased()
        } ?? ""
        guard type == "application/json" || (type.hasPrefix("application/") && type.hasSuffix("+json")) else {
            throw AgentdError(status: 415, code: "unsupported_media_type",
                              message: type.isEmpty ? "send the JSON body with Content-Type: application/json"
                                  : "the body must be application/json, not \(type)")
        }
    }

    static func describe(_ e: DecodingError) -> AgentdError {
        func path(_ p: [any CodingKey]) -> String {
            p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingBrackets
        }
        switch e {
        case .typeMismatch(let type, let c):
            return .invalid("\(path(c.codingPath)) has the wrong type (expected \(typeName(type)))", field: path(c.codingPath))
        case .valueNotFound(let type, let c):
            return .invalid("\(path(c.codingPath)) must not be null (expected \(typeName(type)))", field: path(c.codingPath))
        case .keyNotFound(let key, let c):
            let f = path(c.codingPath + [key])
            return .invalid("\(f) is required", field: f)
        case .dataCorrupted(let c):
            let f = path(c.codingPath)
            return .invalid("\(f.isEmpty ? "body" : f): \(c.debugDescription)", field: f.isEmpty ? nil : f)
        @unknown default:
            return .invalid("the body could not be decoded")
        }
    }

    static func typeName(_ t: Any.Type) -> String {
        let n = String(describing: t)
        switch n {
        case "String": return "a string"
        case "Int", "Int64", "Int32", "UInt64": return "an integer"
        case "Double": return "a number"
        case "Bool": return "a boolean"
        default:
            if n.hasPrefix("Array") { return "an array" }
            if n.hasPrefix("Dictionary") { return "an object" }
            return n
        }
    }

    /// A query parameter, decoded as HTML forms encode them ('+' is a space,
    /// then percent-decoding), so `q=title+1` and `q=title%201` agree.
    static func query(_ request: Request, _ name: String) -> String? {
        guard let raw = request.uri.query else { return nil }
        for pair in raw.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard formDecode(kv[0]) == name else { continue }
            return kv.count > 1 ? formDecode(kv[1]) : ""
        }
        return nil
    }

    static func formDecode(_ s: Substring) -> String {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%"), bytes.count >= 2,
                      let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func intQuery(_ request: Request, _ name: String) throws -> Int? {
        guard let s = query(request, name) else { return nil }
        guard let v = Int(s) else { throw AgentdError.invalid("\(name) must be an integer", field: name) }
        return v
    }
}

extension String {
    fileprivate var replacingBrackets: String { replacing(".[", with: "[") }
}

/// Maps every error to the JSON error body, in one place: AgentdError as
/// is, Hummingbird's own (unknown route, body too large) by status, and
/// anything else as a bare 500 whose details only go to the log.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = AgentdContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            var response = answer(error, request, context)
            // Refused, perhaps before its body was read (an upload to
            // someone else's session, a body too large): an unread body would
            // be taken for the next request on this connection, so the
            // connection ends with the answer and the client is told so.
            if request.headers[.contentLength].map({ $0 != "0" }) ?? (request.headers[.transferEncoding] != nil) {
                response.headers[.connection] = "close"
            }
            return response
        }
    }

    private func answer(_ error: any Error, _ request: Request, _ context: Context) -> Response {
        switch error {
        case let e as AgentdError:
            if e.status >= 500 {
                logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(e)",
                                                          "key": "\(context.identity?.keyID ?? "-")"])
            }
            return HTTP.error(e)
        case let e as HTTPError:
            switch e.status {
            case .notFound:
                // A known path with another method is a 405 saying which
                // methods it has (the router only knows "no route").
                if let allow = AllowedMethods.for(path: request.uri.path) {
                    var r = HTTP.error(AgentdError(status: 405, code: "method_not_allowed",
                                                   message: "\(request.method) is not allowed on \(request.uri.path); "
                                                       + "allowed: \(allow)"))
                    r.headers[.allow] = allow
                    return r
                }
                return HTTP.error(AgentdError(status: 404, code: "route_not_found",
                                              message: "no route \(request.method) \(request.uri.path)"))
            case .methodNotAllowed:
                return HTTP.error(AgentdError(status: 405, code: "method_not_allowed",
                                              message: "\(request.method) is not allowed on \(request.uri.path)"))
            case .contentTooLarge:
                return HTTP.error(.tooLarge("the request body is too large"))
            default:
                if e.status.code < 500 {
                    return HTTP.error(AgentdError(status: Int(e.status.code), code: "invalid_request",
                                                  message: e.body ?? e.status.reasonPhrase))
                }
                logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(e)"])
                return HTTP.error(.internal())
            }
        case is NIOTooManyBytesError:
            return HTTP.error(.tooLarge("the request body is too large"))
        case let e as HTTPParserError:
            // The request itself is malformed (a bad chunk size, a body
            // cut short): the client's fault, and the connection closes.
            return HTTP.error(.invalid("the request is malformed (\(e))"))
        case is CancellationError:
            return HTTP.error(.unavailable("the request was cancelled"))
        default:
            if let e = AgentdError.translate(error) { return HTTP.error(e) }
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return HTTP.error(.internal())
        }
    }
}

/// Authentication on every route but the health checks and the dashboard's
/// assets and sign-in: a bearer key, or a dashboard sign-in cookie whose
/// state-changing requests also carry its CSRF token.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = AgentdContext
    let auth: AuthService
    let signIns: SignInService
    static let open: Set<String> = Set(["/healthz", "/readyz"]).union(Dashboard.openPaths)

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if Self.open.contains(request.uri.path) {
            return try await next(request, context)
        }
        var context = context
        if let header = request.headers[.authorization] {
            guard header.hasPrefix("Bearer ") else { throw AgentdError.unauthorized }
            let token = String(header.dropFirst("Bearer ".count)).trimmingSpaces
            guard let identity = try await auth.authenticate(token) else { throw AgentdError.unauthorized }
            // (Not added to the logger's metadata: that costs a tenth of a
            // cheap request; errors are logged with the key from `identity`.)
            context.identity = identity
        } else if let token = Dashboard.cookieValue(request) {
            guard let signIn = try await signIns.lookup(token: token) else {
                throw AgentdError(status: 401, code: "unauthorized",
                                  message: "the dashboard sign-in ended (signed out, expired, or its key was revoked)")
            }
            if request.method != .get && request.method != .head {
                try Dashboard.requireSameOrigin(request)
                guard let sent = request.headers[Dashboard.csrfHeader], sent.constantTimeEquals(signIn.csrf) else {
                    throw AgentdError(status: 403, code: "csrf_failed",
                                      message: "missing or wrong X-CSRF-Token for this dashboard sign-in")
                }
            }
            context.identity = signIn.identity
            context.signIn = signIn
        } else {
            throw AgentdError.unauthorized
        }
        return try await next(request, context)
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

/// The methods of every served path, from the same tables the router is
/// built from (the API's endpoints and the dashboard's routes).
enum AllowedMethods {
    private static let table: [(segments: [Substring], methods: [String])] = {
        var byPath: [String: [String]] = [:]
        var order: [String] = []
        for (method, path) in API.endpoints.map({ ($0.method.rawValue, $0.path) }) + Dashboard.routes {
            if byPath[path] == nil { order.append(path) }
            byPath[path, default: []].append(method)
        }
        return order.map { path in
            var methods = byPath[path] ?? []
            if methods.contains("GET") { methods.append("HEAD") }
            return (path.split(separator: "/"), methods)
        }
    }()

    /// "GET, POST" for a path some route serves; nil for an unknown path.
    static func `for`(path: String) -> String? {
        let parts = path.split(separator: "/")
        for entry in table where entry.segments.count == parts.count {
            let matches = zip(entry.segments, parts).allSatisfy { template, part in
                template.hasPrefix("{") || template == part
            }
            if matches { return entry.methods.joined(separator: ", ") }
        }
        return nil
    }
}

/// A query parameter given twice (`limit=1&limit=2`) is refused: which one
/// counts would be the server's guess.
struct StrictQueryMiddleware: RouterMiddleware {
    typealias Context = AgentdContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if let raw = request.uri.query, !raw.isEmpty {
            var seen: Set<String> = []
            for pair in raw.split(separator: "&") {
                let name = HTTP.formDecode(pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0])
                guard seen.insert(name).inserted else {
                    throw AgentdError.invalid("the query parameter \(name) is given more than once", field: name)
                }
            }
        }
        return try await next(request, context)
    }
}
