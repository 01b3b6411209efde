import AgentdModel

/// The OpenAPI 3.1 document, built from the same `Endpoint` values the router
/// serves.  `agentd openapi` prints it; the repository keeps the output in
/// Sources/AgentdServer/openapi.json and a test checks the two are equal.
public enum OpenAPIDocument {
    static func obj(_ pairs: [(String, JSONValue)]) -> JSONValue {
        .object(Dictionary(pairs, uniquingKeysWith: { a, _ in a }))
    }

    static func str(_ s: String) -> JSONValue { .string(s) }
    static func ref(_ name: String) -> JSONValue { obj([("$ref", str("#/components/schemas/\(name)"))]) }
    static let string = obj([("type", str("string"))])
    static let dateTime = obj([("type", str("string")), ("format", str("date-time"))])
    static let integer = obj([("type", str("integer"))])
    static let number = obj([("type", str("number"))])
    static let boolean = obj([("type", str("boolean"))])
    static func nullable(_ s: JSONValue) -> JSONValue { obj([("anyOf", .array([s, obj([("type", str("null"))])]))]) }
    static func array(_ items: JSONValue) -> JSONValue { obj([("type", str("array")), ("items", items)]) }
    static func map(_ values: JSONValue) -> JSONValue { obj([("type", str("object")), ("additionalProperties", values)]) }
    static func enumeration(_ values: [String]) -> JSONValue {
        obj([("type", str("string")), ("enum", .array(values.map(str)))])
    }

    static func object(_ props: [(String, JSONValue)], required: [String] = [], closed: Bool = true) -> JSONValue {
        var pairs: [(String, JSONValue)] = [("type", str("object")), ("properties", obj(props))]
        if !required.isEmpty { pairs.append(("required", .array(required.map(str)))) }
        if closed { pairs.append(("additionalProperties", .bool(false))) }
        return obj(pairs)
    }

    static func list(_ item: String) -> JSONValue {
        object([("data", array(ref(item))), ("next_cursor", nullable(string))], required: ["data"])
    }

