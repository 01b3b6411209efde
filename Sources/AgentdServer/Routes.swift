import AgentdCore
import AgentdModel
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SandboxKit
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One documented route: registered on the router and listed in the OpenAPI
/// document from the same value, so the two cannot disagree.
public struct Endpoint: Sendable {
    public var method: HTTPRequest.Method
    /// OpenAPI-style path: `/v1/agents/{id}`.
    public var path: String
    public var summary: String
    public var tag: String
    /// Request body schema name in the OpenAPI components, or "binary".
    public var body: String?
    /// Response schema for 2xx, or "binary", "text", "event-stream".
    public var response: String?
    public var status: Int
    public var query: [String]
    /// Query parameters without which the route answers 400.
    public var requiredQuery: Set<String> = []
    /// The largest body the route collects whole; nil for a streamed
    /// ("binary") body, whose size only the sandbox's disk bounds.
    public var maxBody: Int?
    public var open: Bool
    let handler: @Sendable (API, Request, AgentdContext) async throws -> Response

    init(_ method: HTTPRequest.Method, _ path: String, _ summary: String, tag: String, body: String? = nil,
         response: String? = nil, status: Int = 200, query: [String] = [], requiredQuery: Set<String> = [],
         maxBody: Int = HTTP.maxJSONBody, open: Bool = false, _ handler: @escaping @Sendable (API, Request, AgentdContext) async throws -> Response) {
        self.method = method
        self.path = path
        self.summary = summary
        self.tag = tag
        self.body = body
        self.response = response
        self.status = status
        self.query = query
        self.requiredQuery = requiredQuery
        self.maxBody = body == "binary" ? nil : maxBody
        self.open = open
        self.handler = handler
    }
}

/// The routes of ../shared/API.md and their handlers.
public struct API: Sendable {
    let services: Services
    let metrics: @Sendable () -> String
    let ready: @Sendable () -> Bool
    let openAPI: @Sendable () -> [UInt8]

    public init(services: Services, metrics: @escaping @Sendable () -> String, ready: @escaping @Sendable () -> Bool,
                openAPI: @escaping @Sendable () -> [UInt8]) {
        self.services = services
        self.metrics = metrics
        self.ready = ready
        self.openAPI = openAPI
    }

    public func router(logger: Logger, limits: ConnectionLimits = ConnectionLimits()) -> Router<AgentdContext> {
        let router = Router(context: AgentdContext.self)
        router.add(middleware: ErrorMiddleware(logger: logger))
        router.add(middleware: AuthMiddleware(auth: services.auth, signIns: services.signIns))
        router.add(middleware: BodyLimitMiddleware(limits: limits, endpoints: API.endpoints))
        router.add(middleware: StrictQueryMiddleware())
        Dashboard.register(on: router, services: services)
        for e in API.endpoints {
            let path = RouterPath(e.path)
            let handler = e.handler
            router.on(path, method: e.method) { [self] request, context in try await handler(self, request, context) }
        }
        return router
    }

    static func param(_ context: AgentdContext, _ name: String) throws -> String {
        guard let v = context.parameters.get(name) else { throw AgentdError.invalid("missing \(name)", field: name) }
        return v
    }

