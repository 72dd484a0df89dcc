//! Writer runs and the crash-loop check (tables `writer_runs` and `alert_state`).
//!
//! A crash loop cannot be seen from inside one process: each restart starts with an empty memory. So
//! every writer records its start in `writer_runs`, refreshes `last_seen` while it runs (every
//! `alerts.probe_interval_ms`) and sets `stopped_at` when it stops cleanly. A run that stopped refreshing
//! for [`STALE_INTERVALS`] probe intervals without a clean stop is a **crash**. When the crashes of the
//! consumer group within the alert window reach `alerts.crash_loop_crashes`, the group has a crash loop.
//!
//! Every writer checks at start-up and then periodically; the decision to email (and the "recovered"
//! email when the crashes age out of the window) is taken under a row lock on `alert_state`, so the
//! whole group sends one email per window, whichever writer sees it first.

use std::time::Duration;

use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;

use eventgate_core::alerting::{
    crash_loop_decision, crash_loop_notice, AlertPolicy, CrashLoopDecision, Notice,
};

/// Probe intervals without a heartbeat after which a run that did not stop cleanly counts as crashed.
pub const STALE_INTERVALS: u32 = 3;

const CRASH_LOOP: &str = "crash_loop";

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Records this writer's start; returns the run id to refresh and close.
pub async fn record_start(
    conn: &mut AsyncPgConnection,
    group_id: &str,
    instance: &str,
) -> Result<i64, diesel::result::Error> {
    let row: Id = diesel::sql_query(
        "INSERT INTO writer_runs (group_id, instance) VALUES ($1, $2) RETURNING id",
    )
    .bind::<Text, _>(group_id)
    .bind::<Text, _>(instance)
    .get_result(conn)
    .await?;
    Ok(row.id)
}

/// This run is alive. Also forgets runs too old to matter for any window.
pub async fn heartbeat(
    conn: &mut AsyncPgConnection,
    run_id: i64,
    group_id: &str,
    keep: Duration,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query("UPDATE writer_runs SET last_seen = now() WHERE id = $1")
        .bind::<BigInt, _>(run_id)
        .execute(conn)
        .await?;
    diesel::sql_query(
        "DELETE FROM writer_runs WHERE group_id = $1 AND last_seen < now() - make_interval(secs => $2)",
    )
    .bind::<Text, _>(group_id)
    .bind::<Double, _>(keep.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(())
}

/// This run stopped cleanly: it is not a crash.
pub async fn record_clean_stop(
    conn: &mut AsyncPgConnection,
    run_id: i64,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query("UPDATE writer_runs SET stopped_at = now(), last_seen = now() WHERE id = $1")
        .bind::<BigInt, _>(run_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Crash {
    #[diesel(sql_type = Text)]
    instance: String,
    #[diesel(sql_type = Timestamptz)]
    started_at: OffsetDateTime,
    #[diesel(sql_type = Timestamptz)]
    last_seen: OffsetDateTime,
}

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = Bool)]
    active: bool,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    since: Option<OffsetDateTime>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_alert: Option<OffsetDateTime>,
    #[diesel(sql_type = Timestamptz)]
    now: OffsetDateTime,
}

/// Counts the group's crashes within the window and decides, under a lock shared by the group, whether
/// a crash-loop email (or its "recovered" email) is due. Times are the database's, one clock for all.
pub async fn check_crash_loop(
    conn: &mut AsyncPgConnection,
    group_id: &str,
    threshold: u32,
    policy: &AlertPolicy,
    stale_after: Duration,
) -> Result<Option<Notice>, diesel::result::Error> {
    let window = policy.window;
    let policy = policy.clone();
    let group_id = group_id.to_owned();
    conn.transaction(async move |conn| {
        let crashes: Vec<Crash> = diesel::sql_query(
            "SELECT instance, started_at, last_seen FROM writer_runs \
             WHERE group_id = $1 AND stopped_at IS NULL \
               AND last_seen >= now() - make_interval(secs => $2) \
               AND last_seen < now() - make_interval(secs => $3) \
             ORDER BY last_seen DESC",
        )
        .bind::<Text, _>(&group_id)
        .bind::<Double, _>(window.as_secs_f64())
        .bind::<Double, _>(stale_after.as_secs_f64())
        .load(conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO alert_state (group_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind::<Text, _>(&group_id)
        .bind::<Text, _>(CRASH_LOOP)
        .execute(conn)
        .await?;
        let state: State = diesel::sql_query(
            "SELECT active, since, last_alert, now() AS now FROM alert_state \
             WHERE group_id = $1 AND kind = $2 FOR UPDATE",
        )
        .bind::<Text, _>(&group_id)
        .bind::<Text, _>(CRASH_LOOP)
        .get_result(conn)
        .await?;
        let count = u32::try_from(crashes.len()).unwrap_or(u32::MAX);
        let decision = crash_loop_decision(
            count,
            threshold,
            state.active,
            state.last_alert,
            state.now,
            window,
        );
        let since = match decision {
            CrashLoopDecision::Alert => crashes
                .iter()
                .map(|c| c.started_at)
                .min()
                .unwrap_or(state.now),
            _ => state.since.unwrap_or(state.now),
        };
        match decision {
            CrashLoopDecision::Alert => {
                diesel::sql_query(
                    "UPDATE alert_state SET active = true, since = $3, last_alert = now() \
                     WHERE group_id = $1 AND kind = $2",
                )
                .bind::<Text, _>(&group_id)
                .bind::<Text, _>(CRASH_LOOP)
                .bind::<Timestamptz, _>(since)
                .execute(conn)
                .await?;
            }
            CrashLoopDecision::Recover => {
                diesel::sql_query(
                    "UPDATE alert_state SET active = false WHERE group_id = $1 AND kind = $2",
                )
                .bind::<Text, _>(&group_id)
                .bind::<Text, _>(CRASH_LOOP)
                .execute(conn)
                .await?;
            }
            CrashLoopDecision::Nothing => {}
        }
        let described: Vec<String> = crashes
            .iter()
            .map(|c| {
                format!(
                    "writer {}: started {}, last seen {}, no clean stop",
                    c.instance,
                    rfc3339(c.started_at),
                    rfc3339(c.last_seen)
                )
            })
            .collect();
        Ok(crash_loop_notice(
            decision, &described, since, state.now, &policy,
        ))
    })
    .await
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// `host pid N`: who this writer is, in `writer_runs` and in emails.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host} pid {}", std::process::id())
}
