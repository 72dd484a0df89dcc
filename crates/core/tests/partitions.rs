//! The maintenance of the event history's partitions (`eventgate_core::db::partitions`) against a real
//! Postgres, with its clock set by the test (days after today, beyond the partitions the template
//! database was given): spans are created ahead, events that reached `events_after` or a span's default
//! leaf are moved into their own partition, a topic's leaves get exactly its indexes, an invalid index is built again, retention
//! drops whole partitions of one topic and leaves the others, and a second run finds nothing to do.

use serde_json::json;
use time::{Duration, OffsetDateTime, Time};
use tokio_postgres::{Client, NoTls};

use eventgate_core::catalogue::{Catalogue, Topic};
use eventgate_core::config::StorageConfig;
use eventgate_core::db::partitions::{maintain, StoragePolicy};

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

fn topic(name: &str, settings: serde_json::Value) -> Topic {
    Topic::from_schema(
        name,
        json!({
            "type": "object",
            "properties": {"app": {"type": "string"}, "n": {"type": "integer"}},
            "x-eventgate": settings
        }),
    )
    .expect("topic")
}

/// `t.keep` (kept forever, a GIN index and a field index), `t.week` (kept 7 days, no GIN).
fn policy(keep_gin: bool) -> StoragePolicy {
    let catalogue = Catalogue::from_topics([
        topic(
            "t.keep",
            json!({"indexed_fields": ["app"], "containment_index": keep_gin}),
        ),
        topic("t.week", json!({"retention": "7d"})),
    ]);
    StoragePolicy::new(&catalogue, &StorageConfig::default())
}

/// Stores an event and counts it in the rollups, in one transaction, as a writer does.
async fn insert(db: &Client, topic: &str, at: OffsetDateTime, n: i64) {
    db.execute(
        "WITH stored AS (
           INSERT INTO events (id, topic, received_at, producer, payload)
           VALUES (gen_random_uuid(), $1, $2, 'p', jsonb_build_object('app', 'a', 'n', $3::bigint))
           RETURNING topic, received_at)
         INSERT INTO event_counts (topic, minute, xact_id, events)
         SELECT topic, date_trunc('minute', received_at, 'UTC'), pg_current_xact_id()::text::bigint, 1
         FROM stored",
        &[&topic, &at, &n],
    )
    .await
    .expect("insert");
}

/// The partition (leaf) holding the event with payload `n`.
async fn leaf_of(db: &Client, n: i64) -> String {
    let rows = db
        .query(
            "SELECT tableoid::regclass::text FROM events WHERE (payload->>'n')::bigint = $1",
            &[&n],
        )
        .await
        .expect("the event");
    let leaves: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(leaves.len(), 1, "event {n} once: {leaves:?}");
    leaves[0].clone()
}

async fn indexes_of(db: &Client, table: &str) -> Vec<String> {
    db.query(
        "SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         WHERE x.indrelid = $1::text::regclass ORDER BY 1",
        &[&table],
    )
    .await
    .expect("indexes")
    .iter()
    .map(|row| row.get(0))
    .collect()
}

/// Midnight UTC, `days` after today, at `hour`.
fn day(days: i64, hour: u8) -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_time(Time::MIDNIGHT)
        + Duration::days(days)
        + Duration::hours(i64::from(hour))
}

/// The span of the day `days` after today.
fn span(days: i64) -> String {
    let start = day(days, 0);
    format!(
        "events_p{:04}{:02}{:02}",
        start.year(),
        u8::from(start.month()),
        start.day()
    )
}

