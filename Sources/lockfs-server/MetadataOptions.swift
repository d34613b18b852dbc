import ArgumentParser
import Foundation
import LockServer
import LockServerPostgres
import Logging

/// `--metadata URL` and its PostgreSQL settings: where accounts, devices
/// and the journal live. Without it, SQLite under --data.
struct MetadataOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The metadata store: postgres://USER@HOST[:PORT]/DB[?sslmode=…][&host=/socket/dir]; SQLite under --data without it. The password comes from PGPASSWORD or a passfile, never the URL.",
        valueName: "URL"))
    var metadata: String?

    @Option(name: .customLong("pg-passfile"), help: ArgumentHelp(
        "PostgreSQL password file (host:port:db:user:password lines, mode 0600); default PGPASSFILE, else ~/.pgpass.",
        valueName: "FILE"))
    var pgPassfile: String?

    @Option(name: .customLong("pg-max-connections"), help: ArgumentHelp(
        "Most PostgreSQL connections this process opens for requests (plus one for LISTEN).", valueName: "N"))
    var pgMaxConnections = 10

    func validate() throws {
        if let metadata { _ = try postgresSettings(metadata) }
        guard (1...1000).contains(pgMaxConnections) else { throw ValidationError("--pg-max-connections must be 1…1000") }
        if metadata == nil && pgPassfile != nil { throw ValidationError("--pg-passfile needs --metadata postgres://…") }
    }

    /// The parsed URL with the password found as libpq would.
    func postgresSettings(_ url: String) throws -> PostgresSettings {
        var settings = try makePostgresSettings(url: url, passfile: pgPassfile)
        settings.maxConnections = pgMaxConnections
        return settings
    }

    /// Opens PostgreSQL when --metadata is given (nil otherwise: the caller uses SQLite).
    func openPostgres(logger: Logger) async throws -> PostgresMetadataStore? {
        guard let metadata else { return nil }
        do {
            let settings = try postgresSettings(metadata)
            logger.info("metadata: PostgreSQL at \(settings), at most \(settings.maxConnections) connections")
            return try await PostgresMetadataStore.open(settings, logger: logger)
        } catch let e as PostgresSettingsError {
            throw ValidationError(e.description)
        }
    }
}

/// The parsed postgres:// URL with the password found as libpq would (PGPASSWORD,
/// `passfile`, PGPASSFILE, ~/.pgpass); a mistake is a ValidationError.
func makePostgresSettings(url: String, passfile: String?) throws -> PostgresSettings {
    do {
        var settings = try PostgresSettings(url: url)
        settings.password = try PostgresPassfile.resolve(for: settings, explicitPath: passfile)
        return settings
    } catch let e as PostgresSettingsError {
        throw ValidationError(e.description)
    }
}
