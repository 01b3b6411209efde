@testable import AgentdModel
import Testing
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite struct JSONTests {
    /// The hand-written serializer round-trips through JSONDecoder and sorts keys.
    @Test func compactStringRoundTrips() throws {
        let v: JSONValue = .object([
            "z": .string("quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} unicode é ✓ / slash"),
            "a": .array([.number(1), .number(-2.5), .number(1e-7), .number(123456789012), .bool(true), .null]),
            "m": .object(["y": .object([:]), "x": .array([])]),
        ])
        let text = v.compactString
        #expect(text.hasPrefix(#"{"a":[1,-2.5,"#))
        let back = try AgentdJSON.decoder.decode(JSONValue.self, from: Data(text.utf8))
        #expect(back == v)
        let viaEncoder = try AgentdJSON.decoder.decode(JSONValue.self, from: AgentdJSON.encoder.encode(v))
        #expect(viaEncoder == back)
    }

    @Test func nonFiniteNumbersBecomeNull() {
        #expect(JSONValue.array([.number(.infinity), .number(.nan)]).compactString == "[null,null]")
    }
}

@Suite struct TimestampTests {
    /// Same text as Foundation's ISO 8601 style where the milliseconds are
    /// exact in binary (Foundation truncates 0.566 stored as 0.56599... to
    /// .565; agentd keeps the millisecond it stored), and a lossless round
    /// trip through `parse` for any millisecond.
    @Test func formatsRFC3339Milliseconds() {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
        for seconds in [0, 951_782_400.5, 1_795_618_442.25, -86_400.75, 4_102_444_799, 253_402_300_799] {
            let d = Date(timeIntervalSince1970: seconds)
            #expect(Timestamp.format(d) == d.formatted(style))
        }
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1_795_618_442.566)) == "2026-11-25T14:54:02.566Z")
        var g = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let ms = Int64.random(in: -2_000_000_000_000...4_000_000_000_000, using: &g)
            let d = Timestamp.date(millis: ms)
            #expect(Timestamp.parse(Timestamp.format(d)).map(Timestamp.millis) == ms, "\(ms)")
        }
    }
}

@Suite struct FastJSONTests {
    @Test func sessionMatchesCodable() throws {
        for run in [nil, "run_x"] {
            let s = Session(id: "ses_a", teamID: "team_b", agentID: "agt_c", title: "t \"q\" é", status: "idle",
                            sandboxState: "none", lastSeq: 42, activeRunID: run,
                            usage: Usage(promptTokens: 1, completionTokens: 2, costUSD: 0.125),
                            createdAt: Date(timeIntervalSince1970: 1_795_618_442.566),
                            updatedAt: Date(timeIntervalSince1970: 1_795_618_443))
            #expect(s.jsonValue == (try JSONValue.from(s)))
            // The direct writer makes exactly the bytes of the generic one.
            #expect(s.compactJSON == s.jsonValue.compactString)
        }
        var odd = Session(id: "ses_a", teamID: "team_b", agentID: "agt_c", title: "tab\there\nnl \u{1} \\ end",
                          status: "running", sandboxState: "paused", lastSeq: 0, activeRunID: nil,
                          usage: Usage(promptTokens: 0, completionTokens: 0, costUSD: 1e-7),
                          createdAt: Date(timeIntervalSince1970: 0), updatedAt: Date(timeIntervalSince1970: 1.001))
        #expect(odd.compactJSON == odd.jsonValue.compactString)
        odd.title = ""
        #expect(odd.compactJSON == odd.jsonValue.compactString)
        #expect((try AgentdJSON.decoder.decode(JSONValue.self, from: Data(odd.compactJSON.utf8))) == odd.jsonValue)
    }

    @Test func stringsNeedingNoEscapeAreCopiedAsIs() {
        for s in ["", "plain", "é ü 日本", "a\"b", "back\\slash", "ctl\u{7}", "nl\n"] {
            #expect(JSONValue.string(s).compactString == (try? String(decoding: JSONEncoder().encode(s), as: UTF8.self)))
        }
    }
}
