import AgentdModel
@testable import AgentdWorker
import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite struct SSEDecoderTests {
    @Test func splitsEventsAcrossChunksAndLineEndings() {
        var d = SSEDecoder()
        var out: [String] = []
        for chunk in ["data: {\"a\"", ":1}\r\n\r\n: comment\n", "data: x\ndata: y\n", "\nevent: e\rdata: z\r\r", "data: [DONE]\n\n"] {
            out += d.feed(Array(chunk.utf8))
        }
        #expect(out == ["{\"a\":1}", "x\ny", "z", "[DONE]"])
        #expect(d.finish().isEmpty)
    }

    @Test func lastEventWithoutBlankLine() {
        var d = SSEDecoder()
        #expect(d.feed(Array("data: tail".utf8)).isEmpty)
        #expect(d.finish() == ["tail"])
    }
}

@Suite struct ChatStreamTests {
    func chunk(_ s: String) throws -> JSONValue {
        try AgentdJSON.decoder.decode(JSONValue.self, from: Data(s.utf8))
    }

    @Test func mergesToolCallDeltasByIndex() throws {
        var acc = ChatStreamAccumulator()
        let chunks = [
            #"{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me "}}]}"#,
            #"{"choices":[{"index":0,"delta":{"content":"check."}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"exec","arguments":""}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"read_file","arguments":"{\"pa"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\":"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"ls\"}"}},{"index":1,"function":{"arguments":"th\":\"a\"}"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            #"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"cost":0.25}}"#,
        ]
        var texts: [String] = []
        for c in chunks { if let t = try acc.add(try chunk(c)) { texts.append(t) } }
        let r = acc.response(cost: nil)
        #expect(texts == ["Let me ", "check."])
        #expect(r.content == "Let me check.")
        #expect(r.toolCalls == [ToolCall(id: "call_a", name: "exec", arguments: "{\"command\":\"ls\"}"),
                                ToolCall(id: "call_b", name: "read_file", arguments: "{\"path\":\"a\"}")])
        #expect(r.finishReason == "tool_calls")
        #expect(r.usage == Usage(promptTokens: 12, completionTokens: 7, costUSD: 0.25))
        #expect(r.model == "m")
    }

    @Test func errorChunkThrows() throws {
        var acc = ChatStreamAccumulator()
        #expect(throws: GatewayError.self) { try acc.add(try chunk(#"{"error":{"message":"overloaded"}}"#)) }
    }

    @Test func decodesNonStreamedAnswerWithCostHeader() throws {
        let body = try chunk(#"""
            {"model":"m","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,
             "tool_calls":[{"id":"","type":"function","function":{"name":"write_file","arguments":"{}"}}]}}],
             "usage":{"prompt_tokens":3,"completion_tokens":4}}
            """#)
        let r = try ChatResponseDecoder.decode(body, cost: 0.5)
        #expect(r.content == "")
        #expect(r.toolCalls == [ToolCall(id: "call_0", name: "write_file", arguments: "{}")])
        #expect(r.usage == Usage(promptTokens: 3, completionTokens: 4, costUSD: 0.5))
    }

    @Test func requestCarriesToolsAndStreamOptions() throws {
        let req = ChatRequest(model: "m", messages: [.system("s"), .user("u"),
                                                     ChatMessage(role: .assistant, content: nil,
                                                                 toolCalls: [ToolCall(id: "c", name: "exec", arguments: "{}")]),
                                                     ChatMessage(role: .tool, content: "out", toolCallID: "c")],
                              tools: Toolbox.offered(agent(tools: ["exec", "read_file"])), stream: true)
        let j = req.json
        #expect(j["stream_options"]?["include_usage"] == .bool(true))
        #expect(j["tools"]?.arrayValue?.count == 2)
        #expect(j["messages"]?.arrayValue?[2]["tool_calls"]?.arrayValue?.first?["function"]?["name"] == .string("exec"))
        #expect(j["messages"]?.arrayValue?[3]["tool_call_id"] == .string("c"))
    }
}

func agent(tools: [String]) -> Agent {
    Agent(id: "agt_x", teamID: "team_x", name: "a", model: "m", systemPrompt: "", tools: tools, sandbox: AgentSandbox(),
          env: [:], secrets: [], harness: nil, limits: AgentLimits(), createdAt: Date(), updatedAt: Date())
}

@Suite struct RetryTests {
    let config = GatewayConfig(url: "http://x", key: nil, backoffBase: .milliseconds(500), backoffMax: .seconds(8))

    @Test func exponentialWithJitterAndCap() {
        #expect(GatewayClient.backoff(attempt: 1, config: config, retryAfter: nil, random: 0) == .milliseconds(250))
        #expect(GatewayClient.backoff(attempt: 1, config: config, retryAfter: nil, random: 1) == .milliseconds(500))
        #expect(GatewayClient.backoff(attempt: 3, config: config, retryAfter: nil, random: 1) == .milliseconds(2000))
        #expect(GatewayClient.backoff(attempt: 10, config: config, retryAfter: nil, random: 1) == .milliseconds(8000))
    }

    @Test func retryAfterIsHonoured() {
        #expect(GatewayClient.backoff(attempt: 1, config: config, retryAfter: 3, random: 0) == .milliseconds(3000))
        #expect(GatewayClient.retryAfter("7") == 7)
        #expect(GatewayClient.retryAfter("soon") == nil)
        let future = GatewayClient.retryAfter("Wed, 21 Oct 2099 07:28:00 GMT") ?? 0
        #expect(future > 1_000_000)
    }

    @Test func whatIsRetried() {
        #expect(GatewayError(.http(429), "").retryable)
        #expect(GatewayError(.http(503), "").retryable)
        #expect(GatewayError(.unreachable, "").retryable)
        #expect(!GatewayError(.http(400), "").retryable)
        #expect(!GatewayError(.http(401), "").retryable)
        #expect(!GatewayError(.http(404), "").retryable)
    }
}
