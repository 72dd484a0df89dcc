//! Auto-indexes chosen by the maintenance (`eventgate_core::db::auto_index`) against a real Postgres,
//! the field usage written straight into `field_usage` (the stats-api's side is tested in
//! `stats-api/tests/auto_index.rs`): the most used fields over the threshold get an index on every leaf
//! of their topic, at most the limit per topic; a declared field never gets one; an auto-index unused for
//! a whole window is dropped, the declared index stays. A sort by two fields counts the same, and gets a
//! composite `_s` index.

use serde_json::json;
use time::{Duration, OffsetDateTime};
use tokio_postgres::{Client, NoTls};

use eventgate_core::catalogue::{Catalogue, Topic};
use eventgate_core::config::StorageConfig;
use eventgate_core::db::auto_index::sort_index_definition;
use eventgate_core::db::field_index::expression_hash;
use eventgate_core::db::partitions::{maintain, StoragePolicy};
use eventgate_core::db::typed_value::LiteralPaths;
use eventgate_core::query::FieldType;

const TOPIC: &str = "t.auto";

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

fn policy() -> StoragePolicy {
    let topic = Topic::from_schema(
        TOPIC,
        json!({
            "type": "object",
            "properties": {
                "app": {"type": "string"}, "a": {"type": "string"}, "b": {"type": "integer"},
                "c": {"type": "boolean"}, "d": {"type": "string"}
            },
            "x-eventgate": {"indexed_fields": ["app"]}
        }),
    )
    .expect("topic");
    let other = Topic::from_schema(
        "t.other",
        json!({"type": "object", "properties": {"a": {"type": "string"}}}),
    )
    .expect("topic");
    let storage = StorageConfig {
        auto_index_max_per_topic: 3,
        auto_index_min_uses: 100,
        ..StorageConfig::default()
    };
    StoragePolicy::new(&Catalogue::from_topics([topic, other]), &storage)
}

/// The suffix of a field's index on every leaf: `f<hash of its expression>`.
fn suffix(field: &str, ty: FieldType) -> String {
    let expression = LiteralPaths::typed_value(ty, &[field.to_owned()]).expect("plain path");
    format!("_f{}", expression_hash(&expression))
}

/// The leaves of `topic`, and how many of them have an index ending in `suffix`.
async fn leaves_with(db: &Client, topic: &str, suffix: &str) -> (i64, i64) {
    let row = db
        .query_one(
            "WITH leaves AS (
                 SELECT c.oid, c.relname FROM pg_partition_tree('events') t
                 JOIN pg_class c ON c.oid = t.relid
                 WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (''' || $1 || ''')')
             SELECT (SELECT count(*) FROM leaves),
                    (SELECT count(*) FROM leaves l JOIN pg_index x ON x.indrelid = l.oid
                     JOIN pg_class i ON i.oid = x.indexrelid
                     WHERE i.relname = l.relname || $2 AND x.indisvalid)",
            &[&topic, &suffix],
        )
        .await
        .expect("leaves");
    (row.get(0), row.get(1))
}

async fn use_fields(db: &Client, topic: &str, uses: &[(&str, i64)]) {
    for (field, n) in uses {
        db.execute(
            "INSERT INTO field_usage (topic, field, hour, uses)
             VALUES ($1, $2, date_trunc('hour', now(), 'UTC'), $3)",
            &[&topic, field, n],
        )
        .await
        .expect("usage");
    }
}

