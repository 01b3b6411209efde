import ArgumentParser
import LinuxSandbox
import SandboxKit

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Sandbox root filesystem images.",
        subcommands: [ImageList.self, ImageImport.self])
}

struct ImageList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the images in the state directory.")
    @OptionGroup var state: StateOptions

    func run() async throws {
        for name in LinuxImages.names(stateDirectory: state.resolvedStateDir) { print(name) }
    }
}

struct ImageImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import a root filesystem tarball as an image (for air-gapped hosts).")
    @OptionGroup var state: StateOptions
    @Argument(help: "Image name, e.g. default.") var name: String
    @Argument(help: "A tarball of the root filesystem (tar, tar.gz, tar.xz, tar.zst).") var tarball: String
    @Flag(help: "Replace an existing image of that name.") var replace = false

    func run() async throws {
        do {
            try LinuxImages.importTarball(state.absolute(tarball), as: name, stateDirectory: state.resolvedStateDir,
                                          replace: replace)
            print("imported image \(name)")
        } catch {
            fail(error.message)
        }
    }
}
