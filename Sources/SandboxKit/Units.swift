/// Parsing of the human units used on command lines and in config files.
public enum Units {
    /// "512M", "1G", "1.5GiB", "1048576" -> bytes.  Suffixes are binary (K = 1024).
    public static func parseBytes(_ text: String) -> UInt64? {
        var s = text.trimmingCharacters(in: " ").uppercased()
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("B") { s.removeLast() }
        var multiplier: Double = 1
        if let last = s.last, let m = ["K": 1024.0, "M": 1048576.0, "G": 1073741824.0, "T": 1099511627776.0][String(last)] {
            multiplier = m
            s.removeLast()
        }
        guard !s.isEmpty, let value = Double(s), value >= 0, value.isFinite else { return nil }
        let bytes = value * multiplier
        guard bytes < 1.8e19 else { return nil }
        return UInt64(bytes)
    }

    /// "0.5", "2", "250m" -> thousandths of a CPU.
    public static func parseCPUs(_ text: String) -> Int? {
        let s = text.trimmingCharacters(in: " ")
        if s.hasSuffix("m"), let v = Int(s.dropLast()), v > 0 { return v }
        guard let v = Double(s), v > 0, v.isFinite, v < 1e6 else { return nil }
        return Int((v * 1000).rounded())
    }

    public static func formatBytes(_ b: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(b)
        var i = 0
        while v >= 1024 && i < units.count - 1 {
            v /= 1024
            i += 1
        }
        return i == 0 ? "\(b) B" : String(Int(v * 10) / 10) + (Int(v * 10) % 10 == 0 ? "" : ".\(Int(v * 10) % 10)") + " " + units[i]
    }
}

extension String {
    fileprivate func trimmingCharacters(in chars: Character) -> String {
        var s = Substring(self)
        while s.first == chars { s.removeFirst() }
        while s.last == chars { s.removeLast() }
        return String(s)
    }
}
