import AgentdCore
import AgentdModel
import HTTPTypes
import Hummingbird
import NIOCore

/// GET /v1/sessions/{id}/events: every event of the session as it is
/// committed, each with `id: SEQ`.  A reconnecting client sends
/// Last-Event-ID (or ?after=SEQ) and gets everything after it from the
/// store first, then the live stream; gaps in the live stream (a slow client
/// whose buffer overflowed) are read back from the store, so nothing is lost
/// across reconnects or daemon restarts.  Assistant text deltas are live
/// only (no id); the complete message follows as a persisted event.
enum SSE {
    static let headers: HTTPFields = [
        .contentType: "text/event-stream", .cacheControl: "no-cache",
        HTTPField.Name("X-Accel-Buffering")!: "no",
    ]
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let keepalive: Duration = .seconds(15)
    static let replayPage = 64
    static let replayPageBytes = 32 << 10

    static func frame(event: String, id: Int64?, data: [String: JSONValue]) -> ByteBuffer {
        frame(event: event, id: id, json: JSONValue.object(data).compactString)
    }

    static func frame(event: String, id: Int64?, json: String) -> ByteBuffer {
        var s = ""
        if let id { s += "id: \(id)\n" }
        s += "event: \(event)\ndata: \(json)\n\n"
        return ByteBuffer(string: s)
    }

    static func frame(_ e: Event) -> ByteBuffer {
        frame(event: e.kind.rawValue, id: e.seq, json: AgentdJSON.string(e))
    }

    private enum Item: Sendable {
        case message(HubMessage)
        case ping
    }

    static func stream(services s: Services, request: Request, context: AgentdContext) async throws -> Response {
        let caller = try context.caller()
        let session = try await s.sessions.get(caller, id: try API.param(context, "id"))
        var start: Int64 = 0
        // `after` is checked even when Last-Event-ID (which wins) is sent.
        let after = try HTTP.intQuery(request, "after")
        if let after { try Rules.seq.check(after, field: "after") }
        if let header = request.headers[lastEventID] {
            let text = header.trimmingSpaces
            guard (1...18).contains(text.utf8.count), text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let v = Int64(text) else {
                throw AgentdError.invalid("Last-Event-ID must be an event seq", field: "Last-Event-ID")
            }
            start = v
        } else if let after {
            start = Int64(after)
        }
        // An id beyond the last event (a client that kept an id across a
        // restore from backup, or made one up) resumes from the next event
        // written, instead of waiting for a seq that may never come.
        start = min(start, session.lastSeq)
        // Subscribe before reading the backlog, so nothing falls in between.
        let live = s.hub.subscribe(sessionID: session.id)
        let store = s.store
        let sessionID = session.id
        let startSeq = start
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            var sent = startSeq
            func backfill(upTo limit: Int64?) async throws {
                while true {
                    // Small pages: with thousands of streams replaying at
                    // once, what each holds is a page plus its socket's
                    // buffer (the writer waits while the client is slow).
                    let events = try await store.events(sessionID: sessionID, after: sent, limit: replayPage,
                                                        maxBytes: replayPageBytes)
                    for e in events {
                        if let limit, e.seq > limit { return }
                        try await writer.write(frame(e))
                        sent = e.seq
                    }
                    if events.isEmpty { return }
                }
            }
            try await writer.write(ByteBuffer(string: ": agentd events of \(sessionID)\nretry: 1000\n\n"))
            try await backfill(upTo: nil)

            // Bounded: a client slower than its session drops the oldest
            // items here; a dropped event is a gap, read back from the store.
            let (items, feed) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingNewest(256))
            let pump = Task {
                for await m in live { feed.yield(.message(m)) }
                feed.finish()
            }
            let pinger = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: keepalive)
                    feed.yield(.ping)
                }
            }
            defer {
                pump.cancel()
                pinger.cancel()
            }
            for await item in items {
                switch item {
                case .ping:
                    // A stream outlives the request's auth check: a revoked
                    // key's streams end at the next keepalive.
                    guard try await s.auth.stillValid(caller) else {
                        try await writer.write(frame(event: "error", id: nil, data: [
                            "code": .string("unauthorized"), "message": .string("the API key was revoked"),
                        ]))
                        try await writer.finish(nil)
                        return
                    }
                    try await writer.write(ByteBuffer(string: ": keepalive\n\n"))
                case .message(.event(let e)):
                    if e.seq <= sent { continue }
                    if e.seq > sent + 1 { try await backfill(upTo: e.seq - 1) }
                    try await writer.write(frame(e))
                    sent = e.seq
                case .message(.delta(_, let runID, let text)):
                    try await writer.write(frame(event: EventKind.assistantDelta.rawValue, id: nil,
                                                 data: ["run_id": .string(runID), "text": .string(text)]))
                }
            }
            try await writer.finish(nil)
        })
    }
}
