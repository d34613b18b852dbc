import LockCrypto
import LockWire

/// The journal's append rule, the same for every metadata store: an entry
/// must be written on a head of this journal (its base), and takes the next
/// sequence number with the head chained from the latest.
public enum AppendRule {
    /// Where `entry` (its stored `bytes`) goes in a journal whose latest
    /// entry is `latest` with head `head`.
    /// - Parameter headAtBase: the journal's head at `entry.baseSeq` (nil
    ///   when that is beyond `latest`: `baseLookup` says which seq to read).
    /// - Throws: `ServerError.conflict("bad_base")` when the base is not in
    ///   the journal (a writer cannot make up a history it has not seen).
    public static func position(of entry: JournalEntry, bytes: [UInt8], latest: JournalSeq, head: ChainHead,
                                headAtBase: ChainHead?) throws -> (seq: JournalSeq, head: ChainHead) {
        guard entry.baseSeq <= latest, headAtBase == entry.baseHead else {
            throw ServerError.conflict(code: "bad_base", message: "the entry's base (seq \(entry.baseSeq)) is not in this vault's journal")
        }
        let seq = latest.next
        return (seq, head.next(seq: seq.rawValue, entry: bytes))
    }

    /// The seq whose head `position` needs, or nil if the base is beyond the
    /// journal's end (no lookup needed: the entry is refused).
    public static func baseLookup(_ entry: JournalEntry, latest: JournalSeq) -> JournalSeq? {
        entry.baseSeq <= latest ? entry.baseSeq : nil
    }
}
