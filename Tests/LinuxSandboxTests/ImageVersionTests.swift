import Logging
import SandboxKit
import Testing
@testable import LinuxSandbox
#if canImport(Glibc)
import Glibc
#endif

/// Replacing an image while sandboxes run on it (a package upgrade, or
/// `agentd image import --replace`) must not pull the lower layer from under
/// them: they keep their version until their next start.
@Suite("Image versions (as root)", .serialized)
struct ImageVersionTests {
    /// A copy of the test image with /etc/version saying `label`, as a tarball.
    static func tarball(_ label: String, in dir: String) throws -> String {
        let tree = dir + "/tree-" + label
        #expect(try Program.run(["/bin/cp", "-a", TestEnvironment.imagePath, tree]) == 0)
        try Posix.makeDirectories(tree + "/etc")
        let fd = try Posix.open(tree + "/etc/version", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try Posix.write(fd, label + "\n", what: "version")
        Posix.close(fd)
        let tar = dir + "/" + label + ".tar"
        #expect(try Program.run(["/bin/tar", "--numeric-owner", "-C", tree, "-cf", tar, "."]) == 0)
        try Posix.removeTree(tree)
        return tar
    }

    @Test func aReplacedImageStaysUnderItsRunningSandboxesUntilTheyRestart() async throws {
        try TestEnvironment.requireRoot()
        let state = TestEnvironment.root + "/image-versions"
        defer { try? Posix.removeTree(state) }
        try Posix.makeDirectories(state)
        let one = try Self.tarball("one", in: state)
        let two = try Self.tarball("two", in: state)
        let three = try Self.tarball("three", in: state)
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let b = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: state, runDirectory: state + "/run",
                                       cgroupParent: "agentd-test-img-\(getpid())", networkNamespacePool: 0),
            logger: logger)
        let images = state + "/images"
        // Versions, not counting ones being deleted (in the background).
        let versions = { Posix.listDirectory(images + "/.versions").filter { !$0.hasSuffix(".removing") }.sorted() }
        func settled() async throws {
            for _ in 0..<100 where Posix.listDirectory(images + "/.versions").contains(where: { $0.hasSuffix(".removing") }) {
                try await Task.sleep(for: .milliseconds(50))
            }
        }

        try LinuxImages.importTarball(one, as: "vimg", stateDirectory: state, replace: false)
        #expect(Posix.isSymlink(images + "/vimg"))
        await expectError(.conflict) {
            try LinuxImages.importTarball(two, as: "vimg", stateDirectory: state, replace: false)
        }
        var spec = TestEnvironment.spec
        spec.image = "vimg"
        let id = try await b.started(TestEnvironment.id(), spec)
        #expect(try await b.sh(id, "cat /etc/version") == "one\n")

        // Replaced under the running sandbox: it keeps working on "one".
        try LinuxImages.importTarball(two, as: "vimg", stateDirectory: state, replace: true)
        #expect(versions().count == 2)
        #expect(try await b.sh(id, "cat /etc/version; ls /bin/sh >/dev/null && echo sh-ok") == "one\nsh-ok\n")
        // A new sandbox gets "two" at once.
        let other = try await b.started(TestEnvironment.id("other"), spec)
        #expect(try await b.sh(other, "cat /etc/version") == "two\n")
        try await b.destroy(other)
        #expect(versions().count == 2, "\"one\" is still in use")

        // Its next start moves it to "two", and "one" goes.
        try await b.stop(id)
        try await b.start(id)
        #expect(try await b.sh(id, "cat /etc/version") == "two\n")
        #expect(versions().count == 1 && versions()[0].hasPrefix("vimg@"))

        // An unversioned image directory (made before versioning, or by
        // hand) is moved aside as a legacy version when replaced.
        try await b.stop(id)
        let current = ImageStore.resolve(images + "/vimg")
        #expect(unlink(images + "/vimg") == 0)
        #expect(rename(current, images + "/vimg") == 0)
        try await b.start(id)
        #expect(try await b.sh(id, "cat /etc/version") == "two\n")
        try LinuxImages.importTarball(three, as: "vimg", stateDirectory: state, replace: true)
        #expect(versions().contains { $0.contains("@legacy-") })
        #expect(try await b.sh(id, "cat /etc/version") == "two\n")
        try await b.stop(id)
        #expect(versions().count == 1 && !versions()[0].contains("@legacy-"))
        try await b.start(id)
        #expect(try await b.sh(id, "cat /etc/version") == "three\n")

        // A restarted backend knows which version its adopted sandbox uses.
        try LinuxImages.importTarball(one, as: "vimg", stateDirectory: state, replace: true)
        await b.shutdown()
        let again = try await LinuxSandboxBackend.open(
            config: LinuxSandboxConfig(stateDirectory: state, runDirectory: state + "/run",
                                       cgroupParent: "agentd-test-img-\(getpid())", networkNamespacePool: 0),
            logger: logger)
        #expect(versions().count == 2, "the adopted sandbox's version must stay")
        #expect(try await again.sh(id, "cat /etc/version") == "three\n")
        try await again.destroy(id)
        #expect(versions().count == 1)
        await again.close()
        try await settled()
        #expect(Posix.listDirectory(images + "/.versions").count == 1, "stale versions are deleted")
    }
}
