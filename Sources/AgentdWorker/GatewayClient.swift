import AgentdModel
import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct GatewayError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Could not connect, or the connection broke.
        case unreachable
        /// An HTTP error status.
        case http(Int)
        /// The request or the stream took too long.
        case timeout
        /// The body was not a chat completion.
        case invalidResponse
        /// The model (or the gateway on its behalf) reported an error.
        case model
        /// No gateway is configured.
        case notConfigured
    }

    public var kind: Kind
    public var message: String
    /// Seconds the server asked us to wait (Retry-After).
    public var retryAfter: Double?

    public init(_ kind: Kind, _ message: String, retryAfter: Double? = nil) {
        self.kind = kind
        self.message = message
        self.retryAfter = retryAfter
    }

    /// Connection errors, timeouts, 408, 429 and 5xx are worth another try;
    /// any other 4xx is our request's fault and is not.
    public var retryable: Bool {
        switch kind {
        case .unreachable, .timeout: return true
        case .http(let s): return s == 408 || s == 429 || s >= 500
        case .invalidResponse, .model, .notConfigured: return false
        }
    }

    public var description: String { message }
}

public struct GatewayConfig: Sendable {
    /// The OpenAI-compatible base URL; `/chat/completions` is appended.
    public var url: String
    public var key: String?
    public var requestTimeout: Duration
    public var connectTimeout: Duration
    /// Longest silence inside a streamed answer.
    public var streamIdleTimeout: Duration
    public var maxAttempts: Int
    public var backoffBase: Duration
    public var backoffMax: Duration

    public init(url: String, key: String?, requestTimeout: Duration = .seconds(300), connectTimeout: Duration = .seconds(10),
                streamIdleTimeout: Duration = .seconds(120), maxAttempts: Int = 5, backoffBase: Duration = .milliseconds(500),
                backoffMax: Duration = .seconds(30)) {
        self.url = url
        self.key = key
        self.requestTimeout = requestTimeout
        self.connectTimeout = connectTimeout
        self.streamIdleTimeout = streamIdleTimeout
        self.maxAttempts = maxAttempts
        self.backoffBase = backoffBase
        self.backoffMax = backoffMax
    }

    var endpoint: String {
        var base = url
        while base.hasSuffix("/") { base.removeLast() }
        return base + "/chat/completions"
    }
}

/// What a retry loop needs to know between attempts (for logs and events).
public struct GatewayRetry: Sendable {
    public var attempt: Int
    public var delay: Duration
    public var error: GatewayError
}

/// The OpenAI chat completions API over HTTP (LiteLLM Gateway or any
/// compatible server): streamed and not, with retries.
public final class GatewayClient: Sendable {
    public let config: GatewayConfig
    let http: HTTPClient
    let logger: Logger