async fn exists(db: &Client, table: &str) -> bool {
    db.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .expect("to_regclass")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_made_ahead_strays_move_in_and_retention_drops_partitions() {
    let database = eventgate_test_support::stack().await.fresh_database().await;
    let db = connect(&database.writer_url).await;
    let now = day(3, 12);

    // Beyond the spans made ahead (the template's reach today + 3 days): a week-topic event and a
    // keep-topic event go to events_after.
    insert(&db, "t.week", day(5, 5), 1).await;
    insert(&db, "t.keep", day(6, 13), 2).await;
    assert_eq!(leaf_of(&db, 1).await, "events_after");

    let run = maintain(&db, &policy(true), now)
        .await
        .expect("maintenance")
        .expect("not locked by another run");
    for created in [span(5), span(6)] {
        assert!(
            run.report.created.contains(&created),
            "{created}: {:?}",
            run.report.created
        );
    }
    assert!(
        !run.report.created.contains(&span(7)),
        "three spans after the current one, not four: {:?}",
        run.report.created
    );
    assert_eq!(run.report.moved_events, 2);
    let week_leaf = leaf_of(&db, 1).await;
    let keep_leaf = leaf_of(&db, 2).await;
    assert!(
        week_leaf.starts_with(&format!("{}_t_week_", span(5))),
        "{week_leaf}"
    );
    assert!(
        keep_leaf.starts_with(&format!("{}_t_keep_", span(6))),
        "{keep_leaf}"
    );
    let beyond: i64 = db
        .query_one("SELECT count(*) FROM events_after", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(beyond, 0);

    // Each topic's leaves carry its own indexes only: the key everywhere, GIN and the field index for
    // t.keep, nothing more for t.week.
    let keep_indexes = indexes_of(&db, &keep_leaf).await;
    assert!(
        keep_indexes.contains(&format!("{keep_leaf}_key"))
            && keep_indexes.contains(&format!("{keep_leaf}_gin"))
            && keep_indexes
                .iter()
                .any(|i| i.starts_with(&format!("{keep_leaf}_f"))),
        "{keep_indexes:?}"
    );
    let week_indexes = indexes_of(&db, &week_leaf).await;
    assert!(
        week_indexes.contains(&format!("{week_leaf}_key"))
            && !week_indexes.iter().any(|i| i.ends_with("_gin"))
            && !week_indexes
                .iter()
                .any(|i| i.starts_with(&format!("{week_leaf}_f"))),
        "{week_indexes:?}"
    );
    // The key refuses the same event twice within a partition.
    let id = uuid::Uuid::now_v7();
    let again = "INSERT INTO events (id, topic, received_at, producer, payload)
                 VALUES ($1, 't.keep', $2, 'p', '{}')";
    let at = day(6, 1);
    db.execute(again, &[&id, &at]).await.expect("first");
    db.execute(
        "INSERT INTO event_counts VALUES ('t.keep', date_trunc('minute', $1::timestamptz, 'UTC'), 1, 1)",
        &[&at],
    )
    .await
    .expect("its rollup");
    let error = db.execute(again, &[&id, &at]).await.expect_err("twice");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );

    // A second run at the same time has nothing to do.
    let again = maintain(&db, &policy(true), now)
        .await
        .expect("maintenance")
        .expect("not locked");
    assert!(again.report.created.is_empty(), "{:?}", again.report);
    assert_eq!(again.report.moved_events, 0);
    assert!(again.report.indexes_built.is_empty(), "{:?}", again.report);

    // A topic the catalogue did not have: its events wait in the span's default leaf, then get a leaf.
    insert(&db, "t.new", day(5, 8), 3).await;
    assert_eq!(leaf_of(&db, 3).await, format!("{}_default", span(5)));
    let catalogue = Catalogue::from_topics([
        topic(
            "t.keep",
            json!({"indexed_fields": ["app"], "containment_index": true}),
        ),
        topic("t.week", json!({"retention": "7d"})),
        topic("t.new", json!({})),
    ]);
    let with_new = StoragePolicy::new(&catalogue, &StorageConfig::default());
    let run = maintain(&db, &with_new, now)
        .await
        .expect("maintenance")
        .expect("not locked");
    assert_eq!(run.report.moved_events, 1, "{:?}", run.report);
    assert!(
        leaf_of(&db, 3)
            .await
            .starts_with(&format!("{}_t_new_", span(5))),
        "the new topic's event moved into its leaf"
    );

    // An index left invalid (an interrupted CREATE INDEX CONCURRENTLY) is built again.
    let gin = format!("{keep_leaf}_gin");
    let superuser = connect(&database.admin_url).await;
    superuser
        .execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::text::regclass",
            &[&gin],
        )
        .await
        .expect("mark invalid");
    let run = maintain(&db, &policy(true), now)
        .await
        .expect("maintenance")
        .expect("not locked");
    assert_eq!(run.report.indexes_rebuilt, vec![gin.clone()]);
    let valid: bool = db
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = $1::text::regclass",
            &[&gin],
        )
        .await
        .expect("index")
        .get(0);
    assert!(valid);
    // A topic that no longer asks for its GIN index loses it.
    let run = maintain(&db, &policy(false), now)
        .await
        .expect("maintenance")
        .expect("not locked");
    assert!(
        run.report.indexes_dropped.contains(&gin),
        "{:?}",
        run.report
    );
    assert!(!exists(&db, &gin).await);

    // At day 20: t.week's leaves of spans that ended 7 days ago or more are dropped, t.keep's stay.
    let later = day(20, 12);
    let run = maintain(&db, &policy(false), later)
        .await
        .expect("maintenance")
        .expect("not locked");
    assert!(run.report.dropped.contains(&week_leaf), "{:?}", run.report);
    assert!(!exists(&db, &week_leaf).await);
    assert!(
        !run.report
            .dropped
            .iter()
            .any(|name| name.contains("t_keep")),
        "{:?}",
        run.report
    );
    let left: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid",
            &[],
        )
        .await
        .expect("tree")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(left.contains(&keep_leaf), "{left:?} after {:?}", run.report);
    assert_eq!(leaf_of(&db, 2).await, keep_leaf, "t.keep's event stays");
    let week_events: i64 = db
        .query_one("SELECT count(*) FROM events WHERE topic = 't.week'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(week_events, 0);
    // The span of day 13 ended on day 14: its t.week leaf is kept until day 21.
    let week_13: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE $1 AND relkind = 'r'",
            &[&format!("{}\\_t\\_week\\_%", span(13))],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(week_13, 1);
    assert_eq!(run.layout.covered_until, Some(day(24, 0).unix_timestamp()));
    assert!(run.layout.topics.contains_key("t.keep"));
    // The dropped leaves took their rollups with them; the rest still count their events.
    eventgate_test_support::assert_rollups_match(&database).await;
    let week_counted: i64 = db
        .query_one(
            "SELECT count(*) FROM event_counts WHERE topic = 't.week'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(week_counted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minutes_rollup_rows_fold_into_one_with_the_same_sum() {
    let database = eventgate_test_support::stack().await.fresh_database().await;
    let db = connect(&database.writer_url).await;
    let at = day(3, 12);
    for n in 0..5 {
        insert(&db, "t.keep", at + Duration::seconds(n), n).await;
    }
    insert(&db, "t.week", at, 9).await;
    let count_rows = "SELECT count(*) FROM event_counts";
    assert_eq!(
        db.query_one(count_rows, &[])
            .await
            .expect("rows")
            .get::<_, i64>(0),
        6
    );
    let run = maintain(&db, &policy(true), at)
        .await
        .expect("maintenance")
        .expect("not locked");
    assert_eq!(run.report.rollup_rows_folded, 4, "{:?}", run.report);
    assert_eq!(
        db.query_one(count_rows, &[])
            .await
            .expect("rows")
            .get::<_, i64>(0),
        2
    );
    eventgate_test_support::assert_rollups_match(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_maintenance_runs_at_a_time() {
    let database = eventgate_test_support::stack().await.fresh_database().await;
    let holder = connect(&database.writer_url).await;
    let other = connect(&database.writer_url).await;
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&eventgate_core::db::partitions::MAINTENANCE_LOCK_KEY],
        )
        .await
        .expect("lock");
    let skipped = maintain(&other, &policy(false), day(10, 12))
        .await
        .expect("no error");
    assert!(skipped.is_none(), "another run holds the lock");
    assert!(!exists(&other, &span(10)).await);
}
