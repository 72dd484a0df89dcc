//! Database side shared by the db-writer and the stats-api (feature `db`): table definitions, the row
//! type, connection pools and the embedded migrations.

use diesel::prelude::*;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

use crate::envelope::Event;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

diesel::table! {
    events (id) {
        id -> Uuid,
        topic -> Text,
        received_at -> Timestamptz,
        producer -> Text,
        payload -> Jsonb,
    }
}

/// One row of `events`, as selected by the stats-api (`SELECT id, topic, received_at, producer, payload`).
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = events)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: uuid::Uuid,
    pub topic: String,
    pub received_at: time::OffsetDateTime,
    pub producer: String,
    pub payload: serde_json::Value,
}

impl From<EventRow> for Event {
    fn from(row: EventRow) -> Self {
        Event {
            id: row.id,
            topic: row.topic,
            timestamp: row.received_at,
            producer: row.producer,
            payload: row.payload,
        }
    }
}

pub type PgPool = Pool<AsyncPgConnection>;

/// Builds a bb8 pool of async Postgres connections. Connections are opened lazily, so a database that is
/// down at start-up delays the first query instead of failing the service.
pub async fn build_pool(
    database_url: &str,
    max_size: u32,
) -> Result<PgPool, diesel_async::pooled_connection::PoolError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    Ok(Pool::builder().max_size(max_size).build_unchecked(manager))
}

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to the database to migrate it: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration failed: {0}")]
    Apply(String),
}

/// Applies every pending migration and returns how many ran. Runs on a blocking thread: diesel's migration
/// harness is synchronous and drives the async connection through `AsyncConnectionWrapper`.
pub async fn run_migrations(database_url: &str) -> Result<usize, MigrationError> {
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    use diesel_migrations::MigrationHarness;

    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| MigrationError::Apply(e.to_string()))?;
        Ok(applied.len())
    })
    .await
    .map_err(|e| MigrationError::Apply(format!("migration task failed: {e}")))?
}

/// Adds a server-side `statement_timeout` to a connection URL (libpq's `options` parameter), so every
/// statement on connections of the pool is bounded without an extra round trip per query.
pub fn with_statement_timeout(database_url: &str, timeout_ms: u64) -> String {
    let separator = if database_url.contains('?') { '&' } else { '?' };
    format!("{database_url}{separator}options=-c%20statement_timeout%3D{timeout_ms}")
}
