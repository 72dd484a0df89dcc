//! The rollups' share of the maintenance: `event_counts` holds how many events each topic stored per
//! minute of `received_at` (migration `2025-04-05-000000_event_counts`). The writers add one row per
//! batch, topic and minute in the batch's transaction (`db-writer/src/db/events.rs`); the stats-api
//! answers the count over time from it (`stats-api/src/db/aggregate_sql.rs`). Here: the rows of a
//! dropped partition go with it, in its transaction, and a minute's many rows are folded into one.

use time::OffsetDateTime;
use tokio_postgres::Client;

use super::DbError;

/// The statement that forgets the counts of the events of a partition being dropped, for its
/// transaction: the minutes in `[lower, upper)` (`None`: unbounded) of `topics`. Spans start on whole
/// minutes (hours or days; the legacy range's bound is a midnight or the operator's CHECK bound, which
/// the docs ask to be a midnight), so a minute's events are in one span.
pub(super) fn forget_counts_sql(
    topics: TopicsOfPartition<'_>,
    lower: Option<OffsetDateTime>,
    upper: Option<OffsetDateTime>,
    literal: impl Fn(&str) -> String,
    timestamp_literal: impl Fn(OffsetDateTime) -> String,
) -> String {
    let mut sql = String::from("DELETE FROM event_counts WHERE TRUE");
    if let Some(lower) = lower {
        sql.push_str(&format!(" AND minute >= {}", timestamp_literal(lower)));
    }
    if let Some(upper) = upper {
        sql.push_str(&format!(" AND minute < {}", timestamp_literal(upper)));
    }
    let list = |topics: &[&str]| {
        topics
            .iter()
            .map(|t| literal(t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match topics {
        TopicsOfPartition::All => {}
        TopicsOfPartition::Only(topic) => {
            sql.push_str(&format!(" AND topic = {}", literal(topic)));
        }
        // A span's default leaf holds the topics that have no leaf of their own in the span.
        TopicsOfPartition::AllBut([]) => {}
        TopicsOfPartition::AllBut(others) => {
            sql.push_str(&format!(" AND topic NOT IN ({})", list(others)));
        }
    }
    sql
}

/// Whose events a dropped partition held.
#[derive(Debug, Clone, Copy)]
pub(super) enum TopicsOfPartition<'a> {
    /// A whole span, or a range of every topic (`events_legacy`, `events_before`).
    All,
    /// A topic's leaf.
    Only(&'a str),
    /// A span's default leaf: every topic but those with a leaf of their own in the span.
    AllBut(&'a [&'a str]),
}

/// Folds every minute's rows into one (a writer adds one per batch): keeps the table, and the sums the
/// stats-api computes, at about one row per topic and minute. One statement, so it is exact whatever
/// the writers do meanwhile: it deletes only rows its snapshot sees and inserts their sum; rows a writer
/// adds meanwhile stay beside it. Returns the rows folded away.
pub async fn fold_counts(client: &Client) -> Result<u64, DbError> {
    let row = client
        .query_one(
            "WITH crowded AS ( \
               SELECT topic, minute FROM event_counts GROUP BY topic, minute HAVING count(*) > 1), \
             folded AS ( \
               DELETE FROM event_counts c USING crowded \
               WHERE c.topic = crowded.topic AND c.minute = crowded.minute \
               RETURNING c.topic, c.minute, c.events), \
             summed AS ( \
               INSERT INTO event_counts (topic, minute, xact_id, events) \
               SELECT topic, minute, pg_current_xact_id()::text::bigint, sum(events) \
               FROM folded GROUP BY topic, minute RETURNING 1) \
             SELECT (SELECT count(*) FROM folded) - (SELECT count(*) FROM summed)",
            &[],
        )
        .await?;
    let folded: i64 = row.try_get(0)?;
    Ok(u64::try_from(folded).unwrap_or(0))
}
