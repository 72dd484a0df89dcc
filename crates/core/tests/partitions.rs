//! The maintenance of the event history's partitions (`eventgate_core::db::partitions`) against a real
//! Postgres, with its clock set by the test (a time in 2030, clear of the partitions the template
//! database has for today): spans are created ahead, events that reached a default partition are moved
//! into their own, a topic's leaves get exactly its indexes, an invalid index is built again, retention
//! drops whole partitions of one topic and leaves the others, and a second run finds nothing to do.

use serde_json::json;
use time::macros::datetime;
use time::OffsetDateTime;
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

async fn insert(db: &Client, topic: &str, at: OffsetDateTime, n: i64) {
    db.execute(
        "INSERT INTO events (id, topic, received_at, producer, payload)
         VALUES (gen_random_uuid(), $1, $2, 'p', jsonb_build_object('app', 'a', 'n', $3::bigint))",
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
    let now = datetime!(2030-06-10 12:00 UTC);

    // Before any span of that time exists: a week-topic event of 2030-06-08 and a keep-topic event of
    // 2030-06-10 go to events_default.
    insert(&db, "t.week", datetime!(2030-06-08 05:00 UTC), 1).await;
    insert(&db, "t.keep", datetime!(2030-06-10 13:00 UTC), 2).await;
    assert_eq!(leaf_of(&db, 1).await, "events_default");

    let run = maintain(&db, &policy(true), now)
        .await
        .expect("maintenance")
        .expect("not locked by another run");
    for span in [
        "events_p20300608",
        "events_p20300610",
        "events_p20300611",
        "events_p20300612",
        "events_p20300613",
    ] {
        assert!(
            run.report.created.iter().any(|c| c == span),
            "{span}: {:?}",
            run.report.created
        );
    }
    assert!(
        !run.report.created.iter().any(|c| c == "events_p20300614"),
        "three spans ahead, not four"
    );
    assert_eq!(run.report.moved_events, 2);
    let week_leaf = leaf_of(&db, 1).await;
    let keep_leaf = leaf_of(&db, 2).await;
    assert!(
        week_leaf.starts_with("events_p20300608_t_week_"),
        "{week_leaf}"
    );
    assert!(
        keep_leaf.starts_with("events_p20300610_t_keep_"),
        "{keep_leaf}"
    );
    let in_default: i64 = db
        .query_one("SELECT count(*) FROM events_default", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(in_default, 0);

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
                 VALUES ($1, 't.keep', '2030-06-11T01:00:00Z', 'p', '{}')";
    db.execute(again, &[&id]).await.expect("first");
    let error = db.execute(again, &[&id]).await.expect_err("twice");
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
    insert(&db, "t.new", datetime!(2030-06-11 08:00 UTC), 3).await;
    assert_eq!(leaf_of(&db, 3).await, "events_p20300611_default");
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
        leaf_of(&db, 3).await.starts_with("events_p20300611_t_new_"),
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

    // Ten days later: t.week's spans that ended 7 days ago or more are dropped, t.keep's stay.
    let later = datetime!(2030-06-20 12:00 UTC);
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
    // The span of 2030-06-13 ended on the 14th: kept until the 21st.
    assert!(exists(&db, "events_p20300613").await);
    assert!(run
        .layout
        .covered_until
        .is_some_and(|until| until >= datetime!(2030-06-24 00:00 UTC).unix_timestamp()));
    assert!(run.layout.topics.contains_key("t.keep"));
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
    let skipped = maintain(&other, &policy(false), datetime!(2030-06-10 12:00 UTC))
        .await
        .expect("no error");
    assert!(skipped.is_none(), "another run holds the lock");
    assert!(!exists(&other, "events_p20300610").await);
}
