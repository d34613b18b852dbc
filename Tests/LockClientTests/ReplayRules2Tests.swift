import Foundation
@testable import LockClient
import LockCrypto
import LockWire
import Testing

/// The rules of version-2 batches, one case each (docs/design.md, "Replay rules").
@Suite struct ReplayRules2Tests {
    let a = DeviceID.random(), b = DeviceID.random()
    func ctx(_ d: DeviceID, seq: UInt64, base: UInt64, rules: UInt8 = 2) -> ReplayContext {
        ReplayContext(device: d, createdAt: Timestamp(nanoseconds: 1_764_500_000_000_000_000), seq: seq, baseSeq: base, rules: rules)
    }
    func attrs(_ mode: UInt32 = 0o644) -> NodeAttributes { try! NodeAttributes(mode: mode, mtime: Timestamp(nanoseconds: 1)) }
    func manifest(_ b: UInt8) -> Manifest { try! Manifest(chunks: [.init(id: try! ChunkID(bytes: [UInt8](repeating: b, count: 32)), length: 10)]) }
    func file(_ t: inout Tree, _ id: NodeID, in parent: NodeID = .root, _ name: String, rev: RevisionID, content: UInt8, seq: UInt64) throws {
        t.apply(.create(node: id, parent: parent, name: try Name(name), revision: rev, attributes: attrs(), content: .file(manifest(content))),
                context: ctx(a, seq: seq, base: seq - 1))
    }
    func folder(_ t: inout Tree, _ id: NodeID, in parent: NodeID = .root, _ name: String, seq: UInt64, by d: DeviceID? = nil) throws {
        t.apply(.create(node: id, parent: parent, name: try Name(name), revision: .random(), attributes: attrs(0o755), content: .directory),
                context: ctx(d ?? a, seq: seq, base: 0))
    }
    /// Live files' contents, wherever they are.
    func contents(_ t: Tree) -> Set<Manifest> { Set(t.nodes.values.filter { !$0.deleted }.compactMap(\.manifest)) }

    @Test func aFolderDeleteTakesOnlyAnEmptyFolder() throws {
        var t = Tree()
        let d = NodeID.random(), f = NodeID.random(), g = NodeID.random(), rf = RevisionID.random()
        try folder(&t, d, "D", seq: 1)
        try file(&t, f, in: d, "f", rev: rf, content: 1, seq: 2)
        try file(&t, g, in: d, "g", rev: .random(), content: 2, seq: 3)   // b's, say: the deleter never saw it
        // rm -rf D by a device that saw only f: f goes, D stays for g.
        t.apply(.delete(node: f, base: rf), context: ctx(b, seq: 4, base: 2))
        t.apply(.delete(node: d, base: .random()), context: ctx(b, seq: 4, base: 2))
        #expect(t.liveNode(f) == nil)
        #expect(t.path(of: g) == "/D/g")
        // Once empty, a delete takes it.
        t.apply(.delete(node: g, base: t.node(g)!.revision), context: ctx(b, seq: 5, base: 4))
        t.apply(.delete(node: d, base: .random()), context: ctx(b, seq: 5, base: 4))
        #expect(t.liveNode(d) == nil)
    }

    /// Issue 12's second loss: both edit, one moves the file away and deletes its folder.
    @Test func aConflictCopyLeftInADeletedFolderKeepsTheFolder() throws {
        var t = Tree()
        let d = NodeID.random(), x = NodeID.random(), f = NodeID.random(), r0 = RevisionID.random(), rb = RevisionID.random()
        try folder(&t, d, "D", seq: 1)
        try folder(&t, x, "X", seq: 2)
        try file(&t, f, in: d, "F", rev: r0, content: 0, seq: 3)
        t.apply(.write(node: f, base: r0, revision: .random(), mtime: .init(nanoseconds: 2), manifest: manifest(1)), context: ctx(a, seq: 4, base: 3))
        let cb = ctx(b, seq: 5, base: 3)
        t.apply(.write(node: f, base: r0, revision: rb, mtime: .init(nanoseconds: 3), manifest: manifest(2)), context: cb)
        t.apply(.move(node: f, parent: x, name: try Name("F2")), context: cb)
        t.apply(.delete(node: d, base: .random()), context: cb)
        #expect(contents(t) == [manifest(1), manifest(2)])
        #expect(t.path(of: f) == "/X/F2")
        #expect(t.path(of: Tree.conflictNodeID(of: f, revision: rb))?.hasPrefix("/D/F (conflict from ") == true)
    }

