import Foundation
@testable import LockClient
import LockCrypto
import LockWire
import Testing

/// Rules 2: a folder whose entries change takes the batch's time as its
/// mtime, on every client, without touching conflict state (docs/design.md,
/// "Replay rules").
@Suite struct ReplayRuleFolderTimesTests {
    let a = DeviceID.random(), b = DeviceID.random()
    /// A batch at second `at` (rules 2 unless said).
    func ctx(_ d: DeviceID, seq: UInt64, base: UInt64, at: Int64, rules: UInt8 = 2) -> ReplayContext {
        ReplayContext(device: d, createdAt: Timestamp(nanoseconds: at * 1_000_000_000), seq: seq, baseSeq: base, rules: rules)
    }
    func attrs(_ mode: UInt32 = 0o644) -> NodeAttributes { try! NodeAttributes(mode: mode, mtime: Timestamp(nanoseconds: 1)) }
    func manifest(_ b: UInt8) -> Manifest { try! Manifest(chunks: [.init(id: try! ChunkID(bytes: [UInt8](repeating: b, count: 32)), length: 10)]) }
    func mtime(_ t: Tree, _ id: NodeID) -> Int64? { t.node(id).map { $0.attributes.mtime.nanoseconds / 1_000_000_000 } }

    /// Two folders D and E (made at second 10) and a file f in D (second 11).
    func start(rules: UInt8 = 2) throws -> (Tree, d: NodeID, e: NodeID, f: NodeID, rf: RevisionID) {
        var t = Tree()
        let d = NodeID.random(), e = NodeID.random(), f = NodeID.random(), rf = RevisionID.random()
        let c = ctx(a, seq: 1, base: 0, at: 10, rules: rules)
        t.apply(.create(node: d, parent: .root, name: try Name("D"), revision: .random(), attributes: attrs(0o755), content: .directory), context: c)
        t.apply(.create(node: e, parent: .root, name: try Name("E"), revision: .random(), attributes: attrs(0o755), content: .directory), context: c)
        t.apply(.create(node: f, parent: d, name: try Name("f"), revision: rf, attributes: attrs(), content: .file(manifest(1))),
                context: ctx(a, seq: 2, base: 1, at: 11, rules: rules))
        return (t, d, e, f, rf)
    }

    @Test func createMoveAndDeleteMoveTheFoldersMtime() throws {
        var (t, d, e, f, rf) = try start()
        #expect(mtime(t, d) == 11 && mtime(t, e) == 0 && mtime(t, .root) == 10)
        let before = t.node(d)!
        // A symlink made in D.
        let l = NodeID.random()
        t.apply(.create(node: l, parent: d, name: try Name("l"), revision: .random(), attributes: attrs(0o777), content: .symlink(target: "f")),
                context: ctx(b, seq: 3, base: 2, at: 12))
        #expect(mtime(t, d) == 12)
        // A rename within D.
        t.apply(.move(node: f, parent: d, name: try Name("g")), context: ctx(a, seq: 4, base: 3, at: 13))
        #expect(mtime(t, d) == 13)
        // A move out of D into E: both.
        t.apply(.move(node: f, parent: e, name: try Name("g")), context: ctx(a, seq: 5, base: 4, at: 14))
        #expect(mtime(t, d) == 14 && mtime(t, e) == 14)
        // A delete in E.
        t.apply(.delete(node: f, base: rf), context: ctx(a, seq: 6, base: 5, at: 15))
        #expect(mtime(t, e) == 15 && mtime(t, d) == 14)
        // Conflict state stays: revision, fresh revisions, last change.
        let after = t.node(d)!
        #expect(after.revision == before.revision && after.freshRevisions == before.freshRevisions)
        #expect(after.modSeq == before.modSeq && after.modDevice == before.modDevice && after.otherSeq == before.otherSeq)
        // A folder delete that happens moves its parent's.
        t.apply(.delete(node: l, base: t.node(l)!.revision), context: ctx(a, seq: 7, base: 6, at: 16))
        t.apply(.delete(node: d, base: .random()), context: ctx(a, seq: 7, base: 6, at: 16))
        #expect(t.liveNode(d) == nil && mtime(t, .root) == 16)
    }

    @Test func droppedMovesAndDeletesLeaveMtimesAlone() throws {
        var (t, d, e, f, _) = try start()
        // A delete with a stale base (content the deleter never saw): dropped.
        t.apply(.delete(node: f, base: .random()), context: ctx(b, seq: 3, base: 1, at: 20))
        #expect(t.liveNode(f) != nil && mtime(t, d) == 11)
        // A folder delete of a folder that is not empty: dropped.
        t.apply(.delete(node: d, base: .random()), context: ctx(b, seq: 4, base: 1, at: 21))
        #expect(t.liveNode(d) != nil && mtime(t, .root) == 10)
        // A move that would make a cycle: dropped.
        t.apply(.move(node: f, parent: e, name: try Name("f")), context: ctx(a, seq: 5, base: 4, at: 22))
        t.apply(.move(node: e, parent: e, name: try Name("E")), context: ctx(a, seq: 6, base: 5, at: 23))
        #expect(mtime(t, e) == 22 && mtime(t, .root) == 10)
        // A move to where the node already is: nothing changes.
        t.apply(.move(node: f, parent: e, name: try Name("f")), context: ctx(a, seq: 7, base: 6, at: 24))
        #expect(mtime(t, e) == 22)
        // A fresh write changes content, not the folder's entries.
        t.apply(.write(node: f, base: t.node(f)!.revision, revision: .random(), mtime: .init(nanoseconds: 5), manifest: manifest(2)),
                context: ctx(a, seq: 8, base: 7, at: 25))
        #expect(mtime(t, e) == 22)
        // A stale write lands as a conflict copy: a new entry.
        t.apply(.write(node: f, base: .random(), revision: .random(), mtime: .init(nanoseconds: 6), manifest: manifest(3)),
                context: ctx(b, seq: 9, base: 1, at: 26))
        #expect(t.childNames(of: e).count == 2 && mtime(t, e) == 26)
    }

    @Test func rulesOneBatchesLeaveFoldersMtimesAlone() throws {
        var (t, d, e, f, _) = try start(rules: 1)
        t.apply(.move(node: f, parent: e, name: try Name("f")), context: ctx(a, seq: 3, base: 2, at: 30, rules: 1))
        #expect(mtime(t, d) == 0 && mtime(t, e) == 0 && mtime(t, .root) == 0)
    }

    @Test func everyClientComputesTheSameTimes() throws {
        var (t1, d, e, f, _) = try start()
        var t2 = t1
        let ops: [(LockWire.Operation, ReplayContext)] = [
            (.move(node: f, parent: e, name: try Name("f")), ctx(a, seq: 3, base: 2, at: 40)),
            (.create(node: .random(), parent: d, name: try Name("x"), revision: .random(), attributes: attrs(), content: .file(.empty)),
             ctx(b, seq: 4, base: 2, at: 41)),
        ]
        for (op, c) in ops { t1.apply(op, context: c) }
        for (op, c) in ops { t2.apply(op, context: c) }
        #expect(t1.nodes == t2.nodes)
        #expect(mtime(t1, d) == 41 && mtime(t1, e) == 40)
    }
}
