import AgentdModel
import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// How to reach agentd: flags, then environment, then local defaults (the
/// Unix socket, and the admin key when run as root).
struct Connection: ParsableArguments {
    @Option(help: "agentd base URL, e.g. http://127.0.0.1:8787 (default: $AGENTD_URL, else the Unix socket).")
    var url: String?

    @Option(help: "Unix socket of agentd (default: $AGENTD_SOCKET or /run/agentd/agentd.sock).")
    var socket: String?

    @Option(help: "API key (default: $AGENTD_KEY, else STATE/admin.key when run as root).")
    var key: String?

    @Flag(name: .customLong("json"), help: "Print JSON instead of tables.")
    var jsonFlag = false

    var json: Bool { jsonFlag || ProcessInfo.processInfo.environment["AGENTCTL_JSON"] == "1" }

    func client() throws -> APIClient {
        let env = ProcessInfo.processInfo.environment
        var base: String
        if let url = url ?? env["AGENTD_URL"] {
            base = url.hasSuffix("/") ? String(url.dropLast()) : url
            guard base.hasPrefix("http://") || base.hasPrefix("https://") else {
                throw CLIError("--url must start with http:// or https://")
            }
        } else {
            let path = socket ?? env["AGENTD_SOCKET"] ?? "/run/agentd/agentd.sock"
            guard let encoded = path.addingPercentEncoding(withAllowedCharacters: .urlHostAllowed) else {
                throw CLIError("bad socket path \(path)")
            }
            base = "http+unix://" + encoded
        }
        var token = key ?? env["AGENTD_KEY"]
        if token == nil {
            let state = env["AGENTD_STATE_DIR"] ?? "/var/lib/agentd"
            if let k = try? String(contentsOfFile: state + "/admin.key", encoding: .utf8) {
                token = k.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        guard let token, !token.isEmpty else {
            throw CLIError("no API key: pass --key, set AGENTD_KEY, or run as root next to agentd's admin.key")
        }
        return APIClient(base: base, key: token)
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    let code: Int32
    init(_ s: String, code: Int32 = 1) {
        description = s
        self.code = code
    }
}

/// A small client of the agentd API over AsyncHTTPClient.
struct APIClient: Sendable {
    let base: String
    let key: String
    let http = HTTPClient.shared

    func request(_ method: HTTPMethod, _ path: String, query: [String: String?] = [:],
                 headers: [(String, String)] = []) -> HTTPClientRequest {
        var url = base + path
        let q = query.compactMap { k, v in
            v.map { "\(k)=\($0.addingPercentEncoding(withAllowedCharacters: .urlQueryValueAllowed) ?? $0)" }
        }.sorted()
        if !q.isEmpty { url += "?" + q.joined(separator: "&") }
        var r = HTTPClientRequest(url: url)
        r.method = method
        r.headers.add(name: "Authorization", value: "Bearer \(key)")
        r.headers.add(name: "User-Agent", value: "agentctl/\(AgentctlVersion.string)")
        for (k, v) in headers { r.headers.add(name: k, value: v) }
        return r
    }

    func execute(_ r: HTTPClientRequest, timeout: TimeAmount = .hours(24)) async throws -> HTTPClientResponse {
        do {
            return try await http.execute(r, timeout: timeout)
        } catch {
            throw CLIError("cannot reach agentd at \(base): \(error)")
        }
    }

    /// Send JSON (or nothing), expect JSON (or no content) back.
    func call<Out: Decodable>(_ method: HTTPMethod, _ path: String, query: [String: String?] = [:],
                              body: (any Encodable)? = nil, as: Out.Type) async throws -> Out {
        let data = try await raw(method, path, query: query, body: body)
        do {
            return try AgentdJSON.decoder.decode(Out.self, from: data)
        } catch {
            throw CLIError("unexpected answer from agentd: \(String(decoding: data.prefix(200), as: UTF8.self))")
        }
    }

    func raw(_ method: HTTPMethod, _ path: String, query: [String: String?] = [:], body: (any Encodable)? = nil)
        async throws -> Data
    {
        var r = request(method, path, query: query)
        if let body {
            r.headers.add(name: "Content-Type", value: "application/json")
            r.body = .bytes(ByteBuffer(bytes: try AgentdJSON.encoder.encode(body)))
        }
        let response = try await execute(r)
        let bytes = try await response.body.collect(upTo: 256 << 20)
        let data = Data(bytes.readableBytesView)
        try check(response.status, data)
        return data
    }

    func check(_ status: HTTPResponseStatus, _ data: Data) throws {
        guard status.code >= 400 else { return }
        if let e = try? AgentdJSON.decoder.decode(ErrorBody.self, from: data) {
            var msg = e.error.message
            if let f = e.error.field, !msg.contains(f) { msg += " (field \(f))" }
            throw CLIError(msg)
        }
        throw CLIError("agentd answered \(status.code) \(status.reasonPhrase)")
    }
}

struct Empty: Codable {}

/// Server-Sent Events from a streaming response body.
struct SSEParser {
    var buffer: [UInt8] = []

    struct Message {
        var id: String?
        var event: String
        var data: String
    }

    /// Feed bytes, get complete messages.
    mutating func feed(_ bytes: ByteBuffer) -> [Message] {
        buffer += bytes.readableBytesView
        var out: [Message] = []
        while let end = findBlankLine() {
            let block = String(decoding: buffer[..<end.start], as: UTF8.self)
            buffer.removeFirst(end.next)
            var id: String?, event = "message", data: [String] = []
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix(":") { continue }
                let parts = line.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                let field = String(parts[0])
                var value = parts.count > 1 ? String(parts[1]) : ""
                if value.hasPrefix(" ") { value.removeFirst() }
                switch field {
                case "id": id = value
                case "event": event = value
                case "data": data.append(value)
                default: break
                }
            }
            if !data.isEmpty { out.append(Message(id: id, event: event, data: data.joined(separator: "\n"))) }
        }
        return out
    }

    private func findBlankLine() -> (start: Int, next: Int)? {
        var i = 0
        while i + 1 < buffer.count {
            if buffer[i] == 0x0A && buffer[i + 1] == 0x0A { return (i, i + 2) }
            i += 1
        }
        return nil
    }
}
