import LockCrypto
import LockWire

/// The journal checks every client makes before it applies a page of
/// entries (docs/design.md, "Pulling and verifying the journal";
/// docs/security.md, "Guarantees"). A pure value: given what this device
/// verified before and a page, it returns the entries to apply (opened) and
/// those to skip, or the integrity error of what a faithful server cannot
/// send. Table-tested with every lie a server can tell (JournalVerifierTests).
///
/// It checks that the page starts at the head this device verified at the
/// cursor it asked after (a history of the same length is caught at the
/// next poll), then, in order, for each entry: that it comes next (nothing
/// dropped or reordered); that it chains to the verified head (nothing
/// altered or re-chained); that its base is a head this device verified (no
/// fork); who signed it (`EntryAuthority`); that this device's own
/// acknowledged entry is the one served at its seq, with the head the
/// acknowledgement gave; that it opens under the vault's keys; that it
/// continues its device's own chain (`DeviceChain`: nothing of that device
/// dropped, replayed or reordered). Entries another pull applied meanwhile
/// must be the very ones verified then.
struct JournalVerifier {
    let vault: VaultID
    let keys: KeyGenerations
    /// Where this device's verified history ends.
    var cursor: UInt64
    var head: ChainHead
    /// Keys bound to devices by their first signed entry.
    var signers: [DeviceID: [UInt8]]
    /// Where each device's own chain stands.
    var tails: [DeviceID: DeviceTail]
    /// This device's entries in flight: what it sealed, and where the server
    /// said it appended them.
    let inflight: [InflightBatch]
    /// Heads of entries `lockfs repair` quarantined: skipped like entries a
    /// faithful server refuses. A head names one entry at one position of
    /// one history, so a quarantine covers nothing else.
    var quarantined: Set<ChainHead> = []
    /// The envelope hashes of the quarantined entries' batches: the next batch
    /// of their device names one as its previous (`DeviceChain`).
    var quarantinedEnvelopes: Set<[UInt8]> = []
    /// The entry that failed authentication, when that is what was thrown:
    /// what `lockfs repair` may quarantine.
    private(set) var suspect: Suspect?

    /// An entry that is chained but does not open (`suspect`).
    struct Suspect: Equatable {
        let seq: UInt64
        let head: ChainHead
        let entry: JournalEntry
    }
    /// A head this device verified at a seq before `cursor` (nil: not known).
    let verifiedHead: (UInt64) -> ChainHead?

    /// One verified entry.
    struct Verified {
        let seq: UInt64
        let head: ChainHead
        let entry: JournalEntry
        /// The opened batch; nil for an entry to skip (a faithful server
        /// refuses it; the chain still advances over it).
        let batch: OperationBatch?
        /// Why it is skipped.
        let ignored: String?
        /// An exact repeat of its device's last batch (a retried append that
        /// landed twice): verified, not applied again.
        var isRepeat = false
    }

    /// What a page verified to.
    struct Outcome {
        var entries: [Verified] = []
        /// Keys bound by entries of this page.
        var newSigners: [DeviceID: [UInt8]] = [:]
        /// Device chains this page moved on.
        var changedTails: [DeviceID: DeviceTail] = [:]
    }

    /// Verifies `page`, asked for after `requested`, advancing `cursor`,
    /// `head` and `signers` over it; every verified entry is kept.
    /// - Throws: as `verify(_:requestedAfter:each:)`.
    mutating func verify(_ page: EntryPage, requestedAfter requested: UInt64) throws -> Outcome {
        var entries: [Verified] = []
        var outcome = try verify(page, requestedAfter: requested) { entries.append($0) }
        outcome.entries = entries
        return outcome
    }

    /// Verifies `page` as above, handing each verified entry to `each` as it
    /// goes (so that a page of large batches is never held opened at once);
    /// an error stops it, and what `each` was given must then be dropped.
    /// - Throws: `LockError.integrity` for anything a faithful server cannot
    ///   send; `LockError.upgradeRequired` for an authentic entry made by a
    ///   newer lockfs (its batch version); `LockError.remote` for a page that
    ///   does not say where it starts (an older server); what `each` throws.
    mutating func verify(_ page: EntryPage, requestedAfter requested: UInt64, each: (Verified) throws -> Void) throws -> Outcome {
        if page.latest.rawValue < requested {
            throw LockError.integrity("the server's journal ends at \(page.latest) but this device verified it up to \(requested): history was rolled back")
        }
        guard let start = page.start else {
            throw LockError.remote("the server's journal page does not say its chain head at this device's position: upgrade lockfs-server to this lockfs's version")
        }
        let verifiedAtStart = requested == cursor ? head : requested == 0 ? ChainHead.genesis(of: vault) : verifiedHead(requested)
        guard start.after.rawValue == requested, let verifiedAtStart, start.head == verifiedAtStart else {
            throw LockError.integrity("the server's journal holds another history at \(requested) than the one this device verified there: it was forked, or rolled back and written again")
        }
        // Entries another pull applied since this page was asked for.
        var items = page.items[...]
        while let first = items.first, first.seq.rawValue <= cursor {
            let verified = first.seq.rawValue == cursor ? head : verifiedHead(first.seq.rawValue)
            guard verified == first.head else {
                throw LockError.integrity("the server served two different entries at \(first.seq): the journal was forked")
            }
            items.removeFirst()
        }
        var outcome = Outcome()
        var pageHeads: [UInt64: ChainHead] = [:]
        for item in items {
            let seq = item.seq.rawValue
            guard seq == cursor + 1 else {
                throw LockError.integrity("journal entry \(seq) came where \(cursor + 1) was due: entries were dropped or reordered")
            }
            let computed = head.next(seq: seq, entry: item.entry.encoded)
            guard computed == item.head else {
                throw LockError.integrity("journal entry \(seq) does not chain to the verified history: altered or forked")
            }
            let verified = try judge(item.entry, seq: seq, computed: computed, pageHeads: pageHeads, outcome: &outcome)
            try each(verified)
            head = computed
            cursor = seq
            pageHeads[seq] = computed
        }
        return outcome
    }

