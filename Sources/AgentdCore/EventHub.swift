import AgentdModel
import Synchronization

/// What live subscribers of a session receive: persisted events (in seq
/// order, after they are committed) and ephemeral assistant text deltas.
public enum HubMessage: Sendable, Equatable {
    case event(Event)
    case delta(sessionID: String, runID: String, text: String)
}

/// In-memory fan-out of a session's new events to its SSE subscribers.  A
/// subscriber that falls behind loses the oldest messages from its buffer;
/// the SSE writer notices the gap in seq and reads it back from the store.
public final class EventHub: Sendable {
    private struct State {
        var next = 0
        var subscribers: [String: [Int: AsyncStream<HubMessage>.Continuation]] = [:]
    }

    private let state = Mutex(State())
    public static let buffer = 4096

    public init() {}

    public func subscribe(sessionID: String) -> AsyncStream<HubMessage> {
        let (stream, continuation) = AsyncStream<HubMessage>.makeStream(bufferingPolicy: .bufferingNewest(Self.buffer))
        let id = state.withLock { s -> Int in
            s.next += 1
            s.subscribers[sessionID, default: [:]][s.next] = continuation
            return s.next
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { s in
                s.subscribers[sessionID]?[id] = nil
                if s.subscribers[sessionID]?.isEmpty == true { s.subscribers[sessionID] = nil }
            }
        }
        return stream
    }

    public func publish(_ events: [Event]) {
        guard let sessionID = events.first?.sessionID else { return }
        let subs = state.withLock { Array(($0.subscribers[sessionID] ?? [:]).values) }
        for c in subs {
            for e in events { c.yield(.event(e)) }
        }
    }

    public func delta(sessionID: String, runID: String, text: String) {
        let subs = state.withLock { Array(($0.subscribers[sessionID] ?? [:]).values) }
        for c in subs { c.yield(.delta(sessionID: sessionID, runID: runID, text: text)) }
    }

    /// End every subscription of a session (it was deleted).
    public func close(sessionID: String) {
        let subs = state.withLock { s -> [AsyncStream<HubMessage>.Continuation] in
            let all = Array((s.subscribers[sessionID] ?? [:]).values)
            s.subscribers[sessionID] = nil
            return all
        }
        subs.forEach { $0.finish() }
    }

    /// Someone is watching this session now (the worker streams from the
    /// model only then).
    public func hasSubscribers(sessionID: String) -> Bool {
        state.withLock { !($0.subscribers[sessionID]?.isEmpty ?? true) }
    }

    public var subscriberCount: Int { state.withLock { $0.subscribers.values.reduce(0) { $0 + $1.count } } }
}