    static var schemas: [(String, JSONValue)] {
        let usage = object([("prompt_tokens", integer), ("completion_tokens", integer), ("cost_usd", number)])
        // Input fields that are optional take null for "not given", as the
        // decoder does; the constraints are the rules the services check.
        let n = nullable
        let sandbox = object([
            ("image", Rules.image.schema), ("memory_mb", n(Rules.memoryMB.schema)), ("cpus", n(Rules.cpus.schema)),
            ("pids", n(Rules.pids.schema)), ("tmp_mb", n(Rules.tmpMB.schema)), ("network", Rules.network.schema),
            ("user_namespace", n(boolean)), ("read_only_root", n(boolean)),
        ])
        let harness = object([("command", obj([("type", str("array")), ("items", Rules.argument.schema),
                                               ("minItems", .number(1))])),
                              ("timeout_s", n(Rules.harnessTimeout.schema))], required: ["command"])
        let limits = object([("max_steps", n(Rules.maxSteps.schema)), ("max_run_seconds", n(Rules.maxRunSeconds.schema)),
                             ("max_tool_output_bytes", n(Rules.maxToolOutputBytes.schema)),
                             ("tool_timeout_s", n(Rules.toolTimeout.schema))])
        let env = obj([("type", str("object")), ("propertyNames", Rules.userEnvName.schema),
                       ("additionalProperties", Rules.envValue.schema)])
        let tools = obj([("type", str("array")), ("items", enumeration(["exec", "read_file", "write_file", "list_files", "edit_file"])),
                         ("uniqueItems", .bool(true))])
        let agentFields: [(String, JSONValue)] = [
            ("name", Rules.name.schema), ("model", Rules.model.schema), ("system_prompt", Rules.systemPrompt.schema),
            ("tools", tools), ("sandbox", ref("AgentSandbox")), ("env", env), ("secrets", array(Rules.envName.schema)),
            ("harness", nullable(ref("AgentHarness"))), ("limits", ref("AgentLimits")),
        ]
        let agentInputFields = agentFields.map { ($0.0, $0.0 == "harness" ? $0.1 : n($0.1)) }
        // Creating: name and model are required, so not null either.
        let agentCreateFields = agentFields.map { ($0.0, ["harness", "name", "model"].contains($0.0) ? $0.1 : n($0.1)) }
        let command = obj([("oneOf", .array([
            Rules.commandString.schema,
            obj([("type", str("array")), ("prefixItems", .array([Rules.argument.schema])),
                 ("items", Rules.commandString.schema), ("minItems", .number(1))]),
        ]))])
        return [
            ("Error", object([("error", object([("code", string), ("message", string), ("field", nullable(string))],
                                                 required: ["code", "message"]))], required: ["error"])),
            ("Team", object([("id", string), ("name", string), ("created_at", dateTime), ("quotas", ref("TeamQuotas")),
                             ("usage", nullable(ref("TeamUsage")))], required: ["id", "name"])),
            ("TeamInput", object([("name", Rules.name.schema)], required: ["name"])),
            ("TeamQuotas", object([
                ("sessions", n(Rules.quotaSessions.schema)), ("running_sandboxes", n(Rules.quotaRunningSandboxes.schema)),
                ("concurrent_runs", n(Rules.quotaConcurrentRuns.schema)), ("queued_runs", n(Rules.quotaQueuedRuns.schema)),
                ("memory_mb", n(Rules.quotaMemoryMB.schema)), ("cpus", n(Rules.quotaCPUs.schema)),
            ])),
            ("TeamUsage", object([
                ("sessions", integer), ("running_sandboxes", integer), ("concurrent_runs", integer),
                ("queued_runs", integer), ("memory_mb", integer), ("cpus", number),
            ])),
            ("TeamPatch", object([("quotas", ref("TeamQuotas"))], required: ["quotas"])),
            ("TeamList", list("Team")),
            ("Key", object([
                ("id", string), ("name", string), ("team_id", string), ("role", ref("Role")), ("prefix", string),
                ("created_at", dateTime), ("revoked_at", nullable(dateTime)), ("last_used_at", nullable(dateTime)),
                ("key", string),
            ], required: ["id", "name", "team_id", "role"])),
            ("KeyInput", object([("name", Rules.name.schema), ("team_id", n(Rules.id(.team).schema)), ("role", ref("Role"))],
                                required: ["name", "role"])),
            ("KeyList", list("Key")),
            ("Role", enumeration(Role.allCases.map(\.rawValue))),
            ("AgentSandbox", sandbox),
            ("AgentHarness", harness),
            ("AgentLimits", limits),
            ("Agent", object([("id", string), ("team_id", string)] + agentFields
                                + [("created_at", dateTime), ("updated_at", dateTime)], required: ["id", "name", "model"])),
            ("AgentCreate", object(agentCreateFields + [("team_id", n(Rules.id(.team).schema))], required: ["name", "model"])),
            ("AgentInput", object(agentInputFields + [("team_id", n(Rules.id(.team).schema))])),
            ("AgentList", list("Agent")),
            ("Secret", object([("id", string), ("name", string), ("team_id", string), ("agent_id", nullable(string)),
                               ("created_at", dateTime), ("updated_at", dateTime)], required: ["name"])),
            ("SecretInput", object([("value", Rules.secretValue.schema), ("agent_id", n(Rules.id(.agent).schema))],
                                   required: ["value"])),
            ("SecretList", list("Secret")),
            ("Usage", usage),
            ("Session", object([
                ("id", string), ("team_id", string), ("agent_id", string), ("title", string),
                ("status", enumeration(["idle", "queued", "running"])),
                ("sandbox_state", enumeration(["none", "running", "paused", "stopped"])), ("last_seq", integer),
                ("active_run_id", nullable(string)), ("usage", ref("Usage")), ("created_at", dateTime),
                ("updated_at", dateTime),
            ], required: ["id", "agent_id", "status"])),
            ("SessionInput", object([("agent_id", Rules.id(.agent).schema), ("title", n(Rules.title.schema))],
                                    required: ["agent_id"])),
            ("SessionList", list("Session")),
            ("MessageInput", object([("content", Rules.content.schema)], required: ["content"])),
            ("MessageAccepted", object([("run_id", string), ("seq", integer)], required: ["run_id", "seq"])),
            ("Event", object([
                ("seq", integer), ("session_id", string), ("run_id", nullable(string)),
                ("kind", enumeration(EventKind.allCases.map(\.rawValue))), ("created_at", dateTime),
                ("data", .object([:])),
            ], required: ["seq", "session_id", "kind", "data"])),
            ("EventList", list("Event")),
            ("RunList", list("Run")),
            ("Run", object([
                ("id", string), ("session_id", string), ("state", enumeration(RunState.allCases.map(\.rawValue))),
                ("error", nullable(string)), ("message_seq", integer), ("steps", integer), ("usage", ref("Usage")),
                ("created_at", dateTime), ("started_at", nullable(dateTime)), ("finished_at", nullable(dateTime)),
                ("events", array(ref("Event"))),
            ], required: ["id", "state"])),
            ("ExecInput", object([
                ("command", command), ("cwd", n(Rules.cwd.schema)), ("env", n(env)),
                ("timeout_s", n(Rules.execTimeout.schema)), ("stdin", n(Rules.stdin.schema)),
            ], required: ["command"])),
            ("ExecOutput", object([
                ("exit_code", integer), ("signal", nullable(integer)), ("stdout", string), ("stderr", string),
                ("timed_out", boolean), ("duration_ms", number), ("truncated", boolean),
            ], required: ["exit_code", "stdout", "stderr", "timed_out", "duration_ms"])),
            ("File", object([("name", string), ("type", enumeration(["file", "directory", "symlink", "other"])),
                             ("size", integer), ("mode", string), ("modified_at", dateTime)], required: ["name", "type"])),
            ("FileList", array(ref("File"))),
            ("Sandbox", object([
                ("state", enumeration(["none", "running", "paused", "stopped"])), ("image", string),
                ("limits", nullable(object([("memory_bytes", nullable(integer)), ("pids", nullable(integer)),
                                            ("cpus", nullable(number)), ("tmp_bytes", nullable(integer))]))),
                ("usage", nullable(object([("memory_bytes", nullable(integer)), ("memory_peak_bytes", nullable(integer)),
                                           ("cpu_seconds", nullable(number)), ("pids", nullable(integer)),
                                           ("oom_kills", nullable(integer))]))),
                ("started_at", nullable(dateTime)), ("idle_stop_at", nullable(dateTime)),
            ], required: ["state"])),
            ("Status", object([
                ("version", string), ("cgroup_driver", string), ("seccomp", string), ("images", array(string)),
                ("notes", array(string)), ("sandboxes_running", integer), ("runs_active", integer),
                ("runs_queued", integer), ("gateway", nullable(string)),
            ])),
        ]
    }

