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