    public init(config: GatewayConfig, logger: Logger) {
        self.config = config
        self.logger = logger
        var c = HTTPClient.Configuration()
        c.timeout = .init(connect: .nanoseconds(Int64(config.connectTimeout.components.seconds) * 1_000_000_000
                                                + config.connectTimeout.components.attoseconds / 1_000_000_000),
                          read: .nanoseconds(Int64(config.streamIdleTimeout.components.seconds) * 1_000_000_000))
        c.decompression = .disabled
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: c)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// nil when the gateway answers HTTP at all (any status: it is up), else
    /// why not.  `GET <url>/models`, as every OpenAI-compatible server has.
    public func probe() async -> String? {
        var base = config.url
        while base.hasSuffix("/") { base.removeLast() }
        var r = HTTPClientRequest(url: base + "/models")
        if let key = config.key, !key.isEmpty { r.headers.add(name: "Authorization", value: "Bearer \(key)") }
        do {
            let response = try await http.execute(r, timeout: .seconds(5))
            _ = try? await response.body.collect(upTo: 1 << 20)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// The backoff before attempt `attempt + 1`: exponential with full
    /// jitter, at least what Retry-After asked for, at most `backoffMax`
    /// (unless Retry-After asks for more, which is honoured up to 5 min).
    public static func backoff(attempt: Int, config: GatewayConfig, retryAfter: Double?,
                               random: Double = Double.random(in: 0...1)) -> Duration {
        let base = Double(config.backoffBase.components.seconds) + Double(config.backoffBase.components.attoseconds) / 1e18
        let cap = Double(config.backoffMax.components.seconds)
        let exp = min(cap, base * pow(2.0, Double(max(0, attempt - 1))))
        var delay = exp / 2 + random * exp / 2
        if let r = retryAfter { delay = max(delay, min(r, 300)) }
        return .milliseconds(Int64(delay * 1000))
    }

    /// Parse Retry-After: delta-seconds or an HTTP date.
    static func retryAfter(_ value: String?) -> Double? {
        guard let v = value?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        if let s = Double(v), s.isFinite, s >= 0 { return s }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        if let d = f.date(from: v) { return max(0, d.timeIntervalSinceNow) }
        return nil
    }

    /// One chat completion, retried on transient failures.  `onDelta` gets
    /// streamed text as it comes; `onRetry` hears of each retry.  A streamed
    /// answer that already produced text is not retried (its text was seen).
    public func complete(_ request: ChatRequest, key: String? = nil,
                         onDelta: @escaping @Sendable (String) async -> Void = { _ in },
                         onRetry: @escaping @Sendable (GatewayRetry) async -> Void = { _ in }) async throws -> ChatResponse {
        var attempt = 1
        while true {
            try Task.checkCancellation()
            let sawText = SawText()
            do {
                return try await once(request, key: key ?? config.key, onDelta: { text in
                    sawText.set()
                    await onDelta(text)
                })
            } catch let e as GatewayError {
                guard e.retryable, attempt < config.maxAttempts, !sawText.value else { throw e }
                let delay = Self.backoff(attempt: attempt, config: config, retryAfter: e.retryAfter)
                logger.warning("gateway request failed; retrying", metadata: [
                    "attempt": "\(attempt)", "delay": "\(delay)", "error": "\(e.message)"])
                await onRetry(GatewayRetry(attempt: attempt, delay: delay, error: e))
                try await Task.sleep(for: delay)
                attempt += 1
            }
        }
    }

    func once(_ request: ChatRequest, key: String?, onDelta: @escaping @Sendable (String) async -> Void) async throws
        -> ChatResponse
    {
        var r = HTTPClientRequest(url: config.endpoint)
        r.method = .POST
        r.headers.add(name: "Content-Type", value: "application/json")
        r.headers.add(name: "Accept", value: request.stream ? "text/event-stream" : "application/json")
        r.headers.add(name: "User-Agent", value: "agentd")
        if let key, !key.isEmpty { r.headers.add(name: "Authorization", value: "Bearer \(key)") }
        let body: [UInt8]
        do { body = try AgentdJSON.encode(request.json) } catch {
            throw GatewayError(.invalidResponse, "could not encode the request: \(error)")
        }
        r.body = .bytes(ByteBuffer(bytes: body))

        let timeout = TimeAmount.nanoseconds(Int64(config.requestTimeout.components.seconds) * 1_000_000_000)
        let response: HTTPClientResponse
        do {
            response = try await http.execute(r, timeout: timeout)
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout {
            throw GatewayError(.timeout, "the gateway at \(config.url) did not answer in time")
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw GatewayError(.unreachable, "cannot reach the gateway at \(config.url): \(error)")
        }
        let cost = response.headers.first(name: "x-litellm-response-cost").flatMap(Double.init)
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            let text = (try? await response.body.collect(upTo: 64 << 10)).map { String(buffer: $0) } ?? ""
            var message = "the gateway answered \(status)"
            if let j = try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(text.utf8)),
               let m = j["error"]?["message"]?.stringValue ?? j["detail"]?.stringValue {
                message += ": " + String(m.prefix(2000))
            } else if !text.isEmpty {
                message += ": " + String(text.prefix(2000))
            }
            throw GatewayError(.http(status), message,
                               retryAfter: Self.retryAfter(response.headers.first(name: "retry-after")))
        }
        let contentType = response.headers.first(name: "content-type") ?? ""
        do {
            if request.stream && contentType.contains("text/event-stream") {
                var decoder = SSEDecoder()
                var acc = ChatStreamAccumulator()
                var done = false
                for try await buffer in response.body {
                    let payloads = decoder.feed(buffer.readableBytesView)
                    if decoder.overflowed {
                        throw GatewayError(.invalidResponse, "the gateway streamed an event larger than \(SSEDecoder.maxEvent) bytes")
                    }
                    for payload in payloads where !done {
                        if payload == "[DONE]" { done = true; break }
                        guard let chunk = try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(payload.utf8)) else {
                            throw GatewayError(.invalidResponse, "the gateway streamed a chunk that is not JSON")
                        }
                        if let text = try acc.add(chunk) { await onDelta(text) }
                    }
                }
                for payload in decoder.finish() where !done && payload != "[DONE]" {
                    if let chunk = try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(payload.utf8)),
                       let text = try acc.add(chunk) { await onDelta(text) }
                }
                return acc.response(cost: cost)
            }
            let buffer = try await response.body.collect(upTo: 64 << 20)
            guard let json = try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(buffer.readableBytesView)) else {
                throw GatewayError(.invalidResponse, "the gateway's answer is not JSON")
            }
            let decoded = try ChatResponseDecoder.decode(json, cost: cost)
            if !decoded.content.isEmpty { await onDelta(decoded.content) }
            return decoded
        } catch let e as GatewayError {
            throw e
        } catch is CancellationError {
            throw CancellationError()
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout {
            throw GatewayError(.timeout, "the gateway's answer stalled")
        } catch {
            throw GatewayError(.unreachable, "the connection to the gateway broke: \(error)")
        }
    }
}

private final class SawText: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var value: Bool { flag.load(ordering: .relaxed) }
}