    static func content(_ schema: String) -> JSONValue {
        switch schema {
        case "binary":
            return obj([("application/octet-stream", obj([("schema", obj([("type", str("string")), ("format", str("binary"))]))]))])
        case "text":
            return obj([("text/plain", obj([("schema", string)]))])
        case "event-stream":
            // Each event: `event` (the kind), `id` (its seq, on persisted
            // events) and `data` (the event as JSON text).
            return obj([("text/event-stream", obj([("schema", object([("event", string), ("id", string),
                                                                      ("data", string)], closed: false))]))])
        case "object":
            return obj([("application/json", obj([("schema", obj([("type", str("object"))]))]))])
        default:
            return obj([("application/json", obj([("schema", ref(schema))]))])
        }
    }

    static let errorStatuses: [(String, String)] = [
        ("400", "Bad input; the body names the field"), ("401", "No key or an unknown key"),
        ("403", "The key's role does not allow this"), ("404", "Not found (or another team's)"),
        ("409", "Conflicts with the current state"), ("413", "Body too large"),
    ]

    public static func build(_ endpoints: [Endpoint], version: String) -> JSONValue {
        var paths: [String: [(String, JSONValue)]] = [:]
        for e in endpoints {
            var op: [(String, JSONValue)] = [
                ("summary", str(e.summary)), ("tags", .array([str(e.tag)])),
                ("operationId", str(operationID(e))),
            ]
            var params: [JSONValue] = []
            for name in pathParameters(e.path) {
                params.append(obj([("name", str(name)), ("in", str("path")), ("required", .bool(true)),
                                   ("schema", pathRule(e.path, name)?.schema ?? string)]))
            }
            for q in e.query {
                params.append(obj([("name", str(q)), ("in", str("query")), ("required", .bool(e.requiredQuery.contains(q))),
                                   ("schema", queryRule(e.path, q)?.schema ?? string)]))
            }
            if e.path.hasSuffix("/events") {
                params.append(obj([("name", str("Last-Event-ID")), ("in", str("header")), ("required", .bool(false)),
                                   ("schema", obj([("type", str("string")), ("pattern", str("^ *[0-9]{1,18} *$"))]))]))
            }
            if !params.isEmpty { op.append(("parameters", .array(params))) }
            if let body = e.body { op.append(("requestBody", obj([("required", .bool(true)), ("content", content(body))]))) }
            var responses: [(String, JSONValue)] = []
            var ok: [(String, JSONValue)] = [("description", str(e.status == 204 ? "Done" : "Success"))]
            if let r = e.response, e.status != 204 { ok.append(("content", content(r))) }
            let followers = links(e, endpoints)
            if !followers.isEmpty { ok.append(("links", obj(followers))) }
            responses.append((String(e.status), obj(ok)))
            var errors = e.open ? [("503", "Not ready")] : errorStatuses
            if mayMeetQuota(e) { errors.append(("429", "A team quota is used up for now (the body names it)")) }
            if !e.open && (e.method != .get || mayMeetQuota(e)) {
                errors.append(("507", "The state directory's disk is below agentd's reserve, or full"))
            }
            if let body = e.body, body != "binary" {
                errors.append(("415", "The body is not application/json"))
                errors.append(("503", "Too many large requests at once (Retry-After)"))
            }
            for (code, text) in errors {
                responses.append((code, obj([("description", str(text)), ("content", content("Error"))])))
            }
            op.append(("responses", obj(responses)))
            if e.open { op.append(("security", .array([]))) }
            paths[e.path, default: []].append((e.method.rawValue.lowercased(), obj(op)))
        }
        return obj([
            ("openapi", str("3.1.0")),
            ("info", obj([("title", str("agentd")), ("version", str(version)),
                          ("description", str("Run AI agents for several teams, each session in its own sandbox."))])),
            ("servers", .array([obj([("url", str("http://127.0.0.1:8787"))])])),
            ("security", .array([obj([("bearer", .array([]))])])),
            ("paths", obj(paths.map { ($0.key, obj($0.value)) })),
            ("components", obj([
                ("schemas", obj(schemas)),
                ("securitySchemes", obj([("bearer", obj([("type", str("http")), ("scheme", str("bearer"))]))])),
            ])),
        ])
    }

