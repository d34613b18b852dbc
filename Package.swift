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
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
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
        .systemLibrary(name: "CXattr"),

        // Core libraries shared by client and server.
        .target(name: "LockCrypto", dependencies: ["CSodium"],
                swiftSettings: swiftSettings),
        .target(name: "LockChunker", swiftSettings: swiftSettings),
        .target(name: "LockWire", dependencies: ["LockCrypto"],
                swiftSettings: swiftSettings),

        // The client engine: remote, index, sync, cache, outbox.
        .target(name: "LockClient",
                dependencies: ["LockWire", "LockCrypto", "LockChunker", "CCurl",
                               .product(name: "GRDB", package: "GRDB.swift")],
                swiftSettings: swiftSettings),

        // The FUSE front end: decodes requests, calls the engine, replies.
        .target(name: "LockFS", dependencies: ["LockClient", "LockWire", "CFuse"],
                swiftSettings: swiftSettings),

        // The blob server: routes, auth, limits, and the embedded stores.
        .target(
            name: "LockServer",
            dependencies: [
                "LockWire", "LockCrypto",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),

        // The S3-compatible blob store (issue 7), behind LockServer's BlobStore.
        .target(
            name: "LockServerS3",
            dependencies: [
                "LockServer", "LockCrypto",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings),

        // The scale-out metadata store: PostgreSQL behind MetadataStore.
        .target(
            name: "LockServerPostgres",
            dependencies: [
                "LockServer", "LockWire", "LockCrypto",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),

        // Test support: golden vectors and seeded data (no fakes yet).
        .target(name: "LockTesting", swiftSettings: swiftSettings),

        // Executables.
        .executableTarget(
            name: "lockfs",
            dependencies: [
                "LockCrypto", "LockWire", "LockClient", "LockFS", "CFuse", "CCurl", "CSQLite", "CXattr",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "lockfs-server",
            dependencies: [
                "LockCrypto", "LockWire", "LockServer", "LockServerS3", "LockServerPostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "lockfs-bench",
            dependencies: [
                "LockCrypto", "LockChunker", "LockWire", "LockClient", "LockTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings),

        // Tests (swift-testing). Golden vectors live in Tests/Vectors.
        .testTarget(name: "LockCryptoTests", dependencies: ["LockCrypto", "LockTesting"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "LockChunkerTests", dependencies: ["LockChunker", "LockCrypto", "LockTesting"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "LockWireTests", dependencies: ["LockWire", "LockCrypto", "LockTesting"],
                    swiftSettings: swiftSettings),
        .testTarget(
            name: "LockClientTests",
            // GRDB: the hostile-server tests edit the server's SQLite file directly.
            dependencies: ["LockClient", "LockWire", "LockCrypto", "LockTesting",
                           .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings),
        .testTarget(name: "LockFSTests", dependencies: ["LockFS", "LockClient", "LockTesting"],
                    swiftSettings: swiftSettings),
        .testTarget(
            name: "LockServerTests",
            dependencies: [
                "LockServer", "LockServerS3", "LockServerPostgres", "LockWire", "LockCrypto", "LockTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings),
    ],
    swiftLanguageModes: [.v6]
)
