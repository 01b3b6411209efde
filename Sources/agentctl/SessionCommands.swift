import AgentdModel
import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore

struct Sessions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sessions", abstract: "Sessions.",
                                                    subcommands: [Create.self, List.self, Get.self, Delete.self],
                                                    defaultSubcommand: List.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a session with an agent.")
        @OptionGroup var conn: Connection
        @Option(name: .customLong("agent"), help: "Agent id.") var agent: String
        @Option(help: "Title (also the sandbox's hostname).") var title: String?

        func run() async throws {
            struct In: Encodable {
                var agent_id: String
                var title: String?
            }
            let s = try await conn.client().call(.POST, "/v1/sessions", body: In(agent_id: agent, title: title),
                                                 as: Session.self)
            conn.json ? Out.json(s) : Out.line(s.id)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List sessions, newest first.")
        @OptionGroup var conn: Connection
        @Option(name: .customLong("agent")) var agent: String?
        @Option(help: "idle, queued or running.") var status: String?
        @Option(name: .customLong("search"), help: "Text in the title.") var search: String?
        @Option var limit: Int = 50
        @Option var cursor: String?
        @Flag(help: "Follow next_cursor to the end.") var all = false

        func run() async throws {
            let client = try conn.client()
            var rows: [Session] = []
            var next = cursor
            repeat {
                let page = try await client.call(.GET, "/v1/sessions", query: [
                    "agent_id": agent, "status": status, "q": search, "limit": String(limit), "cursor": next,
                ], as: Page<Session>.self)
                rows += page.data
                next = page.nextCursor
            } while all && next != nil
            if conn.json { return Out.json(Page(data: rows, nextCursor: next)) }
            Out.table(["ID", "TITLE", "AGENT", "STATUS", "SANDBOX", "EVENTS", "CREATED"],
                      rows.map { [$0.id, $0.title, $0.agentID, $0.status, $0.sandboxState, String($0.lastSeq),
                                  Out.date($0.createdAt)] })
            if let next { Out.err("more: --cursor \(next)\n") }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a session.")
        @OptionGroup var conn: Connection
        @Argument var id: String

        func run() async throws {
            let s = try await conn.client().call(.GET, "/v1/sessions/\(seg(id))", as: Session.self)
            if conn.json { return Out.json(s) }
            Out.line("\(s.id)  \(s.title)")
            Out.line("  agent:   \(s.agentID)")
            Out.line("  status:  \(s.status)\(s.activeRunID.map { " (run \($0))" } ?? "")")
            Out.line("  sandbox: \(s.sandboxState)")
            Out.line("  events:  \(s.lastSeq)")
            Out.line("  usage:   \(s.usage.promptTokens) prompt + \(s.usage.completionTokens) completion tokens, $\(s.usage.costUSD)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a session with its sandbox and files.")
        @OptionGroup var conn: Connection
        @Argument var id: String

        func run() async throws {
            _ = try await conn.client().raw(.DELETE, "/v1/sessions/\(seg(id))")
            if !conn.json { Out.line("deleted \(id)") }
        }
    }
}

/// Follow a session's event stream from `after`, calling `handle` for each
/// event until it returns false.
func follow(_ client: APIClient, session: String, after: Int64, _ handle: (String, Int64?, JSONValue) throws -> Bool)
    async throws
{
    var last = after
    var attempts = 0
    while true {
        let r = client.request(.GET, "/v1/sessions/\(seg(session))/events",
                               headers: [("Accept", "text/event-stream"), ("Last-Event-ID", String(last))])
        do {
            let response = try await client.http.execute(r, timeout: .hours(24))
            if response.status.code >= 400 {
                let body = try await response.body.collect(upTo: 1 << 20)
                try client.check(response.status, Data(body.readableBytesView))
            }
            var parser = SSEParser()
            for try await chunk in response.body {
                for m in parser.feed(chunk) {
                    let frame = (try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(m.data.utf8))) ?? .string(m.data)
                    let seq = m.id.flatMap(Int64.init)
                    // A persisted event's frame is the whole event; its payload is `data`.
                    let data = seq != nil ? (frame["data"] ?? frame) : frame
                    if let seq { last = seq }
                    attempts = 0
                    if try !handle(m.event, seq, data) { return }
                }
            }
        } catch let e as CLIError {
            throw e
        } catch {
            attempts += 1
            if attempts > 30 { throw CLIError("lost the event stream: \(error)") }
        }
        // The stream ended (daemon restart?): reconnect and resume from `last`.
        try await Task.sleep(for: .milliseconds(500))
    }
}

