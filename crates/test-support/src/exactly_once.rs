//! The promise of the pipeline, checked: every event the ingest-api answered 202 reaches `events` once,
//! and the rollups (`event_counts`) count exactly the stored events.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::{wait_until, TestDatabase};

/// The event ids of an ingest-api answer (`{"ids": [...]}`); none when it has no ids.
pub fn accepted_ids(answer: &Value) -> Vec<String> {
    answer["ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits up to `timeout` until every id of `accepted` is in `events`; the error says how many are.
pub async fn wait_until_stored(
    database: &TestDatabase,
    accepted: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let present = format!(
        "SELECT count(*) FROM events WHERE id = ANY('{{{}}}'::uuid[])",
        accepted.join(",")
    );
    let expected = accepted.len() as i64;
    let stored = wait_until("every accepted event in Postgres", timeout, || async {
        database.count(&present).await.unwrap_or(0) >= expected
    })
    .await;
    if let Err(error) = stored {
        let now = database.count(&present).await.unwrap_or(-1);
        return Err(error.context(format!("{now} of {expected} accepted events are stored")));
    }
    Ok(())
}

/// Every id of `accepted` is in `events` exactly once (waiting up to `timeout` for them), the table
/// holds nothing else, and the rollups agree with it minute by minute (whatever crashed, replayed or
/// was retried on the way). `logs` (the services' logs, say) is shown when it fails.
pub async fn assert_exactly_once(
    database: &TestDatabase,
    accepted: &[String],
    timeout: Duration,
    logs: impl Fn() -> String,
) {
    let unique: HashSet<&String> = accepted.iter().collect();
    assert_eq!(
        unique.len(),
        accepted.len(),
        "the ingest-api minted an id twice"
    );
    if let Err(error) = wait_until_stored(database, accepted, timeout).await {
        panic!("{error:#}\n{}", logs());
    }
    let stored = database
        .count("SELECT count(*) FROM events")
        .await
        .expect("count events");
    assert_eq!(
        stored,
        accepted.len() as i64,
        "no event twice, no stranger\n{}",
        logs()
    );
    assert_rollups_match(database).await;
}

/// The rollups count exactly the events of each topic and minute (`event_counts` against `events`).
pub async fn assert_rollups_match(database: &TestDatabase) {
    let differing = database
        .count(
            "SELECT count(*) FROM ( \
               SELECT topic, date_trunc('minute', received_at, 'UTC') AS minute, count(*) AS n \
               FROM events GROUP BY 1, 2) stored \
             FULL JOIN ( \
               SELECT topic, minute, sum(events) AS n FROM event_counts GROUP BY 1, 2) counted \
             USING (topic, minute) \
             WHERE stored.n IS DISTINCT FROM counted.n",
        )
        .await
        .expect("compare the rollups with the events");
    assert_eq!(
        differing, 0,
        "the rollups differ from the events in {differing} (topic, minute)"
    );
}
