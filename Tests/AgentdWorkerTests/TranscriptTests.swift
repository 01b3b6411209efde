import AgentdModel
@testable import AgentdWorker
import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite struct TranscriptTests {
    func ev(_ seq: Int64, _ run: String?, _ kind: EventKind, _ data: JSONValue) -> Event {
        Event(seq: seq, sessionID: "ses_x", runID: run, kind: kind, createdAt: Date(), data: data)
    }

    func call(_ id: String) -> JSONValue {
        .object(["id": .string(id), "name": .string("exec"), "arguments": .object(["command": .string("ls")])])
    }

    /// A message posted while run 1 was working sorts after run 1's events,
    /// and is left out of run 1's own requests.
    @Test func runsKeepTheirOrder() {
        let events = [
            ev(1, "run_1", .userMessage, .object(["text": .string("one")])),
            ev(2, "run_1", .assistantMessage, .object(["text": .string(""), "tool_calls": .array([.string("c1")])])),
            ev(3, "run_1", .toolCall, call("c1")),
            ev(4, "run_2", .userMessage, .object(["text": .string("two")])),
            ev(5, "run_1", .toolResult, .object(["id": .string("c1"), "output": .string("a b")])),
            ev(6, "run_1", .assistantMessage, .object(["text": .string("done one")])),
            ev(7, nil, .sandboxStatus, .object([:])),
        ]
        let forRun1 = Transcript.messages(system: "sys", events: Transcript.ordered(events, upTo: 1))
        #expect(forRun1.map(\.role) == [.system, .user, .assistant, .tool, .assistant])
        #expect(forRun1[2].toolCalls.map(\.id) == ["c1"])
        #expect(forRun1[2].content == nil)
        #expect(forRun1[2].toolCalls.first?.arguments == #"{"command":"ls"}"#)
        let forRun2 = Transcript.messages(system: "sys", events: Transcript.ordered(events, upTo: 4))
        #expect(forRun2.map(\.role) == [.system, .user, .assistant, .tool, .assistant, .user])
        #expect(forRun2.last?.content == "two")
    }

    @Test func unansweredAndFinal() {
        let events = [
            ev(1, "run_1", .userMessage, .object(["text": .string("x")])),
            ev(2, "run_1", .assistantMessage, .object(["text": .string(""), "tool_calls": .array([.string("a"), .string("b")])])),
            ev(3, "run_1", .toolCall, call("a")),
            ev(4, "run_1", .toolCall, call("b")),
            ev(5, "run_1", .toolResult, .object(["id": .string("a"), "output": .string("")])),
        ]
        #expect(Transcript.unanswered(events, runID: "run_1").map(\.seq) == [4])
        #expect(Transcript.finalAnswer(events, runID: "run_1") == nil)
        let done = events + [ev(6, "run_1", .toolResult, .object(["id": .string("b")])),
                             ev(7, "run_1", .assistantMessage, .object(["text": .string("ok"), "tool_calls": .array([])])),
                             ev(8, "run_1", .runStatus, .object([:]))]
        #expect(Transcript.finalAnswer(done, runID: "run_1")?.seq == 7)
    }

    @Test func compactionReplacesWhatItCovers() {
        var events = [
            ev(1, "run_1", .userMessage, .object(["text": .string("first")])),
            ev(2, "run_1", .assistantMessage, .object(["text": .string("a1")])),
            ev(3, "run_2", .userMessage, .object(["text": .string("second")])),
            ev(4, "run_2", .assistantMessage, .object(["text": .string("a2")])),
            ev(5, "run_3", .userMessage, .object(["text": .string("third")])),
        ]
        let cut = Transcript.compactionCut(events, keepLast: 2)
        #expect(cut == 2)  // summarize events 1...3; keep a2 and "third"
        events.append(ev(6, "run_3", .compaction, .object(["summary": .string("S"), "through_seq": .number(3)])))
        let ordered = Transcript.ordered(events, upTo: 5)
        let m = Transcript.messages(system: "", events: ordered)
        #expect(m.map(\.role) == [.user, .assistant, .assistant, .user])
        #expect(m[0].content?.hasSuffix("S") == true)
        #expect(m[3].content == "third")
        #expect(Transcript.compactedThrough(ordered) == 2)
    }

    @Test func truncationKeepsHeadAndTail() {
        let bytes = Array(String(repeating: "a", count: 100).utf8) + Array(String(repeating: "z", count: 100).utf8)
        let (text, truncated) = Toolbox.truncate(bytes, limit: 30)
        #expect(truncated)
        #expect(text.hasPrefix(String(repeating: "a", count: 20)))
        #expect(text.hasSuffix(String(repeating: "z", count: 10)))
        #expect(text.contains("170 of 200 bytes omitted"))
    }
}