    // swiftlint:disable:next function_body_length
    public static var endpoints: [Endpoint] {
        [
            Endpoint(.get, "/healthz", "Liveness", tag: "system", response: "text", open: true) { api, _, _ in
                Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
            },
            Endpoint(.get, "/readyz", "Ready to serve (store open, migrations done)", tag: "system", response: "text",
                     open: true) { api, _, _ in
                guard api.ready() else { throw AgentdError.unavailable("starting") }
                return Response(status: .ok, headers: [.contentType: "text/plain"],
                                body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
            },
            Endpoint(.get, "/metrics", "Prometheus metrics (keys of the admin team)", tag: "system", response: "text") { api, _, c in
                let caller = try c.caller()
                guard caller.isAdmin else { throw AgentdError.forbidden("metrics need an admin key") }
                return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                                body: .init(byteBuffer: ByteBuffer(string: api.metrics())))
            },
            Endpoint(.get, "/v1/openapi.json", "This API's OpenAPI document", tag: "system", response: "object") { api, _, _ in
                Response(status: .ok, headers: HTTP.jsonHeaders, body: .init(byteBuffer: ByteBuffer(bytes: api.openAPI())))
            },
            Endpoint(.get, "/v1/status", "Daemon status: cgroup driver, seccomp, images, sandboxes and runs", tag: "system",
                     response: "Status") { api, _, c in
                try HTTP.json(try await api.services.status(try c.caller()))
            },

            // teams
            Endpoint(.post, "/v1/teams", "Create a team (admin)", tag: "teams", body: "TeamInput", response: "Team",
                     status: 201) { api, r, c in
                struct In: Decodable { var name: String }
                let input = try await HTTP.decode(In.self, from: r, allowed: ["name"])
                return try HTTP.json(try await api.services.auth.createTeam(try c.caller(), name: input.name), status: .created)
            },
            Endpoint(.get, "/v1/teams", "List teams (admins see all, others their own)", tag: "teams",
                     response: "TeamList") { api, _, c in
                try HTTP.json(Page(data: try await api.services.auth.teams(try c.caller()), nextCursor: nil))
            },
            Endpoint(.get, "/v1/teams/{id}", "A team with its quotas and what it uses now", tag: "teams",
                     response: "Team") { api, _, c in
                try HTTP.json(try await api.services.team(try c.caller(), id: try API.param(c, "id")))
            },
            Endpoint(.patch, "/v1/teams/{id}", "Set a team's quotas (admin; absent or null: no limit)", tag: "teams",
                     body: "TeamPatch", response: "Team") { api, r, c in
                struct In: Decodable { var quotas: TeamQuotas }
                let input = try await HTTP.decode(In.self, from: r, allowed: ["quotas"],
                                                  nested: ["quotas": TeamQuotas.fields])
                return try HTTP.json(try await api.services.setQuotas(try c.caller(), team: try API.param(c, "id"),
                                                                      input.quotas))
            },

            // keys
            Endpoint(.post, "/v1/keys", "Create a key; the only time the key is shown", tag: "keys", body: "KeyInput",
                     response: "Key", status: 201) { api, r, c in
                struct In: Decodable {
                    var name: String
                    var teamID: String?
                    var role: Role
                    enum CodingKeys: String, CodingKey { case name, role, teamID = "team_id" }
                }
                let input = try await HTTP.decode(In.self, from: r, allowed: ["name", "team_id", "role"])
                let key = try await api.services.auth.createKey(try c.caller(), name: input.name, teamID: input.teamID, role: input.role)
                return try HTTP.json(key, status: .created)
            },
            Endpoint(.get, "/v1/keys", "List keys (never their values)", tag: "keys", response: "KeyList") { api, _, c in
                try HTTP.json(Page(data: try await api.services.auth.keys(try c.caller()), nextCursor: nil))
            },
            Endpoint(.delete, "/v1/keys/{id}", "Revoke a key (at once)", tag: "keys", status: 204) { api, _, c in
                try await api.services.auth.revoke(try c.caller(), keyID: try API.param(c, "id"))
                return Response(status: .noContent)
            },

            // agents
            Endpoint(.post, "/v1/agents", "Create an agent", tag: "agents", body: "AgentCreate", response: "Agent",
                     status: 201) { api, r, c in
                let input = try await HTTP.decode(AgentInput.self, from: r, allowed: AgentInput.fields,
                                                  nested: API.agentNested)
                return try HTTP.json(try await api.services.agents.create(try c.caller(), input), status: .created)
            },
            Endpoint(.get, "/v1/agents", "List agents", tag: "agents", response: "AgentList") { api, _, c in
                try HTTP.json(Page(data: try await api.services.agents.list(try c.caller()), nextCursor: nil))
            },
            Endpoint(.get, "/v1/agents/{id}", "Read an agent", tag: "agents", response: "Agent") { api, _, c in
                try HTTP.json(try await api.services.agents.get(try c.caller(), id: try API.param(c, "id")))
            },
            Endpoint(.patch, "/v1/agents/{id}", "Update an agent (fields given are replaced)", tag: "agents",
                     body: "AgentInput", response: "Agent") { api, r, c in
                let input = try await HTTP.decode(AgentInput.self, from: r, allowed: AgentInput.fields,
                                                  nested: API.agentNested)
                return try HTTP.json(try await api.services.agents.update(try c.caller(), id: try API.param(c, "id"), input))
            },
            Endpoint(.delete, "/v1/agents/{id}", "Delete an agent without sessions", tag: "agents", status: 204) { api, _, c in
                try await api.services.agents.delete(try c.caller(), id: try API.param(c, "id"))
                return Response(status: .noContent)
            },

            // secrets
            Endpoint(.put, "/v1/secrets/{name}", "Set a secret (write-only; team-wide unless agent_id)", tag: "secrets",
                     body: "SecretInput", response: "Secret") { api, r, c in
                struct In: Decodable {
                    var value: String
                    var agentID: String?
                    enum CodingKeys: String, CodingKey { case value, agentID = "agent_id" }
                }
                let input = try await HTTP.decode(In.self, from: r, allowed: ["value", "agent_id"])
                return try HTTP.json(try await api.services.secrets.set(try c.caller(), name: try API.param(c, "name"),
                                                             value: input.value, agentID: input.agentID))
            },
            Endpoint(.get, "/v1/secrets", "List secrets (names and metadata, never values)", tag: "secrets",
                     response: "SecretList") { api, _, c in
                try HTTP.json(Page(data: try await api.services.secrets.list(try c.caller()), nextCursor: nil))
            },
            Endpoint(.delete, "/v1/secrets/{name}", "Delete a secret (?agent_id= for an agent's own)", tag: "secrets",
                     status: 204, query: ["agent_id"]) { api, r, c in
                try await api.services.secrets.delete(try c.caller(), name: try API.param(c, "name"),
                                           agentID: HTTP.query(r, "agent_id"))
                return Response(status: .noContent)
            },

            // sessions
            Endpoint(.post, "/v1/sessions", "Create a session (its sandbox is made on first use)", tag: "sessions",
                     body: "SessionInput", response: "Session", status: 201) { api, r, c in
                struct In: Decodable {
                    var agentID: String?
                    var title: String?
                    enum CodingKeys: String, CodingKey { case title, agentID = "agent_id" }
                }
                let input = try await HTTP.decode(In.self, from: r, allowed: ["agent_id", "title"])
                return try HTTP.json(try await api.services.sessions.create(try c.caller(), agentID: input.agentID, title: input.title),
                                     status: .created)
            },
            Endpoint(.get, "/v1/sessions", "List sessions, newest first (paginated)", tag: "sessions",
                     response: "SessionList", query: ["agent_id", "status", "q", "limit", "cursor"]) { api, r, c in
                try HTTP.json(try await api.services.sessions.list(
                    try c.caller(), agentID: HTTP.query(r, "agent_id"), status: HTTP.query(r, "status"),
                    query: HTTP.query(r, "q"), limit: try HTTP.intQuery(r, "limit"), cursor: HTTP.query(r, "cursor")))
            },
            Endpoint(.get, "/v1/sessions/{id}", "Read a session", tag: "sessions", response: "Session") { api, _, c in
                try HTTP.json(try await api.services.sessions.get(try c.caller(), id: try API.param(c, "id")))
            },
            Endpoint(.delete, "/v1/sessions/{id}", "Delete a session, its sandbox and files", tag: "sessions",
                     status: 204) { api, _, c in
                try await api.services.sessions.delete(try c.caller(), id: try API.param(c, "id"))
                return Response(status: .noContent)
            },
            Endpoint(.post, "/v1/sessions/{id}/messages", "Append a user message and queue a run", tag: "sessions",
                     body: "MessageInput", response: "MessageAccepted", status: 202) { api, r, c in
                struct In: Decodable { var content: String }
                let input = try await HTTP.decode(In.self, from: r, allowed: ["content"])
                return try HTTP.json(try await api.services.sessions.postMessage(try c.caller(), id: try API.param(c, "id"),
                                                                      content: input.content), status: .accepted)
            },
            Endpoint(.get, "/v1/sessions/{id}/messages", "The persisted transcript", tag: "sessions",
                     response: "EventList", query: ["after", "limit"]) { api, r, c in
                let after = try HTTP.intQuery(r, "after").map(Int64.init)
                let events = try await api.services.sessions.messages(try c.caller(), id: try API.param(c, "id"), after: after,
                                                           limit: try HTTP.intQuery(r, "limit"))
                return try HTTP.json(Page(data: events, nextCursor: nil))
            },
            Endpoint(.get, "/v1/sessions/{id}/events", "Server-Sent Events of the session; honours Last-Event-ID",
                     tag: "sessions", response: "event-stream", query: ["after"]) { api, r, c in
                try await SSE.stream(services: api.services, request: r, context: c)
            },
            Endpoint(.get, "/v1/sessions/{id}/runs/{run_id}", "A run's state, steps and usage", tag: "sessions",
                     response: "Run") { api, _, c in
                try HTTP.json(try await api.services.sessions.run(try c.caller(), sessionID: try API.param(c, "id"),
                                                       runID: try API.param(c, "run_id")))
            },
            Endpoint(.get, "/v1/runs", "Recent runs of the caller's team, newest first (?state=failed for failures)",
                     tag: "sessions", response: "RunList", query: ["state", "limit"]) { api, r, c in
                try HTTP.json(try await api.services.sessions.recentRuns(
                    try c.caller(), state: HTTP.query(r, "state"), limit: try HTTP.intQuery(r, "limit")))
            },
            Endpoint(.post, "/v1/sessions/{id}/cancel", "Cancel the active run", tag: "sessions", response: "Run") { api, _, c in
                try HTTP.json(try await api.services.sessions.cancel(try c.caller(), id: try API.param(c, "id")))
            },
            Endpoint(.post, "/v1/sessions/{id}/exec", "Run a command in the sandbox (Accept: text/event-stream streams it)",
                     tag: "sandbox", body: "ExecInput", response: "ExecOutput", maxBody: Exec.maxBody) { api, r, c in
                try await Exec.handle(services: api.services, request: r, context: c)
            },
            Endpoint(.get, "/v1/sessions/{id}/files", "List a directory", tag: "files", response: "FileList",
                     query: ["path"]) { api, r, c in
                let entries = try await api.services.sessions.listFiles(try c.caller(), id: try API.param(c, "id"),
                                                             path: HTTP.query(r, "path") ?? "/workspace")
                return try HTTP.json(entries)
            },
            Endpoint(.delete, "/v1/sessions/{id}/files", "Remove a file or directory", tag: "files", status: 204,
                     query: ["path"], requiredQuery: ["path"]) { api, r, c in
                guard let path = HTTP.query(r, "path") else { throw AgentdError.invalid("path is required", field: "path") }
                try await api.services.sessions.removeFile(try c.caller(), id: try API.param(c, "id"), path: path)
                return Response(status: .noContent)
            },
            Endpoint(.get, "/v1/sessions/{id}/files/content", "Download a file", tag: "files", response: "binary",
                     query: ["path"], requiredQuery: ["path"]) { api, r, c in
                try await Files.download(services: api.services, request: r, context: c)
            },
            Endpoint(.put, "/v1/sessions/{id}/files/content", "Upload a file (the body is its content)", tag: "files",
                     body: "binary", response: "File", status: 201, query: ["path"], requiredQuery: ["path"]) { api, r, c in
                try await Files.upload(services: api.services, request: r, context: c)
            },
            Endpoint(.get, "/v1/sessions/{id}/sandbox", "Sandbox state, limits and usage", tag: "sandbox",
                     response: "Sandbox") { api, _, c in
                try HTTP.json(try await api.services.sessions.sandboxInfo(try c.caller(), id: try API.param(c, "id")))
            },
            Endpoint(.post, "/v1/sessions/{id}/sandbox/{action}", "start, stop, pause, resume or restart the sandbox",
                     tag: "sandbox", response: "Sandbox") { api, _, c in
                try HTTP.json(try await api.services.sessions.sandboxAction(try c.caller(), id: try API.param(c, "id"),
                                                                 action: try API.param(c, "action")))
            },
        ]
    }

