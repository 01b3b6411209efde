import AgentdModel

/// A function call the model asked for.  `arguments` is the JSON text the
/// model produced, kept verbatim (it may be invalid; the tool says so).
public struct ToolCall: Sendable, Equatable {
    public var id: String
    public var name: String
    public var arguments: String

    public init(id: String, name: String, arguments: String) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }

    var json: JSONValue {
        .object(["id": .string(id), "type": .string("function"),
                 "function": .object(["name": .string(name), "arguments": .string(arguments)])])
    }
}

/// One message of the OpenAI chat completions format.
public struct ChatMessage: Sendable, Equatable {
    public enum Role: String, Sendable { case system, user, assistant, tool }

    public var role: Role
    public var content: String?
    public var toolCalls: [ToolCall]
    public var toolCallID: String?

    public init(role: Role, content: String?, toolCalls: [ToolCall] = [], toolCallID: String? = nil) {
        self.role = role
        self.content = content
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
    }

    public static func system(_ s: String) -> ChatMessage { ChatMessage(role: .system, content: s) }
    public static func user(_ s: String) -> ChatMessage { ChatMessage(role: .user, content: s) }

    var json: JSONValue {
        var o: [String: JSONValue] = ["role": .string(role.rawValue), "content": content.map(JSONValue.string) ?? .null]
        if !toolCalls.isEmpty { o["tool_calls"] = .array(toolCalls.map(\.json)) }
        if let toolCallID { o["tool_call_id"] = .string(toolCallID) }
        return .object(o)
    }

    /// Characters, as a cheap stand-in for tokens when deciding to compact.
    var size: Int {
        (content?.count ?? 0) + toolCalls.reduce(0) { $0 + $1.name.count + $1.arguments.count + 16 } + 8
    }
}

/// A tool offered to the model: a name, what it does, a JSON Schema.
public struct ToolDefinition: Sendable, Equatable {
    public var name: String
    public var description: String
    public var parameters: JSONValue

    var json: JSONValue {
        .object(["type": .string("function"),
                 "function": .object(["name": .string(name), "description": .string(description),
                                      "parameters": parameters])])
    }
}

public struct ChatRequest: Sendable {
    public var model: String
    public var messages: [ChatMessage]
    public var tools: [ToolDefinition]
    public var stream: Bool
    public var maxTokens: Int?

    public init(model: String, messages: [ChatMessage], tools: [ToolDefinition], stream: Bool, maxTokens: Int? = nil) {
        self.model = model
        self.messages = messages
        self.tools = tools
        self.stream = stream
        self.maxTokens = maxTokens
    }

    var json: JSONValue {
        var o: [String: JSONValue] = ["model": .string(model), "messages": .array(messages.map(\.json)),
                                      "stream": .bool(stream)]
        if !tools.isEmpty {
            o["tools"] = .array(tools.map(\.json))
            o["tool_choice"] = .string("auto")
        }
        if stream { o["stream_options"] = .object(["include_usage": .bool(true)]) }
        if let maxTokens { o["max_tokens"] = .number(Double(maxTokens)) }
        return .object(o)
    }
}

/// The model's answer to one request.
public struct ChatResponse: Sendable, Equatable {
    public var content: String
    public var toolCalls: [ToolCall]
    public var finishReason: String?
    /// Tokens from the body's `usage`; cost from LiteLLM's
    /// `x-litellm-response-cost` header when the gateway sends one.
    public var usage: Usage
    public var model: String?
    public var streamed: Bool
}

/// Builds a `ChatResponse` from streamed chunks: text deltas appended,
/// tool-call deltas merged by their `index` (the id and name come in the
/// first fragment, the arguments in pieces).
struct ChatStreamAccumulator {
    private(set) var content = ""
    private var calls: [Int: ToolCall] = [:]
    private(set) var finishReason: String?
    private(set) var usage: Usage?
    private(set) var model: String?
    /// What a streamed answer may accumulate: the gateway is not trusted
    /// with the daemon's memory.
    private var bytes = 0
    static let maxToolCalls = 256
    static let maxAnswerBytes = 32 << 20

