//! Idempotency across the history's partitions: a producer's retry of an event (same id, topic and
//! producer, a new `received_at`) that falls into the next day's partition is recognised by the writer's
//! lookup within `storage.idempotency_window_ms` — stored once, or parked as a conflicting duplicate
//! when its payload differs — and, with the window set to 0, only a partition's own key holds (the
//! retry is stored again: what the README's "What a 202 guarantees" states).

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;
use time::{Duration, OffsetDateTime, Time};

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::StorageConfig;
use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::StoragePolicy;
use eventgate_core::envelope::Event;
use eventgate_db_writer::db::IdempotencyWindow;
use eventgate_db_writer::envelope::{Envelope, KafkaCoordinates};
use eventgate_db_writer::write::store_batch_within;

const TOPIC: &str = "audit.logs";

fn read(id: uuid::Uuid, at: OffsetDateTime, payload: serde_json::Value) -> Envelope {
    static OFFSET: AtomicI64 = AtomicI64::new(0);
    let event = Event {
        id,
        topic: TOPIC.to_owned(),
        timestamp: at,
        producer: "boundary-test".to_owned(),
        payload,
    };
    let origin = KafkaCoordinates {
        kafka_topic: format!("eventgate.{TOPIC}"),
        kafka_partition: 0,
        kafka_offset: OFFSET.fetch_add(1, Ordering::Relaxed),
    };
    Envelope::decode(event.to_json_bytes(), origin).expect("an envelope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_in_the_next_days_partition_is_stored_once() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let topics_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics");
    let catalogue = Catalogue::load_dir(&topics_dir).expect("catalogue");
    let policy = StoragePolicy::new(&catalogue, &StorageConfig::default());
    let owner = {
        let (client, connection) = tokio_postgres::connect(&db.writer_url, tokio_postgres::NoTls)
            .await
            .expect("owner connection");
        tokio::spawn(connection);
        client
    };
    // Today's partitions and those ahead, as the schema owner (the writer's role cannot create them).
    eventgate_core::db::partitions::maintain(&owner, &policy, OffsetDateTime::now_utc())
        .await
        .expect("maintenance")
        .expect("not locked");
    let midnight = OffsetDateTime::now_utc().replace_time(Time::MIDNIGHT) + Duration::days(2);

    let pool = eventgate_core::db::build_pool(&db.writer_role_url, &PoolSettings::new(1))
        .expect("writer pool");
    let mut conn = pool.get().await.expect("connect as the writer role");
    let window = IdempotencyWindow::of(&StorageConfig::default());
    let before_midnight = midnight - Duration::seconds(30);
    let after_midnight = midnight + Duration::seconds(30);

    let id = uuid::Uuid::now_v7();
    let first = read(id, before_midnight, json!({"event_name": "login"}));
    let written = store_batch_within(&mut conn, &[&first], &[], &window)
        .await
        .expect("first attempt");
    assert_eq!(written.events, 1);
    // The retry, a minute later, lands in the next day's partition.
    let retry = read(id, after_midnight, json!({"event_name": "login"}));
    let written = store_batch_within(&mut conn, &[&retry], &[], &window)
        .await
        .expect("retry");
    assert_eq!(written.events, 0, "recognised as the same event");
    assert!(written.conflicts.is_empty(), "{:?}", written.conflicts);
    // The same id re-sent with other content: parked, the first stays.
    let other = read(id, after_midnight, json!({"event_name": "logout"}));
    let written = store_batch_within(&mut conn, &[&other], &[], &window)
        .await
        .expect("other content");
    assert_eq!(written.events, 0);
    assert_eq!(written.conflicts.len(), 1);
    let stored: Vec<(String, String)> = owner
        .query(
            "SELECT tableoid::regclass::text, payload->>'event_name' FROM events WHERE id = $1",
            &[&id],
        )
        .await
        .expect("rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let day_before = midnight - Duration::days(1);
    let span = format!(
        "events_p{:04}{:02}{:02}_",
        day_before.year(),
        u8::from(day_before.month()),
        day_before.day()
    );
    assert!(stored[0].0.starts_with(&span), "{stored:?}");
    assert_eq!(stored[0].1, "login");

    // The retry before the original (the two reached Kafka through different ingest instances): the
    // earlier one, in the previous day, is recognised too.
    let id = uuid::Uuid::now_v7();
    let later = read(id, after_midnight, json!({"n": 1}));
    let earlier = read(id, before_midnight, json!({"n": 1}));
    let first = store_batch_within(&mut conn, &[&later], &[], &window)
        .await
        .expect("later copy first");
    let second = store_batch_within(&mut conn, &[&earlier], &[], &window)
        .await
        .expect("earlier copy second");
    assert_eq!((first.events, second.events), (1, 0));

    // Without a window only the partition's own key holds: a retry across midnight is stored again.
    let no_window = IdempotencyWindow::of(&StorageConfig {
        idempotency_window_ms: 0,
        ..StorageConfig::default()
    });
    let copies = store_copies(
        &mut conn,
        &owner,
        [before_midnight, after_midnight],
        &no_window,
    )
    .await;
    assert_eq!(copies, 2);
    // Within one partition the key holds whatever the window.
    let copies = store_copies(
        &mut conn,
        &owner,
        [
            midnight + Duration::hours(3),
            midnight + Duration::hours(20),
        ],
        &no_window,
    )
    .await;
    assert_eq!(copies, 1);
    // Whatever was recognised, skipped or parked, the rollups count what is stored.
    eventgate_test_support::assert_rollups_match(&db).await;
}

/// Stores one event (a new id) once at each of `times`, each copy a batch of its own, and returns how
/// many rows of it `events` holds.
async fn store_copies(
    conn: &mut tokio_postgres::Client,
    owner: &tokio_postgres::Client,
    times: [OffsetDateTime; 2],
    window: &IdempotencyWindow,
) -> i64 {
    let id = uuid::Uuid::now_v7();
    for at in times {
        let copy = read(id, at, json!({"n": 2}));
        store_batch_within(conn, &[&copy], &[], window)
            .await
            .expect("stored");
    }
    owner
        .query_one("SELECT count(*) FROM events WHERE id = $1", &[&id])
        .await
        .expect("count")
        .get(0)
}