    /// OpenAPI links from what an operation returns to the operations that
    /// take it: a create's `id` to every route of the created thing (and an
    /// agent's to a new session of it), a message's `run_id` to its run.
    /// Clients and the fuzzer's stateful phase follow them.
    static func links(_ e: Endpoint, _ all: [Endpoint]) -> [(String, JSONValue)] {
        var out: [(String, JSONValue)] = []
        func link(_ f: Endpoint, _ parameters: [(String, String)], body: [(String, String)] = []) {
            var l: [(String, JSONValue)] = [("operationId", str(operationID(f)))]
            if !parameters.isEmpty { l.append(("parameters", obj(parameters.map { ($0.0, str($0.1)) }))) }
            if !body.isEmpty { l.append(("requestBody", obj(body.map { ($0.0, str($0.1)) }))) }
            out.append((operationID(f), obj(l)))
        }
        if e.method == .post && e.status == 201 && !e.path.hasSuffix("}") {
            for f in all where f.path.hasPrefix(e.path + "/{id}") {
                link(f, [("id", "$response.body#/id")])
            }
            if e.path == "/v1/agents", let create = all.first(where: { $0.method == .post && $0.path == "/v1/sessions" }) {
                link(create, [], body: [("agent_id", "$response.body#/id")])
            }
        }
        if e.method == .post && e.path == "/v1/sessions/{id}/messages" {
            for f in all where f.path == "/v1/sessions/{id}/runs/{run_id}" {
                link(f, [("id", "$request.path.id"), ("run_id", "$response.body#/run_id")])
            }
        }
        return out
    }

