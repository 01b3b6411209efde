import AgentdModel
import Foundation
import Testing
@testable import AgentdCore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SecretBoxTests {
    func tempDir() -> String {
        let dir = "/tmp/agentd-secretbox-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(dir, 0o700)
        return dir
    }

    func removeAll(_ dir: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] { unlink(dir + "/" + name) }
        rmdir(dir)
    }

    @Test func theKeyFileIsMadeOnceWholeAndPrivate() throws {
        let dir = tempDir()
        defer { removeAll(dir) }
        let path = dir + "/secret.key"
        let box = try SecretBox.open(keyFile: path)
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_size == 32)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["secret.key"], "a temporary file was left")
        // The same key on the next start: what one sealed, the other opens.
        let sealed = try box.seal(Array("hunter2".utf8), team: "team_a", agent: nil, name: "PW")
        let again = try SecretBox.open(keyFile: path)
        #expect(try again.open(sealed, team: "team_a", agent: nil, name: "PW") == Array("hunter2".utf8))
    }

    @Test func aTornKeyFileIsRefusedNotReplaced() throws {
        let dir = tempDir()
        defer { removeAll(dir) }
        let path = dir + "/secret.key"
        try writeSecretFile(path, [1, 2, 3])
        #expect(throws: AgentdError.self) { _ = try SecretBox.open(keyFile: path) }
        #expect(try readAllBytes(path) == [1, 2, 3])
    }

    @Test func anExclusiveWriteNeverReplaces() throws {
        let dir = tempDir()
        defer { removeAll(dir) }
        let path = dir + "/admin.key"
        try writeSecretFile(path, Array("first\n".utf8), replace: false)
        #expect(throws: AgentdError.self) { try writeSecretFile(path, Array("second\n".utf8), replace: false) }
        #expect(try readAllBytes(path) == Array("first\n".utf8))
        try writeSecretFile(path, Array("third\n".utf8))
        #expect(try readAllBytes(path) == Array("third\n".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["admin.key"])
    }
}
