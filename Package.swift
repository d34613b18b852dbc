// swift-tools-version:6.0
import PackageDescription

/// Settings every Swift target shares: Swift 6 language mode (strict
/// concurrency) and `any` spelled out for existentials.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "lockfs",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lockfs", targets: ["lockfs"]),
        .executable(name: "lockfs-server", targets: ["lockfs-server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C libraries, through pkg-config. Each shim.h only includes the
        // library's headers (and, for FUSE, fixes FUSE_USE_VERSION).
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium",
                       providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),

        // Core libraries shared by client and server.
        .target(name: "LockCrypto", dependencies: ["CSodium"],
                swiftSettings: swiftSettings),
        .target(name: "LockChunker", swiftSettings: swiftSettings),
        .target(name: "LockWire", dependencies: ["LockCrypto"],
                swiftSettings: swiftSettings),

        // Test support: golden vectors and seeded data (no fakes yet).
        .target(name: "LockTesting", swiftSettings: swiftSettings),

        // Executables.
        .executableTarget(
            name: "lockfs",
            dependencies: [
                "LockCrypto", "LockWire", "CFuse", "CCurl", "CSQLite",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "lockfs-server",
            dependencies: [
                "LockCrypto", "LockWire", "CSQLite",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "lockfs-bench",
            dependencies: ["LockCrypto", "LockChunker", "LockWire", "LockTesting"],
            swiftSettings: swiftSettings),

        // Tests (swift-testing). Golden vectors live in Tests/Vectors.
        .testTarget(name: "LockCryptoTests", dependencies: ["LockCrypto", "LockTesting"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "LockChunkerTests", dependencies: ["LockChunker", "LockCrypto", "LockTesting"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "LockWireTests", dependencies: ["LockWire", "LockCrypto", "LockTesting"],
                    swiftSettings: swiftSettings),
    ],
    swiftLanguageModes: [.v6]
)