    /// Whether a route may start the session's sandbox or queue a run, and
    /// so answer 429 for a team quota (running sandboxes, their memory and
    /// CPUs, queued runs).
    static func mayMeetQuota(_ e: Endpoint) -> Bool {
        guard e.path.hasPrefix("/v1/sessions/{id}/") else { return false }
        if e.path.hasSuffix("/cancel") || e.path.contains("/runs") { return false }
        if e.method == .get && (e.path.hasSuffix("/messages") || e.path.hasSuffix("/events")
                                || e.path.hasSuffix("/sandbox")) { return false }
        return true
    }

    /// The rule the handlers check a path parameter with.
    static func pathRule(_ path: String, _ name: String) -> FieldRule? {
        switch name {
        case "run_id": return Rules.id(.run)
        case "action": return Rules.sandboxAction
        case "name": return Rules.userEnvName
        case "id":
            if path.hasPrefix("/v1/agents/") { return Rules.id(.agent) }
            if path.hasPrefix("/v1/sessions/") { return Rules.id(.session) }
            if path.hasPrefix("/v1/keys/") { return Rules.id(.key) }
            if path.hasPrefix("/v1/teams/") { return Rules.id(.team) }
            return nil
        default: return nil
        }
    }

    /// The rule the handlers check a query parameter with.
    static func queryRule(_ path: String, _ name: String) -> FieldRule? {
        switch name {
        case "agent_id": return Rules.id(.agent)
        case "status": return Rules.sessionStatus
        case "state": return FieldRule.oneOf(RunState.allCases.map(\.rawValue))
        case "path": return Rules.sandboxPath
        case "after": return Rules.seq
        case "q": return Rules.titleQuery
        case "cursor": return Rules.cursor
        case "limit":
            if path == "/v1/sessions" { return Rules.sessionsLimit }
            if path == "/v1/runs" { return Rules.runsLimit }
            return Rules.messagesLimit
        default: return nil
        }
    }

    static func pathParameters(_ path: String) -> [String] {
        path.split(separator: "/").compactMap { part in
            part.hasPrefix("{") && part.hasSuffix("}") ? String(part.dropFirst().dropLast()) : nil
        }
    }

    static func operationID(_ e: Endpoint) -> String {
        let words = e.path.split(separator: "/").filter { !$0.hasPrefix("{") && $0 != "v1" }
            .map { $0.replacing("-", with: "_").replacing(".", with: "_") }
        return e.method.rawValue.lowercased() + "_" + words.joined(separator: "_") + (e.path.hasSuffix("}") ? "_item" : "")
    }

    public static func render(_ endpoints: [Endpoint], version: String) -> [UInt8] {
        let json = (try? AgentdJSON.encoder.encode(build(endpoints, version: version))).map { Array($0) } ?? []
        return json + [0x0A]
    }
}
