//! The statements of the crash-loop check (`writer_runs`, `alert_state`); what counts as a crash and
//! when to email is decided in `crate::runs`. Times are the database's: one clock for the whole group.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use eventgate_core::db::{DbError, PgPool};

/// The `alert_state.kind` of the crash-loop check (`AlertKind::CrashLoop`).
const CRASH_LOOP: &str = "crash_loop";

/// Records this writer's start; returns the run id to refresh and close.
pub async fn record_start(pool: &PgPool, group_id: &str, instance: &str) -> Result<i64, DbError> {
    let conn = pool.get().await?;
    let row = conn
        .query_typed_one(
            "INSERT INTO writer_runs (group_id, instance) VALUES ($1, $2) RETURNING id",
            &[(&group_id, Type::TEXT), (&instance, Type::TEXT)],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// This run is alive. Also forgets the group's runs not seen for `keep`.
pub async fn heartbeat(
    pool: &PgPool,
    run_id: i64,
    group_id: &str,
    keep: Duration,
) -> Result<(), DbError> {
    let conn = pool.get().await?;
    conn.execute_typed(
        "UPDATE writer_runs SET last_seen = now() WHERE id = $1",
        &[(&run_id, Type::INT8)],
    )
    .await?;
    conn.execute_typed(
        "DELETE FROM writer_runs WHERE group_id = $1 AND last_seen < now() - make_interval(secs => $2)",
        &[(&group_id, Type::TEXT), (&keep.as_secs_f64(), Type::FLOAT8)],
    )
    .await?;
    Ok(())
}

/// This run stopped cleanly: it is not a crash.
pub async fn record_clean_stop(pool: &PgPool, run_id: i64) -> Result<(), DbError> {
    let conn = pool.get().await?;
    conn.execute_typed(
        "UPDATE writer_runs SET stopped_at = now(), last_seen = now() WHERE id = $1",
        &[(&run_id, Type::INT8)],
    )
    .await?;
    Ok(())
}

/// A run of the group that went silent without a clean stop.
#[derive(Debug, Clone)]
pub struct Crash {
    pub instance: String,
    pub started_at: OffsetDateTime,
    pub last_seen: OffsetDateTime,
}

/// The group's crash-loop alert state, as stored.
#[derive(Debug, Clone)]
pub struct CrashLoopState {
    pub active: bool,
    pub since: Option<OffsetDateTime>,
    pub last_alert: Option<OffsetDateTime>,
    /// The database's clock when the state was read.
    pub now: OffsetDateTime,
}

/// The group's crashes and its alert state, read in a transaction that holds the state's row lock, so
/// that one writer of the group at a time decides; the decision is recorded (or not) and the lock
/// released by [`CrashLoopLock::record_alert`], [`CrashLoopLock::record_recovered`] or
/// [`CrashLoopLock::release`]. Dropped without either, the transaction rolls back.
pub struct CrashLoopLock<'a> {
    transaction: Transaction<'a>,
    group_id: String,
    /// Newest first.
    pub crashes: Vec<Crash>,
    pub state: CrashLoopState,
}

/// Takes the group's crash-loop lock: its runs that went silent (for `stale_after`, without a clean
/// stop) within `window`, and its alert state.
pub async fn lock_crash_loop<'a>(
    conn: &'a mut Client,
    group_id: &str,
    window: Duration,
    stale_after: Duration,
) -> Result<CrashLoopLock<'a>, DbError> {
    let transaction = conn.transaction().await?;
    let crashes = transaction
        .query_typed(
            "SELECT instance, started_at, last_seen FROM writer_runs \
             WHERE group_id = $1 AND stopped_at IS NULL \
               AND last_seen >= now() - make_interval(secs => $2) \
               AND last_seen < now() - make_interval(secs => $3) \
             ORDER BY last_seen DESC",
            &[
                (&group_id, Type::TEXT),
                (&window.as_secs_f64(), Type::FLOAT8),
                (&stale_after.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(Crash {
                instance: row.try_get(0)?,
                started_at: row.try_get(1)?,
                last_seen: row.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    transaction
        .execute_typed(
            "INSERT INTO alert_state (group_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[(&group_id, Type::TEXT), (&CRASH_LOOP, Type::TEXT)],
        )
        .await?;
    let row = transaction
        .query_typed_one(
            "SELECT active, since, last_alert, now() FROM alert_state \
             WHERE group_id = $1 AND kind = $2 FOR UPDATE",
            &[(&group_id, Type::TEXT), (&CRASH_LOOP, Type::TEXT)],
        )
        .await?;
    let state = CrashLoopState {
        active: row.try_get(0)?,
        since: row.try_get(1)?,
        last_alert: row.try_get(2)?,
        now: row.try_get(3)?,
    };
    Ok(CrashLoopLock {
        transaction,
        group_id: group_id.to_owned(),
        crashes,
        state,
    })
}

impl CrashLoopLock<'_> {
    /// The crash-loop email goes out now: active since `since`.
    pub async fn record_alert(self, since: OffsetDateTime) -> Result<(), DbError> {
        self.transaction
            .execute_typed(
                "UPDATE alert_state SET active = true, since = $3, last_alert = now() \
                 WHERE group_id = $1 AND kind = $2",
                &[
                    (&self.group_id, Type::TEXT),
                    (&CRASH_LOOP, Type::TEXT),
                    (&since, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        Ok(self.transaction.commit().await?)
    }

    /// The "recovered" email goes out now.
    pub async fn record_recovered(self) -> Result<(), DbError> {
        self.transaction
            .execute_typed(
                "UPDATE alert_state SET active = false WHERE group_id = $1 AND kind = $2",
                &[(&self.group_id, Type::TEXT), (&CRASH_LOOP, Type::TEXT)],
            )
            .await?;
        Ok(self.transaction.commit().await?)
    }

    /// Nothing to record.
    pub async fn release(self) -> Result<(), DbError> {
        Ok(self.transaction.commit().await?)
    }
}
