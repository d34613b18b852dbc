import Foundation
@testable import LockClient
import LockWire
import Testing

/// Conflict names are made and recognised in one place (issue 14): what
/// `conflictName` makes is recognised, and a user's own file that only looks
/// like one is not (it used to be shown as a conflict copy).
@Suite struct ConflictNameTests {
    @Test func madeNamesAreRecognisedAndLookalikesAreNot() {
        let c = ReplayContext(device: .random(), createdAt: Timestamp(nanoseconds: 1_764_000_000 * 1_000_000_000), seq: 1, baseSeq: 0)
        for name in ["report.txt", "notes", ".bashrc", "archive.tar.gz", String(repeating: "x", count: 250) + ".md",
                     "no.extension-because-it-is-far-too-long"] {
            #expect(Tree.isConflictName(Tree.conflictName(name, context: c)), "\(name)")
            #expect(Tree.isConflictName(Tree.conflictName(name, context: c, suffix: " 3")), "\(name) 3")
            #expect(!Tree.isConflictName(name), "\(name)")
        }
        for lookalike in ["x (conflict from y)", "plan (conflict from 3fa2c1d0).txt", "a (conflict from 3fa2c1d0 2026-11-30).txt",
                          "b (conflict from 3FA2C1D0 2026-11-30 140233).txt", "c (conflict from 3fa2c1d0 2026-11-30 140233) copy.txt"] {
            #expect(!Tree.isConflictName(lookalike), "\(lookalike)")
        }
    }
}

extension ConflictNameTests {
    /// Bug fix: `user.lockfs.status` called a user's own file a conflict copy
    /// when its name merely contained " (conflict from ".
    @Test func aUsersFileThatLooksLikeAConflictIsNotOne() async throws {
        let (_, d) = try makeDevices(1)
        let e = d[0].engine
        let lookalike = try await e.put("notes (conflict from y).txt", "mine")
        #expect(try !e.fileState(lookalike).isConflictCopy)
        let c = ReplayContext(device: .random(), createdAt: Timestamp(nanoseconds: 0), seq: 1, baseSeq: 0)
        let made = try await e.put(Tree.conflictName("notes.txt", context: c), "a copy")
        #expect(try e.fileState(made).isConflictCopy)
    }
}
