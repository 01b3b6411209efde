/// Lexical handling of paths given by callers for files inside a sandbox.
/// This is the first of two fences: it refuses what is malformed or climbs
/// above the root; the backend then resolves what is left relative to the
/// sandbox's root directory with the kernel's help (openat2), so symlinks
/// cannot lead out either.
public enum SandboxPath {
    /// Absolute, normalised path inside the sandbox for `path`, which is
    /// absolute or relative to `workdir`.  Refuses NUL bytes, empty paths and
    /// any `..` that would climb above the root.
    public static func resolve(_ path: String, workdir: String = "/workspace") throws(SandboxError) -> String {
        guard !path.isEmpty else { throw SandboxError(.invalidArgument, "path is empty", field: "path") }
        guard !path.utf8.contains(0) else { throw SandboxError(.invalidArgument, "path contains a NUL byte", field: "path") }
        guard path.utf8.count <= 4096 else { throw SandboxError(.invalidArgument, "path is too long", field: "path") }
        let full = path.hasPrefix("/") ? path : workdir + "/" + path
        var parts: [Substring] = []
        for comp in full.split(separator: "/", omittingEmptySubsequences: true) {
            switch comp {
            case ".": continue
            case "..":
                guard !parts.isEmpty else {
                    throw SandboxError(.invalidArgument, "path \"\(path)\" climbs above the sandbox root", field: "path")
                }
                parts.removeLast()
            default:
                guard comp.utf8.count <= 255 else {
                    throw SandboxError(.invalidArgument, "a name in path \"\(path.prefix(64))...\" is longer than 255 bytes",
                                       field: "path")
                }
                parts.append(comp)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// True when `path` has no `..` climbing above the root.
    public static func isContained(_ path: String) -> Bool {
        (try? resolve(path, workdir: "/")) != nil
    }

    /// The path relative to the root ("" for the root itself), as openat2
    /// wants it beneath a root directory fd.
    public static func relative(_ absolute: String) -> String {
        String(absolute.drop(while: { $0 == "/" }))
    }

    /// Kernel pseudo-filesystems that the files API never touches.
    public static func isPseudoFilesystem(_ absolute: String) -> Bool {
        for p in ["/proc", "/sys", "/dev"] where absolute == p || absolute.hasPrefix(p + "/") {
            return true
        }
        return false
    }
}
