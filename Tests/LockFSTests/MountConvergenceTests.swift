import Foundation
import LockTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The convergence oracle through real mounts: two devices make random
/// changes with ordinary file calls while the server comes and goes
/// (SIGSTOP/SIGCONT); afterwards both mounts show the same tree and every
/// version written survives unless a device replaced it knowingly (it
/// read exactly that version, then overwrote or deleted it).
///
/// Seeded (LOCKFS_MOUNT_SOAK_SEED, LOCKFS_MOUNT_SOAK_ROUNDS); the timing of
/// the background sync is not, so a failure prints its operations.
@Suite(.enabled(if: fuseAvailable, "needs /dev/fuse and fusermount3"), .serialized)
struct MountConvergenceTests {
    static let env = ProcessInfo.processInfo.environment
    static let seed = env["LOCKFS_MOUNT_SOAK_SEED"].flatMap(UInt64.init) ?? 12
    static let rounds = env["LOCKFS_MOUNT_SOAK_ROUNDS"].flatMap(Int.init) ?? 150

    @Test func twoMountsConvergeAndKeepEveryVersion() async throws {
        let vault = try await MountedVault()
        defer { vault.stop() }
        // Reads of content not cached here fail fast while the server is stopped (the op is skipped).
        let mounts = [try await vault.mount(0, extra: ["--fetch-timeout", "1"]), try await vault.mount(1, extra: ["--fetch-timeout", "1"])]
        var rng = SeededGenerator(seed: Self.seed)
        var written: Set<String> = []
        var superseded: Set<String> = []
        var log: [String] = []
        var stopped = false
        var nextToggle = 1
        let fm = FileManager.default

        /// Names only: reading every file each round would fetch them all.
        func entries(_ m: String) -> [(path: String, isDir: Bool)] {
            var out: [(path: String, isDir: Bool)] = []
            func walk(_ rel: String) {
                for name in ((try? fm.contentsOfDirectory(atPath: m + rel)) ?? []).sorted() {
                    var isDir: ObjCBool = false
                    fm.fileExists(atPath: m + rel + "/" + name, isDirectory: &isDir)
                    out.append((String((rel + "/" + name).dropFirst()), isDir.boolValue))
                    if isDir.boolValue { walk(rel + "/" + name) }
                }
            }
            walk("")
            return out
        }
        /// `rm -rf` as the oracle can follow it: reads every file under
        /// `dir` now, deletes exactly those, then removes the folders that
        /// are empty. A file a background pull brings in meanwhile is not
        /// deleted unseen (its folder stays). nil, and nothing removed, if a
        /// file cannot be read (not cached while the server is stopped).
        /// Bug fix of the oracle: it listed the tree at the start of the round,
        /// before a sync, and `rm -rf` also removed what the sync brought in,
        /// which the oracle then reported as lost (seed 33, 400 rounds).
        func removeTree(_ m: String, _ dir: String) -> [String]? {
            let root = m + "/" + dir
            var files: [String] = [], dirs: [String] = [root]
            var stack = [root]
            while let d = stack.popLast() {
                for name in (try? fm.contentsOfDirectory(atPath: d)) ?? [] {
                    var isDir: ObjCBool = false
                    guard fm.fileExists(atPath: d + "/" + name, isDirectory: &isDir) else { continue }
                    if isDir.boolValue { dirs.append(d + "/" + name); stack.append(d + "/" + name) } else { files.append(d + "/" + name) }
                }
            }
            var texts: [String] = []
            for f in files {
                guard let t = readText(f) else { return nil }
                texts.append(t)
            }
            var removed: [String] = []
            for (f, t) in zip(files, texts) where unlink(f) == 0 { removed.append(t) }
            for d in dirs.reversed() { _ = rmdir(d) }
            return removed
        }
        func pick<T>(_ items: [T]) -> T? {
            guard !items.isEmpty else { return nil }
            return Bool.random(using: &rng) ? items[Int.random(in: 0..<min(3, items.count), using: &rng)]
                : items[Int.random(in: 0..<items.count, using: &rng)]
        }

        for round in 1...Self.rounds {
            let i = Int.random(in: 0..<2, using: &rng)
            let m = mounts[i]
            let all = entries(m)
            let folders = [""] + all.filter(\.isDir).map(\.path)
            let files = all.filter { !$0.isDir }.map(\.path)
            let tag = "v\(round)d\(i)"
            func at(_ rel: String) -> String { rel.isEmpty ? m : m + "/" + rel }
            func sub(_ dir: String, _ name: String) -> String { dir.isEmpty ? name : dir + "/" + name }
            // Epochs: the server stops for 10-40 rounds (both devices change things
            // concurrently), then comes back for a few, sometimes until both synced.
            if round >= nextToggle {
                if stopped {
                    kill(vault.server.pid, SIGCONT)
                    log.append("\(round) server back")
                    if Bool.random(using: &rng) {
                        for x in mounts { _ = try await vault.lockfs(["sync", x, "--timeout", "150"], timeout: .seconds(180)) }
                        log.append("\(round) both synced")
                    }
                    nextToggle = round + Int.random(in: 1...6, using: &rng)
                } else {
                    kill(vault.server.pid, SIGSTOP)
                    log.append("\(round) server stopped")
                    nextToggle = round + Int.random(in: 10...40, using: &rng)
                }
                stopped.toggle()
            }
            switch Int.random(in: 8..<100, using: &rng) {
            case 8..<30:
                guard let dir = pick(folders) else { continue }
                let rel = sub(dir, Bool.random(using: &rng) ? "same.txt" : "f\(round).txt")
                if fm.fileExists(atPath: at(rel)) { continue }
                if (try? Data((tag + "\n").utf8).write(to: URL(fileURLWithPath: at(rel)))) != nil { written.insert(tag + "\n") }
                log.append("\(round) d\(i) create \(rel) \(tag)")
            case 30..<50:
                guard let rel = pick(files), let old = readText(at(rel)) else { continue }
                let append = Bool.random(using: &rng)
                let new = append ? old + tag + "\n" : tag + "\n"
                guard let h = FileHandle(forUpdatingAtPath: at(rel)) else { continue }
                if append { h.seekToEndOfFile() } else { h.truncateFile(atOffset: 0) }
                h.write(Data((append ? tag + "\n" : new).utf8))
                try? h.close()
                superseded.insert(old)
                written.insert(new)
                log.append("\(round) d\(i) \(append ? "append" : "overwrite") \(rel) \(tag)")
            case 50..<58:
                guard let dir = pick(folders) else { continue }
                try? fm.createDirectory(atPath: at(sub(dir, Bool.random(using: &rng) ? "shared" : "d\(round)")), withIntermediateDirectories: true)
                log.append("\(round) d\(i) mkdir in \(dir)")
            case 58..<72:
                guard let from = pick(all.map(\.path)), let dir = pick(folders), dir != from, !dir.hasPrefix(from + "/") else { continue }
                let to = sub(dir, "r\(round)")
                if rename(at(from), at(to)) == 0 { log.append("\(round) d\(i) mv \(from) \(to)") }
            case 72..<82:
                guard let rel = pick(files), let old = readText(at(rel)) else { continue }
                if unlink(at(rel)) == 0 { superseded.insert(old); log.append("\(round) d\(i) rm \(rel)") }
            case 82..<88:
                guard let dir = pick(Array(folders.dropFirst())) else { continue }
                // What this device shows there now, read first; a file it cannot read
                // (not cached, server stopped) would be deleted unseen, so skip.
                guard let removed = removeTree(m, dir) else { continue }
                superseded.formUnion(removed)
                log.append("\(round) d\(i) rm -rf \(dir)")
            case 88..<94:
                // Move out of a folder, edit, rename (issue 12's first sequence).
                guard let rel = pick(files), let old = readText(at(rel)) else { continue }
                let moved = "m\(round)"
                guard rename(at(rel), at(moved)) == 0 else { continue }
                try? Data((tag + "\n").utf8).write(to: URL(fileURLWithPath: at(moved)))
                superseded.insert(old)
                written.insert(tag + "\n")
                _ = rename(at(moved), at("n\(round)"))
                log.append("\(round) d\(i) mv \(rel) m\(round), write \(tag), mv n\(round)")
            default:
                // Edit, move elsewhere, delete the former folder (the second sequence).
                guard let rel = pick(files.filter { $0.contains("/") }), let old = readText(at(rel)) else { continue }
                try? Data((tag + "\n").utf8).write(to: URL(fileURLWithPath: at(rel)))
                superseded.insert(old)
                written.insert(tag + "\n")
                let dir = String(rel[..<rel.lastIndex(of: "/")!])
                guard rename(at(rel), at("k\(round)")) == 0 else { continue }
                if let removed = removeTree(m, dir) {
                    superseded.formUnion(removed)
                    log.append("\(round) d\(i) write \(rel) \(tag), mv k\(round), rm -rf \(dir)")
                } else {
                    log.append("\(round) d\(i) write \(rel) \(tag), mv k\(round)")
                }
            }
        }
        if stopped { kill(vault.server.pid, SIGCONT) }
        for m in mounts + mounts {
            let r = try await vault.lockfs(["sync", m, "--timeout", "150"], timeout: .seconds(180))
            #expect(r.status == 0, "\(r.stderr)")
        }
        let agreed = await eventually(within: .seconds(30)) { ConflictMountTests.tree(mounts[0]) == ConflictMountTests.tree(mounts[1]) }
        let story = "seed \(Self.seed)\n" + log.joined(separator: "\n")
        #expect(agreed, "the mounts differ\n\(ConflictMountTests.tree(mounts[0]))\n\(ConflictMountTests.tree(mounts[1]))\n\(story)")
        for m in mounts {
            let present = Set(ConflictMountTests.tree(m).values)
            let lost = written.subtracting(superseded).subtracting(present)
            #expect(lost.isEmpty, "\(m) lost \(lost.sorted())\n\(story)")
        }
    }
}
