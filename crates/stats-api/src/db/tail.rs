//! The statements of a live tail: where it starts (the current snapshot) and what was committed since
//! its position (one statement per poll).
//!
//! Why snapshots and not `received_at`: rows become visible in commit order. Two writers commit batches
//! concurrently, and an event waits in Kafka as long as its writer is down, so a row with an older
//! `received_at` (or a smaller transaction id) can become visible after a newer one was read; "everything
//! after the last `received_at` seen" would skip it for good. Each batch's transaction writes a row of
//! the commit log `event_commits` (its `pg_current_xact_id()`, which is also the `xmin` of its rows, and
//! the received-at range that finds them on the `(topic, received_at, id)` index). A tail's position is
//! the snapshot it last read up to (`pg_current_snapshot()`): the transactions visible in a newer
//! snapshot and not in that one are exactly those committed in between, whatever the order of their ids
//! or of their events' times (`pg_visible_in_snapshot`, the technique of PgQ). Within one such round the
//! events go in (transaction id, received_at, id) order; the round is read in bounded pages (at most
//! [`COMMITS_PER_POLL`] commits and `limit` events or the byte budget each) against the snapshot that
//! opened it, so a page boundary cannot let a late commit slip behind the keyset either.

use futures_util::{pin_mut, TryStreamExt};

use eventgate_core::db::PgPool;
use eventgate_core::query::QueryPlan;

use super::query_sql::{Bind, Instant, SqlBuilder, SqlParts};
use super::StoreError;
use crate::raw_json::RawEvent;

/// Commits one poll reads at most: bounds the rows one statement sorts (commits × batch size).
pub const COMMITS_PER_POLL: i64 = 64;

/// Where a tail stands: everything committed in `prev` was delivered; of the round up to `upto` (when
/// one is being read), everything up to `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailPosition {
    /// A `pg_snapshot` as Postgres writes it (`xmin:xmax:xip,…`).
    pub prev: String,
    /// The snapshot the round being read ends at; `None` between rounds.
    pub upto: Option<String>,
    /// The last delivered key of the round.
    pub after: Option<After>,
}

/// A key in a round's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Every event of the commits up to this transaction id.
    Commit(i64),
    /// This event of that commit, and everything before it.
    Event {
        xact: i64,
        received_at: i64,
        id: uuid::Uuid,
    },
}

/// One poll's outcome.
pub struct Polled {
    /// The position after everything written into `body`.
    pub next: TailPosition,
    /// The round has more to read now (do not wait before the next poll).
    pub more: bool,
    /// Events written.
    pub rows: usize,
    /// The byte budget ended the poll early.
    pub cut_by_bytes: bool,
}

/// What one poll reads at most: `rows` events, and no more than `bytes` once one is written.
#[derive(Debug, Clone, Copy)]
pub struct PollBounds {
    pub rows: u32,
    pub bytes: usize,
}

/// The current snapshot: where a tail that starts now stands.
pub async fn snapshot(pool: &PgPool) -> Result<String, StoreError> {
    let conn = pool.get().await?;
    let row = conn
        .query_typed("SELECT pg_current_snapshot()::text", &[])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Decode("no snapshot".to_owned()))?;
    row.try_get(0)
        .map_err(|e: tokio_postgres::Error| StoreError::Decode(e.to_string()))
}

/// The poll statement: the first five columns are the page query's (`id, topic, received_at, producer,
/// payload`, NULL when the round holds no event), then the statement's snapshot, the number of commits
/// read, the last of them, and the event's transaction id.
pub fn poll_sql(topic: &str, plan: &QueryPlan, position: &TailPosition, limit: u32) -> SqlParts {
    let mut b = SqlBuilder::default();
    b.push("WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS now), ");
    b.push(
        "c AS MATERIALIZED (SELECT xact_id, oldest_received_at AS lo, newest_received_at AS hi ",
    );
    b.push("FROM event_commits WHERE event_commits.topic = ");
    b.bind(Bind::Text(topic.to_owned()), "::text");
    b.push(" AND xact_id >= pg_snapshot_xmin(");
    b.bind(Bind::Text(position.prev.clone()), "::pg_snapshot");
    b.push(")::text::bigint AND NOT pg_visible_in_snapshot(xact_id::text::xid8, ");
    b.bind(Bind::Text(position.prev.clone()), "::pg_snapshot");
    b.push(")");
    if let Some(upto) = &position.upto {
        b.push(" AND pg_visible_in_snapshot(xact_id::text::xid8, ");
        b.bind(Bind::Text(upto.clone()), "::pg_snapshot");
        b.push(")");
    }
    match position.after {
        Some(After::Commit(xact)) => {
            b.push(" AND xact_id > ");
            b.bind(Bind::BigInt(xact), "::bigint");
        }
        Some(After::Event { xact, .. }) => {
            b.push(" AND xact_id >= ");
            b.bind(Bind::BigInt(xact), "::bigint");
        }
        None => {}
    }
    b.push(" ORDER BY xact_id LIMIT ");
    b.bind(Bind::BigInt(COMMITS_PER_POLL), "::bigint");
    b.push(") SELECT t.id, t.topic, t.received_at, t.producer, t.payload, ");
    b.push(
        "(SELECT now::text FROM snap), (SELECT count(*) FROM c), (SELECT max(xact_id) FROM c), ",
    );
    // The schema version last: the columns above are read by their place, it by its name.
    b.push("t.xact_id, t.schema_version FROM (SELECT 1) AS one LEFT JOIN LATERAL (");
    b.push(
        "SELECT c.xact_id, id, topic, received_at, producer, payload, schema_version FROM c \
         JOIN events ",
    );
    b.push("ON events.topic = ");
    b.bind(Bind::Text(topic.to_owned()), "::text");
    b.push(" AND events.received_at BETWEEN c.lo AND c.hi");
    b.push(" AND events.xmin = c.xact_id::text::xid8::xid WHERE true");
    for filter in &plan.filters {
        b.push(" AND ");
        b.filter(filter);
    }
    if let Some(After::Event {
        xact,
        received_at,
        id,
    }) = position.after
    {
        b.push(" AND (c.xact_id, received_at, id) > (");
        b.bind(Bind::BigInt(xact), "::bigint");
        b.push(", ");
        b.bind(Bind::Timestamptz(Instant(received_at)), "::timestamptz");
        b.push(", ");
        b.bind(Bind::Uuid(id), "::uuid");
        b.push(")");
    }
    b.push(" ORDER BY c.xact_id, received_at, id LIMIT ");
    b.bind(Bind::BigInt(i64::from(limit) + 1), "::bigint");
    b.push(") AS t ON true");
    b.finish()
}

