import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

@Suite("Exec and files (as root, real sandboxes)", .serialized)
struct ExecAndFilesTests {
    @Test func execStreamsOutputAndReportsHowItEnded() async throws {
        try await TestEnvironment.withBackend { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let r = try await b.run(id, ExecRequest(command: .shell("echo out; echo err >&2; exit 7")))
            #expect(r.status.code == 7)
            #expect(r.stdoutString == "out\n")
            #expect(r.stderrString == "err\n")
            let killed = try await b.run(id, ExecRequest(command: .shell("kill -9 $$")))
            #expect(killed.status.signal == 9)
            #expect(killed.status.shellCode == 137)
            let env = try await b.run(id, ExecRequest(command: .argv(["sh", "-c", "echo $FOO:$PWD"]), cwd: "/tmp",
                                                      env: ["FOO": "bar"]))
            #expect(env.stdoutString == "bar:/tmp\n")
            let input = try await b.run(id, ExecRequest(command: .argv(["cat"]), stdin: Array("from stdin".utf8)))
            #expect(input.stdoutString == "from stdin")
            // Output arrives as it is produced, before the command ends.
            let p = try await b.exec(id, ExecRequest(command: .shell("echo first; sleep 2; echo second")))
            var firstAt: UInt64 = 0, endAt: UInt64 = 0
            for try await e in p.events {
                if case .stdout(let bytes) = e, String(decoding: bytes, as: UTF8.self).contains("first"), firstAt == 0 {
                    firstAt = Posix.monotonicNanos()
                }
                if case .exit = e { endAt = Posix.monotonicNanos() }
            }
            #expect(firstAt > 0 && endAt > firstAt + 1_000_000_000)
        }
    }

    /// Every byte comes before the exit; output held open by a background
    /// process ends the command a short grace after it exits, not when the
    /// background process does; a consumer that goes away kills the command.
    @Test func outputEndsWithTheCommand() async throws {
        try await TestEnvironment.withBackend { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let big = try await b.run(id, ExecRequest(command: .shell("head -c 3000000 /dev/zero; head -c 1000000 /dev/zero >&2")))
            #expect(big.status.code == 0)
            #expect(big.stdout.count == 3_000_000 && big.stderr.count == 1_000_000)

            let t0 = Posix.monotonicNanos()
            let held = try await b.run(id, ExecRequest(command: .shell("sleep 30 & echo done")))
            let seconds = Double(Posix.monotonicNanos() - t0) / 1e9
            #expect(held.status.code == 0 && held.stdoutString == "done\n")
            #expect(seconds < 5, "the exec waited \(seconds) s for a background process")

            let p = try await b.exec(id, ExecRequest(command: .shell("echo $$ > /tmp/pid; exec sleep 300")))
            let consumer = Task { for try await _ in p.events {} }
            _ = try await b.sh(id, "while ! test -s /tmp/pid; do sleep 0.01; done")
            consumer.cancel()
            _ = try? await consumer.value
            let gone = try await b.sh(id, "for i in $(seq 100); do kill -0 $(cat /tmp/pid) 2>/dev/null || { echo gone; exit; }; sleep 0.05; done")
            #expect(gone == "gone\n")
        }
    }

