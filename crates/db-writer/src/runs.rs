//! Writer runs and the crash-loop check (tables `writer_runs` and `alert_state`; the statements are in
//! [`crate::db::runs`]).
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

use time::OffsetDateTime;

use eventgate_core::db::PgPool;

use crate::alerts::rules::{crash_loop_decision, crash_loop_notice, CrashLoopDecision};
use crate::alerts::{AlertPolicy, Notice};
use crate::db;
use crate::error::WriterError;

/// Probe intervals without a heartbeat after which a run that did not stop cleanly counts as crashed.
pub const STALE_INTERVALS: u32 = 3;

/// Counts the group's crashes within the window and decides, under a lock shared by the group, whether
/// a crash-loop email (or its "recovered" email) is due.
pub async fn check_crash_loop(
    pool: &PgPool,
    group_id: &str,
    threshold: u32,
    policy: &AlertPolicy,
    stale_after: Duration,
) -> Result<Option<Notice>, WriterError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| WriterError::CrashLoopCheck(e.into()))?;
    let lock = db::runs::lock_crash_loop(&mut conn, group_id, policy.window, stale_after)
        .await
        .map_err(WriterError::CrashLoopCheck)?;
    let state = lock.state.clone();
    let count = u32::try_from(lock.crashes.len()).unwrap_or(u32::MAX);
    let decision = crash_loop_decision(
        count,
        threshold,
        state.active,
        state.last_alert,
        state.now,
        policy.window,
    );
    let since = match decision {
        CrashLoopDecision::Alert => lock
            .crashes
            .iter()
            .map(|c| c.started_at)
            .min()
            .unwrap_or(state.now),
        _ => state.since.unwrap_or(state.now),
    };
    let described: Vec<String> = lock
        .crashes
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
    let recorded = match decision {
        CrashLoopDecision::Alert => lock.record_alert(since).await,
        CrashLoopDecision::Recover => lock.record_recovered().await,
        CrashLoopDecision::Nothing => lock.release().await,
    };
    recorded.map_err(WriterError::CrashLoopCheck)?;
    Ok(crash_loop_notice(
        decision, &described, since, state.now, policy,
    ))
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
