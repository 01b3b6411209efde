/// Opaque IDs with a type prefix (`agt_…`, `ses_…`): 22 random base62
/// characters after the prefix, so they are unguessable and URL-safe.
public enum IDPrefix: String, Sendable, CaseIterable {
    case team, key, agent = "agt", session = "ses", run, secret = "sec"
}

public enum Identifier {
    static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    public static func make(_ prefix: IDPrefix) -> String {
        var rng = SystemRandomNumberGenerator()
        return prefix.rawValue + "_" + random(22, using: &rng)
    }

    public static func random<G: RandomNumberGenerator>(_ count: Int, using rng: inout G) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        for _ in 0..<count { bytes.append(alphabet[Int(rng.next(upperBound: UInt32(alphabet.count)))]) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Is `s` an ID of this kind?  Used to answer malformed IDs with 400
    /// rather than a lookup.
    public static func isValid(_ s: String, _ prefix: IDPrefix) -> Bool {
        let p = prefix.rawValue + "_"
        guard s.hasPrefix(p) else { return false }
        let rest = s.utf8.dropFirst(p.utf8.count)
        return (8...64).contains(rest.count) && rest.allSatisfy { alphabet.contains($0) }
    }
}

/// What a key may do.  Roles are ordered: each includes the ones below it,
/// and `admin` acts across every team.
public enum Role: String, Codable, Sendable, CaseIterable, Comparable {
    case viewer, member, owner, admin

    var rank: Int {
        switch self {
        case .viewer: 0
        case .member: 1
        case .owner: 2
        case .admin: 3
        }
    }

    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}
