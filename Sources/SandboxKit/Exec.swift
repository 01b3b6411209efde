#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A command: an argv list, or a shell string run by `/bin/sh -c`.
public enum Command: Sendable, Equatable, Codable {
    case argv([String])
    case shell(String)

    public var argv: [String] {
        switch self {
        case .argv(let a): return a
        case .shell(let s): return ["/bin/sh", "-c", s]
        }
    }

    public func validate() throws(SandboxError) {
        let a = argv
        guard let first = a.first, !first.isEmpty else {
            throw SandboxError(.invalidArgument, "command is empty", field: "command")
        }
        guard a.allSatisfy({ !$0.utf8.contains(0) }) else {
            throw SandboxError(.invalidArgument, "command contains a NUL byte", field: "command")
        }
        guard a.reduce(0, { $0 + $1.utf8.count + 1 }) <= 128 * 1024 else {
            throw SandboxError(.invalidArgument, "command is longer than 128 KiB", field: "command")
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            self = .shell(s)
        } else {
            self = .argv(try c.decode([String].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .argv(let a): try c.encode(a)
        case .shell(let s): try c.encode(s)
        }
    }
}

public struct ExecRequest: Sendable {
    public var command: Command
    /// Working directory inside the sandbox; the sandbox's workdir when nil.
    public var cwd: String?
    /// Added to (and overriding) the sandbox's environment.
    public var env: [String: String]
    /// Bytes for standard input; nil gives /dev/null unless `interactiveStdin`.
    public var stdin: [UInt8]?
    /// Keep standard input open for `ExecProcess.write(stdin:)`.
    public var interactiveStdin: Bool
    /// Killed, with every process of its group, after this long.
    public var timeout: Duration?

    public init(command: Command, cwd: String? = nil, env: [String: String] = [:], stdin: [UInt8]? = nil,
                interactiveStdin: Bool = false, timeout: Duration? = nil) {
        self.command = command
        self.cwd = cwd
        self.env = env
        self.stdin = stdin
        self.interactiveStdin = interactiveStdin
        self.timeout = timeout
    }
}

/// How a command ended.
public struct ExitStatus: Sendable, Equatable, Codable {
    /// The exit code when it exited normally.
    public var code: Int32?
    /// The signal that killed it.
    public var signal: Int32?
    /// Killed because it outlived its timeout.
    public var timedOut: Bool
    public var durationMs: Double

    public init(code: Int32?, signal: Int32?, timedOut: Bool, durationMs: Double) {
        self.code = code
        self.signal = signal
        self.timedOut = timedOut
        self.durationMs = durationMs
    }

    /// The shell's convention: the code, or 128 + the signal.
    public var shellCode: Int32 { code ?? (128 + (signal ?? 0)) }
}

public enum ExecEvent: Sendable, Equatable {
    case stdout([UInt8])
    case stderr([UInt8])
    case exit(ExitStatus)
}

/// A command running in a sandbox.  `events` yields output as it comes and
/// ends with exactly one `.exit`.
public protocol ExecProcess: Sendable {
    var events: AsyncThrowingStream<ExecEvent, any Error> { get }
    /// Write to standard input (only with `interactiveStdin`).
    func write(stdin: [UInt8]) async throws
    func closeStdin() async
    /// Send a signal to the command's process group.
    func signal(_ signal: Int32) async
}

/// A finished command with its output collected.
public struct ExecResult: Sendable, Equatable {
    public var status: ExitStatus
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    /// Output beyond the collection limit was dropped.
    public var truncated: Bool

    public var stdoutString: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrString: String { String(decoding: stderr, as: UTF8.self) }
}

extension ExecProcess {
    /// Wait for the end, keeping at most `limit` bytes of each stream.
    public func collect(limit: Int = 16 << 20) async throws -> ExecResult {
        var out: [UInt8] = [], err: [UInt8] = []
        var truncated = false
        for try await event in events {
            switch event {
            case .stdout(let b):
                let room = limit - out.count
                if b.count > room { truncated = true }
                out.append(contentsOf: b.prefix(max(0, room)))
            case .stderr(let b):
                let room = limit - err.count
                if b.count > room { truncated = true }
                err.append(contentsOf: b.prefix(max(0, room)))
            case .exit(let status):
                return ExecResult(status: status, stdout: out, stderr: err, truncated: truncated)
            }
        }
        throw SandboxError(.system, "command output ended without an exit status")
    }
}
