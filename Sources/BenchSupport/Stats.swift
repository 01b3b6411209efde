// What the benchmarks (sandbox-bench, agentd-bench) share: samples and
// their percentiles (one definition), and how figures are printed.
#if canImport(Glibc)
import Glibc
#endif

/// The p-th percentile (0...100) of `xs`, nearest rank; NaN when empty.
public func percentile(_ xs: [Double], _ p: Double) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    let rank = Int((Double(s.count) * p / 100).rounded(.up))
    return s[min(s.count - 1, max(0, rank - 1))]
}

/// A duration in milliseconds.
public func ms(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

/// Two decimals.
public func f2(_ x: Double) -> String {
    let v = (x * 100).rounded() / 100
    var s = String(v)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < 2 { s += String(repeating: "0", count: 2 - decimals) }
    }
    return s
}

/// Monotonic nanoseconds.
public func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Durations measured in nanoseconds, reported in milliseconds.
public struct Samples: Sendable {
    public var ns: [UInt64] = []

    public init() {}

    public mutating func add(_ v: UInt64) { ns.append(v) }

    /// The percentile `p` (0...1) in milliseconds; 0 when empty.
    public func percentile(_ p: Double) -> Double {
        ns.isEmpty ? 0 : BenchSupport.percentile(ns.map { Double($0) / 1e6 }, p * 100)
    }

    public var mean: Double { ns.isEmpty ? 0 : Double(ns.reduce(0, +)) / Double(ns.count) / 1e6 }
}