    static let agentNested: [String: Set<String>] = [
        "sandbox": AgentSandbox.fields, "harness": AgentHarness.fields, "limits": AgentLimits.fields,
    ]
}

/// POST /v1/sessions/{id}/exec: JSON with the collected output, or
/// Server-Sent Events (`stdout`, `stderr`, `exit`) as it runs.
enum Exec {
    /// An exec body carries up to 16 MiB of stdin, JSON-escaped.
    static let maxBody = 20 << 20

    static func handle(services s: Services, request: Request, context: AgentdContext) async throws -> Response {
        let input = try await HTTP.decode(ExecInput.self, from: request, allowed: ExecInput.fields, limit: maxBody)
        let (process, _) = try await s.sessions.exec(try context.caller(), id: try API.param(context, "id"), input)
        if request.headers[.accept]?.contains("text/event-stream") == true {
            return Response(status: .ok, headers: SSE.headers, body: ResponseBody { writer in
                do {
                    for try await event in process.events {
                        switch event {
                        case .stdout(let b):
                            try await writer.write(SSE.frame(event: "stdout", id: nil,
                                                             data: ["data": .string(String(decoding: b, as: UTF8.self))]))
                        case .stderr(let b):
                            try await writer.write(SSE.frame(event: "stderr", id: nil,
                                                             data: ["data": .string(String(decoding: b, as: UTF8.self))]))
                        case .exit(let st):
                            try await writer.write(SSE.frame(event: "exit", id: nil, data: [
                                "exit_code": .number(Double(st.shellCode)), "signal": st.signal.map { .number(Double($0)) } ?? .null,
                                "timed_out": .bool(st.timedOut), "duration_ms": .number(st.durationMs),
                            ]))
                        }
                    }
                } catch let e as SandboxError {
                    let err = AgentdError.from(e)
                    try await writer.write(SSE.frame(event: "error", id: nil, data: [
                        "code": .string(err.code), "message": .string(err.message), "field": err.field.map { .string($0) } ?? .null,
                    ]))
                } catch {
                    await process.signal(9)
                    throw error
                }
                try await writer.finish(nil)
            })
        }
        let limit = s.config.execMaxOutputBytes
        do {
            let r = try await process.collect(limit: limit)
            return try HTTP.json(ExecOutput(exitCode: r.status.shellCode, signal: r.status.signal,
                                            stdout: r.stdoutString, stderr: r.stderrString, timedOut: r.status.timedOut,
                                            durationMs: (r.status.durationMs * 1000).rounded() / 1000, truncated: r.truncated))
        } catch let e as SandboxError {
            throw AgentdError.from(e)
        }
    }
}

