import AgentdModel
import Foundation

enum AgentctlVersion {
    static let string = "0.1.0"
}

extension CharacterSet {
    /// Query values: everything a URL query allows except the separators.
    static let urlQueryValueAllowed: CharacterSet = {
        var s = CharacterSet.urlQueryAllowed
        s.remove(charactersIn: "&=+;#")
        return s
    }()
}

enum Out {
    static func line(_ s: String) {
        write(1, Array((s + "\n").utf8))
    }

    static func raw(_ bytes: [UInt8], error: Bool = false) {
        write(error ? 2 : 1, bytes)
    }

    static func err(_ s: String) {
        write(2, Array(s.utf8))
    }

    /// write(2) until done; a closed pipe (`agentctl ... | head`) ends the
    /// program quietly instead of crashing it.
    static func write(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EPIPE { Foundation.exit(0) }
            if n <= 0 { return }
            off += n
        }
    }

    static func json<T: Encodable>(_ value: T) {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { d, enc in
            var c = enc.singleValueContainer()
            try c.encode(Timestamp.format(d))
        }
        if let data = try? e.encode(value) { line(String(decoding: data, as: UTF8.self)) }
    }

    /// Columns padded to the widest cell.
    static func table(_ headers: [String], _ rows: [[String]]) {
        var widths = headers.map(\.count)
        for r in rows {
            for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) }
        }
        func fmt(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        line(fmt(headers))
        for r in rows { line(fmt(r)) }
    }

    static func date(_ d: Date?) -> String {
        guard let d else { return "-" }
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: d)
    }

    static func bytes(_ b: UInt64?) -> String {
        guard let b else { return "-" }
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(b)
        var i = 0
        while v >= 1024 && i < units.count - 1 {
            v /= 1024
            i += 1
        }
        return i == 0 ? "\(b) B" : String(format: "%.1f %@", v, units[i])
    }
}