    /// A consumer slower than the command holds it back instead of the
    /// daemon buffering its output: with nothing read, a command writing
    /// 40 MB is still writing a second later; read, all of it arrives.
    @Test func outputIsHeldBackForASlowConsumer() async throws {
        try await TestEnvironment.withBackend { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let p = try await b.exec(id, ExecRequest(command: .shell("head -c 40000000 /dev/zero; echo done > /tmp/done")))
            var iterator = p.events.makeAsyncIterator()
            var total = 0
            if case .stdout(let first) = try await iterator.next() { total += first.count }
            try await Task.sleep(for: .seconds(1))
            #expect(try await b.sh(id, "test -e /tmp/done && echo finished || echo writing") == "writing\n")
            while let e = try await iterator.next() {
                if case .stdout(let bytes) = e { total += bytes.count }
                if case .exit(let st) = e { #expect(st.code == 0) }
            }
            #expect(total == 40_000_000)
            #expect(try await b.sh(id, "cat /tmp/done") == "done\n")
        }
    }

    @Test func interactiveStdin() async throws {
        try await TestEnvironment.withBackend { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            let p = try await b.exec(id, ExecRequest(command: .argv(["sh", "-c", "read a; echo got:$a; read b; echo got:$b"]),
                                                     interactiveStdin: true))
            try await p.write(stdin: Array("one\n".utf8))
            try await p.write(stdin: Array("two\n".utf8))
            await p.closeStdin()
            let r = try await p.collect()
            #expect(r.stdoutString == "got:one\ngot:two\n")
        }
    }

    @Test func filesRoundTripAndListing() async throws {
        try await TestEnvironment.withBackend { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            var big = [UInt8](repeating: 0, count: 5 << 20)
            for i in big.indices { big[i] = UInt8(truncatingIfNeeded: i &* 31) }
            let chunks = ByteChunks { c in
                var off = 0
                while off < big.count {
                    c.yield(Array(big[off..<min(off + 70_001, big.count)]))
                    off += 70_001
                }
                c.finish()
            }
            let info = try await b.writeFile(id, path: "dir/sub/big.bin", mode: 0o600, contents: chunks)
            #expect(info.size == UInt64(big.count))
            #expect(info.mode == 0o600)
            #expect(try await b.readAll(id, path: "/workspace/dir/sub/big.bin") == big)
            #expect(try await b.sh(id, "md5sum /workspace/dir/sub/big.bin | cut -c1-8").count == 9)
            let list = try await b.listFiles(id, path: "dir")
            #expect(list.map(\.name) == ["sub"])
            #expect(list.first?.kind == .directory)
            try await b.makeDirectory(id, path: "/workspace/a/b/c", parents: true)
            #expect(try await b.stat(id, path: "a/b/c").kind == .directory)
            try await b.removeFile(id, path: "dir", recursive: true)
            await #expect(throws: SandboxError.self) { try await b.stat(id, path: "dir") }
            // Files written by commands are visible to the files API and back.
            _ = try await b.sh(id, "printf hello > /workspace/h.txt")
            #expect(try await b.readAll(id, path: "h.txt") == Array("hello".utf8))
            try await b.writeFile(id, path: "/tmp/t.txt", bytes: Array("x".utf8))
            #expect(try await b.sh(id, "cat /tmp/t.txt") == "x")
        }
    }

    @Test func pathsThatEscapeAreRefusedAndTouchNothingOnTheHost() async throws {
        try await TestEnvironment.withBackend { b in
            let id = try await b.started(TestEnvironment.id(), TestEnvironment.spec)
            _ = try await b.sh(id, "ln -s ../../../../../../../../ /workspace/up; ln -s /etc /workspace/abs; " +
                               "ln -s /proc/1/root /workspace/magic")
            let hostFile = "/tmp/agentd-escape-\(getpid())"
            defer { unlink(hostFile) }
            for bad in ["../../../etc/passwd", "/../../etc/passwd", "/proc/self/environ", "/sys/kernel",
                        "up/etc/passwd", "abs/passwd", "magic/etc/passwd", "up\(hostFile)", "a\u{0}b"] {
                await #expect(throws: SandboxError.self, "\(bad) was not refused") {
                    _ = try await b.readAll(id, path: bad)
                }
                await #expect(throws: SandboxError.self, "\(bad) write was not refused") {
                    try await b.writeFile(id, path: bad, bytes: [1])
                }
            }
            #expect(!Posix.exists(hostFile))
            do {
                _ = try await b.readAll(id, path: "up/etc/passwd")
            } catch let e as SandboxError {
                #expect(e.kind == .invalidArgument)
                #expect(e.field == "path")
            }
        }
    }
}
