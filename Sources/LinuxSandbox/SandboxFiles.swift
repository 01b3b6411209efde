import CAgentdSandbox
import SandboxKit
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// File operations inside a running sandbox, from the host.  Every path is
/// first normalised lexically (SandboxPath), then resolved by the kernel
/// beneath the sandbox's root directory with openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_MAGICLINKS): a `..` or a symlink that would leave the root
/// fails (EXDEV) and is refused; nothing on the host is ever touched.
struct SandboxFiles {
    /// O_PATH descriptor of the sandbox's root (from /proc/PID/root).
    let rootFD: Int32
    let workdir: String
    /// Owner for created files (the mapped root in user-namespace mode).
    let owner: (uid: uid_t, gid: gid_t)?

    static let procMagic: Int = 0x9fa0
    static let sysfsMagic: Int = 0x6265_6572

    /// Normalise and refuse what the files API never touches.
    func resolve(_ path: String) throws(SandboxError) -> String {
        let abs = try SandboxPath.resolve(path, workdir: workdir)
        if SandboxPath.isPseudoFilesystem(abs) {
            throw SandboxError(.invalidArgument, "\(abs) is a kernel file system; the files API does not touch it",
                               field: "path")
        }
        return abs
    }

    /// openat2 beneath the root; errors name the caller's path.
    func open(_ abs: String, _ flags: Int32, mode: UInt32 = 0) throws(SandboxError) -> Int32 {
        let rel = SandboxPath.relative(abs)
        let fd = agentd_open_in_root(rootFD, rel.isEmpty ? "." : rel, flags, mode)
        if fd < 0 { throw mapError(errno, abs) }
        let magic = Int(agentd_fs_magic(fd))
        if magic == Self.procMagic || magic == Self.sysfsMagic {
            Glibc.close(fd)
            throw SandboxError(.invalidArgument, "\(abs) leads into a kernel file system", field: "path")
        }
        return fd
    }

    /// Runs a call that creates an inode as the sandbox's root when the
    /// sandbox has a user namespace: its root file system is mounted in that
    /// namespace, where the daemon's own ids have no mapping (creating as
    /// host root fails with EOVERFLOW), and the new file must belong to the
    /// sandbox's root anyway.  setfsuid/setfsgid change this thread's ids
    /// for file access only, and are restored before returning (errno is
    /// kept for the caller).
    func asOwner<T>(_ create: () -> T) -> T { Self.asOwner(owner, create) }

    static func asOwner<T>(_ owner: (uid: uid_t, gid: gid_t)?, _ create: () -> T) -> T {
        guard let owner else { return create() }
        var oldUID: UInt32 = 0, oldGID: UInt32 = 0, ignoredUID: UInt32 = 0, ignoredGID: UInt32 = 0
        agentd_set_fs_ids(owner.uid, owner.gid, &oldUID, &oldGID)
        let result = create()
        let saved = errno
        agentd_set_fs_ids(oldUID, oldGID, &ignoredUID, &ignoredGID)
        errno = saved
        return result
    }

    func mapError(_ e: Int32, _ path: String) -> SandboxError {
        switch e {
        case ENOENT: return SandboxError(.notFound, "\(path): no such file or directory", field: "path", errno: e)
        // The path is well formed but the sandbox's files are not what it
        // expects: a conflict with their state, not bad input.
        case ENOTDIR: return SandboxError(.conflict, "\(path): a component is not a directory", field: "path", errno: e)
        case EISDIR: return SandboxError(.conflict, "\(path) is a directory", field: "path", errno: e)
        case EXDEV, ELOOP:
            return SandboxError(.invalidArgument, "\(path) resolves outside the sandbox root (through .. or a symlink)",
                                field: "path", errno: e)
        case EEXIST: return SandboxError(.conflict, "\(path) exists", field: "path", errno: e)
        case ENOTEMPTY: return SandboxError(.conflict, "\(path) is not empty", field: "path", errno: e)
        case EACCES, EPERM, EROFS: return SandboxError(.conflict, "\(path): \(String(cString: strerror(e)))", field: "path", errno: e)
        case ENOSPC, EDQUOT: return SandboxError(.conflict, "\(path): no space left", field: "path", errno: e)
        case ENAMETOOLONG: return SandboxError(.invalidArgument, "\(path): the name is too long", field: "path", errno: e)
        default: return Posix.error(path, e)
        }
    }

