@testable import AgentdModel
import Testing

/// The pure parts of the hostile-input defences: checked conversions, the
/// strict JSON scan, and the rules that both validate and document.
@Suite struct HostileInputTests {
    @Test func durationsFromHostileSecondsNeverTrap() {
        let max: Duration = .seconds(86400)
        for bad in [Double.nan, .infinity, -.infinity, 0, -1, 1e308, -1e308, 86400.5, .greatestFiniteMagnitude] {
            #expect(Checked.duration(seconds: bad, max: max) == nil, "\(bad)")
        }
        #expect(Checked.duration(seconds: 1.5, max: max) == .milliseconds(1500))
        #expect(Checked.duration(seconds: 86400, max: max) == .seconds(86400))
        #expect(Checked.clampedDuration(seconds: 1e308, max: max) == .seconds(86400))
        #expect(Checked.clampedDuration(seconds: .nan, max: max) == nil)
        #expect(Checked.clampedDuration(seconds: -5, max: max) == nil)
    }

    @Test func mebibytesThatWouldWrapAreRefused() {
        #expect(Checked.bytes(mebibytes: 1 << 44) == nil)  // 2^64 bytes does not fit
        #expect(Checked.bytes(mebibytes: Int.max) == nil)
        #expect(Checked.bytes(mebibytes: -1) == nil)
        #expect(Checked.bytes(mebibytes: 512) == 512 << 20)
        #expect(Checked.int(1e308, in: 0...10) == nil)
        #expect(Checked.int(.nan, in: 0...10) == nil)
        #expect(Checked.int(2.6, in: 0...10) == 3)
    }

    @Test func duplicateKeysAreFoundThroughEscapes() {
        func scan(_ s: String) -> JSONStrict.Problem? { JSONStrict.check(Array(s.utf8)) }
        #expect(scan(#"{"a": 1, "b": 2}"#) == nil)
        #expect(scan(#"{"a": 1, "a": 2}"#) == .duplicateKey(path: "", key: "a"))
        #expect(scan(#"{"a": 1, "\u0061": 2}"#) == .duplicateKey(path: "", key: "a"))
        #expect(scan(#"{"s": {"x": 1, "y": {"x": 2}, "x": 3}}"#) == .duplicateKey(path: "s", key: "x"))
        // The same key in sibling objects, and keys inside strings, are fine.
        #expect(scan(#"{"l": [{"k": 1}, {"k": 2}], "t": "\"k\": 1, \"k\": 2"}"#) == nil)
        #expect(scan(String(repeating: "[", count: 40) + String(repeating: "]", count: 40)) == .tooDeep(32))
        // Malformed input is left to the decoder.
        #expect(scan(#"{"a": "unterminated"#) == nil)
        #expect(JSONStrict.scan(Array(#"{"n": 1, "sandbox": {"image": "x", "pids": 8}}"#.utf8)).keys
                == ["": ["n", "sandbox"], "sandbox": ["image", "pids"]])
    }

    /// Each rule's documented pattern, run as a regular expression, agrees
    /// with the check the handlers use, on edge cases and random strings.
    @Test func documentedPatternsAgreeWithTheChecks() throws {
        var rules: [(String, FieldRule)] = [("name", Rules.name), ("envName", Rules.envName), ("image", Rules.image),
                                            ("userEnvName", Rules.userEnvName), ("model", Rules.model),
                                            ("cursor", Rules.cursor), ("sandboxPath", Rules.sandboxPath),
                                            ("title", Rules.title)]
        for p in IDPrefix.allCases { rules.append((p.rawValue, Rules.id(p))) }
        let alphabet = Array("aZ09._- _x/é\u{0}:") + ["ses_", "agt_", ".versions", "key_", "..", "/proc", "/sys/", "AGENTD_"]
            .flatMap { Array($0) }
        var rng = SystemRandomNumberGenerator()
        var samples = ["", " ", "a", "a ", " a", ".versions", "default", "-x", "_X1", "1abc", String(repeating: "a", count: 64),
                       String(repeating: "a", count: 65), "ses_12345678", "ses_1234567", "agt_" + String(repeating: "Z", count: 64),
                       "agt_" + String(repeating: "Z", count: 65), "team_abcdefgh", "é", "/proc/x", "proc/x", "/procx",
                       "a/../b", "..", "/..", "a/..b", "//sys", "/", "AGENTD_X", "AGENTDX", "123:ses_12345678",
                       "x:ses_12345678", "gpt-4o", "gpt 4o", String(repeating: "n", count: 256), "/" + String(repeating: "n", count: 255)]
        for _ in 0..<3000 {
            let n = Int.random(in: 0...12, using: &rng)
            samples.append(String((0..<n).map { _ in alphabet.randomElement(using: &rng) ?? "a" }))
        }
        for (label, rule) in rules {
            guard case .object(let o) = rule.schema, case .string(let pattern)? = o["pattern"] else {
                Issue.record("\(label) has no pattern")
                continue
            }
            let regex = try Regex(pattern)
            let minLength = o["minLength"]?.intValue ?? 0, maxLength = o["maxLength"]?.intValue ?? Int.max
            for s in samples {
                let n = s.unicodeScalars.count
                let documented = s.wholeMatch(of: regex) != nil && n >= minLength && n <= maxLength
                #expect(documented == rule.accepts(s), "\(label): \"\(s)\" pattern \(documented) check \(rule.accepts(s))")
            }
        }
    }
}
