import Foundation
import LockTesting
import LockCrypto
import LockServer
import LockServerPostgres
import LockWire
import Testing

// MARK: - Implementations under test

/// One `MetadataStore` implementation the conformance suite runs on.
///
/// To run the suite on a new implementation (PostgreSQL, issue 7), add ONE
/// line to `all`: a factory that returns an EMPTY store on fresh storage
/// (a new database or schema) and a way to open a second instance of that
/// same storage (as after a restart, or from a second process).
struct MetadataStoreFactory: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () async throws -> MetadataStoreUnderTest

    var testDescription: String { name }

    /// Every implementation; each conformance test runs once per entry.
    static let all: [MetadataStoreFactory] = [
        .sqlite,
        .postgres,
    ]

    /// SQLite in a fresh temporary directory.
    static let sqlite = MetadataStoreFactory(name: "SQLiteMetadataStore") {
        let dir = try makeTemporaryDirectory("metadata-conformance")
        let path = dir.appendingPathComponent("metadata.sqlite").path
        return MetadataStoreUnderTest(
            store: try SQLiteMetadataStore(path: path),
            reopen: { try SQLiteMetadataStore(path: path) },
            cleanup: { try? FileManager.default.removeItem(at: dir) })
    }

    /// PostgreSQL: a fresh database in the test process's throwaway cluster
    /// (PostgresTests.swift); a second instance is a second store (own pool) on it.
    static let postgres = MetadataStoreFactory(name: "PostgresMetadataStore") {
        let (server, database, settings) = try await PostgresFixture.freshDatabase("conformance")
        let store = try await PostgresMetadataStore.open(settings)
        return MetadataStoreUnderTest(
            store: store,
            reopen: { try await PostgresMetadataStore.open(settings) },
            cleanup: {
                await store.close()
                try? await server.dropDatabase(database)
            })
    }

    /// Makes a fresh store, runs `body` on it, and removes its storage.
    func run(_ body: (_ store: any MetadataStore, _ subject: MetadataStoreUnderTest) async throws -> Void) async throws {
        let subject = try await make()
        do {
            try await body(subject.store, subject)
        } catch {
            await subject.cleanup()
            throw error
        }
        await subject.cleanup()
    }
}

/// A fresh store, and how to open its storage again.
struct MetadataStoreUnderTest: Sendable {
    let store: any MetadataStore
    /// Another instance on the same storage (committed data must be visible there).
    let reopen: @Sendable () async throws -> any MetadataStore
    let cleanup: @Sendable () async -> Void
}

// MARK: - The parameterised tests