    /// The verdict on one entry that comes next and chains (at `seq`, making
    /// `computed`): skipped (quarantined, or refused by `EntryAuthority`), a
    /// repeat, or opened to apply; or the integrity error of a lie.
    private mutating func judge(_ entry: JournalEntry, seq: UInt64, computed: ChainHead, pageHeads: [UInt64: ChainHead],
                                outcome: inout Outcome) throws -> Verified {
        if quarantined.contains(computed) {
            return Verified(seq: seq, head: computed, entry: entry, batch: nil, ignored: "journal entry \(seq) was ignored: quarantined by lockfs repair")
        }
        let baseSeq = entry.baseSeq.rawValue
        let knownBase: ChainHead? = baseSeq > cursor ? nil
            : baseSeq == cursor ? head
            : baseSeq == 0 ? ChainHead.genesis(of: vault)
            : (pageHeads[baseSeq] ?? verifiedHead(baseSeq))
        guard baseSeq <= cursor, knownBase == entry.baseHead else {
            throw LockError.integrity("journal entry \(seq) was written on a history this device never saw: the server forked the journal")
        }
        let mine = inflight.first { $0.appendedSeq == seq }
        var batch: OperationBatch?
        var ignored: String?
        switch EntryAuthority.check(entry, vault: vault, signers: signers) {
        case .ignore(let why):
            // This device's own acknowledged entry, served so that it would be
            // ignored: skipping it would leave the change "sending" forever.
            if mine != nil {
                throw LockError.integrity("the server acknowledged this device's entry at \(seq) but now serves it so that it must be ignored (\(why)): the journal was altered")
            }
            ignored = "journal entry \(seq) was ignored: \(why)"
        case .apply(let device, let bind):
            if let bind, let device { signers[device] = bind; outcome.newSigners[device] = bind }
            do { batch = try open(entry, seq: seq) } catch LockError.integrity(let why) {
                suspect = Suspect(seq: seq, head: computed, entry: entry)
                throw LockError.integrity(why)
            }
            // The server acknowledged one of this device's entries at this seq; a
            // faithful server serves that entry there and nothing else, after the
            // history it acknowledged it on. Told by the bytes kept in flight, not
            // the device id: after a new login in a home, entries sealed before
            // carry the previous device's id.
            if let mine, mine.entry != entry.unsigned {
                throw LockError.integrity("the server acknowledged this device's entry at \(seq) but now serves another one there: the journal was forked or rolled back")
            }
            if let mine, let acknowledged = mine.appendedHead, acknowledged != computed {
                throw LockError.integrity("the server acknowledged this device's entry at \(seq) with another chain head than the history it now shows: the journal was forked")
            }
        }
        var isRepeat = false
        if let opened = batch {
            switch DeviceChain.check(opened, envelopeHash: BatchLink.envelopeHash(entry.sealedBatch), seq: seq, last: tails[opened.device],
                                     skipped: quarantinedEnvelopes) {
            case .apply(let tail): tails[opened.device] = tail; outcome.changedTails[opened.device] = tail
            case .repeatOfLast: isRepeat = true
            case .broken(let why): throw LockError.integrity(why)
            }
        }
        return Verified(seq: seq, head: computed, entry: entry, batch: batch, ignored: ignored, isRepeat: isRepeat)
    }

    /// The entry's batch, opened with the generation that sealed it.
    private func open(_ entry: JournalEntry, seq: UInt64) throws -> OperationBatch {
        do {
            return try entry.open(keys: keys.keys(opening: entry.sealedBatch) ?? keys.newest)
        } catch WireError.unsupportedVersion(let record, let found)
            where record == OperationBatch.recordName && found > OperationBatch.wireVersion {
            // Authentic, but made for replay rules this build does not know: nothing
            // more can be applied until this device runs a newer lockfs.
            throw LockError.upgradeRequired("journal entry \(seq) (operation batch version \(found))")
        } catch {
            throw LockError.integrity("journal entry \(seq) failed authentication (\(error))")
        }
    }
}
