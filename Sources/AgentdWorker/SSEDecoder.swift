/// Incremental decoder of a `text/event-stream` body (the WHATWG rules that
/// matter for chat completion streams): lines end in LF, CRLF or CR; `data:`
/// lines of one event are joined with LF; a blank line ends the event;
/// comments (`:`) and other fields are ignored.  Feed it bytes as they come.
struct SSEDecoder {
    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var lastWasCR = false
    /// An event (its lines) larger than `maxEvent`: the rest of it is
    /// dropped and the caller should give up on the stream.
    private(set) var overflowed = false
    static let maxEvent = 32 << 20

    /// Returns the `data` payloads of the events completed by `bytes`.
    mutating func feed(_ bytes: some Sequence<UInt8>) -> [String] {
        var out: [String] = []
        for b in bytes {
            if lastWasCR {
                lastWasCR = false
                if b == UInt8(ascii: "\n") { continue }
            }
            if b == UInt8(ascii: "\n") || b == UInt8(ascii: "\r") {
                lastWasCR = b == UInt8(ascii: "\r")
                if let e = endLine() { out.append(e) }
            } else if line.count + data.count < Self.maxEvent {
                line.append(b)
            } else {
                overflowed = true
            }
        }
        return out
    }

    /// The end of the body: a last event without its blank line still counts.
    mutating func finish() -> [String] {
        var out: [String] = []
        if !line.isEmpty, let e = endLine() { out.append(e) }
        if hasData { out.append(String(decoding: data, as: UTF8.self)) }
        hasData = false
        data = []
        return out
    }

    private mutating func endLine() -> String? {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            guard hasData else { return nil }
            let s = String(decoding: data, as: UTF8.self)
            data.removeAll(keepingCapacity: true)
            hasData = false
            return s
        }
        if line.first == UInt8(ascii: ":") { return nil }
        let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
        guard line[..<colon].elementsEqual("data".utf8) else { return nil }
        var value = line[colon...].dropFirst()
        if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        if hasData { data.append(UInt8(ascii: "\n")) }
        data.append(contentsOf: value)
        hasData = true
        return nil
    }
}
