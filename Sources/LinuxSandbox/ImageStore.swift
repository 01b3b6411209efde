import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

/// Root filesystem images, used read-only as the lower layer of every
/// sandbox's overlay.  Built by `rootfs/build NAME`, or imported from a
/// tarball (air-gapped hosts).
///
/// An image is versioned: `<state>/images/<name>` is a symlink to
/// `<state>/images/.versions/<name>@<time>`.  Replacing an image makes a new
/// version and swaps the symlink; a sandbox keeps the version it was started
/// on (the overlay's lower layer must not change under it) and gets the new
/// one at its next start.  A version nothing runs on any more is found by
/// `staleVersions` and removed by the backend (`collectImageGarbage`).  A plain directory under the name (images
/// made before versioning, or by hand) works too, and is moved aside as a
/// `@legacy-` version when replaced.
struct ImageStore: Sendable {
    let directory: String
    var versions: String { directory + "/.versions" }

    func path(for image: String) throws(SandboxError) -> String {
        let path: String
        if image.hasPrefix("/") {
            path = image
        } else {
            guard ImageName.isValid(image) else {
                throw SandboxError(.invalidArgument, "image name \"\(image)\" is not valid", field: "image")
            }
            path = Self.resolve(directory + "/" + image)
        }
        guard MountPlan.isSafeLayerPath(path) else {
            throw SandboxError(.invalidArgument, "image path \"\(path)\" contains , : or \\", field: "image")
        }
        guard Posix.isDirectory(path) else {
            throw SandboxError(.notFound,
                               "image \"\(image)\" not found (looked in \(path)); build it with `rootfs/build \(image)`",
                               field: "image")
        }
        guard Posix.exists(path + "/bin/sh") || Posix.exists(path + "/usr/bin/sh") || Posix.exists(path + "/bin") else {
            throw SandboxError(.invalidArgument, "image \"\(image)\" at \(path) has no /bin: not a root filesystem",
                               field: "image")
        }
        return path
    }

    func names() -> [String] {
        Posix.listDirectory(directory).filter { ImageName.isValid($0) && Posix.isDirectory(directory + "/" + $0) }
    }

    /// Unpack a tarball into a new image, atomically (a half-extracted image
    /// never appears under its name).
    func importTarball(_ tarball: String, as name: String, replace: Bool) throws(SandboxError) {
        guard ImageName.isValid(name) else {
            throw SandboxError(.invalidArgument, "image name \"\(name)\" is not valid", field: "name")
        }
        guard Posix.exists(tarball) else { throw SandboxError(.notFound, "no file \(tarball)", field: "file") }
        try Posix.makeDirectories(directory)
        let final = directory + "/" + name
        if Posix.exists(final) && !replace {
            throw SandboxError(.conflict, "image \"\(name)\" exists; pass --replace to overwrite it")
        }
        try Posix.makeDirectories(versions)
        let staging = directory + "/." + name + ".importing"
        try Posix.removeTree(staging)
        try Posix.makeDirectory(staging)
        let status = try Program.run(["tar", "--numeric-owner", "-xpf", tarball, "-C", staging])
        guard status == 0 else {
            try? Posix.removeTree(staging)
            throw SandboxError(.invalidArgument, "tar could not unpack \(tarball) (exit \(status))", field: "file")
        }
        let version = name + "@" + Self.stamp()
        try Posix.check(rename(staging, versions + "/" + version), "rename \(staging)")
        try install(version, as: name)
    }

    /// Point `name` at `version` (a directory in `.versions`), atomically.
    func install(_ version: String, as name: String) throws(SandboxError) {
        let final = directory + "/" + name
        if Posix.isDirectory(final) && !Posix.isSymlink(final) {
            // An unversioned image: it becomes a version of its own, kept
            // while sandboxes still run on it.
            let legacy = versions + "/" + name + "@legacy-" + Self.stamp()
            try Posix.check(rename(final, legacy), "rename \(final)")
        }
        let link = directory + "/." + name + ".link"
        _ = unlink(link)
        try Posix.check(symlink(".versions/" + version, link), "symlink \(link)")
        try Posix.check(rename(link, final), "rename \(link)")
    }

    /// Every version that no image name points at and no running sandbox
    /// uses: the ones to delete.  `keepLegacy`: some running sandbox started
    /// before its image version was recorded, so unversioned (`@legacy-`)
    /// ones stay.
    /// `leftovers`: also versions a previous process began to delete.
    func staleVersions(inUse: Set<String>, keepLegacy: Bool, leftovers: Bool = false) -> [String] {
        let current = Set(Posix.listDirectory(directory).filter { Posix.isSymlink(directory + "/" + $0) }
            .map { Self.resolve(directory + "/" + $0) })
        var stale: [String] = []
        for v in Posix.listDirectory(versions) {
            let path = Self.resolve(versions + "/" + v)
            if v.hasSuffix(".removing") {
                if leftovers { stale.append(path) }
                continue
            }
            if current.contains(path) || inUse.contains(path) { continue }
            if keepLegacy && v.contains("@legacy-") { continue }
            stale.append(path)
        }
        return stale
    }

    /// The real path behind a name (symlinks resolved), or the path itself.
    static func resolve(_ path: String) -> String {
        guard let real = realpath(path, nil) else { return path }
        defer { free(real) }
        return String(cString: real)
    }

    /// A sortable, unique-enough version stamp: UTC time to the nanosecond.
    static func stamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = tm()
        var secs = ts.tv_sec
        gmtime_r(&secs, &t)
        func pad(_ v: Int32, _ n: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, n - s.count)) + s
        }
        let ns = String(ts.tv_nsec)
        return pad(t.tm_year + 1900, 4) + pad(t.tm_mon + 1, 2) + pad(t.tm_mday, 2) + "T" + pad(t.tm_hour, 2)
            + pad(t.tm_min, 2) + pad(t.tm_sec, 2) + "." + String(repeating: "0", count: 9 - ns.count) + ns
    }
}

/// Running a helper program (tar) from the daemon, with posix_spawn.
enum Program {
    static func run(_ argv: [String]) throws(SandboxError) -> Int32 {
        let arena = CArena()
        let args = arena.stringArray(argv)
        var pid: pid_t = 0
        let env = arena.stringArray(["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"])
        let rc = posix_spawnp(&pid, argv[0], nil, nil, args, env)
        guard rc == 0 else { throw Posix.error("spawn \(argv[0])", rc) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw Posix.error("waitpid \(argv[0])") }
        }
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

/// Image operations for the command line.
public enum LinuxImages {
    public static func names(stateDirectory: String) -> [String] {
        ImageStore(directory: stateDirectory + "/images").names()
    }

    public static func importTarball(_ tarball: String, as name: String, stateDirectory: String, replace: Bool)
        throws(SandboxError)
    {
        try ImageStore(directory: stateDirectory + "/images").importTarball(tarball, as: name, replace: replace)
    }
}
