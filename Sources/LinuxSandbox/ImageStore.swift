import SandboxKit
#if canImport(Glibc)
import Glibc
#endif

/// Root filesystem images: directories under `<state>/images/<name>`, used
/// read-only as the lower layer of every sandbox's overlay.  Built by
/// `rootfs/build NAME`, or imported from a tarball (air-gapped hosts).
struct ImageStore: Sendable {
    let directory: String

    func path(for image: String) throws(SandboxError) -> String {
        let path: String
        if image.hasPrefix("/") {
            path = image
        } else {
            guard ImageName.isValid(image) else {
                throw SandboxError(.invalidArgument, "image name \"\(image)\" is not valid", field: "image")
            }
            path = directory + "/" + image
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
        let staging = directory + "/." + name + ".importing"
        try Posix.removeTree(staging)
        try Posix.makeDirectory(staging)
        let status = try Program.run(["tar", "--numeric-owner", "-xpf", tarball, "-C", staging])
        guard status == 0 else {
            try? Posix.removeTree(staging)
            throw SandboxError(.invalidArgument, "tar could not unpack \(tarball) (exit \(status))", field: "file")
        }
        let old = directory + "/." + name + ".old"
        if Posix.exists(final) {
            try Posix.removeTree(old)
            try Posix.check(rename(final, old), "rename \(final)")
        }
        try Posix.check(rename(staging, final), "rename \(staging)")
        try? Posix.removeTree(old)
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
