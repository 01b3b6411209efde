import AgentdCore
import AgentdModel
import AgentdServer
import AgentdStore
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import SandboxKit
import SandboxKitTesting
import Testing

/// The HTTP API in process, on a real store and the in-memory backend: no
/// root, no sandboxes, no sockets.  The end-to-end tests run the same
/// behaviours against the real daemon; these pin them down where a failure
/// is cheap to find.
struct APIHarness {
    let services: Services
    let backend: FakeSandboxBackend
    let adminKey: String
    let directory: String

    static func make(config: (String) -> CoreConfig = { CoreConfig(stateDirectory: $0, defaultImage: "default") })
        async throws -> APIHarness
    {
        let dir = NSTemporaryDirectory() + "agentd-api-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var logger = Logger(label: "api-test")
        logger.logLevel = .critical
        let backend = FakeSandboxBackend()
        let services = Services(config: config(dir), store: try Store(path: dir + "/agentd.db", logger: logger),
                                backend: backend, secretBox: try SecretBox.open(keyFile: dir + "/secret.key"),
                                version: "test", logger: logger)
        _ = try await services.auth.bootstrap(adminKeyPath: dir + "/admin.key")
        let key = try String(contentsOfFile: dir + "/admin.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return APIHarness(services: services, backend: backend, adminKey: key, directory: dir)
    }

    func app() -> some ApplicationProtocol {
        var logger = Logger(label: "api-test")
        logger.logLevel = .critical
        let api = API(services: services, metrics: { "" }, ready: { true },
                      openAPI: { OpenAPIDocument.render(API.endpoints, version: "test") })
        return Application(router: api.router(logger: logger))
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

extension TestClientProtocol {
    /// A JSON request with a key; the answer's status and JSON body.
    func call(_ method: HTTPRequest.Method, _ path: String, key: String?, json: String? = nil,
              contentType: String = "application/json", headers extra: HTTPFields = [:]) async throws
        -> (status: Int, body: [String: Any], headers: HTTPFields)
    {
        var headers = extra
        if let key { headers[.authorization] = "Bearer \(key)" }
        if json != nil { headers[.contentType] = contentType }
        return try await execute(uri: path, method: method, headers: headers,
                                 body: json.map { ByteBuffer(string: $0) }) { response in
            let object = (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any]
            return (Int(response.status.code), object ?? [:], response.headers)
        }
    }
}

func field(_ body: [String: Any]) -> String? { (body["error"] as? [String: Any])?["field"] as? String }
func code(_ body: [String: Any]) -> String? { (body["error"] as? [String: Any])?["code"] as? String }

@Suite struct APITests {
    @Test func keysAndMethodsAndBodiesAreChecked() async throws {
        let h = try await APIHarness.make()
        defer { h.remove() }
        try await h.app().test(.router) { client in
            let anonymous = try await client.call(.get, "/v1/sessions", key: nil)
            #expect(anonymous.status == 401 && anonymous.headers[.wwwAuthenticate] == "Bearer")
            let method = try await client.call(.put, "/v1/sessions", key: h.adminKey)
            #expect(method.status == 405)
            #expect(method.headers[.allow]?.contains("GET") == true)
            let text = try await client.call(.post, "/v1/teams", key: h.adminKey, json: #"{"name": "x"}"#,
                                             contentType: "text/plain")
            #expect(text.status == 415)
            let twice = try await client.call(.post, "/v1/teams", key: h.adminKey, json: #"{"name": "a", "name": "b"}"#)
            #expect(twice.status == 400 && field(twice.body) == "name")
            let unknown = try await client.call(.post, "/v1/teams", key: h.adminKey, json: #"{"name": "a", "x": 1}"#)
            #expect(unknown.status == 400 && field(unknown.body) == "x")
        }
    }

    @Test func aTeamSeesNothingOfAnother() async throws {
        let h = try await APIHarness.make()
        defer { h.remove() }
        try await h.app().test(.router) { client in
            func owner(_ name: String) async throws -> String {
                let team = try await client.call(.post, "/v1/teams", key: h.adminKey, json: #"{"name": "\#(name)"}"#)
                let id = try #require(team.body["id"] as? String)
                let key = try await client.call(.post, "/v1/keys", key: h.adminKey,
                                                json: #"{"name": "o", "role": "owner", "team_id": "\#(id)"}"#)
                return try #require(key.body["key"] as? String)
            }
            let a = try await owner("team-a"), b = try await owner("team-b")
            let agent = try await client.call(.post, "/v1/agents", key: a, json: #"{"name": "mine", "model": "m"}"#)
            let agentID = try #require(agent.body["id"] as? String)
            let session = try await client.call(.post, "/v1/sessions", key: a, json: #"{"agent_id": "\#(agentID)"}"#)
            let sid = try #require(session.body["id"] as? String)
            let exec = try await client.call(.post, "/v1/sessions/\(sid)/exec", key: a, json: #"{"command": "echo hi"}"#)
            #expect(exec.status == 200 && exec.body["stdout"] as? String == "hi\n")
            for (method, path) in [(HTTPRequest.Method.get, "/v1/sessions/\(sid)"), (.get, "/v1/agents/\(agentID)"),
                                   (.get, "/v1/sessions/\(sid)/messages"), (.get, "/v1/sessions/\(sid)/sandbox")] {
                let r = try await client.call(method, path, key: b)
                #expect(r.status == 404, "\(path)")
            }
            let r = try await client.call(.post, "/v1/sessions/\(sid)/exec", key: b, json: #"{"command": "true"}"#)
            #expect(r.status == 404)
        }
    }

    @Test func teamQuotasAnswerWithTheQuotaNamed() async throws {
        let h = try await APIHarness.make()
        defer { h.remove() }
        try await h.app().test(.router) { client in
            let team = try await client.call(.post, "/v1/teams", key: h.adminKey, json: #"{"name": "small"}"#)
            let tid = try #require(team.body["id"] as? String)
            let set = try await client.call(.patch, "/v1/teams/\(tid)", key: h.adminKey,
                                            json: #"{"quotas": {"sessions": 2, "running_sandboxes": 1, "cpus": 1.5}}"#)
            #expect(set.status == 200)
            let agent = try await client.call(.post, "/v1/agents", key: h.adminKey,
                                              json: #"{"name": "q", "model": "m", "team_id": "\#(tid)"}"#)
            let agentID = try #require(agent.body["id"] as? String)
            var sessions: [String] = []
            for _ in 0..<2 {
                let s = try await client.call(.post, "/v1/sessions", key: h.adminKey, json: #"{"agent_id": "\#(agentID)"}"#)
                sessions.append(try #require(s.body["id"] as? String))
            }
            let third = try await client.call(.post, "/v1/sessions", key: h.adminKey, json: #"{"agent_id": "\#(agentID)"}"#)
            #expect(third.status == 409 && code(third.body) == "quota_exceeded" && field(third.body) == "sessions")
            let first = try await client.call(.post, "/v1/sessions/\(sessions[0])/exec", key: h.adminKey,
                                              json: #"{"command": "true"}"#)
            #expect(first.status == 200)
            let second = try await client.call(.post, "/v1/sessions/\(sessions[1])/exec", key: h.adminKey,
                                               json: #"{"command": "true"}"#)
            #expect(second.status == 429 && field(second.body) == "running_sandboxes")
            let usage = try await client.call(.get, "/v1/teams/\(tid)", key: h.adminKey)
            let used = try #require(usage.body["usage"] as? [String: Any])
            #expect(used["running_sandboxes"] as? Int == 1 && used["sessions"] as? Int == 2)
            // A stop frees the slot.
            _ = try await client.call(.post, "/v1/sessions/\(sessions[0])/sandbox/stop", key: h.adminKey)
            let again = try await client.call(.post, "/v1/sessions/\(sessions[1])/exec", key: h.adminKey,
                                              json: #"{"command": "true"}"#)
            #expect(again.status == 200)
        }
    }

    /// Only "not found" from the backend means "no sandbox": a backend in
    /// trouble is an error, not a reason to report none or make another.
    @Test func aFailingBackendIsNotTakenForNoSandbox() async throws {
        let h = try await APIHarness.make()
        defer { h.remove() }
        try await h.app().test(.router) { client in
            let agent = try await client.call(.post, "/v1/agents", key: h.adminKey, json: #"{"name": "a", "model": "m"}"#)
            let agentID = try #require(agent.body["id"] as? String)
            let s = try await client.call(.post, "/v1/sessions", key: h.adminKey, json: #"{"agent_id": "\#(agentID)"}"#)
            let sid = try #require(s.body["id"] as? String)
            #expect(try await client.call(.get, "/v1/sessions/\(sid)/sandbox", key: h.adminKey).body["state"] as? String
                    == "none")
            await h.backend.failStatus(SandboxError(.system, "the backend is unwell", stage: "test"))
            let r = try await client.call(.get, "/v1/sessions/\(sid)/sandbox", key: h.adminKey)
            #expect(r.status == 500)
            let exec = try await client.call(.post, "/v1/sessions/\(sid)/exec", key: h.adminKey,
                                             json: #"{"command": "true"}"#)
            #expect(exec.status == 500)
            #expect(await h.backend.starts == 0)
        }
    }

    /// A sandbox that stops by itself is recorded in its session.
    @Test func anUnexpectedStopIsRecordedInTheSession() async throws {
        let h = try await APIHarness.make()
        defer { h.remove() }
        let watcher = Task { await h.services.sessions.recordUnexpectedStops() }
        defer { watcher.cancel() }
        try await h.app().test(.router) { client in
            let agent = try await client.call(.post, "/v1/agents", key: h.adminKey, json: #"{"name": "a", "model": "m"}"#)
            let agentID = try #require(agent.body["id"] as? String)
            let s = try await client.call(.post, "/v1/sessions", key: h.adminKey, json: #"{"agent_id": "\#(agentID)"}"#)
            let sid = try #require(s.body["id"] as? String)
            #expect(try await client.call(.post, "/v1/sessions/\(sid)/exec", key: h.adminKey,
                                          json: #"{"command": "true"}"#).status == 200)
            await h.backend.stopByItself(try SandboxID(sid), cause: .outOfMemory, message: "out of memory (test)")
            var recorded = false
            for _ in 0..<100 where !recorded {
                let events = try await h.services.store.events(sessionID: sid, after: 0, limit: 100)
                recorded = events.contains { $0.kind == .sandboxStatus && $0.data["reason"]?.stringValue == "oom_killed" }
                if !recorded { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(recorded)
            let session = try await client.call(.get, "/v1/sessions/\(sid)", key: h.adminKey)
            #expect(session.body["sandbox_state"] as? String == "stopped")
        }
    }

    /// A state the database did not record (a write the full disk refused)
    /// is recorded by the reconciliation once it is seen twice, and the
    /// team's running share is released with it.
    @Test func reconciliationRecordsWhatWentUnrecorded() async throws {
        let h = try await APIHarness.make()
        defer { h.remove() }
        try await h.app().test(.router) { client in
            let agent = try await client.call(.post, "/v1/agents", key: h.adminKey, json: #"{"name": "a", "model": "m"}"#)
            let agentID = try #require(agent.body["id"] as? String)
            let s = try await client.call(.post, "/v1/sessions", key: h.adminKey, json: #"{"agent_id": "\#(agentID)"}"#)
            let sid = try #require(s.body["id"] as? String)
            _ = try await client.call(.post, "/v1/sessions/\(sid)/exec", key: h.adminKey, json: #"{"command": "true"}"#)
            await h.backend.stopSilently(try SandboxID(sid))
            #expect(try await client.call(.get, "/v1/sessions/\(sid)", key: h.adminKey).body["sandbox_state"] as? String
                    == "running")
            await h.services.sessions.reconcileSandboxStates()  // seen once: could be a stop in progress
            #expect(try await client.call(.get, "/v1/sessions/\(sid)", key: h.adminKey).body["sandbox_state"] as? String
                    == "running")
            await h.services.sessions.reconcileSandboxStates()  // seen twice: recorded
            #expect(try await client.call(.get, "/v1/sessions/\(sid)", key: h.adminKey).body["sandbox_state"] as? String
                    == "stopped")
            let events = try await h.services.store.events(sessionID: sid, after: 0, limit: 100)
            #expect(events.contains { $0.kind == .sandboxStatus && $0.data["reason"]?.stringValue == "reconciled" })
            let team = try #require(await h.services.store.teams().first?.id)
            #expect(await h.services.sessions.sandboxUsage(team: team).count == 0)
        }
    }
}
