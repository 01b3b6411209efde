import AgentdModel

/// How a session's persisted events become the model's messages, and the
/// event payloads the worker writes.  The events are the only state of a
/// run: a worker that dies anywhere leaves a transcript from which the next
/// one rebuilds exactly what the model had seen.
///
/// Payloads (`data` of each event kind):
/// - `user_message`: `{text}`
/// - `assistant_message`: `{text, step, tool_calls: [id], usage?}`
/// - `tool_call`: `{id, name, arguments, step}`; arguments are the parsed JSON
///   object when the model produced valid JSON, else its raw string
/// - `tool_result`: `{id, name, output, truncated, exit_code?, error?, interrupted?}`
/// - `compaction`: `{summary, through_seq, messages}`
enum Transcript {
    /// The session's events in conversation order, up to the run whose user
    /// message is `upTo`: each run's events follow its user message, even
    /// when a later message was posted (and so persisted) while it ran.
    static func ordered(_ events: [Event], upTo: Int64) -> [Event] {
        var runStart: [String: Int64] = [:]
        for e in events where e.kind == .userMessage {
            if let r = e.runID { runStart[r] = e.seq }
        }
        func key(_ e: Event) -> Int64 { e.runID.flatMap { runStart[$0] } ?? e.seq }
        return events.filter { key($0) <= upTo }
            .sorted { (key($0), $0.seq) < (key($1), $1.seq) }
    }

    /// The chat messages for the model: the system prompt, the latest
    /// compaction's summary (if any), then everything after it.  `events`
    /// are in conversation order (`ordered`).
    static func messages(system: String, events: [Event]) -> [ChatMessage] {
        var out: [ChatMessage] = []
        if !system.isEmpty { out.append(.system(system)) }
        var start = 0
        if let ci = events.lastIndex(where: { $0.kind == .compaction }) {
            let c = events[ci]
            let through = Int64(c.data["through_seq"]?.intValue ?? 0)
            start = (events.firstIndex(where: { $0.seq == through }) ?? ci) + 1
            out.append(.user("[Summary of the earlier part of this conversation, which was compacted]\n"
                             + (c.data["summary"]?.stringValue ?? "")))
            out.append(ChatMessage(role: .assistant, content: "Understood; I will continue from that summary."))
        }
        for e in events[start...] {
            switch e.kind {
            case .userMessage:
                out.append(.user(e.data["text"]?.stringValue ?? ""))
            case .assistantMessage:
                let text = e.data["text"]?.stringValue ?? ""
                out.append(ChatMessage(role: .assistant, content: text.isEmpty ? nil : text))
            case .toolCall:
                let call = toolCall(e.data)
                if var last = out.last, last.role == .assistant, openForCalls(out) {
                    last.toolCalls.append(call)
                    out[out.count - 1] = last
                } else {
                    out.append(ChatMessage(role: .assistant, content: nil, toolCalls: [call]))
                }
            case .toolResult:
                out.append(ChatMessage(role: .tool, content: e.data["output"]?.stringValue ?? "",
                                       toolCallID: e.data["id"]?.stringValue ?? ""))
            default:
                continue
            }
        }
        return out
    }

    /// An assistant message takes further tool calls until a tool result
    /// follows it.
    private static func openForCalls(_ messages: [ChatMessage]) -> Bool {
        messages.last?.role == .assistant
    }

    static func toolCall(_ data: JSONValue) -> ToolCall {
        let args: String
        switch data["arguments"] {
        case .string(let s)?: args = s
        case let v?: args = v.compactString
        case nil: args = "{}"
        }
        return ToolCall(id: data["id"]?.stringValue ?? "", name: data["name"]?.stringValue ?? "", arguments: args)
    }

    static func toolCallData(_ c: ToolCall, step: Int) -> JSONValue {
        let parsed = try? AgentdJSON.decoder.decode(JSONValue.self, from: Array(c.arguments.utf8).data)
        let args: JSONValue = parsed.flatMap { $0.objectValue != nil ? $0 : nil } ?? .string(c.arguments)
        return .object(["id": .string(c.id), "name": .string(c.name), "arguments": args, "step": .number(Double(step))])
    }

    /// Tool calls of `runID` that have no result: they were running (or
    /// about to) when the previous worker died.
    static func unanswered(_ events: [Event], runID: String) -> [Event] {
        var answered = Set<String>()
        for e in events where e.kind == .toolResult && e.runID == runID {
            if let id = e.data["id"]?.stringValue { answered.insert(id) }
        }
        return events.filter { $0.kind == .toolCall && $0.runID == runID && !answered.contains($0.data["id"]?.stringValue ?? "") }
    }

    /// The run already has its final answer: an assistant message without
    /// tool calls after which nothing else of the run was recorded.
    static func finalAnswer(_ events: [Event], runID: String) -> Event? {
        guard let last = events.last(where: { $0.runID == runID && $0.kind != .runStatus && $0.kind != .error }),
              last.kind == .assistantMessage,
              (last.data["tool_calls"]?.arrayValue ?? []).isEmpty else { return nil }
        return last
    }

    /// Index of the last event the latest compaction covers (-1: none).
    static func compactedThrough(_ events: [Event]) -> Int {
        guard let ci = events.lastIndex(where: { $0.kind == .compaction }) else { return -1 }
        let through = Int64(events[ci].data["through_seq"]?.intValue ?? 0)
        return events.firstIndex(where: { $0.seq == through }) ?? -1
    }

    /// Plain text of events for the summarizer, tool output shortened.
    static func render(_ events: ArraySlice<Event>) -> String {
        var out = ""
        for e in events {
            switch e.kind {
            case .userMessage: out += "USER: " + (e.data["text"]?.stringValue ?? "") + "\n\n"
            case .assistantMessage:
                let t = e.data["text"]?.stringValue ?? ""
                if !t.isEmpty { out += "ASSISTANT: " + t + "\n\n" }
            case .toolCall:
                let c = toolCall(e.data)
                out += "TOOL CALL \(c.name) \(c.arguments.prefix(2000))\n\n"
            case .toolResult:
                let o = e.data["output"]?.stringValue ?? ""
                out += "TOOL RESULT: " + (o.count > 2000 ? String(o.prefix(1000)) + "\n[...]\n" + String(o.suffix(1000)) : o)
                    + "\n\n"
            default: continue
            }
        }
        return out
    }

    /// Where ordered `events` may be cut for compaction: just before a user
    /// or assistant message (never between a call and its result), keeping
    /// the newest `keep` such boundaries.  Returns the index of the last
    /// event to summarize.
    static func compactionCut(_ events: [Event], keepLast keep: Int) -> Int? {
        let start = compactedThrough(events) + 1
        let boundaries = events.indices.filter {
            $0 > start && (events[$0].kind == .userMessage || events[$0].kind == .assistantMessage)
        }
        guard boundaries.count > keep else { return nil }
        return boundaries[boundaries.count - keep] - 1
    }
}

extension Array where Element == UInt8 {
    var data: Data { Data(self) }
}

import Foundation
#if canImport(Glibc)
import Glibc
#endif
