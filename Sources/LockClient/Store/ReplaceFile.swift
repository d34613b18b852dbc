import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Writes `bytes` to `path` through a unique temporary name in the same
/// folder, then renames it over `path`: readers see the old file or the
/// whole new one, never a mix. The temporary name is unique, so two writers
/// of the same file (the same chunk from two threads) never truncate or
/// rename away each other's copy.
///
/// - Parameters:
///   - mode: the file's mode, whatever the umask.
///   - sync: fsync the file before the rename (it survives a power cut once
///     the rename is synced too).
///   - syncFolder: fsync the folder after the rename.
/// - Returns: 0, or the errno of the step that failed (the temporary file
///   is removed then).
func replaceFile(_ path: String, with bytes: some ContiguousBytes, mode: mode_t, sync: Bool, syncFolder: Bool = false) -> Int32 {
    let tmp = path + ".tmp\(UInt32.random(in: 0...UInt32.max))"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
    guard fd >= 0 else { return errno }
    func fail(_ e: Int32) -> Int32 { Glibc.close(fd); Glibc.unlink(tmp); return e == 0 ? EIO : e }
    let e: Int32 = bytes.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return errno == 0 ? EIO : errno }
            done += n
        }
        return 0
    }
    if e != 0 { return fail(e) }
    if fchmod(fd, mode) != 0 { return fail(errno) }
    if sync && fsync(fd) != 0 { return fail(errno) }
    Glibc.close(fd)
    guard Glibc.rename(tmp, path) == 0 else { let e = errno; Glibc.unlink(tmp); return e }
    if syncFolder {
        let dfd = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); Glibc.close(dfd) }
    }
    return 0
}
