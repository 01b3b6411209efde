import CAgentdSandbox
import SandboxKit
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Small, errno-checked wrappers for the system calls Swift can make itself.
/// Every failure becomes a `SandboxError` carrying the stage and errno.
enum Posix {
    static func error(_ stage: String, _ err: Int32 = Glibc.errno, kind: SandboxError.Kind = .system) -> SandboxError {
        let text = String(cString: strerror(err))
        return SandboxError(kind, "\(stage): \(text)", stage: stage, errno: err)
    }

    @discardableResult
    static func check(_ rc: Int32, _ stage: @autoclosure () -> String) throws(SandboxError) -> Int32 {
        if rc < 0 { throw error(stage()) }
        return rc
    }

    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) throws(SandboxError) -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        if fd < 0 { throw error("open \(path)") }
        return fd
    }

    static func close(_ fd: Int32) {
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    /// Read a small file (cgroup and proc files) whole.
    static func readFile(_ path: String, limit: Int = 1 << 20) throws(SandboxError) -> String {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        return try readAll(fd, limit: limit, what: path)
    }

    static func readAll(_ fd: Int32, limit: Int, what: String) throws(SandboxError) -> String {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                throw error("read \(what)")
            }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
            if out.count > limit { throw SandboxError(.system, "\(what) is larger than \(limit) bytes", stage: what) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Write a small value to a file (cgroup knobs), whole, in one write.
    static func writeFile(_ path: String, _ value: String) throws(SandboxError) {
        let fd = try open(path, O_WRONLY)
        defer { close(fd) }
        try write(fd, value, what: path)
    }

    static func write(_ fd: Int32, _ value: String, what: String) throws(SandboxError) {
        let bytes = Array(value.utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n != bytes.count { throw error("write \(what)", n < 0 ? Glibc.errno : EIO) }
    }

    /// Write a file atomically: temp file, rename; with `durable`, fsync the
    /// file before and the directory after the rename.
    static func writeFileAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600, durable: Bool = true)
        throws(SandboxError)
    {
        let tmp = path + ".tmp"
        let fd = try open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                let e = error("write \(tmp)")
                close(fd)
                throw e
            }
            off += n
        }
        if durable && fsync(fd) < 0 {
            let e = error("fsync \(tmp)")
            close(fd)
            throw e
        }
        close(fd)
        try check(rename(tmp, path), "rename \(path)")
        if durable { fsyncDirectory(of: path) }
    }

    static func fsyncDirectory(of path: String) {
        let dir = parentDirectory(path)
        let fd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            _ = Glibc.close(fd)
        }
    }

    static func parentDirectory(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    static func isSymlink(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
    }

    static func isDirectory(_ path: String) -> Bool {
        let mode = agentd_stat_mode(path)
        return mode >= 0 && (UInt32(mode) & S_IFMT) == S_IFDIR
    }

    /// mkdir -p.
    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(SandboxError) {
        if isDirectory(path) { return }
        let parent = parentDirectory(path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode) < 0 && Glibc.errno != EEXIST { throw error("mkdir \(path)") }
    }

    static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(SandboxError) {
        if mkdir(path, mode) < 0 && Glibc.errno != EEXIST { throw error("mkdir \(path)") }
    }

    /// rm -rf without following symlinks and without leaving the file system
    /// of `path`; used on directories agentd owns (a sandbox's upper layer).
    static func removeTree(_ path: String) throws(SandboxError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            if Glibc.errno == ENOENT { return }
            if Glibc.errno == ENOTDIR || Glibc.errno == ELOOP {
                try check(unlink(path), "unlink \(path)")
                return
            }
            throw error("open \(path)")
        }
        try removeContents(fd, what: path)
        if rmdir(path) < 0 && Glibc.errno != ENOENT { throw error("rmdir \(path)") }
    }

    /// Remove everything inside the directory `dirfd` (which it closes).
    static func removeContents(_ directoryFD: Int32, what: String) throws(SandboxError) {
        guard let dir = fdopendir(directoryFD) else {
            let e = error("fdopendir \(what)")
            close(directoryFD)
            throw e
        }
        defer { closedir(dir) }
        var names: [(String, Bool)] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            names.append((name, ent.pointee.d_type == UInt8(DT_DIR)))
        }
        let fd = dirfd(dir)
        for (name, isDir) in names {
            if isDir {
                let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if sub >= 0 {
                    try removeContents(sub, what: what + "/" + name)
                }
                if unlinkat(fd, name, AT_REMOVEDIR) < 0 && Glibc.errno != ENOENT {
                    throw error("rmdir \(what)/\(name)")
                }
            } else if unlinkat(fd, name, 0) < 0 {
                if Glibc.errno == EISDIR {
                    let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                    if sub >= 0 { try removeContents(sub, what: what + "/" + name) }
                    if unlinkat(fd, name, AT_REMOVEDIR) < 0 && Glibc.errno != ENOENT {
                        throw error("rmdir \(what)/\(name)")
                    }
                } else if Glibc.errno != ENOENT {
                    throw error("unlink \(what)/\(name)")
                }
            }
        }
    }

    /// Names in a directory (no "." or "..").
    static func listDirectory(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func pipe() throws(SandboxError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        try check(agentd_pipe2_cloexec(&fds), "pipe2")
        return (fds[0], fds[1])
    }

    /// Monotonic clock in nanoseconds.
    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

extension String {
    /// Without leading and trailing ASCII whitespace.
    var trimmed: String {
        let ws: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
        let bytes = Array(utf8)
        guard let first = bytes.firstIndex(where: { !ws.contains($0) }),
              let last = bytes.lastIndex(where: { !ws.contains($0) }) else { return "" }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
