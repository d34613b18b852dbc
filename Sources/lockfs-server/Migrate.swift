import ArgumentParser
import Foundation
import LockCrypto
import LockServer
import LockServerPostgres
import LockServerS3
import Logging

/// `lockfs-server migrate`: copies an embedded deployment (DIR/metadata.sqlite
/// and DIR/blobs) to PostgreSQL and/or an S3 bucket, then verifies the copy
/// (docs/operations.md, "Migrating from the embedded stores").
///
/// Order: check that nothing uses DIR and that the target database is
/// empty (or already holds exactly this deployment), copy the blobs (those
/// already in the bucket are skipped: resumable), write all metadata in ONE
/// PostgreSQL transaction, then compare every blob and every row. A run
/// that is interrupted anywhere leaves a target that a new run completes.
struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy DIR's embedded stores to PostgreSQL (--to-metadata) and/or S3 (--to-blobs), then verify the copy.",
        discussion: """
            Stop the server first: migrate refuses to run while any lockfs-server process uses DIR. \
            A part without its --to-… flag stays where it is (DIR/metadata.sqlite or DIR/blobs): \
            start the server with --data DIR and the flags of the parts that moved. \
            DIR itself is only read. Interrupted, run the same command again: it continues. \
            Exit status: 0 copied and verified, 1 the copy differs or a source blob is missing, 64 refused.
            """)

    @Option(name: .long, help: ArgumentHelp("The embedded deployment's data directory (metadata.sqlite, blobs/).", valueName: "DIR"))
    var from: String

    @Option(name: .customLong("to-metadata"), help: ArgumentHelp(
        "Copy the metadata into this PostgreSQL database (postgres://USER@HOST[:PORT]/DB[?sslmode=…]); it must hold no accounts. "
            + "The password comes from PGPASSWORD or a passfile, never the URL.",
        valueName: "URL"))
    var toMetadata: String?

    @Option(name: .customLong("pg-passfile"), help: ArgumentHelp(
        "PostgreSQL password file (host:port:db:user:password lines, mode 0600); default PGPASSFILE, else ~/.pgpass.",
        valueName: "FILE"))
    var pgPassfile: String?

    @Option(name: .customLong("to-blobs"), help: ArgumentHelp(
        "Copy the blobs into this bucket: s3://BUCKET[/PREFIX]?endpoint=URL&region=R (the bucket must exist).", valueName: "URL"))
    var toBlobs: String?

    @Option(name: .customLong("s3-credentials"), help: ArgumentHelp(
        "File with the S3 access key (AWS shared-credentials form); default: $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, $AWS_SESSION_TOKEN.",
        valueName: "FILE"))
    var s3Credentials: String?

    @Option(help: ArgumentHelp("Blobs copied (and verified) at the same time.", valueName: "N"))
    var jobs = 8

    func validate() throws {
        guard toMetadata != nil || toBlobs != nil else {
            throw ValidationError("nothing to migrate: give --to-metadata postgres://…, --to-blobs s3://…, or both")
        }
        if toMetadata == nil && pgPassfile != nil { throw ValidationError("--pg-passfile goes with --to-metadata") }
        if toBlobs == nil && s3Credentials != nil { throw ValidationError("--s3-credentials goes with --to-blobs") }
        guard (1...64).contains(jobs) else { throw ValidationError("--jobs must be 1…64") }
        if let toMetadata { _ = try postgresSettings(toMetadata) }
        if let toBlobs { _ = try s3Store(toBlobs) }
    }

    func postgresSettings(_ url: String) throws -> PostgresSettings {
        var settings = try makePostgresSettings(url: url, passfile: pgPassfile)
        settings.maxConnections = 2
        // The whole import is one transaction and the export one read: no per-request bound.
        settings.operationTimeout = .seconds(24 * 3600)
        return settings
    }

    func s3Store(_ url: String) throws -> S3BlobStore {
        try makeS3Store(url: url, credentialsFile: s3Credentials)
    }

    func run() async throws {
        let dir = URL(fileURLWithPath: from)
        let started = ContinuousClock.now
        let sqlitePath = dir.appendingPathComponent("metadata.sqlite").path
        guard FileManager.default.fileExists(atPath: sqlitePath) else {
            throw ValidationError("\(dir.path) has no metadata.sqlite: give the server's data directory (its --data)")
        }
        // Nothing else may use DIR meanwhile: not a server, not an admin command.
        let blobRoot = dir.appendingPathComponent("blobs")
        guard try DataDirectoryLock.lock(in: dir, exclusive: true), FileBlobStore.processesUsing(root: blobRoot) == 0 else {
            throw ValidationError("\(dir.path) is in use by a running lockfs-server (or an admin command): stop it first, then migrate")
        }
        let source = try SQLiteMetadataStore(path: sqlitePath)
        let sourceBlobs = try FileBlobStore(root: blobRoot)

        say("reading the metadata in \(sqlitePath)")
        let snapshot = try await source.exportSnapshot()
        let brokenChains = snapshot.chainProblems()
        guard brokenChains.isEmpty else {
            throw MigrateFailure("the source's journal is inconsistent, not migrating:\n  " + brokenChains.joined(separator: "\n  "))
        }
        say("source: \(snapshot.accounts.count) accounts, \(snapshot.invites.count) invites, \(snapshot.devices.count) devices, "
              + "\(snapshot.chunks.count) chunk records, \(snapshot.entries.count) journal entries, \(snapshot.checkpoints.count) checkpoints")

        // The target database: empty, or exactly this deployment (an earlier run committed).
        var database: PostgresMetadataStore? = nil
        var metadataCopied = false
        if let toMetadata {
            let settings = try postgresSettings(toMetadata)
            do {
                database = try await PostgresMetadataStore.open(settings, logger: .adminCommands)
            } catch let e as PostgresSettingsError {
                throw ValidationError(e.description)
            }
            let existing = try await database!.exportSnapshot()
            if !existing.holdsNoUsers {
                let differences = snapshot.differences(from: existing, limit: 5)
                guard differences.isEmpty else {
                    throw ValidationError("""
                        the target database \(settings) is not empty: it holds \(existing.accounts.count) accounts and \
                        \(existing.invites.count) invites that are not this deployment's, e.g.
                          \(differences.joined(separator: "\n  "))
                        Migrate into a new, empty database (createdb), or drop this one if it is a leftover.
                        """)
                }
                metadataCopied = true
                say("metadata: the target database already holds this deployment's metadata (an earlier run); verifying it")
            }
        }
        var target: S3BlobStore? = nil
        if let toBlobs {
            let store = try s3Store(toBlobs)
            do { try await store.checkBucket() } catch let e as ServerError { throw ValidationError(e.message) }
            target = store
        }

        // Blobs: the chunks the metadata records, per vault.
        let vaults = Dictionary(snapshot.accounts.map { ($0.account.id, $0.account.vaultID) }, uniquingKeysWith: { a, _ in a })
        let keys = snapshot.chunks.compactMap { c in vaults[c.account].map { (key: BlobKey(vault: $0, chunk: c.id), size: c.size) } }
        var copied = 0, skipped = 0
        if let target {
            (copied, skipped) = try await copyBlobs(keys, from: sourceBlobs, to: target)
        }

        if let database, !metadataCopied {
            say("metadata: writing \(snapshot.accounts.count) accounts, \(snapshot.entries.count) journal entries and the rest in one transaction")
            try await database.importSnapshot(snapshot)
        }

        // Verify: every blob byte for byte, every row.
        var problems: [String] = []
        if let target {
            problems += try await verifyBlobs(keys, source: sourceBlobs, target: target)
        }
        if let database {
            say("verifying the metadata")
            let copy = try await database.exportSnapshot()
            problems += snapshot.differences(from: copy).map { "metadata: \($0)" }
            problems += copy.chainProblems().map { "metadata: \($0)" }
            await database.close()
        }
        guard problems.isEmpty else {
            throw MigrateFailure("the copy does not match the source (\(problems.count) problems shown):\n  "
                                 + problems.prefix(30).joined(separator: "\n  ")
                                 + "\nThe source in \(dir.path) is unchanged. See docs/operations.md, \"Migrating from the embedded stores\".")
        }

        let bytes = keys.reduce(Int64(0)) { $0 + $1.size }
        say("""
            migrated and verified in \(formatDuration(seconds(ContinuousClock.now - started))): \
            \(snapshot.accounts.count) accounts, \(snapshot.devices.count) devices, \(snapshot.entries.count) journal entries, \
            \(snapshot.checkpoints.count) checkpoints\(target == nil ? "" : ", \(keys.count) blobs (\(formatBytes(bytes)); \(copied) copied, \(skipped) already there)")
            """)
        var flags = ["--data \(dir.path)"]
        if let toMetadata { flags.append("--metadata '\(toMetadata)'") }
        if let toBlobs { flags.append("--blobs '\(toBlobs)'") }
        say("start the server with: lockfs-server serve \(flags.joined(separator: " ")) …")
        if toMetadata == nil { say("(the metadata stays in \(sqlitePath))") }
        if toBlobs == nil { say("(the blobs stay in \(blobRoot.path))") }
    }

    /// Copies the blobs the bucket lacks, `jobs` at a time.
    /// - Returns: How many were copied and how many were there already.
    private func copyBlobs(_ keys: [(key: BlobKey, size: Int64)], from source: FileBlobStore, to target: S3BlobStore) async throws -> (Int, Int) {
        say("blobs: listing what the bucket holds already")
        var present: [VaultID: Set<ChunkID>] = [:]
        for vault in Set(keys.map(\.key.vault)) { present[vault] = try await target.storedChunks(vault: vault) }
        let todo = keys.filter { !(present[$0.key.vault]?.contains($0.key.chunk) ?? false) }
        let totalBytes = keys.reduce(Int64(0)) { $0 + $1.size }, todoBytes = todo.reduce(Int64(0)) { $0 + $1.size }
        let progress = ProgressDisplay("copying blobs", items: keys.count, bytes: totalBytes)
        progress.add(items: keys.count - todo.count, bytes: totalBytes - todoBytes, moved: false)
        let missing = try await forEach(todo) { item in
            guard let bytes = try await source.get(item.key) else { return "\(item.key)" }
            try await target.put(bytes, for: item.key)
            progress.add(bytes: Int64(bytes.count), moved: true)
            return nil
        }
        progress.finish()
        guard missing.isEmpty else {
            throw MigrateFailure("\(missing.count) chunks recorded in the metadata have no blob in \(source.root.path), e.g. "
                                 + missing.prefix(5).joined(separator: ", ") + "; nothing of the metadata was copied")
        }
        return (todo.count, keys.count - todo.count)
    }

    /// Reads every blob from both stores and compares the bytes.
    /// - Returns: One line per difference.
    private func verifyBlobs(_ keys: [(key: BlobKey, size: Int64)], source: FileBlobStore, target: S3BlobStore) async throws -> [String] {
        let progress = ProgressDisplay("verifying blobs", items: keys.count, bytes: keys.reduce(0) { $0 + $1.size })
        let problems = try await forEach(keys) { item -> String? in
            async let theirs = target.get(item.key)
            let ours = try await source.get(item.key)
            let copy = try await theirs
            progress.add(bytes: item.size, moved: true)
            switch (ours, copy) {
            case (nil, _): return "blob \(item.key): missing in the source"
            case (_, nil): return "blob \(item.key): missing in the bucket"
            case let (a?, b?) where a != b: return "blob \(item.key): the bucket's copy differs (\(b.count) bytes, the source has \(a.count))"
            default: return nil
            }
        }
        progress.finish()
        return problems.sorted()
    }

    /// Runs `body` on each item, at most `jobs` at a time; collects the non-nil results.
    private func forEach<T: Sendable>(_ items: [T], _ body: @escaping @Sendable (T) async throws -> String?) async throws -> [String] {
        try await withThrowingTaskGroup(of: String?.self) { group in
            var results: [String] = []
            var next = 0
            while next < items.count && next < jobs {
                let item = items[next]
                group.addTask { try await body(item) }
                next += 1
            }
            while let result = try await group.next() {
                if let result { results.append(result) }
                if next < items.count {
                    let item = items[next]
                    group.addTask { try await body(item) }
                    next += 1
                }
            }
            return results
        }
    }

    private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
}

/// A migration that ran and found a problem (exit status 1, unlike a refusal's 64).
struct MigrateFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A line on stdout, written at once (not held in stdio's buffer), so that
/// a log or a pipe sees each progress line when it is made.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
