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

/// The SQL of a field's typed value with its path written literally, for the payload fields a topic
/// declares indexed. The same text is the expression of the field's index and the expression the
/// stats-api sorts and compares by, which is what lets the planner use the index. Only catalogue paths of
/// plain identifiers (see [`crate::query::fields::is_plain_identifier`]) ever reach it, never client text.
pub fn indexed_expression(field: &crate::query::FieldDef) -> Option<String> {
    use crate::query::{FieldSource, FieldType};
    let FieldSource::Payload(path) = &field.source else {
        return None;
    };
    if !field.indexed
        || !path
            .iter()
            .all(|p| crate::query::fields::is_plain_identifier(p))
    {
        return None;
    }
    let literal = format!("'{{{}}}'::text[]", path.join(","));
    let (json_type, cast) = match field.ty {
        FieldType::String => ("string", None),
        FieldType::Integer | FieldType::Number | FieldType::EpochMillis => {
            ("number", Some("numeric"))
        }
        FieldType::Boolean => ("boolean", Some("boolean")),
        FieldType::Uuid | FieldType::DateTime | FieldType::Other => return None,
    };
    Some(match cast {
        None => format!(
            "((CASE WHEN jsonb_typeof(payload #> {literal}) = '{json_type}' THEN (payload #>> {literal}) END) COLLATE \"C\")"
        ),
        Some(cast) => format!(
            "(CASE WHEN jsonb_typeof(payload #> {literal}) = '{json_type}' THEN (payload #> {literal})::{cast} END)"
        ),
    })
}

/// Creates the expression indexes of every indexed field of the catalogue that does not exist yet:
/// `(topic, <typed value>, id)`, one per distinct expression (topics sharing a field share its index).
/// `CONCURRENTLY`, so a running system keeps writing while an index is built. Returns how many were
/// created.
pub async fn ensure_field_indexes(
    database_url: &str,
    catalogue: &crate::catalogue::Catalogue,
) -> Result<usize, diesel::result::Error> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use sha2::{Digest, Sha256};

    let mut expressions: Vec<String> = catalogue
        .topics()
        .flat_map(|topic| {
            topic
                .fields
                .fields()
                .filter_map(indexed_expression)
                .collect::<Vec<_>>()
        })
        .collect();
    expressions.sort();
    expressions.dedup();
    if expressions.is_empty() {
        return Ok(0);
    }
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .map_err(|e| diesel::result::Error::QueryBuilderError(Box::new(e)))?;
    let mut created = 0;
    for expression in expressions {
        let digest = Sha256::digest(expression.as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let exists: i64 = {
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let rows: Vec<Count> = diesel_async::RunQueryDsl::load(
                diesel::sql_query("SELECT count(*) AS n FROM pg_indexes WHERE indexname = $1")
                    .bind::<diesel::sql_types::Text, _>(format!("events_field_{name}")),
                &mut conn,
            )
            .await?;
            rows.first().map_or(0, |c| c.n)
        };
        if exists == 0 {
            conn.batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS events_field_{name} ON events (topic, {expression}, id)"
            ))
            .await?;
            tracing::info!(index = %format!("events_field_{name}"), %expression, "created field index");
            created += 1;
        }
    }
    Ok(created)
}