/// Reads what was committed after `position`, within `bounds`, and writes each event after `body` with
/// `write(body, event, position after it)`.
pub async fn poll(
    pool: &PgPool,
    topic: &str,
    plan: &QueryPlan,
    position: &TailPosition,
    bounds: PollBounds,
    body: &mut Vec<u8>,
    mut write: impl FnMut(&mut Vec<u8>, &RawEvent, &TailPosition),
) -> Result<Polled, StoreError> {
    let (limit, max_bytes) = (bounds.rows, bounds.bytes);
    let parts = poll_sql(topic, plan, position, limit);
    let conn = pool.get().await?;
    let rows = conn.query_typed_raw(&parts.sql, parts.params()).await?;
    pin_mut!(rows);
    let decode = |e: tokio_postgres::Error| StoreError::Decode(e.to_string());
    let mut written = 0usize;
    let mut last: Option<After> = position.after;
    let mut round_end: Option<String> = position.upto.clone();
    let mut commits = 0i64;
    let mut last_commit: Option<i64> = None;
    let mut full = false;
    let mut cut_by_bytes = false;
    while let Some(row) = rows.try_next().await? {
        if round_end.is_none() {
            round_end = Some(row.try_get(5).map_err(decode)?);
        }
        commits = row.try_get(6).map_err(decode)?;
        last_commit = row.try_get(7).map_err(decode)?;
        let Some(xact) = row.try_get::<_, Option<i64>>(8).map_err(decode)? else {
            // The round holds no event (the one row of the outer side of the join).
            break;
        };
        if written == limit as usize {
            full = true;
            break;
        }
        let event = super::page::raw_event(&row)?;
        let key = After::Event {
            xact,
            received_at: micros(event.received_at),
            id: event.id,
        };
        let after_this = TailPosition {
            prev: position.prev.clone(),
            upto: round_end.clone(),
            after: Some(key),
        };
        let mark = body.len();
        write(body, &event, &after_this);
        if written > 0 && body.len() > max_bytes {
            body.truncate(mark);
            full = true;
            cut_by_bytes = true;
            break;
        }
        written += 1;
        last = Some(key);
    }
    let round_end = round_end.ok_or_else(|| StoreError::Decode("no snapshot row".to_owned()))?;
    let (next, more) = if full {
        (
            TailPosition {
                prev: position.prev.clone(),
                upto: Some(round_end),
                after: last,
            },
            true,
        )
    } else if commits >= COMMITS_PER_POLL {
        // Every event of these commits was read; more commits of the round follow.
        let after = last_commit.map(After::Commit).or(last);
        (
            TailPosition {
                prev: position.prev.clone(),
                upto: Some(round_end),
                after,
            },
            true,
        )
    } else {
        // The round is complete: its end is where the next one starts.
        (
            TailPosition {
                prev: round_end,
                upto: None,
                after: None,
            },
            false,
        )
    };
    Ok(Polled {
        next,
        more,
        rows: written,
        cut_by_bytes,
    })
}

/// Microseconds since the Unix epoch (the query language's instants).
pub fn micros(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// `pg_snapshot` texts come from Postgres, or from a signed position: still, only digits, `:` and `,`
/// of a sane length are passed to it.
pub fn is_snapshot_text(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 4096
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b',')
        && text.matches(':').count() == 2
}