    @Test func laterWritesOfAVersionThatBecameAConflictCopyGoToTheCopy() throws {
        var t = Tree()
        let f = NodeID.random(), r0 = RevisionID.random(), r1 = RevisionID.random(), r2 = RevisionID.random(), r3 = RevisionID.random()
        try file(&t, f, "f", rev: r0, content: 0, seq: 1)
        t.apply(.write(node: f, base: r0, revision: .random(), mtime: .init(nanoseconds: 2), manifest: manifest(1)), context: ctx(a, seq: 2, base: 1))
        // b wrote three times, each on its own previous version, before it saw a's write.
        let cb = ctx(b, seq: 3, base: 1)
        t.apply(.write(node: f, base: r0, revision: r1, mtime: .init(nanoseconds: 3), manifest: manifest(2)), context: cb)
        t.apply(.write(node: f, base: r1, revision: r2, mtime: .init(nanoseconds: 4), manifest: manifest(3)), context: cb)
        t.apply(.write(node: f, base: r2, revision: r3, mtime: .init(nanoseconds: 5), manifest: manifest(4)), context: cb)
        // One conflict copy, holding b's last version; a's stays in place.
        #expect(t.childNames(of: .root).count == 2)
        #expect(t.node(f)?.manifest == manifest(1))
        #expect(t.node(Tree.conflictNodeID(of: f, revision: r1))?.manifest == manifest(4))
    }

    @Test func aDeleteOfAVersionThatBecameAConflictCopyDeletesTheCopy() throws {
        var t = Tree()
        let f = NodeID.random(), r0 = RevisionID.random(), r1 = RevisionID.random()
        try file(&t, f, "f", rev: r0, content: 0, seq: 1)
        t.apply(.write(node: f, base: r0, revision: .random(), mtime: .init(nanoseconds: 2), manifest: manifest(1)), context: ctx(a, seq: 2, base: 1))
        let cb = ctx(b, seq: 3, base: 1)
        t.apply(.write(node: f, base: r0, revision: r1, mtime: .init(nanoseconds: 3), manifest: manifest(2)), context: cb)
        t.apply(.delete(node: f, base: r1), context: cb)
        // b deleted the version it wrote (and saw); a's, which b never saw, stays.
        #expect(contents(t) == [manifest(1)])
        #expect(t.liveNode(f)?.manifest == manifest(1))
    }

    /// A chmod made on a version that lost the race must not make the next write on it look fresh.
    @Test func anAttributeChangeOnAStaleVersionIsNotAFreshRevision() throws {
        var t = Tree()
        let f = NodeID.random(), r0 = RevisionID.random(), rb = RevisionID.random(), rc = RevisionID.random()
        try file(&t, f, "f", rev: r0, content: 0, seq: 1)
        t.apply(.write(node: f, base: r0, revision: .random(), mtime: .init(nanoseconds: 2), manifest: manifest(1)), context: ctx(a, seq: 2, base: 1))
        // b, not having seen a's write: chmod, then write.
        let cb = ctx(b, seq: 3, base: 1)
        t.apply(.setAttributes(node: f, base: r0, revision: rc, attributes: attrs(0o600)), context: cb)
        t.apply(.write(node: f, base: rc, revision: rb, mtime: .init(nanoseconds: 3), manifest: manifest(2)), context: cb)
        #expect(contents(t) == [manifest(1), manifest(2)])
        #expect(t.node(f)?.manifest == manifest(1))
        #expect(t.node(f)?.attributes.mode == 0o600)   // attributes: last writer wins
        // Rules 1 made the chmod's revision fresh, and the write replaced a's version.
        var old = Tree()
        try file(&old, f, "f", rev: r0, content: 0, seq: 1)
        old.apply(.write(node: f, base: r0, revision: .random(), mtime: .init(nanoseconds: 2), manifest: manifest(1)), context: ctx(a, seq: 2, base: 1, rules: 1))
        old.apply(.setAttributes(node: f, base: r0, revision: rc, attributes: attrs(0o600)), context: ctx(b, seq: 3, base: 1, rules: 1))
        old.apply(.write(node: f, base: rc, revision: rb, mtime: .init(nanoseconds: 3), manifest: manifest(2)), context: ctx(b, seq: 3, base: 1, rules: 1))
        #expect(contents(old) == [manifest(2)])
    }

