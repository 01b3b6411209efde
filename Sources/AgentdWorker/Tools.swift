import AgentdCore
import AgentdModel
import SandboxKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a tool call produced, as the model and the transcript see it.
struct ToolOutcome: Sendable, Equatable {
    var output: String
    var truncated = false
    var exitCode: Int32?
    /// The call failed (bad arguments, missing file...); the model is told.
    var isError = false

    static func error(_ message: String) -> ToolOutcome { ToolOutcome(output: "error: " + message, isError: true) }
}

/// The sandbox could not be made to run: the run fails (a tool error would
/// only make the model try again against the same wall).
struct SandboxUnavailable: Error, CustomStringConvertible {
    var description: String
}

/// The built-in tools, executed in the session's sandbox.
struct Toolbox: Sendable {
    let sessions: SessionService
    let backend: any SandboxBackend
    let session: Session
    let agent: Agent
    /// Per tool result, bytes kept for the model.
    let maxOutput: Int
    let defaultTimeout: Duration
    let maxTimeout: Duration

    static let definitions: [String: ToolDefinition] = {
        func schema(_ props: [String: JSONValue], required: [String]) -> JSONValue {
            .object(["type": .string("object"), "properties": .object(props),
                     "required": .array(required.map(JSONValue.string)), "additionalProperties": .bool(false)])
        }
        func prop(_ type: String, _ description: String) -> JSONValue {
            .object(["type": .string(type), "description": .string(description)])
        }
        let defs = [
            ToolDefinition(
                name: "exec",
                description: "Run a shell command (/bin/sh -c) in your sandbox. Returns its exit code and output.",
                parameters: schema([
                    "command": prop("string", "The command line."),
                    "cwd": prop("string", "Working directory (default /workspace)."),
                    "timeout_s": prop("number", "Seconds before the command is killed."),
                ], required: ["command"])),
            ToolDefinition(
                name: "read_file", description: "Read a text file from your sandbox.",
                parameters: schema(["path": prop("string", "File path, absolute or relative to /workspace.")],
                                   required: ["path"])),
            ToolDefinition(
                name: "write_file", description: "Create or replace a file in your sandbox with the given content.",
                parameters: schema(["path": prop("string", "File path, absolute or relative to /workspace."),
                                    "content": prop("string", "The complete new content.")],
                                   required: ["path", "content"])),
            ToolDefinition(
                name: "list_files", description: "List a directory of your sandbox.",
                parameters: schema(["path": prop("string", "Directory (default /workspace).")], required: [])),
            ToolDefinition(
                name: "edit_file",
                description: "Replace one exact, unique occurrence of old_string with new_string in a file.",
                parameters: schema(["path": prop("string", "File path."),
                                    "old_string": prop("string", "Text to find; must occur exactly once."),
                                    "new_string": prop("string", "Replacement text.")],
                                   required: ["path", "old_string", "new_string"])),
        ]
        return Dictionary(uniqueKeysWithValues: defs.map { ($0.name, $0) })
    }()

    static func offered(_ agent: Agent) -> [ToolDefinition] {
        agent.tools.compactMap { definitions[$0] }
    }

    /// Keep the head and the tail of long output, saying what was cut.
    static func truncate(_ bytes: [UInt8], limit: Int) -> (String, Bool) {
        guard bytes.count > limit else { return (String(decoding: bytes, as: UTF8.self), false) }
        let head = limit * 2 / 3, tail = limit - head
        let text = String(decoding: bytes.prefix(head), as: UTF8.self)
            + "\n[... output truncated: \(bytes.count - limit) of \(bytes.count) bytes omitted ...]\n"
            + String(decoding: bytes.suffix(tail), as: UTF8.self)
        return (text, true)
    }

    func run(_ call: ToolCall) async throws -> ToolOutcome {
        guard agent.tools.contains(call.name), Self.definitions[call.name] != nil else {
            return .error("unknown tool \"\(call.name)\"; available: \(agent.tools.joined(separator: ", "))")
        }
        let args: [String: JSONValue]
        let text = call.arguments.trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty {
            args = [:]
        } else {
            guard let v = try? AgentdJSON.decoder.decode(JSONValue.self, from: Data(text.utf8)), let o = v.objectValue else {
                return .error("the arguments are not a JSON object: \(text.prefix(200))")
            }
            args = o
        }
        do {
            switch call.name {
            case "exec": return try await exec(args)
            case "read_file": return try await readFile(args)
            case "write_file": return try await writeFile(args)
            case "list_files": return try await listFiles(args)
            case "edit_file": return try await editFile(args)
            default: return .error("unknown tool \"\(call.name)\"")
            }
        } catch let e as ArgumentError {
            return .error(e.message)
        } catch let e as SandboxUnavailable {
            throw e
        } catch is CancellationError {
            throw CancellationError()
        } catch let e as SandboxError {
            return .error(e.message)
        } catch let e as AgentdError {
            return .error(e.message)
        }
    }

    struct ArgumentError: Error { var message: String }

    func string(_ args: [String: JSONValue], _ key: String, required: Bool = true) throws -> String? {
        guard let v = args[key] else {
            if required { throw ArgumentError(message: "missing required argument \"\(key)\"") }
            return nil
        }
        guard let s = v.stringValue else { throw ArgumentError(message: "argument \"\(key)\" must be a string") }
        return s
    }

