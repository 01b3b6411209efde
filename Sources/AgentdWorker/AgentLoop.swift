import AgentdCore
import AgentdModel
import AgentdStore
import Logging
import SandboxKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Worker {
    /// Drive one run to its end (or until cancelled).
    func drive(_ claim: RunClaim, logger log: Logger) async throws -> RunOutcome {
        let run = claim.run
        guard let session = try await store.session(id: run.sessionID, teamID: nil) else { return .gone }
        guard let agent = try await store.agent(id: session.agentID, teamID: nil) else {
            return .failed("the session's agent was deleted")
        }
        if try await store.isCancelRequested(runID: run.id) { return .cancelled }
        var events = try await allEvents(session.id)

        // A call that had started when the previous worker died is not run
        // again behind the model's back: it gets a result saying so.
        let orphans = Transcript.unanswered(events, runID: run.id)
        if !orphans.isEmpty {
            log.notice("run resumed after a restart; interrupted tool calls reported to the model",
                       metadata: ["calls": "\(orphans.count)"])
            let results = orphans.map { call in
                NewEvent(kind: .toolResult, runID: run.id, data: .object([
                    "id": call.data["id"] ?? .string(""), "name": call.data["name"] ?? .null,
                    "output": .string("""
                        interrupted: agentd restarted while this tool call was running. It may or may not have \
                        completed, and its output was lost. Check the sandbox's state before repeating it.
                        """),
                    "truncated": .bool(false), "error": .bool(true), "interrupted": .bool(true)]))
            }
            events += try await record(run, results)
            if agent.harness != nil {
                return .failed("the harness command was interrupted by a restart of agentd; send the message again")
            }
        }
        if Transcript.finalAnswer(events, runID: run.id) != nil { return .succeeded }

        if let harness = agent.harness {
            return try await runHarness(run, session: session, agent: agent, harness: harness, events: events, logger: log)
        }
        guard let gateway else {
            return .failed("no model gateway is configured (gateway.url in agentd.toml or AGENTD_GATEWAY_URL)")
        }
        let key = try await sessions.gatewayKey(for: agent)
        let limits = agent.limits
        let maxSteps = limits.maxSteps ?? config.maxSteps
        let maxSeconds = Double(limits.maxRunSeconds ?? config.maxRunSeconds)
        let started = run.startedAt ?? Date()
        let toolbox = Toolbox(
            sessions: sessions, backend: backend, session: session, agent: agent,
            maxOutput: limits.maxToolOutputBytes ?? config.maxToolOutputBytes,
            defaultTimeout: .seconds(limits.toolTimeoutS ?? config.toolTimeoutSeconds),
            maxTimeout: .seconds(limits.toolTimeoutS ?? config.toolTimeoutSeconds))
        var steps = run.steps

        while true {
            try Task.checkCancellation()
            guard steps < maxSteps else {
                return .failed("the run reached its limit of \(maxSteps) steps without a final answer")
            }
            guard Date().timeIntervalSince(started) < maxSeconds else {
                return .failed("the run exceeded its limit of \(Int(maxSeconds)) seconds")
            }
            let ordered = Transcript.ordered(events, upTo: run.messageSeq)
            let messages = Transcript.messages(system: agent.systemPrompt, events: ordered)
            if messages.reduce(0, { $0 + $1.size }) > config.contextChars,
               let cut = Transcript.compactionCut(ordered, keepLast: 2) {
                events += try await compact(run, ordered: ordered, through: cut, agent: agent, gateway: gateway, key: key,
                                            logger: log)
                continue
            }

            let stream = config.stream == .always || (config.stream == .auto && hub.hasSubscribers(sessionID: session.id))
            let request = ChatRequest(model: agent.model, messages: messages, tools: Toolbox.offered(agent), stream: stream)
            let hub = self.hub
            let response = try await gateway.complete(
                request, key: key,
                onDelta: { text in hub.delta(sessionID: run.sessionID, runID: run.id, text: text) },
                onRetry: { retry in log.notice("model request retried", metadata: ["attempt": "\(retry.attempt)"]) })
            gatewayStatus.succeeded()
            steps += 1

            var stepEvents: [NewEvent] = []
            var message: [String: JSONValue] = [
                "text": .string(response.content), "step": .number(Double(steps)),
                "tool_calls": .array(response.toolCalls.map { .string($0.id) }),
                "usage": .object(["prompt_tokens": .number(Double(response.usage.promptTokens)),
                                  "completion_tokens": .number(Double(response.usage.completionTokens)),
                                  "cost_usd": .number(response.usage.costUSD)]),
                "streamed": .bool(response.streamed),
            ]
            if let m = response.model { message["model"] = .string(m) }
            if let f = response.finishReason { message["finish_reason"] = .string(f) }
            stepEvents.append(NewEvent(kind: .assistantMessage, runID: run.id, data: .object(message)))
            for call in response.toolCalls {
                stepEvents.append(NewEvent(kind: .toolCall, runID: run.id, data: Transcript.toolCallData(call, step: steps)))
            }
            events += try await record(run, stepEvents, usage: response.usage, step: true)
            if response.toolCalls.isEmpty { return .succeeded }

            for call in response.toolCalls {
                try Task.checkCancellation()
                let outcome = try await toolbox.run(call)
                var data: [String: JSONValue] = [
                    "id": .string(call.id), "name": .string(call.name), "output": .string(outcome.output),
                    "truncated": .bool(outcome.truncated),
                ]
                if let c = outcome.exitCode { data["exit_code"] = .number(Double(c)) }
                if outcome.isError { data["error"] = .bool(true) }
                events += try await record(run, [NewEvent(kind: .toolResult, runID: run.id, data: .object(data))])
            }
        }
    }

    /// Summarize the transcript up to `through` (an index of `ordered`) and
    /// record it; later requests send the summary instead of those events.
    func compact(_ run: Run, ordered: [Event], through cut: Int, agent: Agent, gateway: GatewayClient, key: String?,
                 logger log: Logger) async throws -> [Event] {
        let from = Transcript.compactedThrough(ordered) + 1
        var text = ""
        if let previous = ordered.last(where: { $0.kind == .compaction })?.data["summary"]?.stringValue {
            text += "EARLIER SUMMARY:\n" + previous + "\n\n"
        }
        text += Transcript.render(ordered[from...cut])
        let request = ChatRequest(model: agent.model, messages: [
            .system("""
                You compact an AI agent's working transcript. Write a faithful summary that lets the agent continue: \
                the user's requests, decisions made, files created or changed (with paths), commands run and what \
                they showed, and what remains to do. Be concise; omit pleasantries.
                """),
            .user(String(text.suffix(config.contextChars / 2))),
        ], tools: [], stream: false)
        let response = try await gateway.complete(request, key: key)
        log.notice("transcript compacted", metadata: ["through_seq": "\(ordered[cut].seq)"])
        return try await record(run, [NewEvent(kind: .compaction, runID: run.id, data: .object([
            "summary": .string(response.content), "through_seq": .number(Double(ordered[cut].seq)),
            "messages": .number(Double(cut - from + 1)),
        ]))], usage: response.usage)
    }

    /// The agent's own loop: its command, the message on stdin, the gateway
    /// on the sandbox's loopback.
    func runHarness(_ run: Run, session: Session, agent: Agent, harness: AgentHarness, events: [Event],
                    logger log: Logger) async throws -> RunOutcome {
        let message = events.first(where: { $0.seq == run.messageSeq })?.data["text"]?.stringValue ?? ""
        let toolbox = Toolbox(sessions: sessions, backend: backend, session: session, agent: agent,
                              maxOutput: agent.limits.maxToolOutputBytes ?? config.maxToolOutputBytes,
                              defaultTimeout: .seconds(harness.timeoutS ?? config.toolTimeoutSeconds),
                              maxTimeout: .seconds(harness.timeoutS ?? config.toolTimeoutSeconds))
        let sid = try await toolbox.sandbox()

        var env = try await sessions.environment(session, agent: agent)
        var forwarder: GatewayForwarder?
        if let gateway, let target = GatewayTarget(gateway.config.url) {
            let fd: Int32
            do {
                fd = try await backend.listenInside(sid, port: config.harnessPort)
            } catch let e as SandboxError {
                throw SandboxUnavailable(description: "cannot offer the gateway inside the sandbox: \(e.message)")
            }
            forwarder = try await GatewayForwarder.start(listeningFD: fd, host: target.host, port: target.port,
                                                         logger: log)
            let inside = "\(target.scheme)://127.0.0.1:\(config.harnessPort)\(target.path)"
            let key = try await sessions.gatewayKey(for: agent) ?? gateway.config.key ?? ""
            env["AGENTD_GATEWAY_URL"] = inside
            env["OPENAI_BASE_URL"] = inside
            env["OPENAI_API_BASE"] = inside
            env["OPENAI_API_KEY"] = key
            env["AGENTD_GATEWAY_KEY"] = key
        }
        env["AGENTD_MODEL"] = agent.model
        defer {
            if let forwarder { Task { await forwarder.close() } }
        }

        let callID = "harness_\(run.id)"
        _ = try await record(run, [NewEvent(kind: .toolCall, runID: run.id, data: .object([
            "id": .string(callID), "name": .string("harness"),
            "arguments": .object(["command": .array(harness.command.map(JSONValue.string))]), "step": .number(1),
        ]))], step: true)

        let process = try await backend.exec(sid, ExecRequest(
            command: .argv(harness.command), env: env, stdin: Array(message.utf8), timeout: toolbox.defaultTimeout))
        let hub = self.hub
        let cap = toolbox.maxOutput * 4
        let (stdout, stderr, status) = try await withTaskCancellationHandler {
            var out: [UInt8] = [], err: [UInt8] = []
            for try await event in process.events {
                switch event {
                case .stdout(let b):
                    if out.count < cap { out.append(contentsOf: b.prefix(cap - out.count)) }
                    hub.delta(sessionID: run.sessionID, runID: run.id, text: String(decoding: b, as: UTF8.self))
                case .stderr(let b):
                    if err.count < cap { err.append(contentsOf: b.prefix(cap - err.count)) }
                case .exit(let s):
                    return (out, err, s)
                }
            }
            try Task.checkCancellation()
            throw SandboxError(.system, "the harness's output ended without an exit status")
        } onCancel: {
            Task { await process.signal(SIGKILL) }
        }
        let (outText, outTruncated) = Toolbox.truncate(stdout, limit: toolbox.maxOutput)
        let (errText, _) = Toolbox.truncate(stderr, limit: toolbox.maxOutput / 4)
        var result: [String: JSONValue] = [
            "id": .string(callID), "name": .string("harness"), "exit_code": .number(Double(status.shellCode)),
            "output": .string(errText.isEmpty ? outText : outText + "\n[stderr]\n" + errText),
            "truncated": .bool(outTruncated),
        ]
        if status.timedOut { result["timed_out"] = .bool(true) }
        var final = [NewEvent(kind: .toolResult, runID: run.id, data: .object(result))]
        if !outText.isEmpty {
            final.append(NewEvent(kind: .assistantMessage, runID: run.id, data: .object([
                "text": .string(outText), "step": .number(1), "tool_calls": .array([]), "harness": .bool(true)])))
        }
        _ = try await record(run, final)
        if status.timedOut { return .failed("the harness command timed out after \(toolbox.defaultTimeout)") }
        guard status.shellCode == 0 else {
            let last = errText.split(separator: "\n").last.map(String.init) ?? ""
            return .failed("the harness command exited with code \(status.shellCode)" + (last.isEmpty ? "" : ": \(last)"))
        }
        return .succeeded
    }
}

/// Host, port and path of the gateway URL (what the harness relay dials).
struct GatewayTarget {
    var scheme: String
    var host: String
    var port: Int
    var path: String

    init?(_ url: String) {
        guard let c = URLComponents(string: url), let scheme = c.scheme, let host = c.host, !host.isEmpty else {
            return nil
        }
        self.scheme = scheme
        self.host = host
        port = c.port ?? (scheme == "https" ? 443 : 80)
        var p = c.path
        while p.hasSuffix("/") { p.removeLast() }
        path = p
    }
}