    @Test func sameNamedFoldersMadeConcurrentlyMerge() throws {
        var t = Tree()
        let photos = NodeID.random(), ya = NodeID.random(), yb = NodeID.random()
        let fa = NodeID.random(), fb = NodeID.random(), clashA = NodeID.random(), clashB = NodeID.random()
        try folder(&t, photos, "Photos", seq: 1)
        // a: Photos/2026/{a.jpg, same.jpg}
        try folder(&t, ya, in: photos, "2026", seq: 2)
        try file(&t, fa, in: ya, "a.jpg", rev: .random(), content: 1, seq: 3)
        try file(&t, clashA, in: ya, "same.jpg", rev: .random(), content: 2, seq: 4)
        // b, offline, made its own Photos/2026/{b.jpg, same.jpg, sub/}
        let cb = ctx(b, seq: 5, base: 1)
        t.apply(.create(node: yb, parent: photos, name: try Name("2026"), revision: .random(), attributes: attrs(0o700), content: .directory), context: cb)
        t.apply(.create(node: fb, parent: yb, name: try Name("b.jpg"), revision: .random(), attributes: attrs(), content: .file(manifest(3))), context: cb)
        t.apply(.create(node: clashB, parent: yb, name: try Name("same.jpg"), revision: .random(), attributes: attrs(), content: .file(manifest(4))), context: cb)
        #expect(t.childNames(of: photos).keys.sorted() == ["2026"])
        #expect(t.resolved(yb) == ya)
        let names = t.childNames(of: ya).keys.sorted()
        #expect(names.count == 4 && names.contains("a.jpg") && names.contains("b.jpg") && names.contains("same.jpg"))
        #expect(names.contains { $0.hasPrefix("same (conflict from \(b.hex.prefix(8))") })
        // The alias keeps working for b's later operations.
        t.apply(.create(node: .random(), parent: yb, name: try Name("later.jpg"), revision: .random(), attributes: attrs(), content: .file(manifest(5))), context: ctx(b, seq: 6, base: 1))
        #expect(t.child(of: ya, named: "later.jpg") != nil)
        #expect(t.liveNode(yb)?.id == ya)
        #expect(t.node(ya)?.attributes.mode == 0o755)   // the folder that was there first stays as it was
        #expect(t.takeAliases() == [yb: ya])
    }

    @Test func aFolderMergesOnlyWithAFolder() throws {
        var t = Tree()
        t.apply(.create(node: .random(), parent: .root, name: try Name("x"), revision: .random(), attributes: attrs(), content: .file(manifest(1))), context: ctx(a, seq: 1, base: 0))
        let dir = NodeID.random()
        try folder(&t, dir, "x", seq: 2, by: b)
        #expect(t.childNames(of: .root).count == 2)
        #expect(t.aliases.isEmpty)
    }

    @Test func rules1BatchesStillMakeConflictFolders() throws {
        var t = Tree()
        t.apply(.create(node: .random(), parent: .root, name: try Name("x"), revision: .random(), attributes: attrs(0o755), content: .directory), context: ctx(a, seq: 1, base: 0, rules: 1))
        t.apply(.create(node: .random(), parent: .root, name: try Name("x"), revision: .random(), attributes: attrs(0o755), content: .directory), context: ctx(b, seq: 2, base: 0, rules: 1))
        #expect(t.childNames(of: .root).count == 2)
    }
}