/// Print one event for people.
func describe(_ kind: String, _ data: JSONValue, streamedText: Bool) {
    switch kind {
    case "assistant_delta":
        Out.raw(Array((data["text"]?.stringValue ?? "").utf8))
    case "assistant_message":
        if !streamedText { Out.raw(Array((data["text"]?.stringValue ?? "").utf8)) }
        Out.raw([0x0A])
    case "tool_call":
        let args = data["arguments"].map { $0.stringValue ?? $0.compactString } ?? ""
        Out.line("⚙ \(data["name"]?.stringValue ?? "?") \(args.prefix(300))")
    case "tool_result":
        let output = data["output"]?.stringValue ?? ""
        let code = data["exit_code"]?.intValue.map { " (exit \($0))" } ?? ""
        Out.line("↳\(code) \(output.prefix(2000))\(output.count > 2000 ? "…" : "")")
    case "user_message":
        Out.line("> \(data["text"]?.stringValue ?? "")")
    case "run_status":
        Out.line("[run \(data["state"]?.stringValue ?? "?")\(data["error"]?.stringValue.map { ": \($0)" } ?? "")]")
    case "sandbox_status":
        Out.line("[sandbox \(data["state"]?.stringValue ?? "?")]")
    case "error":
        Out.line("[error: \(data["message"]?.stringValue ?? data.compactString)]")
    default:
        Out.line("[\(kind)] \(data.compactString)")
    }
}

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat", abstract: "Send a message and follow the run until it ends.",
        discussion: "Exits 0 when the run succeeds, 1 when it fails or is cancelled.")
    @OptionGroup var conn: Connection
    @Argument var session: String
    @Argument var message: String

    func run() async throws {
        let client = try conn.client()
        let accepted = try await client.call(.POST, "/v1/sessions/\(seg(session))/messages", body: ["content": message],
                                             as: MessageAccepted.self)
        var streamed = false
        var outcome = "succeeded"
        var error: String?
        try await follow(client, session: session, after: accepted.seq) { kind, _, data in
            if conn.json {
                Out.line(JSONValue.object(["kind": .string(kind), "data": data]).compactString)
            } else {
                describe(kind, data, streamedText: streamed)
            }
            if kind == "assistant_delta" { streamed = true }
            if kind == "assistant_message" || kind == "tool_call" { streamed = false }
            if kind == "run_status", data["run_id"]?.stringValue == accepted.runID,
               let state = data["state"]?.stringValue, ["succeeded", "failed", "cancelled"].contains(state) {
                outcome = state
                error = data["error"]?.stringValue
                return false
            }
            return true
        }
        if outcome != "succeeded" { throw CLIError("the run \(outcome)\(error.map { ": \($0)" } ?? "")") }
    }
}

struct Messages: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "messages", abstract: "Print the transcript.")
    @OptionGroup var conn: Connection
    @Argument var session: String
    @Option var after: Int64?
    @Option var limit: Int?

    func run() async throws {
        let p = try await conn.client().call(.GET, "/v1/sessions/\(seg(session))/messages", query: [
            "after": after.map(String.init), "limit": limit.map(String.init),
        ], as: Page<Event>.self)
        if conn.json { return Out.json(p.data) }
        for e in p.data {
            Out.raw(Array("#\(e.seq) ".utf8))
            describe(e.kind.rawValue, e.data, streamedText: false)
        }
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "events",
                                                    abstract: "Follow a session's events (Ctrl-C to stop).")
    @OptionGroup var conn: Connection
    @Argument var session: String
    @Option(help: "Start after this seq (default: only new events).") var after: Int64?

    func run() async throws {
        let client = try conn.client()
        var start = after ?? 0
        if after == nil { start = try await client.call(.GET, "/v1/sessions/\(seg(session))", as: Session.self).lastSeq }
        try await follow(client, session: session, after: start) { kind, seq, data in
            if conn.json {
                Out.line(JSONValue.object(["kind": .string(kind), "seq": seq.map { .number(Double($0)) } ?? .null,
                                           "data": data]).compactString)
            } else {
                describe(kind, data, streamedText: false)
            }
            return true
        }
    }
}

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "runs", abstract: "Show a run.")
    @OptionGroup var conn: Connection
    @Argument var session: String
    @Argument var run: String

    func run() async throws {
        let r = try await conn.client().call(.GET, "/v1/sessions/\(seg(session))/runs/\(seg(run))", as: Run.self)
        if conn.json { return Out.json(r) }
        Out.line("\(r.id)  \(r.state.rawValue)\(r.error.map { ": \($0)" } ?? "")")
        Out.line("  steps: \(r.steps), tokens \(r.usage.promptTokens)+\(r.usage.completionTokens), $\(r.usage.costUSD)")
        for e in r.events ?? [] { describe(e.kind.rawValue, e.data, streamedText: false) }
    }
}

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel the session's active run.")
    @OptionGroup var conn: Connection
    @Argument var session: String

    func run() async throws {
        let r = try await conn.client().call(.POST, "/v1/sessions/\(seg(session))/cancel", as: Run.self)
        conn.json ? Out.json(r) : Out.line("cancelling \(r.id)")
    }
}

