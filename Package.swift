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
        .executable(name: "agentctl", targets: ["agentctl"]),
        .executable(name: "agentd-init", targets: ["agentd-init"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
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
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Wire types shared by the daemon, agentctl and tests; IDs, roles, errors.
        // The API's types and input rules (naming rules shared with SandboxKit).
        .target(name: "AgentdModel", dependencies: ["SandboxKit"]),
        // SQLite (GRDB) persistence: migrations, group commit, run queue.
        .target(
            name: "AgentdStore",
            dependencies: ["AgentdModel", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "GRDBSQLite", package: "GRDB.swift"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // The domain: auth, agents, sessions, sandboxes, secrets, events.
        .target(
            name: "AgentdCore",
            dependencies: [
                "AgentdModel", "AgentdStore", "SandboxKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Agent runs: the worker, the model gateway client, tools, harness relay.
        .target(
            name: "AgentdWorker",
            dependencies: [
                "AgentdCore", "AgentdModel", "AgentdStore", "SandboxKit",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The HTTP API (Hummingbird): routes, auth, SSE, OpenAPI, metrics.
        .target(
            name: "AgentdServer",
            dependencies: [
                "AgentdCore", "AgentdModel", "SandboxKit",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The dashboard's assets (Dashboard/) are compiled in at build
            // time by the DashboardAssets plugin.
            exclude: ["openapi.json", "Dashboard"],
            plugins: ["DashboardAssets"]
        ),
        // The build tool and plugin that embed the dashboard's assets.
        .executableTarget(name: "embed-dashboard"),
        .plugin(name: "DashboardAssets", capability: .buildTool(), dependencies: ["embed-dashboard"]),
        .executableTarget(
            name: "agentd",
            dependencies: [
                "SandboxKit", "LinuxSandbox", "AgentdCore", "AgentdServer", "AgentdStore", "AgentdModel", "AgentdWorker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                "CRuntimeHook",
            ]
        ),
        // One C function: the address of the Swift runtime's global-enqueue
        // hook, which dlsym cannot find in a static build (see its header).
        .target(name: "CRuntimeHook"),
        .executableTarget(
            name: "agentctl",
            dependencies: [
                "AgentdModel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        // An in-memory SandboxBackend for tests of what sits above it.
        .target(name: "SandboxKitTesting", dependencies: ["SandboxKit"]),
        // The benchmarks: ArgumentParser commands over shared statistics.
        .target(name: "BenchSupport"),
        .executableTarget(
            name: "sandbox-bench",
            dependencies: [
                "SandboxKit", "LinuxSandbox", "BenchSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        .executableTarget(
            name: "agentd-bench",
            dependencies: [
                "AgentdCore", "AgentdModel", "AgentdStore", "AgentdWorker", "LinuxSandbox", "SandboxKit", "BenchSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),

        .testTarget(name: "SandboxKitTests", dependencies: ["SandboxKit"]),
        .testTarget(name: "AgentdModelTests", dependencies: ["AgentdModel"]),
        .testTarget(name: "AgentdStoreTests", dependencies: ["AgentdStore", "AgentdModel"]),
        .testTarget(name: "AgentdWorkerTests", dependencies: ["AgentdWorker", "AgentdModel"]),
        .testTarget(name: "AgentdCoreTests", dependencies: ["AgentdCore", "AgentdStore", "AgentdModel"]),
        // The HTTP API in process over the in-memory backend (no root).
        .testTarget(
            name: "AgentdServerTests",
            dependencies: [
                "AgentdServer", "AgentdCore", "AgentdStore", "AgentdModel", "SandboxKit", "SandboxKitTesting",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "LinuxSandboxTests",
            dependencies: ["SandboxKit", "LinuxSandbox", "CAgentdSandbox"]
        ),
    ]
)