    static func info(name: String, path: String, st: stat) -> FileInfo {
        let kind: FileKind
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .file
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: kind = .other
        }
        let seconds = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        return FileInfo(name: name, path: path, kind: kind, size: UInt64(max(0, st.st_size)),
                        mode: UInt32(st.st_mode & 0o7777), modifiedAt: Date(timeIntervalSince1970: seconds))
    }

    static func baseName(_ abs: String) -> String {
        abs == "/" ? "/" : String(abs.split(separator: "/").last ?? "")
    }

    func list(_ path: String) throws(SandboxError) -> [FileInfo] {
        let abs = try resolve(path)
        let fd = try open(abs, O_RDONLY | O_DIRECTORY)
        guard let dir = fdopendir(fd) else {
            let e = errno
            Glibc.close(fd)
            throw mapError(e, abs)
        }
        defer { closedir(dir) }
        var out: [FileInfo] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if name == "." || name == ".." { continue }
            var st = Glibc.stat()
            guard fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            out.append(Self.info(name: name, path: abs == "/" ? "/" + name : abs + "/" + name, st: st))
        }
        return out.sorted { $0.name < $1.name }
    }

    func stat(_ path: String) throws(SandboxError) -> FileInfo {
        let abs = try resolve(path)
        let fd = try open(abs, agentd_o_path | O_NOFOLLOW)
        defer { Glibc.close(fd) }
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else { throw mapError(errno, abs) }
        return Self.info(name: Self.baseName(abs), path: abs, st: st)
    }

    /// Open a regular file for reading; the caller streams and closes it.
    func openForReading(_ path: String) throws(SandboxError) -> (fd: Int32, size: UInt64) {
        let abs = try resolve(path)
        let fd = try open(abs, O_RDONLY | O_NOCTTY | O_NONBLOCK)
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw mapError(e, abs)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw SandboxError(.conflict, "\(abs) is not a regular file", field: "path")
        }
        // Regular files never block; clear O_NONBLOCK for plain reads.
        _ = fcntl(fd, F_SETFL, 0)
        return (fd, UInt64(st.st_size))
    }

    /// Open (creating parents) the directory that will hold `abs`.
    func openParent(_ abs: String, create: Bool) throws(SandboxError) -> (dirFD: Int32, name: String) {
        guard abs != "/" else { throw SandboxError(.conflict, "the root itself cannot be replaced", field: "path") }
        let parent = Posix.parentDirectory(abs)
        if create { try makeDirectories(parent) }
        let fd = try open(parent, O_RDONLY | O_DIRECTORY)
        return (fd, Self.baseName(abs))
    }

    func makeDirectories(_ abs: String) throws(SandboxError) {
        var walked = ""
        for part in abs.split(separator: "/") {
            let parent = walked.isEmpty ? "/" : walked
            walked += "/" + part
            let dfd = try open(parent, O_RDONLY | O_DIRECTORY)
            defer { Glibc.close(dfd) }
            let made = asOwner { mkdirat(dfd, String(part), 0o755) }
            if made != 0 && errno != EEXIST {
                throw mapError(errno, walked)
            }
        }
    }

    func makeDirectory(_ path: String, parents: Bool) throws(SandboxError) {
        let abs = try resolve(path)
        if parents {
            try makeDirectories(abs)
            return
        }
        let (dfd, name) = try openParent(abs, create: false)
        defer { Glibc.close(dfd) }
        guard asOwner({ mkdirat(dfd, name, 0o755) }) == 0 else { throw mapError(errno, abs) }
    }

    /// A temporary file beside the destination; `commit` renames it into place.
    func createTemporary(_ path: String, mode: UInt32) throws(SandboxError) -> PendingWrite {
        let abs = try resolve(path)
        let (dfd, name) = try openParent(abs, create: true)
        var existing = Glibc.stat()
        if fstatat(dfd, name, &existing, AT_SYMLINK_NOFOLLOW) == 0, (existing.st_mode & S_IFMT) == S_IFDIR {
            Glibc.close(dfd)
            throw SandboxError(.conflict, "\(abs) is a directory", field: "path")
        }
        // Not derived from `name`: a name near NAME_MAX must not make the
        // temporary one too long.
        let tmp = ".agentd-upload-\(UInt64.random(in: 0...UInt64.max))"
        let fd = asOwner { openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode_t(mode & 0o7777)) }
        guard fd >= 0 else {
            let e = errno
            Glibc.close(dfd)
            throw mapError(e, abs)
        }
        _ = fchmod(fd, mode_t(mode & 0o7777))
        return PendingWrite(dirFD: dfd, fd: fd, tempName: tmp, name: name, path: abs, owner: owner)
    }

    func remove(_ path: String, recursive: Bool) throws(SandboxError) {
        let abs = try resolve(path)
        let (dfd, name) = try openParent(abs, create: false)
        defer { Glibc.close(dfd) }
        var st = Glibc.stat()
        guard fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw mapError(errno, abs) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            if recursive {
                let sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { throw mapError(errno, abs) }
                try Posix.removeContents(sub, what: abs)
            }
            guard unlinkat(dfd, name, AT_REMOVEDIR) == 0 else { throw mapError(errno, abs) }
        } else {
            guard unlinkat(dfd, name, 0) == 0 else { throw mapError(errno, abs) }
        }
    }
}