    /// Merge one chunk; returns the text it added, if any.
    mutating func add(_ chunk: JSONValue) throws(GatewayError) -> String? {
        if let e = chunk["error"] {
            throw GatewayError(.model, "the gateway reported an error mid-stream: "
                               + (e["message"]?.stringValue ?? e.compactString))
        }
        if let m = chunk["model"]?.stringValue { model = m }
        if let u = chunk["usage"], u != .null { usage = ChatResponseDecoder.usage(u) }
        guard let choice = chunk["choices"]?.arrayValue?.first else { return nil }
        if let f = choice["finish_reason"]?.stringValue { finishReason = f }
        guard let delta = choice["delta"] else { return nil }
        for (n, tc) in (delta["tool_calls"]?.arrayValue ?? []).enumerated() {
            let index = tc["index"]?.intValue ?? n
            guard (0..<Self.maxToolCalls).contains(index) else {
                throw GatewayError(.invalidResponse, "the model's answer has a tool call index out of range (\(index))")
            }
            var call = calls[index] ?? ToolCall(id: "", name: "", arguments: "")
            if let id = tc["id"]?.stringValue, !id.isEmpty { call.id = id }
            if let name = tc["function"]?["name"]?.stringValue { call.name += name; bytes += name.utf8.count }
            if let args = tc["function"]?["arguments"]?.stringValue { call.arguments += args; bytes += args.utf8.count }
            calls[index] = call
        }
        var added: String?
        if let text = delta["content"]?.stringValue, !text.isEmpty {
            content += text
            bytes += text.utf8.count
            added = text
        }
        guard bytes <= Self.maxAnswerBytes else {
            throw GatewayError(.invalidResponse, "the model's answer is larger than \(Self.maxAnswerBytes) bytes")
        }
        return added
    }

    func response(cost: Double?) -> ChatResponse {
        var u = usage ?? Usage(promptTokens: 0, completionTokens: 0, costUSD: 0)
        if let cost, cost > 0 { u.costUSD = ChatResponseDecoder.cost(cost) }
        let ordered = calls.keys.sorted().compactMap { calls[$0] }
        return ChatResponse(content: content, toolCalls: ChatResponseDecoder.named(ordered), finishReason: finishReason,
                            usage: u, model: model, streamed: true)
    }
}

enum ChatResponseDecoder {
    static func usage(_ u: JSONValue) -> Usage {
        // `usage.cost`: LiteLLM with include_cost_in_streaming_usage (and
        // OpenRouter) price streamed calls there, as no header can.
        Usage(promptTokens: tokens(u["prompt_tokens"]), completionTokens: tokens(u["completion_tokens"]),
              costUSD: cost(u["cost"]?.doubleValue))
    }

    /// The gateway is not trusted with our arithmetic: counts and costs are
    /// summed per run and per session, so absurd ones (negative, NaN, 1e300)
    /// are taken as 0 and large ones are capped far below any overflow.
    static func tokens(_ v: JSONValue?) -> Int {
        guard let n = v?.doubleValue else { return 0 }
        return Checked.int(n, in: 0...(1 << 40)) ?? 0
    }

    static func cost(_ v: Double?) -> Double {
        guard let v, v.isFinite, v > 0 else { return 0 }
        return min(v, 1e9)
    }

    /// Calls without an id get one (some servers omit it); the model needs
    /// ids to match results to calls.
    static func named(_ calls: [ToolCall]) -> [ToolCall] {
        calls.enumerated().map { n, c in
            var c = c
            if c.id.isEmpty { c.id = "call_\(n)" }
            return c
        }
    }

    static func decode(_ body: JSONValue, cost: Double?) throws(GatewayError) -> ChatResponse {
        if let e = body["error"] {
            throw GatewayError(.model, "the gateway answered with an error: " + (e["message"]?.stringValue ?? e.compactString))
        }
        guard let choice = body["choices"]?.arrayValue?.first, let message = choice["message"] else {
            throw GatewayError(.invalidResponse, "the gateway's answer has no choices[0].message")
        }
        var calls: [ToolCall] = []
        for tc in message["tool_calls"]?.arrayValue ?? [] {
            calls.append(ToolCall(id: tc["id"]?.stringValue ?? "", name: tc["function"]?["name"]?.stringValue ?? "",
                                  arguments: tc["function"]?["arguments"]?.stringValue ?? ""))
        }
        var u = body["usage"].map(usage) ?? Usage(promptTokens: 0, completionTokens: 0, costUSD: 0)
        if let cost { u.costUSD = ChatResponseDecoder.cost(cost) }
        return ChatResponse(content: message["content"]?.stringValue ?? "", toolCalls: named(calls),
                            finishReason: choice["finish_reason"]?.stringValue, usage: u,
                            model: body["model"]?.stringValue, streamed: false)
    }
}