/// The `MetadataStore` contract (Sources/LockServer/MetadataStore.swift),
/// written once in `MetadataStoreConformance` and run on every implementation.
@Suite struct MetadataStoreConformanceTests {
    @Test(arguments: MetadataStoreFactory.all)
    func invites(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.invites(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func registration(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.registration(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func registrationIsOneTransaction(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.registrationIsOneTransaction(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func registrationWithoutAValidInviteDoesNotRevealTakenNames(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.registrationWithoutAValidInviteDoesNotRevealTakenNames(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func vaultIDsAreUnique(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.vaultIDsAreUnique(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func accountSummaries(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.accountSummaries(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func removeAccountCascades(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.removeAccountCascades(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func replaceKeyring(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.replaceKeyring(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func recoveryAndEnrolmentRace(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.recoveryAndEnrolmentRace(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func devices(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.devices(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func chunks(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.chunks(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func append(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.append(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func entryPaging(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.entryPaging(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func checkpoints(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.checkpoints(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func serverSecretAndReopen(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, subject in try await MetadataStoreConformance.serverSecretAndReopen(store, reopen: subject.reopen) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func totalStoredBytes(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.totalStoredBytes(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func isolationBetweenAccounts(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.isolationBetweenAccounts(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func concurrentAppends(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, _ in try await MetadataStoreConformance.concurrentAppends(store) }
    }

    @Test(arguments: MetadataStoreFactory.all)
    func concurrentAppendsThroughTwoInstances(_ factory: MetadataStoreFactory) async throws {
        try await factory.run { store, subject in
            try await MetadataStoreConformance.concurrentAppendsThroughTwoInstances(store, second: try await subject.reopen())
        }
    }
}

// MARK: - The suite, once, over `any MetadataStore`

enum MetadataStoreConformance {
    typealias F = MetadataFixture

    // MARK: Invites and registration

    static func invites(_ store: any MetadataStore) async throws {
        let now = F.now
        let first = F.hash("first code"), second = F.hash("second code")

        // A wrong code is refused and does not consume the invite.
        try await store.createInvite(NewInvite(user: "alice", codeHash: first, expiresAt: now + 3600))
        let wrong = await F.serverError { try await store.register(F.newAccount("alice"), inviteHash: second, device: F.newDevice(), now: now) }
        #expect(wrong?.code == "forbidden")
        #expect(try await store.account(named: "alice") == nil)

        // Creating again replaces: the first code no longer works, the second does.
        try await store.createInvite(NewInvite(user: "alice", codeHash: second, expiresAt: now + 3600))
        let replaced = await F.serverError { try await store.register(F.newAccount("alice"), inviteHash: first, device: F.newDevice(), now: now) }
        #expect(replaced?.code == "forbidden")
        let alice = try await store.register(F.newAccount("alice"), inviteHash: second, device: F.newDevice(), now: now)
        #expect(alice.name == "alice")

        // An invite for an existing account is a conflict.
        let exists = await F.serverError { try await store.createInvite(NewInvite(user: "alice", codeHash: first, expiresAt: now + 3600)) }
        #expect(exists?.code == "user_exists")

        // Invites are per name: carol's code does not register bob; no invite at all is refused.
        let carolCode = F.hash("carol")
        try await store.createInvite(NewInvite(user: "carol", codeHash: carolCode, expiresAt: now + 3600))
        let borrowed = await F.serverError { try await store.register(F.newAccount("bob"), inviteHash: carolCode, device: F.newDevice(), now: now) }
        #expect(borrowed?.code == "forbidden")
        let none = await F.serverError { try await store.register(F.newAccount("dave"), inviteHash: F.hash("dave"), device: F.newDevice(), now: now) }
        #expect(none?.code == "forbidden")
        #expect(try await store.account(named: "bob") == nil)
        #expect(try await store.account(named: "dave") == nil)
        // …and carol's own invite still works after the refused attempt.
        _ = try await store.register(F.newAccount("carol"), inviteHash: carolCode, device: F.newDevice(), now: now)

        // Expiry: usable before expiresAt, refused after.
        let erinCode = F.hash("erin")
        try await store.createInvite(NewInvite(user: "erin", codeHash: erinCode, expiresAt: now + 60))
        let late = await F.serverError { try await store.register(F.newAccount("erin"), inviteHash: erinCode, device: F.newDevice(), now: now + 61) }
        #expect(late?.code == "forbidden")
        #expect(try await store.account(named: "erin") == nil)
        _ = try await store.register(F.newAccount("erin"), inviteHash: erinCode, device: F.newDevice(), now: now + 59)
        let frankCode = F.hash("frank")
        try await store.createInvite(NewInvite(user: "frank", codeHash: frankCode, expiresAt: now - 1))
        let expired = await F.serverError { try await store.register(F.newAccount("frank"), inviteHash: frankCode, device: F.newDevice(), now: now) }
        #expect(expired?.code == "forbidden")

        #expect(try await store.accounts().map(\.name).sorted() == ["alice", "carol", "erin"])
    }

    static func registration(_ store: any MetadataStore) async throws {
        let now = F.now
        let code = F.hash("alice")
        try await store.createInvite(NewInvite(user: "alice", codeHash: code, expiresAt: now + 3600))
        let new = F.newAccount("alice")
        let device = F.newDevice("laptop")
        let alice = try await store.register(new, inviteHash: code, device: device, now: now)

        // The returned account is exactly what was registered, with no usage and the default quota.
        #expect(alice.name == "alice")
        #expect(alice.vaultID == new.vaultID)
        #expect(alice.kdf == new.kdf)
        #expect(alice.keyring == new.keyring)
        #expect(alice.loginSalt == new.loginSalt)
        #expect(alice.loginHash == new.loginHash)
        #expect(alice.storedBytes == 0)
        #expect(alice.quota == nil)

        // Lookup by name returns the same account; unknown names give nil.
        #expect(try await store.account(named: "alice") == alice)
        #expect(try await store.account(named: "Alice") == nil)
        #expect(try await store.account(named: "nobody") == nil)

        // The first device is enrolled in the same call.
        let found = try await store.device(tokenHash: device.tokenHash, now: now)
        #expect(found?.0 == alice)
        #expect(found?.1.id == device.id)
        #expect(found?.1.name == "laptop")
        #expect(found?.1.account == alice.id)
        #expect(try await store.devices(account: alice.id).map(\.id) == [device.id])

        // An existing name is a conflict (open registration; with a made-up invite see below).
        let open = await F.serverError { try await store.register(F.newAccount("alice"), inviteHash: nil, device: F.newDevice(), now: now) }
        #expect(open?.code == "user_exists")

        // The invite was consumed: after the account is removed, the same code is refused.
        #expect(try await store.removeAccount(named: "alice") == alice.vaultID)
        let reused = await F.serverError { try await store.register(F.newAccount("alice"), inviteHash: code, device: F.newDevice(), now: now) }
        #expect(reused?.code == "forbidden")
        #expect(try await store.account(named: "alice") == nil)

        // Open registration (no invite hash) needs no invite.
        let bob = try await store.register(F.newAccount("bob"), inviteHash: nil, device: F.newDevice(), now: now)
        #expect(try await store.account(named: "bob") == bob)
    }

    /// A registration that fails after the invite check (here: a device
    /// token hash that is taken) leaves no account and keeps the invite.
    static func registrationIsOneTransaction(_ store: any MetadataStore) async throws {
        let now = F.now
        let bobDevice = F.newDevice()
        _ = try await store.register(F.newAccount("bob"), inviteHash: nil, device: bobDevice, now: now)
        let code = F.hash("alice")
        try await store.createInvite(NewInvite(user: "alice", codeHash: code, expiresAt: now + 3600))
        let clash = NewDevice(id: .random(), name: "clash", tokenHash: bobDevice.tokenHash)
        await #expect(throws: (any Error).self) {
            _ = try await store.register(F.newAccount("alice"), inviteHash: code, device: clash, now: now)
        }
        #expect(try await store.account(named: "alice") == nil)
        #expect(try await store.accounts().map(\.name) == ["bob"])
        // The invite survived the rolled-back attempt.
        let alice = try await store.register(F.newAccount("alice"), inviteHash: code, device: F.newDevice(), now: now)
        #expect(try await store.account(named: "alice") == alice)
        // bob's device still belongs to bob.
        #expect(try await store.device(tokenHash: bobDevice.tokenHash, now: now)?.0.name == "bob")
    }

    /// docs/security.md, "Account existence": registration reveals that a
    /// name is taken (409) "but needs an invite for that very name". So with
    /// an invite hash that is not a valid invite for the name, an existing
    /// name must be refused exactly like a free one (forbidden), not with
    /// user_exists — otherwise any made-up code tells which accounts exist.
    static func registrationWithoutAValidInviteDoesNotRevealTakenNames(_ store: any MetadataStore) async throws {
        let now = F.now
        _ = try await F.register(store, "alice")
        let madeUp = F.hash("any syntactically valid code")
        let taken = await F.serverError { try await store.register(F.newAccount("alice"), inviteHash: madeUp, device: F.newDevice(), now: now) }
        let free = await F.serverError { try await store.register(F.newAccount("nobody"), inviteHash: madeUp, device: F.newDevice(), now: now) }
        #expect(free?.code == "forbidden")
        #expect(taken?.code == "forbidden", "a made-up invite for an existing name gave \(taken?.code ?? "success"), for a free name \(free?.code ?? "success")")
        #expect(taken == free)
        #expect(try await store.accounts().map(\.name) == ["alice"])
    }

    /// Blobs are keyed by vault id, so a second account with a taken vault
    /// id would share (and could delete) the first one's blobs: refused.
    static func vaultIDsAreUnique(_ store: any MetadataStore) async throws {
        let now = F.now
        let (alice, _, _) = try await F.register(store, "alice")
        let clash = await F.serverError {
            try await store.register(F.newAccount("mallory", vault: alice.vaultID), inviteHash: nil, device: F.newDevice(), now: now)
        }
        #expect(clash?.code == "vault_exists")
        #expect(try await store.account(named: "mallory") == nil)
        #expect(try await store.accounts().map(\.name) == ["alice"])
        // After alice is removed, her vault id is free again.
        #expect(try await store.removeAccount(named: "alice") == alice.vaultID)
        let again = try await store.register(F.newAccount("mallory", vault: alice.vaultID), inviteHash: nil, device: F.newDevice(), now: now)
        #expect(again.vaultID == alice.vaultID)
    }

    static func accountSummaries(_ store: any MetadataStore) async throws {
        #expect(try await store.accounts().isEmpty)
        let now = F.now
        let (alice, keys, _) = try await F.register(store, "alice")
        let (bob, _, _) = try await F.register(store, "bob")
        _ = try await F.register(store, "carol")

        // alice: 3 devices (one revoked), 2 chunks (one recorded twice), 3 entries.
        let second = F.newDevice(), third = F.newDevice()
        try await store.addDevice(second, account: alice.id, now: now)
        try await store.addDevice(third, account: alice.id, now: now)
        #expect(try await store.revokeDevice(account: alice.id, id: third.id))
        let c1 = F.chunkID(), c2 = F.chunkID()
        try await store.recordChunks(account: alice.id, [(c1, 1000), (c2, 234)])
        try await store.recordChunks(account: alice.id, [(c1, 1000)])
        let journal = try await F.appendChain(store, alice, keys, count: 3).reduce(0) { $0 + $1.bytes.count }
        // bob: 1 device, 1 chunk.
        try await store.recordChunks(account: bob.id, [(c1, 77)])

        let rows = try await store.accounts().sorted { $0.name < $1.name }
            .map { "\($0.name) devices=\($0.devices) bytes=\($0.storedBytes) entries=\($0.entries)" }
        #expect(rows == [
            "alice devices=2 bytes=\(1234 + journal) entries=3",
            "bob devices=1 bytes=77 entries=0",
            "carol devices=1 bytes=0 entries=0",
        ])
    }

    static func removeAccountCascades(_ store: any MetadataStore) async throws {
        let now = F.now
        let (alice, aliceKeys, aliceFirst) = try await F.register(store, "alice")
        let (bob, bobKeys, _) = try await F.register(store, "bob")
        let aliceSecond = F.newDevice()
        try await store.addDevice(aliceSecond, account: alice.id, now: now)
        let c1 = F.chunkID(), c2 = F.chunkID()
        try await store.recordChunks(account: alice.id, [(c1, 100), (c2, 200)])
        try await store.recordChunks(account: bob.id, [(c1, 50)])
        let chain = try await F.appendChain(store, alice, aliceKeys, count: 2, references: [c1])
        try await store.putCheckpoint(account: alice.id, vault: alice.vaultID, seq: JournalSeq(2), head: chain[1].head, bytes: [1, 2, 3])
        let bobJournal = Int64(try await F.appendChain(store, bob, bobKeys, count: 1)[0].bytes.count)
        // Chunks, entries and the checkpoint.
        let aliceBytes = 300 + Int64(chain.reduce(0) { $0 + $1.bytes.count }) + 3
        #expect(try await store.totalStoredBytes() == aliceBytes + 50 + bobJournal)

        #expect(try await store.removeAccount(named: "alice") == alice.vaultID)
        #expect(try await store.removeAccount(named: "alice") == nil)
        #expect(try await store.removeAccount(named: "nobody") == nil)

        // Everything of alice is gone…
        #expect(try await store.account(named: "alice") == nil)
        #expect(try await store.device(tokenHash: aliceFirst.tokenHash, now: now) == nil)
        #expect(try await store.device(tokenHash: aliceSecond.tokenHash, now: now) == nil)
        #expect(try await store.devices(account: alice.id).isEmpty)
        #expect(try await store.missingChunks(account: alice.id, ids: [c1, c2]) == [c1, c2])
        let gone = try await store.entries(account: alice.id, after: .start, limit: 100)
        #expect(gone.items.isEmpty && gone.latest == .start)
        #expect(try await store.latestCheckpoint(account: alice.id) == nil)
        #expect(try await store.accounts().map(\.name) == ["bob"])
        #expect(try await store.totalStoredBytes() == 50 + bobJournal)

        // …and a new account of the same name (which may get the same row id) starts empty,
        // even reusing the removed device's token hash.
        let againKeys = VaultKeys.generate()
        let again = try await store.register(F.newAccount("alice", vault: againKeys.vaultID), inviteHash: nil, device: aliceFirst, now: now)
        #expect(again.storedBytes == 0)
        #expect(try await store.devices(account: again.id).map(\.id) == [aliceFirst.id])
        #expect(try await store.missingChunks(account: again.id, ids: [c1, c2]) == [c1, c2])
        let fresh = try await store.entries(account: again.id, after: .start, limit: 100)
        #expect(fresh.items.isEmpty && fresh.latest == .start)
        #expect(try await store.latestCheckpoint(account: again.id) == nil)
        let firstEntry = try F.entry(againKeys, .start, ChainHead.genesis(of: again.vaultID))
        let first = try await store.append(account: again.id, vault: again.vaultID, entry: firstEntry, bytes: firstEntry.encoded,
                                           references: [], device: aliceFirst.id, now: now)
        #expect(first.seq == JournalSeq(1))

        // bob is untouched.
        #expect(try await store.missingChunks(account: bob.id, ids: [c1]).isEmpty)
        #expect(try await store.entries(account: bob.id, after: .start, limit: 100).latest == JournalSeq(1))
        #expect(try await store.account(named: "bob")?.storedBytes == 50 + bobJournal)
    }

    /// Issue 13 review: a recovery (new login hash, every other device revoked)
    /// and a login checked against the old hash. The login's device must not
    /// survive; a keyring change checked against a stale hash must not apply.
    static func recoveryAndEnrolmentRace(_ store: any MetadataStore) async throws {
        let (alice, _, first) = try await F.register(store, "alice")
        let old = alice.loginHash, new = Sodium.randomBytes(32)
        try await store.replaceKeyring(account: alice.id, KeyringChange(
            keyring: alice.keyring, kdf: alice.kdf, loginSalt: Sodium.randomBytes(16), loginHash: new,
            recoveryVerifier: Sodium.randomBytes(48), revokeAllBut: first.id, expectedLoginHash: old), now: F.now)
        let late = NewDevice(id: .random(), name: "checked before the recovery", tokenHash: Sodium.randomBytes(32))
        await #expect(throws: ServerError.forbidden("wrong user name or password")) {
            try await store.addDevice(late, account: alice.id, now: F.now, ifLoginHash: old)
        }
        await #expect(throws: ServerError.self) {
            try await store.replaceKeyring(account: alice.id, KeyringChange(
                keyring: alice.keyring, kdf: alice.kdf, loginSalt: Sodium.randomBytes(16), loginHash: Sodium.randomBytes(32),
                expectedLoginHash: old), now: F.now)
        }
        #expect(try await store.account(named: "alice")?.loginHash == new)
        #expect(try await store.devices(account: alice.id).map(\.id) == [first.id])
        let fresh = NewDevice(id: .random(), name: "with the new password", tokenHash: Sodium.randomBytes(32))
        try await store.addDevice(fresh, account: alice.id, now: F.now, ifLoginHash: new)
        #expect(try await store.devices(account: alice.id).count == 2)
    }

    static func replaceKeyring(_ store: any MetadataStore) async throws {
        let (alice, _, _) = try await F.register(store, "alice")
        let (bob, _, _) = try await F.register(store, "bob")
        try await store.recordChunks(account: alice.id, [(F.chunkID(), 10)])
        let keyring = Sodium.randomBytes(170), kdf = Sodium.randomBytes(29)
        let salt = Sodium.randomBytes(16), hash = Sodium.randomBytes(32)
        try await store.replaceKeyring(account: alice.id, keyring: keyring, kdf: kdf, loginSalt: salt, loginHash: hash)
        let after = try #require(try await store.account(named: "alice"))
        #expect(after.keyring == keyring)
        #expect(after.kdf == kdf)
        #expect(after.loginSalt == salt)
        #expect(after.loginHash == hash)
        #expect(after.id == alice.id)
        #expect(after.vaultID == alice.vaultID)
        #expect(after.storedBytes == 10)
        #expect(after.quota == alice.quota)
        #expect(try await store.account(named: "bob") == bob)
    }

    // MARK: Devices

    static func devices(_ store: any MetadataStore) async throws {
        let now = F.now
        let (alice, _, first) = try await F.register(store, "alice")

        let found = try #require(try await store.device(tokenHash: first.tokenHash, now: now))
        #expect(found.0 == alice)
        #expect(found.1.id == first.id)
        #expect(found.1.account == alice.id)
        #expect(found.1.name == first.name)
        #expect(abs(found.1.createdAt.timeIntervalSince(now)) < 0.001)

        let phone = NewDevice(id: .random(), name: "phone ✓", tokenHash: F.hash("phone token"))
        try await store.addDevice(phone, account: alice.id, now: now + 10)
        let byPhone = try #require(try await store.device(tokenHash: phone.tokenHash, now: now + 10))
        #expect(byPhone.0.id == alice.id)
        #expect(byPhone.1.id == phone.id)
        #expect(byPhone.1.name == "phone ✓")
        #expect(abs(byPhone.1.createdAt.timeIntervalSince(now + 10)) < 0.001)
        #expect(Set(try await store.devices(account: alice.id).map(\.id)) == [first.id, phone.id])
        #expect(try await store.device(tokenHash: F.hash("unknown token"), now: now) == nil)

        // Revoking: the token stops working, the list drops it, a second revoke is false.
        #expect(try await store.revokeDevice(account: alice.id, id: phone.id))
        #expect(try await store.device(tokenHash: phone.tokenHash, now: now + 20) == nil)
        #expect(try await store.devices(account: alice.id).map(\.id) == [first.id])
        #expect(try await store.revokeDevice(account: alice.id, id: phone.id) == false)
        #expect(try await store.revokeDevice(account: alice.id, id: .random()) == false)
        #expect(try await store.device(tokenHash: first.tokenHash, now: now + 20)?.1.id == first.id)
        #expect(try await store.accounts().first?.devices == 1)

        // Another account's device cannot be revoked through alice.
        let (bob, _, bobDevice) = try await F.register(store, "bob")
        #expect(try await store.revokeDevice(account: alice.id, id: bobDevice.id) == false)
        #expect(try await store.device(tokenHash: bobDevice.tokenHash, now: now)?.0.id == bob.id)
        #expect(try await store.devices(account: bob.id).map(\.id) == [bobDevice.id])
    }

    // MARK: Chunks

    static func chunks(_ store: any MetadataStore) async throws {
        let (alice, _, _) = try await F.register(store, "alice")
        let c1 = F.chunkID(), c2 = F.chunkID(), c3 = F.chunkID(), c4 = F.chunkID()
        #expect(try await store.missingChunks(account: alice.id, ids: []) == [])
        #expect(try await store.missingChunks(account: alice.id, ids: [c1, c2, c3]) == [c1, c2, c3])

        try await store.recordChunks(account: alice.id, [(c2, 200)])
        #expect(try await store.missingChunks(account: alice.id, ids: [c1, c2, c3]) == [c1, c3])
        #expect(try await store.missingChunks(account: alice.id, ids: [c3, c2, c1]) == [c3, c1])
        #expect(try await store.account(named: "alice")?.storedBytes == 200)

        // Idempotent: a chunk recorded again (even with another size) is counted once.
        try await store.recordChunks(account: alice.id, [(c2, 200), (c3, 300)])
        #expect(try await store.account(named: "alice")?.storedBytes == 500)
        try await store.recordChunks(account: alice.id, [(c4, 40), (c4, 40)])
        #expect(try await store.account(named: "alice")?.storedBytes == 540)
        try await store.recordChunks(account: alice.id, [(c2, 999)])
        try await store.recordChunks(account: alice.id, [])
        #expect(try await store.account(named: "alice")?.storedBytes == 540)
        #expect(try await store.missingChunks(account: alice.id, ids: [c1, c2, c3, c4]) == [c1])
        #expect(try await store.totalStoredBytes() == 540)
    }

    // MARK: Journal

    static func append(_ store: any MetadataStore) async throws {
        let now = F.now
        let (alice, keys, first) = try await F.register(store, "alice")
        let device = first.id
        let vault = alice.vaultID
        let c1 = F.chunkID(), c2 = F.chunkID()
        try await store.recordChunks(account: alice.id, [(c1, 100), (c2, 200)])
        let genesis = ChainHead.genesis(of: vault)

        // 1, 2, 3 with heads computed here, independently of the store.
        let e1 = try F.entry(keys, .start, genesis)
        let s1 = try await store.append(account: alice.id, vault: vault, entry: e1, bytes: e1.encoded, references: [c1], device: device, now: now)
        let h1 = genesis.next(seq: 1, entry: e1.encoded)
        #expect(s1.seq == JournalSeq(1))
        #expect(s1.head == h1)
        #expect(s1.bytes == e1.encoded)

        let e2 = try F.entry(keys, JournalSeq(1), h1)
        let s2 = try await store.append(account: alice.id, vault: vault, entry: e2, bytes: e2.encoded, references: [c1, c2], device: device, now: now)
        let h2 = h1.next(seq: 2, entry: e2.encoded)
        #expect(s2.seq == JournalSeq(2))
        #expect(s2.head == h2)
        #expect(s2.bytes == e2.encoded)

        // An older base that is in the chain is accepted (the writer had not seen entry 2).
        let e3 = try F.entry(keys, JournalSeq(1), h1)
        let s3 = try await store.append(account: alice.id, vault: vault, entry: e3, bytes: e3.encoded, references: [], device: device, now: now)
        let h3 = h2.next(seq: 3, entry: e3.encoded)
        #expect(s3.seq == JournalSeq(3))
        #expect(s3.head == h3)

        // Bases that are not in the chain: past the end, a wrong head, another vault's genesis.
        let badBases: [(JournalSeq, ChainHead)] = [
            (JournalSeq(4), h3), (JournalSeq(3), h2), (JournalSeq(2), h3), (.start, h1),
            (.start, ChainHead.genesis(of: .random())), (JournalSeq(1_000_000), h3),
        ]
        for (seq, head) in badBases {
            let e = try F.entry(keys, seq, head)
            let error = await F.serverError {
                try await store.append(account: alice.id, vault: vault, entry: e, bytes: e.encoded, references: [c1], device: device, now: now)
            }
            #expect(error?.code == "bad_base", "base (\(seq), \(head.hex.prefix(8))) gave \(String(describing: error))")
        }

        // Missing references: exactly the missing ids, in the order given.
        let m1 = F.chunkID(), m2 = F.chunkID()
        let e4 = try F.entry(keys, JournalSeq(3), h3)
        let missing = await F.serverError {
            try await store.append(account: alice.id, vault: vault, entry: e4, bytes: e4.encoded,
                                   references: [c2, m2, c1, m1], device: device, now: now)
        }
        #expect(missing == .missingChunks([m2, m1]))

        // Nothing was written by the refusals: still 3 entries, the same ones.
        let page = try await store.entries(account: alice.id, after: .start, limit: 100)
        #expect(page.latest == JournalSeq(3))
        #expect(page.items.map(\.seq) == [JournalSeq(1), JournalSeq(2), JournalSeq(3)])
        #expect(page.items.map(\.head) == [h1, h2, h3])
        #expect(page.items.map(\.bytes) == [e1.encoded, e2.encoded, e3.encoded])
        #expect(try await store.accounts().first?.entries == 3)

        // The refused entry, once its chunks exist, gets the next number.
        try await store.recordChunks(account: alice.id, [(m1, 1), (m2, 2)])
        let s4 = try await store.append(account: alice.id, vault: vault, entry: e4, bytes: e4.encoded,
                                        references: [c2, m2, c1, m1], device: device, now: now)
        #expect(s4.seq == JournalSeq(4))
        #expect(s4.head == h3.next(seq: 4, entry: e4.encoded))
        #expect(s4.bytes == e4.encoded)
    }

    static func entryPaging(_ store: any MetadataStore) async throws {
        let (alice, keys, _) = try await F.register(store, "alice")
        let empty = try await store.entries(account: alice.id, after: .start, limit: 10)
        #expect(empty.items.isEmpty)
        #expect(empty.latest == .start)

        let chain = try await F.appendChain(store, alice, keys, count: 7)
        func page(after: UInt64, limit: Int) async throws -> (seqs: [UInt64], latest: UInt64, items: [StoredEntry]) {
            let p = try await store.entries(account: alice.id, after: JournalSeq(after), limit: limit)
            return (p.items.map(\.seq.rawValue), p.latest.rawValue, p.items)
        }
        var p = try await page(after: 0, limit: 3)
        #expect(p.seqs == [1, 2, 3] && p.latest == 7)
        p = try await page(after: 3, limit: 3)
        #expect(p.seqs == [4, 5, 6] && p.latest == 7)
        p = try await page(after: 6, limit: 3)
        #expect(p.seqs == [7] && p.latest == 7)
        p = try await page(after: 7, limit: 3)
        #expect(p.seqs == [] && p.latest == 7)
        p = try await page(after: 100, limit: 3)
        #expect(p.seqs == [] && p.latest == 7)
        p = try await page(after: 2, limit: 1)
        #expect(p.seqs == [3] && p.latest == 7)
        p = try await page(after: 0, limit: 1000)
        #expect(p.seqs == Array(1...7) && p.latest == 7)
        // Every entry is exactly what append returned.
        #expect(p.items.map(\.head) == chain.map(\.head))
        #expect(p.items.map(\.bytes) == chain.map(\.bytes))
        #expect(F.chainVerifies(p.items, genesis: ChainHead.genesis(of: alice.vaultID)))
        // The head at a seq (version 2 pages start with it): genesis at 0, none beyond the journal.
        #expect(try await store.head(account: alice.id, vault: alice.vaultID, at: .start) == ChainHead.genesis(of: alice.vaultID))
        for item in chain {
            #expect(try await store.head(account: alice.id, vault: alice.vaultID, at: item.seq) == item.head)
        }
        #expect(try await store.head(account: alice.id, vault: alice.vaultID, at: JournalSeq(8)) == nil)
        #expect(try await store.head(account: alice.id, vault: alice.vaultID, at: JournalSeq(.max)) == nil)
        // A page ends once its entries hold maxBytes (at least one entry).
        let size = chain[0].bytes.count
        func capped(_ maxBytes: Int) async throws -> [UInt64] {
            try await store.entries(account: alice.id, after: .start, limit: 100, maxBytes: maxBytes).items.map(\.seq.rawValue)
        }
        #expect(try await capped(1) == [1])
        #expect(try await capped(size) == [1])
        #expect(try await capped(size + 1) == [1, 2])
        #expect(try await capped(2 * size + size / 2) == [1, 2, 3])
        #expect(try await store.entries(account: alice.id, after: JournalSeq(5), limit: 100, maxBytes: 1).items.map(\.seq.rawValue) == [6])
        #expect(try await store.entries(account: alice.id, after: JournalSeq(5), limit: 100, maxBytes: 1).latest == JournalSeq(7))
    }

    // MARK: Checkpoints

    static func checkpoints(_ store: any MetadataStore) async throws {
        let (alice, keys, _) = try await F.register(store, "alice")
        let vault = alice.vaultID
        #expect(try await store.latestCheckpoint(account: alice.id) == nil)

        // Nothing to checkpoint yet.
        let early = await F.serverError {
            try await store.putCheckpoint(account: alice.id, vault: vault, seq: JournalSeq(1), head: ChainHead.genesis(of: vault), bytes: [9])
        }
        #expect(early?.code == "bad_checkpoint")

        let chain = try await F.appendChain(store, alice, keys, count: 3)
        let a = Sodium.randomBytes(300), b = Sodium.randomBytes(200), c = Sodium.randomBytes(100)
        try await store.putCheckpoint(account: alice.id, vault: vault, seq: JournalSeq(2), head: chain[1].head, bytes: a)
        #expect(try await store.latestCheckpoint(account: alice.id) == a)
        // An older checkpoint does not replace the latest.
        try await store.putCheckpoint(account: alice.id, vault: vault, seq: JournalSeq(1), head: chain[0].head, bytes: b)
        #expect(try await store.latestCheckpoint(account: alice.id) == a)

        // Positions not in the chain are refused and change nothing.
        let bad: [(UInt64, ChainHead)] = [(4, chain[2].head), (2, chain[2].head), (3, chain[1].head), (3, ChainHead.genesis(of: vault))]
        for (seq, head) in bad {
            let error = await F.serverError {
                try await store.putCheckpoint(account: alice.id, vault: vault, seq: JournalSeq(seq), head: head, bytes: c)
            }
            #expect(error?.code == "bad_checkpoint", "checkpoint at \(seq) gave \(String(describing: error))")
        }
        #expect(try await store.latestCheckpoint(account: alice.id) == a)

        try await store.putCheckpoint(account: alice.id, vault: vault, seq: JournalSeq(3), head: chain[2].head, bytes: c)
        #expect(try await store.latestCheckpoint(account: alice.id) == c)
    }

    // MARK: Deployment

    static func serverSecretAndReopen(_ store: any MetadataStore, reopen: @Sendable () async throws -> any MetadataStore) async throws {
        // Concurrent first calls agree on one secret.
        let secrets = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<8 { group.addTask { try await store.serverSecret() } }
            return try await group.reduce(into: [[UInt8]]()) { $0.append($1) }
        }
        let secret = try #require(secrets.first)
        #expect(secret.count == 32)
        #expect(Set(secrets).count == 1)
        #expect(secret != [UInt8](repeating: 0, count: 32))
        #expect(try await store.serverSecret() == secret)

        // Committed data is visible from another instance on the same storage.
        let (alice, keys, _) = try await F.register(store, "alice")
        let c1 = F.chunkID()
        try await store.recordChunks(account: alice.id, [(c1, 64)])
        let chain = try await F.appendChain(store, alice, keys, count: 2, references: [c1])
        let other = try await reopen()
        #expect(try await other.serverSecret() == secret)
        let journal = Int64(chain.reduce(0) { $0 + $1.bytes.count })
        #expect(F.sameAccount(try await other.account(named: "alice"), alice, storedBytes: 64 + journal))
        #expect(try await other.missingChunks(account: alice.id, ids: [c1]).isEmpty)
        let page = try await other.entries(account: alice.id, after: .start, limit: 10)
        #expect(page.latest == JournalSeq(2))
        #expect(page.items.map(\.head) == chain.map(\.head))
        #expect(page.items.map(\.bytes) == chain.map(\.bytes))
        #expect(try await other.totalStoredBytes() == 64 + journal)
    }

    static func totalStoredBytes(_ store: any MetadataStore) async throws {
        #expect(try await store.totalStoredBytes() == 0)
        let (alice, _, _) = try await F.register(store, "alice")
        let (bob, _, _) = try await F.register(store, "bob")
        #expect(try await store.totalStoredBytes() == 0)
        let shared = F.chunkID()
        try await store.recordChunks(account: alice.id, [(shared, 1000), (F.chunkID(), 24)])
        // The same chunk id in another account is another blob (per vault): it counts again.
        try await store.recordChunks(account: bob.id, [(shared, 1000), (F.chunkID(), 1)])
        try await store.recordChunks(account: bob.id, [(shared, 1000)])
        #expect(try await store.totalStoredBytes() == 2025)
        #expect(try await store.removeAccount(named: "alice") == alice.vaultID)
        #expect(try await store.totalStoredBytes() == 1001)
        // Journal entries and checkpoints count too (issue 15): the quota holds them.
        let (carol, keys, _) = try await F.register(store, "carol")
        let chain = try await F.appendChain(store, carol, keys, count: 2)
        let journal = Int64(chain.reduce(0) { $0 + $1.bytes.count })
        #expect(try await store.totalStoredBytes() == 1001 + journal)
        try await store.putCheckpoint(account: carol.id, vault: carol.vaultID, seq: chain[1].seq, head: chain[1].head, bytes: Array(repeating: 1, count: 500))
        try await store.putCheckpoint(account: carol.id, vault: carol.vaultID, seq: chain[1].seq, head: chain[1].head, bytes: Array(repeating: 2, count: 300))
        #expect(try await store.totalStoredBytes() == 1001 + journal + 300)
        #expect(try await store.accounts().first { $0.name == "carol" }?.storedBytes == journal + 300)
    }

    // MARK: Isolation

    static func isolationBetweenAccounts(_ store: any MetadataStore) async throws {
        let now = F.now
        let (alice, aliceKeys, aliceDevice) = try await F.register(store, "alice")
        let (bob, bobKeys, bobDevice) = try await F.register(store, "bob")
        #expect(alice.id != bob.id)

        // Chunks are per account.
        let c1 = F.chunkID()
        try await store.recordChunks(account: alice.id, [(c1, 10)])
        #expect(try await store.missingChunks(account: alice.id, ids: [c1]).isEmpty)
        #expect(try await store.missingChunks(account: bob.id, ids: [c1]) == [c1])
        #expect(try await store.account(named: "bob")?.storedBytes == 0)

        // Journals are per account: numbering, bases and references.
        let aliceChain = try await F.appendChain(store, alice, aliceKeys, count: 2, references: [c1])
        #expect(try await store.entries(account: bob.id, after: .start, limit: 10).latest == .start)
        let stolenBase = try F.entry(bobKeys, JournalSeq(1), aliceChain[0].head)
        let badBase = await F.serverError {
            try await store.append(account: bob.id, vault: bob.vaultID, entry: stolenBase, bytes: stolenBase.encoded,
                                   references: [], device: bobDevice.id, now: now)
        }
        #expect(badBase?.code == "bad_base")
        let bobEntry = try F.entry(bobKeys, .start, ChainHead.genesis(of: bob.vaultID))
        let borrowed = await F.serverError {
            try await store.append(account: bob.id, vault: bob.vaultID, entry: bobEntry, bytes: bobEntry.encoded,
                                   references: [c1], device: bobDevice.id, now: now)
        }
        #expect(borrowed == .missingChunks([c1]))
        let b1 = try await store.append(account: bob.id, vault: bob.vaultID, entry: bobEntry, bytes: bobEntry.encoded,
                                        references: [], device: bobDevice.id, now: now)
        #expect(b1.seq == JournalSeq(1))
        #expect(b1.head == ChainHead.genesis(of: bob.vaultID).next(seq: 1, entry: bobEntry.encoded))
        let alicePage = try await store.entries(account: alice.id, after: .start, limit: 10)
        #expect(alicePage.latest == JournalSeq(2))
        #expect(alicePage.items.map(\.bytes) == aliceChain.map(\.bytes))
        let bobPage = try await store.entries(account: bob.id, after: .start, limit: 10)
        #expect(bobPage.items.map(\.bytes) == [bobEntry.encoded])

        // Checkpoints: alice's position is not bob's.
        let crossed = await F.serverError {
            try await store.putCheckpoint(account: bob.id, vault: bob.vaultID, seq: JournalSeq(2), head: aliceChain[1].head, bytes: [1])
        }
        #expect(crossed?.code == "bad_checkpoint")
        try await store.putCheckpoint(account: alice.id, vault: alice.vaultID, seq: JournalSeq(2), head: aliceChain[1].head, bytes: [7, 7])
        #expect(try await store.latestCheckpoint(account: bob.id) == nil)
        #expect(try await store.latestCheckpoint(account: alice.id) == [7, 7])

        // Devices.
        #expect(try await store.devices(account: alice.id).map(\.id) == [aliceDevice.id])
        #expect(try await store.devices(account: bob.id).map(\.id) == [bobDevice.id])
        #expect(try await store.revokeDevice(account: bob.id, id: aliceDevice.id) == false)
        #expect(try await store.device(tokenHash: aliceDevice.tokenHash, now: now)?.0.id == alice.id)
        #expect(try await store.device(tokenHash: bobDevice.tokenHash, now: now)?.0.id == bob.id)

        // Keyrings.
        try await store.replaceKeyring(account: bob.id, keyring: [1], kdf: [2], loginSalt: [3], loginHash: [4])
        // Chunks, entries and the checkpoint count for alice only.
        let aliceJournal = Int64(aliceChain.reduce(0) { $0 + $1.bytes.count })
        #expect(F.sameAccount(try await store.account(named: "alice"), alice, storedBytes: 10 + aliceJournal + 2))
    }

    // MARK: Concurrency

    /// 8 writers appending at once to one account: sequence numbers 1…N
    /// without gaps or duplicates, and one valid chain.
    static func concurrentAppends(_ store: any MetadataStore) async throws {
        let (alice, keys, device) = try await F.register(store, "alice")
        try await appendConcurrently(stores: [store], alice, keys, device.id, writers: 8, perWriter: 6)
    }

    /// Two instances on one storage (the server and an admin command, two
    /// server processes on one database): appends through both serialise.
    static func concurrentAppendsThroughTwoInstances(_ store: any MetadataStore, second: any MetadataStore) async throws {
        let (alice, keys, device) = try await F.register(store, "alice")
        try await appendConcurrently(stores: [store, second], alice, keys, device.id, writers: 8, perWriter: 5)
    }

    private static func appendConcurrently(stores: [any MetadataStore], _ account: Account, _ keys: VaultKeys, _ device: DeviceID,
                                           writers: Int, perWriter: Int) async throws {
        let genesis = ChainHead.genesis(of: account.vaultID)
        let results = try await withThrowingTaskGroup(of: [StoredEntry].self) { group in
            for w in 0..<writers {
                let store = stores[w % stores.count]
                group.addTask {
                    // Each writer bases its next entry on the last position it was given.
                    var base = (JournalSeq.start, genesis)
                    var mine: [StoredEntry] = []
                    for _ in 0..<perWriter {
                        let e = try F.entry(keys, base.0, base.1)
                        let s = try await store.append(account: account.id, vault: account.vaultID, entry: e, bytes: e.encoded,
                                                       references: [], device: device, now: F.now)
                        #expect(s.bytes == e.encoded)
                        mine.append(s)
                        base = (s.seq, s.head)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [StoredEntry]()) { $0 += $1 }
        }
        let n = writers * perWriter
        #expect(results.count == n)
        #expect(results.map(\.seq.rawValue).sorted() == Array(1...UInt64(n)))

        let page = try await stores[0].entries(account: account.id, after: .start, limit: 1000)
        #expect(page.latest == JournalSeq(UInt64(n)))
        #expect(page.items.map(\.seq.rawValue) == Array(1...UInt64(n)))
        #expect(F.chainVerifies(page.items, genesis: genesis))
        // What each writer was told is what is stored at that number.
        let stored = Dictionary(uniqueKeysWithValues: page.items.map { ($0.seq, $0) })
        for r in results {
            #expect(stored[r.seq]?.head == r.head, "seq \(r.seq): head differs from the one returned")
            #expect(stored[r.seq]?.bytes == r.bytes, "seq \(r.seq): bytes differ from the ones appended")
        }
    }
}

// MARK: - Fixtures

/// Values for the store tests. Account fields other than the name and
/// vault are opaque to a store, so random bytes stand in for them.
enum MetadataFixture {
    static let now = Date(timeIntervalSince1970: 1_750_000_000)

    static func hash(_ text: String) -> [UInt8] { Hash.blake2b256(parts: [Array(text.utf8)]) }

    static func chunkID() -> ChunkID { try! ChunkID(bytes: Sodium.randomBytes(32)) }

    static func newAccount(_ name: String, vault: VaultID = .random()) -> NewAccount {
        NewAccount(name: name, vaultID: vault, kdf: Sodium.randomBytes(29), keyring: Sodium.randomBytes(160),
                   loginSalt: Sodium.randomBytes(16), loginHash: Sodium.randomBytes(32))
    }

    static func newDevice(_ name: String = "device") -> NewDevice {
        NewDevice(id: .random(), name: name, tokenHash: Sodium.randomBytes(32))
    }

    /// Registers `name` with open registration and a fresh vault; returns the account, its keys and its first device.
    static func register(_ store: any MetadataStore, _ name: String) async throws -> (Account, VaultKeys, NewDevice) {
        let keys = VaultKeys.generate()
        let device = newDevice("\(name)'s first device")
        let account = try await store.register(newAccount(name, vault: keys.vaultID), inviteHash: nil, device: device, now: now)
        return (account, keys, device)
    }

    /// Whether two accounts are equal except for their usage figure.
    static func sameAccount(_ a: Account?, _ b: Account, storedBytes: Int64) -> Bool {
        guard let a else { return false }
        return a.id == b.id && a.name == b.name && a.vaultID == b.vaultID && a.kdf == b.kdf && a.keyring == b.keyring
            && a.loginSalt == b.loginSalt && a.loginHash == b.loginHash && a.quota == b.quota && a.storedBytes == storedBytes
    }

    /// A journal entry sealed for the base position (`seq`, `head`).
    static func entry(_ keys: VaultKeys, _ seq: JournalSeq, _ head: ChainHead) throws -> JournalEntry {
        let op = Operation.create(node: .random(), parent: .root, name: try Name("f-\(UInt32.random(in: 0...UInt32.max))"),
                                  revision: .random(), attributes: try NodeAttributes(mode: 0o644, mtime: Timestamp(nanoseconds: 0)),
                                  content: .file(.empty))
        let batch = try OperationBatch(device: .random(), createdAt: Timestamp(nanoseconds: 1), operations: [op])
        return try JournalEntry.seal(batch, keys: keys, baseSeq: seq, baseHead: head)
    }

    /// Appends `count` entries, each on the previous one, and checks each returned position.
    static func appendChain(_ store: any MetadataStore, _ account: Account, _ keys: VaultKeys, count: Int,
                            references: [ChunkID] = []) async throws -> [StoredEntry] {
        let latest = try await store.entries(account: account.id, after: .start, limit: 1000).items.last
        var seq = latest?.seq ?? .start, head = latest?.head ?? ChainHead.genesis(of: account.vaultID)
        var out: [StoredEntry] = []
        for _ in 0..<count {
            let e = try entry(keys, seq, head)
            let s = try await store.append(account: account.id, vault: account.vaultID, entry: e, bytes: e.encoded,
                                           references: references, device: .random(), now: now)
            let expected = head.next(seq: seq.rawValue + 1, entry: e.encoded)
            guard s.seq == seq.next, s.head == expected, s.bytes == e.encoded else {
                throw TestFailure("append gave seq \(s.seq), expected \(seq.next) with head \(expected.hex)")
            }
            out.append(s)
            (seq, head) = (s.seq, s.head)
        }
        return out
    }

    /// Whether `items` are 1, 2, … and each head is h(n−1) ‖ n ‖ bytes from `genesis`.
    static func chainVerifies(_ items: [StoredEntry], genesis: ChainHead) -> Bool {
        var head = genesis
        for (i, item) in items.enumerated() {
            guard item.seq == JournalSeq(UInt64(i + 1)) else { return false }
            head = head.next(seq: item.seq.rawValue, entry: item.bytes)
            guard item.head == head else { return false }
        }
        return true
    }

    /// The ServerError `body` throws, nil if it succeeds; any other error is recorded as an issue.
    static func serverError<T>(_ body: () async throws -> T) async -> ServerError? {
        do {
            _ = try await body()
            return nil
        } catch let error as ServerError {
            return error
        } catch {
            Issue.record("expected a ServerError, got \(error)")
            return nil
        }
    }

}

/// Implementation-specific checks of the SQLite store.
@Suite struct SQLiteMetadataStoreTests {
    /// A commit must reach the disk before the server acknowledges it. GRDB's
    /// WAL set-up switches the writer to NORMAL; the store must switch it back.
    @Test func writerCommitsWithSynchronousFull() throws {
        let dir = try makeTemporaryDirectory("sqlite-sync")
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteMetadataStore(path: dir.appendingPathComponent("m.sqlite").path)
        #expect(try store.writerSynchronousMode() == 2)
    }
}
