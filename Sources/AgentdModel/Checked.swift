/// Conversions of numbers that come from outside (a request, a config file,
/// the database, a model's tool call, a sandbox) into the types the code
/// computes with.  Swift's own conversions (`Int64(double)`, `UInt64(int)`,
/// `x << 20`) trap or wrap on values out of range; these return nil instead,
/// so that the caller answers with an error naming the field.
public enum Checked {
    /// `seconds` as a Duration when it is finite, more than 0 and at most
    /// `max`; nil for everything else (NaN, infinities, 0, negatives, 1e308).
    public static func duration(seconds: Double, max: Duration) -> Duration? {
        guard seconds.isFinite, seconds > 0, seconds <= Self.seconds(max) else { return nil }
        // seconds <= max, and a Duration's seconds fit an Int64: no overflow.
        let whole = seconds.rounded(.down)
        return .seconds(Int64(whole)) + .nanoseconds(Int64(((seconds - whole) * 1e9).rounded()))
    }

    /// As `duration(seconds:max:)`, but a value above `max` is `max` (a
    /// model asking for more time than allowed gets what is allowed).
    public static func clampedDuration(seconds: Double, max: Duration) -> Duration? {
        guard seconds.isFinite, seconds > 0 else { return nil }
        return duration(seconds: Swift.min(seconds, Self.seconds(max)), max: max)
    }

    /// A Duration in seconds, as a Double.
    public static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// Mebibytes as bytes, when 0 <= mb and the byte count fits 64 bits.
    public static func bytes(mebibytes mb: Int) -> UInt64? {
        guard mb >= 0, UInt64(mb) <= UInt64.max >> 20 else { return nil }
        return UInt64(mb) << 20
    }

    /// A finite number as an Int, rounded, when it is in `range`.
    public static func int(_ v: Double, in range: ClosedRange<Int>) -> Int? {
        guard v.isFinite, v >= Double(range.lowerBound), v <= Double(range.upperBound) else { return nil }
        return Int(v.rounded())
    }
}
