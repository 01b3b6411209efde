import AgentdModel
import Crypto
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Secrets at rest: AES-256-GCM (swift-crypto) with a key kept in
/// `STATE/secret.key` (0600, created on first start).  The secret's
/// identity (team, agent, name) is bound as associated data, so a ciphertext
/// copied to another row does not decrypt.
public struct SecretBox: Sendable {
    /// Raw key bytes (SymmetricKey is not Sendable; it is made per use).
    private let keyBytes: [UInt8]

    public init(keyBytes: [UInt8]) {
        self.keyBytes = keyBytes
    }

    var key: SymmetricKey { SymmetricKey(data: keyBytes) }

    /// Load the key file, creating it (0600) when missing.
    public static func open(keyFile path: String) throws -> SecretBox {
        if let bytes = try? readAllBytes(path) {
            guard bytes.count == 32 else {
                throw AgentdError.internal("\(path) is not a 32-byte key; refusing to start")
            }
            return SecretBox(keyBytes: bytes)
        }
        let key = SymmetricKey(size: .bits256)
        let bytes = key.withUnsafeBytes { Array($0) }
        // Whole or absent, never replacing a key that exists: a torn key
        // file would stop agentd from starting, a replaced one would lose
        // every secret.
        try writeSecretFile(path, bytes, replace: false)
        return SecretBox(keyBytes: bytes)
    }

    static func aad(team: String, agent: String?, name: String) -> [UInt8] {
        Array("agentd-secret\u{0}\(team)\u{0}\(agent ?? "")\u{0}\(name)".utf8)
    }

    public func seal(_ value: [UInt8], team: String, agent: String?, name: String) throws -> [UInt8] {
        let box = try AES.GCM.seal(value, using: key, authenticating: Self.aad(team: team, agent: agent, name: name))
        guard let combined = box.combined else { throw AgentdError.internal("AES-GCM produced no ciphertext") }
        return Array(combined)
    }

    public func open(_ ciphertext: [UInt8], team: String, agent: String?, name: String) throws -> [UInt8] {
        let box = try AES.GCM.SealedBox(combined: ciphertext)
        return Array(try AES.GCM.open(box, using: key, authenticating: Self.aad(team: team, agent: agent, name: name)))
    }
}

func readAllBytes(_ path: String) throws -> [UInt8] {
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw AgentdError.notFound(path) }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}
