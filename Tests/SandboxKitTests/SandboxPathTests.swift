import Testing
@testable import SandboxKit

@Suite struct SandboxPathTests {
    @Test func relativeAndAbsolute() throws {
        #expect(try SandboxPath.resolve("a/b") == "/workspace/a/b")
        #expect(try SandboxPath.resolve("/etc/./hosts") == "/etc/hosts")
        #expect(try SandboxPath.resolve("a/../b") == "/workspace/b")
        #expect(try SandboxPath.resolve("../../etc", workdir: "/workspace/x") == "/etc")
    }

    @Test func climbingAboveRootIsRefused() {
        #expect(throws: SandboxError.self) { try SandboxPath.resolve("../../..") }
        #expect(throws: SandboxError.self) { try SandboxPath.resolve("/../etc/passwd") }
        #expect(throws: SandboxError.self) { try SandboxPath.resolve("") }
        #expect(throws: SandboxError.self) { try SandboxPath.resolve("a\u{0}b") }
    }
}