enum Files {
    static func download(services s: Services, request: Request, context: AgentdContext) async throws -> Response {
        guard let path = HTTP.query(request, "path") else { throw AgentdError.invalid("path is required", field: "path") }
        let (info, chunks) = try await s.sessions.readFile(try context.caller(), id: try API.param(context, "id"), path: path)
        var headers: HTTPFields = [.contentType: "application/octet-stream"]
        headers[.contentLength] = String(info.size)
        headers[.contentDisposition] = "attachment; filename=\"\(info.name.replacing("\"", with: "_"))\""
        return Response(status: .ok, headers: headers, body: ResponseBody(contentLength: Int(info.size)) { writer in
            for try await chunk in chunks { try await writer.write(ByteBuffer(bytes: chunk)) }
            try await writer.finish(nil)
        })
    }

    /// Streamed to the sandbox chunk by chunk: memory stays bounded whatever the size.
    static func upload(services s: Services, request: Request, context: AgentdContext) async throws -> Response {
        guard let path = HTTP.query(request, "path") else { throw AgentdError.invalid("path is required", field: "path") }
        let body = request.body
        let chunks = ByteChunks { continuation in
            let task = Task {
                do {
                    for try await buffer in body { continuation.yield(Array(buffer.readableBytesView)) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        let entry = try await s.sessions.writeFile(try context.caller(), id: try API.param(context, "id"), path: path,
                                                   contents: chunks)
        return try HTTP.json(entry, status: .created)
    }
}
