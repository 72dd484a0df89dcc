//! Every statement the stats-api runs, and nothing else: the SQL builder ([`query_sql`]: filters, sort,
//! keyset), the page query ([`page`]), aggregates and the time-zone names ([`aggregate`],
//! [`aggregate_sql`]), dead-letter listings ([`dead_letters`]), a query's total ([`count`]), what became
//! of a producer's event ([`status`]), a topic's watermark ([`freshness`]), a live tail's polls
//! ([`tail`]). Handlers call these functions and never
//! write SQL. Statements run on `tokio_postgres` with typed parameters; a failure is a [`StoreError`]
//! that says why (by SQLSTATE, [`eventgate_core::db::Cause`]), and `crate::error` turns it into the HTTP
//! answer.

pub mod aggregate;
pub mod aggregate_sql;
pub mod count;
pub mod dead_letters;
pub mod freshness;
pub mod page;
pub mod query_sql;
pub mod status;
pub mod tail;

use eventgate_core::db::{Cause, DbError, PgPool};

pub use query_sql::{Bind, SqlParts};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The statement ran longer than the statement timeout (or was cancelled).
    #[error("the statement was cancelled by the statement timeout: {0}")]
    Timeout(#[source] DbError),
    /// Every connection of the pool stayed busy for `stats.pool_wait_ms`: other statements hold them.
    #[error("no database connection became free in time: {0}")]
    Busy(#[source] DbError),
    /// No connection, or the connection broke: the database is down, restarting or saturated.
    #[error("the event store is unavailable: {0}")]
    Unavailable(#[source] DbError),
    /// Any other failure of a statement we generated: our bug.
    #[error("the statement failed: {0}")]
    Failed(#[source] DbError),
    /// The statement's rows are not what the decoder expects: our bug.
    #[error("the rows do not decode: {0}")]
    Decode(String),
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        if matches!(error, DbError::Pool(bb8::RunError::TimedOut)) {
            return StoreError::Busy(error);
        }
        match error.cause() {
            Cause::Timeout => StoreError::Timeout(error),
            Cause::Unavailable => StoreError::Unavailable(error),
            Cause::Conflict | Cause::UniqueViolation | Cause::RefusedData | Cause::Other => {
                StoreError::Failed(error)
            }
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::from(DbError::from(error))
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for StoreError {
    fn from(error: bb8::RunError<tokio_postgres::Error>) -> Self {
        StoreError::from(DbError::from(error))
    }
}

/// Runs a built statement (one round trip: unnamed statement, parameters sent with their types) and
/// returns its rows.
pub async fn query(
    pool: &PgPool,
    parts: &SqlParts,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let conn = pool.get().await?;
    Ok(conn.query_typed(&parts.sql, &parts.params()).await?)
}

/// `SELECT 1`: the readiness probe.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    Ok(eventgate_core::db::ping(pool).await?)
}