async fn chosen(db: &Client) -> Vec<(String, String, bool)> {
    db.query(
        "SELECT topic, field, ready_at IS NOT NULL FROM auto_indexed_fields ORDER BY 1, 2",
        &[],
    )
    .await
    .expect("auto_indexed_fields")
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_used_fields_get_indexes_up_to_the_limit_and_lose_them_when_unused() {
    let database = eventgate_test_support::stack().await.fresh_database().await;
    let db = connect(&database.writer_url).await;
    let policy = policy();
    let now = OffsetDateTime::now_utc();
    maintain(&db, &policy, now)
        .await
        .expect("first run")
        .expect("not locked");
    // Some events in today's leaf, so the indexes are built on a leaf that holds rows.
    db.batch_execute(&format!(
        "INSERT INTO events (id, topic, received_at, producer, payload)
         SELECT gen_random_uuid(), '{TOPIC}', now(), 'p',
                jsonb_build_object('a', 'x' || i, 'b', i, 'c', i % 2 = 0, 'd', 'y', 'app', 'z')
         FROM generate_series(1, 500) AS i"
    ))
    .await
    .expect("events");

    // Over the threshold of 100: a, b, c, d (the limit of 3 leaves d out) and t.other's a (another
    // topic: its own limit). `app` is declared; `gone` is not a field of the schema.
    use_fields(
        &db,
        TOPIC,
        &[
            ("a", 400),
            ("b", 300),
            ("c", 200),
            ("d", 150),
            ("app", 10_000),
            ("gone", 1_000),
        ],
    )
    .await;
    use_fields(&db, "t.other", &[("a", 100)]).await;

    let run = maintain(&db, &policy, now)
        .await
        .expect("run")
        .expect("not locked");
    assert_eq!(
        run.report.auto_indexes_chosen,
        ["t.auto a", "t.auto b", "t.auto c", "t.other a"].map(str::to_owned),
        "{:?}",
        run.report
    );
    assert_eq!(
        chosen(&db).await,
        [
            ("t.auto", "a"),
            ("t.auto", "b"),
            ("t.auto", "c"),
            ("t.other", "a")
        ]
        .map(|(t, f)| (t.to_owned(), f.to_owned(), true)),
        "recorded, ready once built"
    );
    assert_eq!(run.auto_indexes.get(TOPIC).map(Vec::len), Some(3));
    for (field, ty) in [
        ("a", FieldType::String),
        ("b", FieldType::Integer),
        ("c", FieldType::Boolean),
    ] {
        let (leaves, indexed) = leaves_with(&db, TOPIC, &suffix(field, ty)).await;
        assert!(leaves >= 4, "today and the spans ahead: {leaves}");
        assert_eq!(
            indexed, leaves,
            "{field}: an index on every leaf of the topic"
        );
    }
    let (_, d_indexed) = leaves_with(&db, TOPIC, &suffix("d", FieldType::String)).await;
    assert_eq!(d_indexed, 0, "d is beyond the limit");
    // The declared field keeps its declared index and is never recorded as an auto-index.
    let (leaves, app) = leaves_with(&db, TOPIC, &suffix("app", FieldType::String)).await;
    assert_eq!(app, leaves);
    assert!(!chosen(&db).await.iter().any(|(_, f, _)| f == "app"));
    // The leaf holding the events was analysed: its index's expression has statistics (named after
    // the expression's outer function, `case`).
    let stats = database
        .count(&format!(
            "SELECT count(*) FROM pg_stats WHERE tablename LIKE 'events_p%t_auto_%{}' \
             AND attname NOT IN ('topic', 'id')",
            suffix("a", FieldType::String)
        ))
        .await
        .expect("pg_stats");
    assert!(stats > 0, "expression statistics of the new indexes");

    // A second run with the same usage changes nothing.
    let again = maintain(&db, &policy, now)
        .await
        .expect("run")
        .expect("not locked");
    assert!(
        again.report.auto_indexes_chosen.is_empty() && again.report.auto_indexes_dropped.is_empty()
    );
    assert!(again.report.indexes_built.is_empty(), "{:?}", again.report);

    // A window later with no use: every auto-index goes, from the table and from the leaves.
    let later = now + Duration::days(8);
    let run = maintain(&db, &policy, later)
        .await
        .expect("run")
        .expect("not locked");
    assert_eq!(run.report.auto_indexes_dropped.len(), 4, "{:?}", run.report);
    assert!(chosen(&db).await.is_empty());
    let (_, a_indexed) = leaves_with(&db, TOPIC, &suffix("a", FieldType::String)).await;
    assert_eq!(a_indexed, 0, "the auto-index of a dropped from every leaf");
    let (leaves, app) = leaves_with(&db, TOPIC, &suffix("app", FieldType::String)).await;
    assert_eq!(app, leaves, "the declared index stays");
    assert_eq!(
        database
            .count("SELECT count(*) FROM field_usage")
            .await
            .expect("usage"),
        0,
        "usage older than the window is deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_by_two_fields_gets_a_composite_index_in_the_same_slots_and_loses_it_when_unused() {
    let database = eventgate_test_support::stack().await.fresh_database().await;
    let db = connect(&database.writer_url).await;
    let policy = policy();
    let now = OffsetDateTime::now_utc();
    maintain(&db, &policy, now)
        .await
        .expect("first run")
        .expect("not locked");
    // `sort=app,-b` (app declared) as the stats-api counts it, and fields competing for the 3 slots.
    let sort = "sort:app,-b";
    use_fields(
        &db,
        TOPIC,
        &[(sort, 500), ("a", 400), ("b", 300), ("c", 200)],
    )
    .await;
    let run = maintain(&db, &policy, now)
        .await
        .expect("run")
        .expect("not locked");
    assert_eq!(
        run.report.auto_indexes_chosen,
        [
            format!("{TOPIC} {sort}"),
            format!("{TOPIC} a"),
            format!("{TOPIC} b")
        ],
        "c is beyond the limit: {:?}",
        run.report
    );
    let definition =
        sort_index_definition(&policy.topics[TOPIC].sort_columns, sort).expect("definition");
    let app = LiteralPaths::typed_value(FieldType::String, &["app".to_owned()]).expect("app");
    let b = LiteralPaths::typed_value(FieldType::Integer, &["b".to_owned()]).expect("b");
    assert_eq!(definition, format!("(topic, {app}, {b} DESC, id DESC)"));
    let sort_suffix = format!("_s{}", expression_hash(&definition));
    let (leaves, indexed) = leaves_with(&db, TOPIC, &sort_suffix).await;
    assert!(leaves >= 4, "today and the spans ahead: {leaves}");
    assert_eq!(indexed, leaves, "the sort index on every leaf of the topic");
    // Ordered as the page query: Postgres' own text of one of them.
    let text: String = db
        .query_one(
            "SELECT pg_get_indexdef(i.oid) FROM pg_class i WHERE i.relname LIKE '%' || $1 LIMIT 1",
            &[&sort_suffix],
        )
        .await
        .expect("indexdef")
        .get(0);
    assert!(
        text.contains("COLLATE \"C\", (") && text.ends_with("END) DESC, id DESC)"),
        "{text}"
    );
    let (_, other) = leaves_with(&db, "t.other", &sort_suffix).await;
    assert_eq!(other, 0, "not on another topic's leaves");

    // A window later with no use: the sort index goes like a field's; the declared one stays.
    let run = maintain(&db, &policy, now + Duration::days(8))
        .await
        .expect("run")
        .expect("not locked");
    assert_eq!(run.report.auto_indexes_dropped.len(), 3, "{:?}", run.report);
    let (_, indexed) = leaves_with(&db, TOPIC, &sort_suffix).await;
    assert_eq!(indexed, 0, "dropped from every leaf");
    let (leaves, declared) = leaves_with(&db, TOPIC, &suffix("app", FieldType::String)).await;
    assert_eq!(declared, leaves);
}