    /// The sandbox, running; a failure to start it fails the run.
    func sandbox() async throws -> SandboxID {
        do {
            return try await sessions.ensureRunning(session)
        } catch let e as AgentdError {
            throw SandboxUnavailable(description: "the sandbox could not start: \(e.message)")
        }
    }

    func exec(_ args: [String: JSONValue]) async throws -> ToolOutcome {
        guard let command = try string(args, "command"), !command.isEmpty else {
            throw ArgumentError(message: "command must not be empty")
        }
        let cwd = try string(args, "cwd", required: false)
        var timeout = defaultTimeout
        if let t = args["timeout_s"] {
            guard let secs = t.doubleValue, let d = Checked.clampedDuration(seconds: secs, max: maxTimeout) else {
                throw ArgumentError(message: "timeout_s must be a positive number of seconds")
            }
            timeout = d
        }
        let sid = try await sandbox()
        let env = try await sessions.environment(session, agent: agent)
        let request = ExecRequest(command: .shell(command), cwd: cwd, env: env, timeout: timeout)
        let process = try await backend.exec(sid, request)
        // Cancelling the run kills the command's process group at once.
        let result = try await withTaskCancellationHandler {
            var out: [UInt8] = []
            let cap = maxOutput * 4
            var dropped = 0
            for try await event in process.events {
                switch event {
                case .stdout(let b), .stderr(let b):
                    let room = cap - out.count
                    out.append(contentsOf: b.prefix(max(0, room)))
                    dropped += max(0, b.count - max(0, room))
                case .exit(let status):
                    return (out, dropped, status)
                }
            }
            try Task.checkCancellation()
            throw SandboxError(.system, "the command's output ended without an exit status")
        } onCancel: {
            Task { await process.signal(SIGKILL) }
        }
        var (text, truncated) = Self.truncate(result.0, limit: maxOutput)
        if result.1 > 0 {
            truncated = true
            text += "\n[... \(result.1) more bytes of output were not kept ...]"
        }
        let status = result.2
        var outcome = ToolOutcome(output: text, truncated: truncated, exitCode: status.shellCode)
        if status.timedOut { outcome.output += "\n[the command was killed after \(timeout) (timeout)]" }
        else if let s = status.signal { outcome.output += "\n[the command was killed by signal \(s)]" }
        outcome.output += "\n[exit code \(status.shellCode)]"
        return outcome
    }

    func readFile(_ args: [String: JSONValue]) async throws -> ToolOutcome {
        guard let path = try string(args, "path") else { return .error("missing path") }
        let sid = try await sandbox()
        let info = try await backend.stat(sid, path: path)
        guard info.kind == .file else { return .error("\(path) is not a regular file") }
        let bytes = try await backend.readAll(sid, path: path, limit: maxOutput * 4)
        var (text, truncated) = Self.truncate(bytes, limit: maxOutput)
        if info.size > UInt64(bytes.count) {
            truncated = true
            text += "\n[... the file has \(info.size) bytes; only the first \(bytes.count) were read ...]"
        }
        return ToolOutcome(output: text, truncated: truncated)
    }

    func writeFile(_ args: [String: JSONValue]) async throws -> ToolOutcome {
        guard let path = try string(args, "path"), let content = try string(args, "content") else {
            return .error("missing path or content")
        }
        let sid = try await sandbox()
        let info = try await backend.writeFile(sid, path: path, bytes: Array(content.utf8))
        return ToolOutcome(output: "wrote \(info.size) bytes to \(path)")
    }

    func listFiles(_ args: [String: JSONValue]) async throws -> ToolOutcome {
        let path = try string(args, "path", required: false) ?? "/workspace"
        let sid = try await sandbox()
        let entries = try await backend.listFiles(sid, path: path)
        var lines = entries.sorted { $0.name < $1.name }.map { e -> String in
            switch e.kind {
            case .directory: return e.name + "/"
            case .symlink: return e.name + "@"
            default: return "\(e.name)\t\(e.size)"
            }
        }
        if lines.isEmpty { lines = ["(empty directory)"] }
        let (text, truncated) = Self.truncate(Array(lines.joined(separator: "\n").utf8), limit: maxOutput)
        return ToolOutcome(output: text, truncated: truncated)
    }

    func editFile(_ args: [String: JSONValue]) async throws -> ToolOutcome {
        guard let path = try string(args, "path"), let old = try string(args, "old_string"),
              let new = try string(args, "new_string") else { return .error("missing arguments") }
        guard !old.isEmpty else { return .error("old_string must not be empty") }
        let sid = try await sandbox()
        let info = try await backend.stat(sid, path: path)
        guard info.kind == .file else { return .error("\(path) is not a regular file") }
        guard info.size <= 8 << 20 else { return .error("\(path) is larger than 8 MiB; edit it with exec") }
        let content = String(decoding: try await backend.readAll(sid, path: path, limit: 8 << 20), as: UTF8.self)
        let count = content.components(separatedBy: old).count - 1
        guard count == 1 else {
            return .error(count == 0 ? "old_string was not found in \(path)"
                                     : "old_string occurs \(count) times in \(path); give more context to make it unique")
        }
        let updated = content.replacingOccurrences(of: old, with: new)
        try await backend.writeFile(sid, path: path, mode: info.mode & 0o7777, bytes: Array(updated.utf8))
        return ToolOutcome(output: "edited \(path): replaced 1 occurrence")
    }
}
