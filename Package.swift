// swift-tools-version:6.0
import PackageDescription

/// Static C executables (the sandbox's PID 1 and the test probe) must not pull
/// in the Swift runtime: `-nostartfiles` drops swiftrt.o and
/// `-static-executable` links glibc statically.
let staticC: [LinkerSetting] = [.unsafeFlags(["-static-executable", "-nostartfiles"])]

let package = Package(
    name: "agentd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "agentd", targets: ["agentd"]),
        .executable(name: "agentd-init", targets: ["agentd-init"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // The C that Swift cannot do: clone3, mounts, pivot_root, seccomp, caps, exec.
        .target(
            name: "CAgentdSandbox",
            linkerSettings: [.linkedLibrary("seccomp"), .linkedLibrary("cap")]
        ),
        // PID 1 of every sandbox (static, no Swift, no libc).
        .executableTarget(
            name: "agentd-init",
            cSettings: [.unsafeFlags(["-ffreestanding", "-fno-stack-protector", "-fno-builtin", "-O2"])],
            linkerSettings: [.unsafeFlags(["-static-executable", "-nostartfiles", "-Xclang-linker", "-nostdlib"])]
        ),
        // Test helper copied into test images (static, no Swift).
        .executableTarget(name: "agentd-probe", linkerSettings: staticC),

        // The sandbox abstraction: protocol and value types, no dependencies.
        .target(name: "SandboxKit"),
        // The Linux backend: namespaces, overlay, cgroups, seccomp.
        .target(
            name: "LinuxSandbox",
            dependencies: [
                "SandboxKit", "CAgentdSandbox",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "agentd",
            dependencies: [
                "SandboxKit", "LinuxSandbox",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "sandbox-bench",
            dependencies: ["SandboxKit", "LinuxSandbox", .product(name: "Logging", package: "swift-log")]
        ),

        .testTarget(name: "SandboxKitTests", dependencies: ["SandboxKit"]),
        .testTarget(
            name: "LinuxSandboxTests",
            dependencies: ["SandboxKit", "LinuxSandbox", "CAgentdSandbox"]
        ),
    ]
)
