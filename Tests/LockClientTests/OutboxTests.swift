import Foundation
@testable import LockClient
import LockCrypto
import LockTesting
import LockWire
import Testing

/// The outbox on its own (issue 14): its two tiers, files and index rows,
/// and the reconciliation a start makes after a crash.
@Suite struct OutboxTests {
    static let keys = VaultKeys.generate()

    static func sealed(_ text: String) throws -> SealedChunk {
        try Array(text.utf8).withUnsafeBytes { try keys.sealChunk($0) }
    }

    /// An outbox in a new folder, and a small chunk stored as an index row
    /// (as a commit stores one with its operation).
    static func make(rows: [SealedChunk] = []) throws -> (Outbox, URL) {
        let dir = try makeTemporaryDirectory("outbox")
        let index = try Index(path: dir.appendingPathComponent("index.sqlite").path)
        let op = Operation.create(node: .random(), parent: .root, name: try Name("f"), revision: .random(),
                                  attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)), content: .file(.empty))
        _ = try index.enqueue(op, device: .random(), madeAtSeq: 0, madeAt: Timestamp(nanoseconds: 1), chunks: rows)
        let root = dir.appendingPathComponent("outbox")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        return (Outbox(root: root, index: index), dir)
    }

    @Test func filesAndRowsReadBackAndAreRemovedTogether() throws {
        let small = try Self.sealed("a small chunk"), large = try Self.sealed("a chunk kept as a file")
        let (outbox, dir) = try Self.make(rows: [small])
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(outbox.write(large.id, large.bytes) == 0)
        outbox.syncFolders(of: [large.id])
        #expect(try outbox.read(large.id) == large.bytes)
        #expect(try outbox.read(small.id) == small.bytes)
        #expect(outbox.path(large.id).hasSuffix("/" + large.id.hex.prefix(2) + "/" + large.id.hex))
        // The same chunk written again (two threads with the same content): still one whole file.
        #expect(outbox.write(large.id, large.bytes) == 0)
        #expect(outbox.scanFiles().map(\.0) == [large.id])
        try outbox.remove([large.id, small.id])
        #expect(try outbox.read(large.id) == nil)
        #expect(try outbox.read(small.id) == nil)
    }

    /// At a start: what pending work needs stays; what the server has goes
    /// to the cache; the rest (a chunk whose operation a power cut took) and
    /// a crash's temporary file are deleted, in both tiers.
    @Test func reconcileKeepsWhatIsNeededAndDropsTheRest() throws {
        let neededFile = try Self.sealed("needed, a file"), neededRow = try Self.sealed("needed, a row")
        let uploadedFile = try Self.sealed("uploaded, a file"), orphanFile = try Self.sealed("orphan, a file")
        let orphanRow = try Self.sealed("orphan, a row")
        let (outbox, dir) = try Self.make(rows: [neededRow, orphanRow])
        defer { try? FileManager.default.removeItem(at: dir) }
        for c in [neededFile, uploadedFile, orphanFile] { #expect(outbox.write(c.id, c.bytes) == 0) }
        let leftover = outbox.path(neededFile.id) + ".tmp123"
        FileManager.default.createFile(atPath: leftover, contents: Data([1, 2, 3]))

        let r = try outbox.reconcile(needed: [neededFile.id, neededRow.id], serverHas: { $0 == uploadedFile.id })
        #expect(r.waiting == [neededFile.id: neededFile.bytes.count, neededRow.id: neededRow.bytes.count])
        #expect(r.toCache == [uploadedFile.id])
        #expect(try outbox.read(neededFile.id) != nil && outbox.read(neededRow.id) != nil)
        #expect(try outbox.read(uploadedFile.id) != nil, "kept for the mover to bring to the cache")
        #expect(try outbox.read(orphanFile.id) == nil)
        #expect(try outbox.read(orphanRow.id) == nil)
        #expect(!FileManager.default.fileExists(atPath: leftover))
    }
}