/// A file being uploaded: written to a temporary name, renamed when complete.
struct PendingWrite {
    let dirFD: Int32
    let fd: Int32
    let tempName: String
    let name: String
    let path: String
    /// The sandbox's root in user-namespace mode (see SandboxFiles.asOwner).
    let owner: (uid: uid_t, gid: gid_t)?

    func write(_ bytes: [UInt8]) throws(SandboxError) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                throw e == ENOSPC || e == EDQUOT
                    ? SandboxError(.conflict, "\(path): no space left", field: "path", errno: e)
                    : Posix.error("write \(path)", e)
            }
            off += n
        }
    }

    func commit() throws(SandboxError) -> FileInfo {
        defer {
            Glibc.close(fd)
            Glibc.close(dirFD)
        }
        guard fsync(fd) == 0 else {
            let e = Posix.error("fsync \(path)")
            _ = unlinkat(dirFD, tempName, 0)
            throw e
        }
        guard SandboxFiles.asOwner(owner, { renameat(dirFD, tempName, dirFD, name) }) == 0 else {
            let code = errno
            // The destination is a mount point of the sandbox (/etc/hosts,
            // /tmp...) or otherwise not replaceable: its state, not a failure.
            let e = code == EXDEV || code == EBUSY || code == EISDIR || code == ENOTEMPTY || code == EPERM
                || code == EACCES || code == EROFS
                ? SandboxError(.conflict, "\(path) cannot be replaced: \(String(cString: strerror(code)))", field: "path",
                               errno: code)
                : Posix.error("rename \(path)", code)
            _ = unlinkat(dirFD, tempName, 0)
            throw e
        }
        _ = fsync(dirFD)
        var st = Glibc.stat()
        _ = fstat(fd, &st)
        return SandboxFiles.info(name: name, path: path, st: st)
    }

    func abort() {
        _ = unlinkat(dirFD, tempName, 0)
        Glibc.close(fd)
        Glibc.close(dirFD)
    }
}
