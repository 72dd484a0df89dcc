//! The pool the services run their statements on: bb8 over `tokio_postgres`. (diesel-async 0.9, the
//! rest of the database layer, converts every server error into one it cannot tell apart by SQLSTATE;
//! the services must tell a timeout from an outage from a refused row, see [`super::error`].)

use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;
use crate::envelope::Event;

/// TLS as the URL's `sslmode` says (see [`super::tls`]).
pub type PgPool = bb8::Pool<PostgresConnectionManager<MakeRustlsConnect>>;

/// How a pool connects and how long a caller waits for a connection.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_size: u32,
    /// A server-side `statement_timeout` for every statement on the pool's connections, set at connect
    /// time (libpq's `options`), so it costs no round trip per query.
    pub statement_timeout_ms: Option<u64>,
    /// A server-side `lock_timeout`, set the same way: a statement that waits longer for a lock fails
    /// with SQLSTATE 55P03 (a timeout the caller may retry) instead of waiting for as long as the lock
    /// is held.
    pub lock_timeout_ms: Option<u64>,
    /// How long a caller waits for a free connection before the pool gives up.
    pub connection_timeout: Duration,
}

impl PoolSettings {
    pub fn new(max_size: u32) -> PoolSettings {
        PoolSettings {
            max_size,
            statement_timeout_ms: None,
            lock_timeout_ms: None,
            // bb8's default.
            connection_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds a pool. Connections are opened lazily, so a database that is down at start-up delays the first
/// statement instead of failing the service; a malformed URL or unusable TLS settings fail here.
pub fn build_pool(database_url: &str, settings: &PoolSettings) -> Result<PgPool, DbError> {
    let (mut config, tls) = super::tls::parse(database_url).map_err(DbError::Tls)?;
    let connector = super::tls::connector(&tls).map_err(DbError::Tls)?;
    let timeouts = [
        ("statement_timeout", settings.statement_timeout_ms),
        ("lock_timeout", settings.lock_timeout_ms),
    ];
    for (setting, timeout_ms) in timeouts {
        let Some(timeout_ms) = timeout_ms else {
            continue;
        };
        let options = match config.get_options() {
            Some(existing) if !existing.is_empty() => {
                format!("{existing} -c {setting}={timeout_ms}")
            }
            _ => format!("-c {setting}={timeout_ms}"),
        };
        config.options(&options);
    }
    let manager = PostgresConnectionManager::new(config, connector);
    Ok(bb8::Pool::builder()
        .max_size(settings.max_size)
        .connection_timeout(settings.connection_timeout)
        .error_sink(Box::new(LogConnectionErrors))
        .build_unchecked(manager))
}

/// Why the pool could not open a connection, in the log: a caller that waits in vain only learns
/// "timed out", the cause (a refused certificate, a wrong password, a server that is down) is here.
#[derive(Debug, Clone, Copy)]
struct LogConnectionErrors;

impl bb8::ErrorSink<tokio_postgres::Error> for LogConnectionErrors {
    fn sink(&self, error: tokio_postgres::Error) {
        tracing::warn!(%error, "database connection failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<tokio_postgres::Error>> {
        Box::new(*self)
    }
}

/// `SELECT 1` on a connection of the pool: the probe of readiness checks and monitors. When the pool
/// cannot hand out a connection in time, one connection is opened directly, so that the answer says
/// why (the pool's own error is only "timed out").
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    let conn = match pool.get().await {
        Ok(conn) => conn,
        Err(bb8::RunError::TimedOut) => {
            let conn = pool.dedicated_connection().await?;
            conn.simple_query("SELECT 1").await?;
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    conn.simple_query("SELECT 1").await?;
    Ok(())
}

/// One row of `events` as the services select it: `id, topic, received_at, producer, payload`.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: uuid::Uuid,
    pub topic: String,
    pub received_at: time::OffsetDateTime,
    pub producer: String,
    pub payload: serde_json::Value,
}

impl EventRow {
    /// The columns every statement that loads an `EventRow` selects, in this order.
    pub const COLUMNS: &'static str = "id, topic, received_at, producer, payload";

    pub fn from_row(row: &tokio_postgres::Row) -> Result<EventRow, tokio_postgres::Error> {
        Ok(EventRow {
            id: row.try_get(0)?,
            topic: row.try_get(1)?,
            received_at: row.try_get(2)?,
            producer: row.try_get(3)?,
            payload: row.try_get(4)?,
        })
    }
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