struct ExecCmd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec", abstract: "Run a command in a session's sandbox.",
        discussion: "agentctl exec SESSION -- CMD ARGS...  Output streams; exits with the command's exit code.")
    @OptionGroup var conn: Connection
    @Option var cwd: String?
    @Option(name: .customLong("env"), help: "NAME=VALUE (repeatable).") var env: [String] = []
    @Option(help: "Seconds before the command is killed.") var timeout: Double?
    @Argument var session: String
    @Argument(parsing: .captureForPassthrough) var command: [String] = []

    func run() async throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { throw CLIError("give the command after --", code: 2) }
        var environment: [String: String] = [:]
        for kv in env {
            guard let eq = kv.firstIndex(of: "=") else { throw CLIError("--env \(kv) is not NAME=VALUE", code: 2) }
            environment[String(kv[..<eq])] = String(kv[kv.index(after: eq)...])
        }
        var stdin: String?
        if isatty(0) == 0 {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            if !data.isEmpty { stdin = String(decoding: data, as: UTF8.self) }
        }
        let input = ExecInput(command: .argv(argv), cwd: cwd, env: environment.isEmpty ? nil : environment,
                              timeoutS: timeout, stdin: stdin)
        let client = try conn.client()
        if conn.json {
            let out = try await client.call(.POST, "/v1/sessions/\(seg(session))/exec", body: input, as: ExecOutput.self)
            Out.json(out)
            throw ExitCode(out.exitCode)
        }
        var r = client.request(.POST, "/v1/sessions/\(seg(session))/exec",
                               headers: [("Accept", "text/event-stream"), ("Content-Type", "application/json")])
        r.body = .bytes(ByteBuffer(bytes: try AgentdJSON.encoder.encode(input)))
        let response = try await client.execute(r)
        if response.status.code >= 400 {
            let body = try await response.body.collect(upTo: 1 << 20)
            try client.check(response.status, Data(body.readableBytesView))
        }
        var parser = SSEParser()
        var code: Int32 = 1
        for try await chunk in response.body {
            for m in parser.feed(chunk) {
                let data = (try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(m.data.utf8))) ?? .null
                switch m.event {
                case "stdout": Out.raw(Array((data["data"]?.stringValue ?? "").utf8))
                case "stderr": Out.raw(Array((data["data"]?.stringValue ?? "").utf8), error: true)
                case "exit":
                    code = Int32(data["exit_code"]?.intValue ?? 1)
                    if data["timed_out"]?.boolValue == true {
                        Out.err("agentctl: the command timed out\n")
                    }
                case "error":
                    let notFound = data["code"]?.stringValue == "not_found"
                    throw CLIError(data["message"]?.stringValue ?? "the command failed", code: notFound ? 127 : 126)
                default: break
                }
            }
        }
        throw ExitCode(code)
    }
}

