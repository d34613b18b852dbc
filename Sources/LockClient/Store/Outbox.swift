import Foundation
import LockCrypto

#if canImport(Glibc)
import Glibc
#endif

/// Sealed chunks waiting for upload, on disk (docs/design.md, "A write,
/// step by step"): large ones as files `outbox/xx/<id>` (fsynced before the
/// operation that needs them commits), small ones as rows of the index
/// (committed in the same transaction as their operation). This type is
/// the two tiers' storage only; which chunks are still needed is the
/// engine's (its pending and in-flight operations).
struct Outbox: Sendable {
    /// The folder of chunk files.
    let root: String
    let index: Index

    init(root: URL, index: Index) {
        self.root = root.path
        self.index = index
    }

    /// The file of chunk `id`.
    func path(_ id: ChunkID) -> String { FanOut.path(root, id) }

    /// Writes a sealed chunk to its file (fsynced; temporary name, then
    /// rename). The same chunk may be written by two threads at once (a file
    /// with repeated content, or two files committed together): the
    /// temporary names are unique, so neither truncates nor renames away the
    /// other's. The folder is not synced: `syncFolders` does it for a batch.
    /// - Returns: 0, or the errno of what failed.
    func write(_ id: ChunkID, _ sealed: [UInt8]) -> Int32 {
        let file = path(id)
        Glibc.mkdir((file as NSString).deletingLastPathComponent, 0o700)
        return replaceFile(file, with: sealed, mode: 0o600, sync: true)
    }

    /// Syncs the folders of `ids`' files, so that their names survive a power cut.
    func syncFolders(of ids: some Sequence<ChunkID>) {
        for sub in Set(ids.map(FanOut.folder)) {
            let dfd = open(root + "/" + sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dfd >= 0 { fsync(dfd); Glibc.close(dfd) }
        }
    }

    /// A sealed chunk: its file, or its index row; nil if neither.
    func read(_ id: ChunkID) throws -> [UInt8]? {
        if let data = FileManager.default.contents(atPath: path(id)) { return Array(data) }
        return try index.outboxChunk(id)
    }

    /// Removes chunks from both tiers (files first; rows in one transaction).
    func remove(_ ids: [ChunkID]) throws {
        for id in ids { Glibc.unlink(path(id)) }
        try index.deleteOutboxChunks(ids)
    }

    /// The chunk files and their sizes; anything else in the folders (a
    /// temporary file a crash left) is deleted.
    func scanFiles() -> [(ChunkID, Int)] {
        var out: [(ChunkID, Int)] = []
        let fm = FileManager.default
        for sub in (try? fm.contentsOfDirectory(atPath: root)) ?? [] {
            let subdir = root + "/" + sub
            for name in (try? fm.contentsOfDirectory(atPath: subdir)) ?? [] {
                guard let id = ChunkID(hex: name) else { Glibc.unlink(subdir + "/" + name); continue }
                var st = stat()
                if stat(subdir + "/" + name, &st) == 0 { out.append((id, Int(st.st_size))) }
            }
        }
        return out
    }

    /// What the outbox holds, set against what is still `needed` (by pending
    /// and in-flight operations) and what the server `has`.
    struct Reconciled: Equatable {
        /// Needed chunks and their sealed sizes: still to upload.
        var waiting: [ChunkID: Int] = [:]
        /// Unneeded chunks the server has: to move to the cache (an upload
        /// finished before the mover ran).
        var toCache: Set<ChunkID> = []
    }

    /// Reconciles the outbox at open: keeps what is needed, keeps what the
    /// server has for the cache, and deletes the rest (a chunk whose
    /// operation a power cut took: the file was fsynced, the commit not yet).
    func reconcile(needed: Set<ChunkID>, serverHas: (ChunkID) -> Bool) throws -> Reconciled {
        let files = scanFiles()
        let rows = try index.outboxChunkSizes()
        var out = Reconciled()
        for (id, size) in files + rows where needed.contains(id) { out.waiting[id] = size }
        let unneeded = Set((files + rows).map(\.0)).subtracting(needed)
        out.toCache = unneeded.filter(serverHas)
        for (id, _) in files where unneeded.contains(id) && !out.toCache.contains(id) { Glibc.unlink(path(id)) }
        try index.deleteOutboxChunks(rows.map(\.0).filter { unneeded.contains($0) && !out.toCache.contains($0) })
        return out
    }
}
