import Foundation
import LockChunker
import LockCrypto
import LockTesting

/// `make bench`: single-core throughput of the client's write path, then
/// the figures of a real release `lockfs-server` over loopback
/// (ServerBench.swift; the same workloads on PostgreSQL and on PostgreSQL +
/// S3 with one and two instances in ScaleOutBench.swift), then the client engine's against such a server
/// (EngineBench.swift), then a real mount against a plain directory
/// with shell workloads (MountBench.swift).
///
/// Prints one `bench: NAME VALUE UNIT` line per figure (and `# …` comment
/// lines saying how the server figures were taken). Each figure is the
/// best of several rounds over 1 MiB buffers (MB = 10⁶ bytes), so a busy
/// neighbour on the machine lowers it less; compare ratios within one run.
///
/// `lockfs-bench crypto`, `lockfs-bench server`, `lockfs-bench engine` or `lockfs-bench mount` runs one
/// part only; `lockfs-bench server appends longpolls` or `lockfs-bench engine join`
/// (for instance) some phases of a part only.
@main
struct Bench {
    static let bufferSize = 1 << 20
    static let roundBytes = 512 << 20
    static let rounds = 5

    static func main() async throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let only = arguments.first
        guard only == nil || only == "crypto" || only == "server" || only == "engine" || only == "mount" else {
            FileHandle.standardError.write(Data(("usage: lockfs-bench [crypto | server [\(ServerBench.phases.joined(separator: " "))]… "
                                                 + "| engine [\(EngineBench.phases.joined(separator: " "))]… | mount]\n").utf8))
            exit(2)
        }
        let phases = Array(arguments.dropFirst())
        if only == nil || only == "crypto" { try clientFigures() }
        if only == nil || only == "server" {
            do {
                try await ServerBench.run(phases: phases)
            } catch {
                FileHandle.standardError.write(Data("lockfs-bench: server figures failed: \(error)\n".utf8))
                exit(1)
            }
        }
        if only == nil || only == "engine" {
            do {
                try await EngineBench.run(phases: phases)
            } catch {
                FileHandle.standardError.write(Data("lockfs-bench: engine figures failed: \(error)\n".utf8))
                exit(1)
            }
        }
        if only == nil || only == "mount" {
            do {
                try await MountBench.run()
            } catch {
                FileHandle.standardError.write(Data("lockfs-bench: mount figures failed: \(error)\n".utf8))
                exit(1)
            }
        }
    }

    /// The client's write path: chunker, chunk ids, seal, open, Argon2id.
    static func clientFigures() throws {
        var rng = SeededGenerator(seed: 1)
        let data = rng.bytes(64 << 20)  // 64 buffers of 1 MiB, cycled
        let keys = VaultKeys.generate()
        let buffers = stride(from: 0, to: data.count, by: bufferSize).map { Array(data[$0..<($0 + bufferSize)]) }

        report("chunker_mbps", mbps { bytes in
            var chunker = try! Chunker(gear: keys.gearTable())
            var cuts = 0
            for i in 0..<(bytes / bufferSize) {
                buffers[i % buffers.count].withUnsafeBytes { chunker.feed($0) { _ in cuts += 1 } }
            }
            _ = chunker.finish()
            return cuts
        })

        report("chunkid_mbps", mbps { bytes in
            var acc = 0
            for i in 0..<(bytes / bufferSize) {
                acc &+= buffers[i % buffers.count].withUnsafeBytes { Int(truncatingIfNeeded: keys.chunkID(of: $0).storage.w0) }
            }
            return acc
        })

        report("encrypt_mbps", mbps { bytes in
            var acc = 0
            let id = try! ChunkID(bytes: [UInt8](repeating: 0, count: 32))
            for i in 0..<(bytes / bufferSize) {
                let sealed = try! buffers[i % buffers.count].withUnsafeBytes {
                    try Envelope.seal($0, kind: .chunk, key: keys.content, context: keys.vaultID.bytes + id.bytes)
                }
                acc &+= sealed.count
            }
            return acc
        })

        let sealed = try buffers.prefix(8).map { try $0.withUnsafeBytes { try keys.sealChunk($0) } }
        report("decrypt_verify_mbps", mbps { bytes in
            var acc = 0
            for i in 0..<(bytes / bufferSize) { acc &+= try! keys.openChunk(sealed[i % sealed.count]).count }
            return acc
        })

        // The whole single-core write path: chunk → id → seal, as one thread does it.
        report("pipeline_1core_mbps", mbps(bytes: 256 << 20) { bytes in
            var chunker = try! Chunker(gear: keys.gearTable())
            var pending: [UInt8] = []
            var start = 0
            var acc = 0
            func seal(upTo end: Int) {
                let count = end - start
                acc &+= try! pending.withUnsafeBytes { try keys.sealChunk(UnsafeRawBufferPointer(rebasing: $0[0..<count])).bytes.count }
                pending.removeFirst(count)
                start = end
            }
            for i in 0..<(bytes / bufferSize) {
                let buffer = buffers[i % buffers.count]
                pending += buffer
                var cuts: [Int] = []
                buffer.withUnsafeBytes { chunker.feed($0) { cuts.append($0) } }
                for cut in cuts { seal(upTo: cut) }
            }
            if let end = chunker.finish() { seal(upTo: end) }
            return acc
        })

        let clock = ContinuousClock()
        let params = KDFParameters.generate(.moderate)
        let elapsed = try clock.measure { _ = try PasswordKeys.derive(password: "benchmark password", parameters: params) }
        report("argon2id_moderate_s", seconds(elapsed), unit: "s", digits: 2)
    }

    /// Best throughput over `rounds` rounds of `bytes` bytes each, in MB/s.
    static func mbps(bytes: Int = roundBytes, _ body: (Int) -> Int) -> Double {
        let clock = ContinuousClock()
        var best = 0.0
        var sink = 0
        for _ in 0..<rounds {
            let elapsed = clock.measure { sink &+= body(bytes) }
            best = max(best, Double(bytes) / 1e6 / seconds(elapsed))
        }
        if sink == 42 { print("") }  // keeps the work observable
        return best
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    static func report(_ name: String, _ value: Double, unit: String = "MB/s", digits: Int = 0) {
        let factor = (0..<digits).reduce(1.0) { r, _ in r * 10 }
        let rounded = (value * factor).rounded() / factor
        print("bench: \(name) \(digits == 0 ? String(Int(rounded)) : String(rounded)) \(unit)")
        fflush(nil)
    }

    /// A line that says how figures were taken; not a figure.
    static func note(_ text: String) {
        print("# \(text)")
        fflush(nil)
    }
}