/// `agentctl cp SRC DST`: one side is SESSION:PATH.
struct Copy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp", abstract: "Copy a file into or out of a session's sandbox.",
        discussion: "agentctl cp ./local ses_ID:/workspace/file   or   agentctl cp ses_ID:/workspace/file ./local (- for stdout)")
    @OptionGroup var conn: Connection
    @Argument var source: String
    @Argument var destination: String

    static func remote(_ s: String) -> (String, String)? {
        guard s.hasPrefix("ses_"), let colon = s.firstIndex(of: ":") else { return nil }
        return (String(s[..<colon]), String(s[s.index(after: colon)...]))
    }

    func run() async throws {
        let client = try conn.client()
        if let (session, path) = Copy.remote(destination), Copy.remote(source) == nil {
            guard let handle = FileHandle(forReadingAtPath: source) else { throw CLIError("cannot read \(source)") }
            let size = (try? FileManager.default.attributesOfItem(atPath: source)[.size] as? NSNumber)?.int64Value
            let stream = AsyncStream<ByteBuffer> { continuation in
                while true {
                    let data = handle.readData(ofLength: 1 << 20)
                    if data.isEmpty { break }
                    continuation.yield(ByteBuffer(bytes: data))
                }
                continuation.finish()
            }
            var r = client.request(.PUT, "/v1/sessions/\(seg(session))/files/content", query: ["path": path],
                                   headers: [("Content-Type", "application/octet-stream")])
            r.body = .stream(stream, length: size.map { .known($0) } ?? .unknown)
            let response = try await client.execute(r)
            let body = try await response.body.collect(upTo: 1 << 20)
            try client.check(response.status, Data(body.readableBytesView))
            if !conn.json { Out.err("copied \(source) to \(session):\(path)\n") }
        } else if let (session, path) = Copy.remote(source), Copy.remote(destination) == nil {
            let r = client.request(.GET, "/v1/sessions/\(seg(session))/files/content", query: ["path": path])
            let response = try await client.execute(r)
            if response.status.code >= 400 {
                let body = try await response.body.collect(upTo: 1 << 20)
                try client.check(response.status, Data(body.readableBytesView))
            }
            let out: FileHandle
            if destination == "-" {
                out = FileHandle.standardOutput
            } else {
                guard FileManager.default.createFile(atPath: destination, contents: nil),
                      let h = FileHandle(forWritingAtPath: destination) else {
                    throw CLIError("cannot write \(destination)")
                }
                out = h
            }
            for try await chunk in response.body {
                if destination == "-" { Out.raw(Array(chunk.readableBytesView)) } else { out.write(Data(chunk.readableBytesView)) }
            }
        } else {
            throw CLIError("one of SOURCE and DESTINATION must be SESSION:PATH (and only one)", code: 2)
        }
    }
}

struct Files: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a directory in a sandbox.")
    @OptionGroup var conn: Connection
    @Argument var session: String
    @Argument var path: String = "/workspace"

    func run() async throws {
        let entries = try await conn.client().call(.GET, "/v1/sessions/\(seg(session))/files", query: ["path": path],
                                                   as: [FileEntry].self)
        if conn.json { return Out.json(entries) }
        Out.table(["MODE", "SIZE", "MODIFIED", "NAME"], entries.map {
            [$0.mode, $0.type == "directory" ? "-" : String($0.size), Out.date($0.modifiedAt),
             $0.name + ($0.type == "directory" ? "/" : "")]
        })
    }
}

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a file or directory in a sandbox.")
    @OptionGroup var conn: Connection
    @Argument var session: String
    @Argument var path: String

    func run() async throws {
        _ = try await conn.client().raw(.DELETE, "/v1/sessions/\(seg(session))/files", query: ["path": path])
    }
}

struct SandboxCmd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox", abstract: "A session's sandbox: status, or start/stop/pause/resume/restart.")
    @OptionGroup var conn: Connection
    @Argument var session: String
    @Argument(help: "status (default), start, stop, pause, resume, restart.") var action: String = "status"

    func run() async throws {
        let client = try conn.client()
        let info: SandboxInfo
        if action == "status" {
            info = try await client.call(.GET, "/v1/sessions/\(seg(session))/sandbox", as: SandboxInfo.self)
        } else {
            guard ["start", "stop", "pause", "resume", "restart"].contains(action) else {
                throw CLIError("unknown action \(action) (status, start, stop, pause, resume, restart)", code: 2)
            }
            info = try await client.call(.POST, "/v1/sessions/\(seg(session))/sandbox/\(action)", as: SandboxInfo.self)
        }
        if conn.json { return Out.json(info) }
        Out.line("state:  \(info.state)")
        Out.line("image:  \(info.image)")
        if let l = info.limits {
            Out.line("limits: memory \(Out.bytes(l.memoryBytes)), cpus \(l.cpus.map { "\($0)" } ?? "-"), pids \(l.pids.map(String.init) ?? "-")")
        }
        if let u = info.usage {
            Out.line("usage:  memory \(Out.bytes(u.memoryBytes)) (peak \(Out.bytes(u.memoryPeakBytes))), cpu \(u.cpuSeconds.map { String(format: "%.2fs", $0) } ?? "-"), pids \(u.pids.map(String.init) ?? "-"), oom kills \(u.oomKills.map(String.init) ?? "-")")
        }
        if let t = info.idleStopAt { Out.line("idle stop at: \(Out.date(t))") }
    }
}
