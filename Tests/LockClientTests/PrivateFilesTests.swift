import Foundation
@testable import LockClient
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A client home holds MK, the decrypted tree and decrypted chunks: nobody
/// but its owner may read any of it (issue 13, point 5).
@Suite struct PrivateFilesTests {
    static func mode(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & 0o7777 : 0
    }

    @Test func anExistingLooseHomeAndIndexAreTightened() throws {
        let dir = try makeTemporaryDirectory("loose-home")
        defer { try? FileManager.default.removeItem(at: dir) }
        let home = ClientHome(directory: dir.appendingPathComponent("home"))
        try FileManager.default.createDirectory(at: home.dataDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        // An index left by an older lockfs under umask 022.
        let before = try Index(path: home.indexFile.path)
        _ = try before.counts()
        chmod(home.indexFile.path, 0o644)
        #expect(Self.mode(home.indexFile.path) == 0o644)

        try home.createDirectories()
        for d in [home.dataDirectory, home.cacheDirectory, home.outboxDirectory, home.stagingDirectory, home.chunkCacheDirectory] {
            #expect(Self.mode(d.path) == 0o700, "\(d.path)")
        }
        let index = try Index(path: home.indexFile.path)
        _ = try index.counts()
        #expect(Self.mode(home.indexFile.path) == 0o600)
    }

    @Test func aNewIndexAndItsLogAre0600WhateverTheUmask() throws {
        let dir = try makeTemporaryDirectory("umask-home")
        defer { try? FileManager.default.removeItem(at: dir) }
        let old = umask(0o022)
        defer { umask(old) }
        let path = dir.appendingPathComponent("index.sqlite").path
        let index = try Index(path: path)
        _ = try index.counts()
        try index.sync()
        #expect(Self.mode(path) == 0o600)
        for suffix in ["-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            #expect(Self.mode(path + suffix) == 0o600, "\(suffix)")
        }
    }

    @Test(.enabled(if: geteuid() == 0, "needs root to give a directory to another user"))
    func aHomeOwnedByAnotherUserIsRefused() throws {
        let dir = try makeTemporaryDirectory("foreign-home")
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(chown(dir.path, 65534, 65534) == 0)
        let home = ClientHome(directory: dir)
        #expect {
            try home.createDirectories()
        } throws: { error in
            guard case LockError.invalid(let why) = error else { return false }
            return why.contains("belongs to another user")
        }
    }

    @Test func getKeepsTheVaultsModeBits() async throws {
        let v = try await LogoutTests.Vault("mode-bits")
        defer { v.stop() }
        chmod(v.source, 0o640)
        let put = try await LogoutTests.lockfs(["put", "--home", v.home("laptop"), v.source, "/private.txt"])
        #expect(put.status == 0, "\(put.stderr)")
        let out = v.dir.appendingPathComponent("copy.txt").path
        let get = try await LogoutTests.lockfs(["get", "--home", v.home("laptop"), "/private.txt", out])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(Self.mode(out) == 0o640)
        #expect(Self.mode(v.home("laptop")) == 0o700 && Self.mode(v.home("laptop") + "/index.sqlite") == 0o600)
    }
}
