//! The database, one room for everything the services share about it (feature `db`):
//! - [`schema`]: the diesel definition of every table, checked against the migrations by a test;
//! - [`tls`]: TLS as the URL's `sslmode`, `sslrootcert`, `sslcert`, `sslkey` say, for every connection;
//! - [`pool`]: the connection pool the services run their statements on, and the row type of `events`;
//! - [`error`]: why a statement failed, by SQLSTATE (never by message text, which follows `lc_messages`);
//! - [`typed_value`]: the one SQL expression of a payload field's typed value, used by the field indexes
//!   and by the stats-api's query builder alike, so the two cannot drift apart;
//! - [`field_index`]: the SQL of the expression indexes of the fields a topic declares indexed;
//! - [`auto_index`]: which fields get such an index because analysts use them (auto-indexes);
//! - [`partitions`]: the event history's partitions by time and topic, their per-topic indexes and
//!   retention: the maintenance `eventgate maintain` and the writers run;
//! - [`rollups`]: the rollups' (`event_counts`) share of that maintenance;
//! - migrations, embedded in the binaries and applied by `eventgate migrate` and the writer.
//!
//! The services' own SQL lives in their `db` modules (`stats-api/src/db/`, `db-writer/src/db/`).

pub mod auto_index;
pub mod error;
pub mod field_index;
pub mod partitions;
pub mod pool;
pub mod rollups;
pub mod schema;
pub mod tls;
pub mod typed_value;

use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

pub use error::{Cause, DbError};
pub use field_index::indexed_expression;
pub use partitions::{maintain_now, Maintained, StoragePolicy};
pub use pool::{build_pool, ping, EventRow, PgPool};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to the database to migrate it: {0}")]
    Connect(#[from] DbError),
    #[error("migration failed: {0}")]
    Apply(String),
}

/// The key of the session-level advisory lock under which schema changes run (migrations, field
/// indexes): writers that start together, a migration Job and `eventgate migrate` take turns instead of
/// racing on the same `CREATE TABLE`. ("eventgat" in ASCII.)
pub const SCHEMA_LOCK_KEY: i64 = 0x6576_656e_7467_6174;

/// Applies every pending migration and returns how many ran, under [`SCHEMA_LOCK_KEY`]. Runs on a
/// blocking thread: diesel's migration harness is synchronous and drives the async connection through
/// `AsyncConnectionWrapper`.
pub async fn run_migrations(database_url: &str) -> Result<usize, MigrationError> {
    use diesel::RunQueryDsl;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_migrations::MigrationHarness;

    let connection = tls::diesel_connection(database_url).await?;
    tokio::task::spawn_blocking(move || {
        // Blocking threads keep the runtime's context: the wrapper drives the connection on it.
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
        // Held until this connection closes, whatever happens below.
        diesel::sql_query(format!("SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})"))
            .execute(&mut conn)
            .map_err(|e| MigrationError::Apply(format!("taking the schema lock: {e}")))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| MigrationError::Apply(e.to_string()))?;
        Ok(applied.len())
    })
    .await
    .map_err(|e| MigrationError::Apply(format!("migration task failed: {e}")))?
}
