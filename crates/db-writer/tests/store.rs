//! `write::store_batch` against a real Postgres, as the writer's role: new batches take the plain
//! `INSERT`, and a batch holding keys stored already (a redelivery, a producer retry, the same event twice
//! in one batch) falls back to skipping them — each event is stored exactly once, with its first content,
//! and a re-sent id with another payload is parked as a conflicting duplicate.
//! A row the database refuses fails with the cause that sends the writer to isolate it.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;

use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::{Cause, PgPool};
use eventgate_core::envelope::Event;
use eventgate_db_writer::db::{DeadLetter, DeadLetterReason};
use eventgate_db_writer::envelope::{Envelope, KafkaCoordinates};
use eventgate_db_writer::error::Remedy;
use eventgate_db_writer::write::store_batch as write_batch;

fn event(n: u64) -> Event {
    Event {
        id: uuid::Uuid::now_v7(),
        topic: "audit.logs".to_owned(),
        timestamp: time::OffsetDateTime::now_utc(),
        producer: "store-test".to_owned(),
        payload: json!({"event_name": "login", "n": n}),
    }
}

/// The event as the writer reads it, as the next message of its Kafka partition.
fn read(event: &Event) -> Envelope {
    static OFFSET: AtomicI64 = AtomicI64::new(0);
    let origin = KafkaCoordinates {
        kafka_topic: "eventgate.audit.logs".to_owned(),
        kafka_partition: 0,
        kafka_offset: OFFSET.fetch_add(1, Ordering::Relaxed),
    };
    Envelope::decode(event.to_json_bytes(), origin).expect("an envelope")
}

fn read_all(events: &[Event]) -> Vec<Envelope> {
    events.iter().map(read).collect()
}

/// A pool of one connection as the writer's role.
fn writer_pool(url: &str) -> PgPool {
    eventgate_core::db::build_pool(url, &PoolSettings::new(1)).expect("writer pool")
}

#[tokio::test]
async fn a_batch_with_stored_ids_stores_only_the_new_ones_once() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let pool = writer_pool(&db.writer_role_url);
    let mut conn = pool.get().await.expect("connect as the writer role");

    let first = read_all(&(0..300).map(event).collect::<Vec<_>>());
    let written = write_batch(&mut conn, &first.iter().collect::<Vec<_>>(), &[])
        .await
        .expect("first batch");
    assert_eq!(written.events, 300);
    assert!(written.conflicts.is_empty());

    // A redelivery of 100 (the same messages), 200 new events, and one new event twice in the same
    // batch (a producer's retry that reached Kafka twice).
    let redelivered = &first[200..];
    let new = read_all(&(300..500).map(event).collect::<Vec<_>>());
    let twice = event(500);
    let (twice_a, twice_b) = (read(&twice), read(&twice));
    let mut batch: Vec<&Envelope> = redelivered.iter().chain(new.iter()).collect();
    batch.push(&twice_a);
    batch.push(&twice_b);
    let written = write_batch(&mut conn, &batch, &[])
        .await
        .expect("overlapping batch");
    assert_eq!(written.events, 201, "200 new events and the one sent twice");
    assert!(
        written.conflicts.is_empty(),
        "the same content again is no conflict: {:?}",
        written.conflicts
    );

    let stored = db
        .count("SELECT count(*) FROM events WHERE producer = 'store-test'")
        .await
        .expect("count");
    assert_eq!(stored, 501);
    let distinct = db
        .count("SELECT count(DISTINCT id) FROM events WHERE producer = 'store-test'")
        .await
        .expect("count distinct");
    assert_eq!(distinct, 501);
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters")
            .await
            .expect("count"),
        0
    );

    // A batch of nothing but stored events adds nothing and is not an error.
    let written = write_batch(&mut conn, &first.iter().collect::<Vec<_>>(), &[])
        .await
        .expect("pure replay");
    assert_eq!(written.events, 0);
    assert!(written.conflicts.is_empty());
    // The rollups counted each stored event once: not the redelivered, retried or replayed copies.
    assert_eq!(
        db.count("SELECT sum(events)::bigint FROM event_counts")
            .await
            .expect("sum"),
        501
    );
    eventgate_test_support::assert_rollups_match(&db).await;
}

/// Ids re-sent with other content (a stored one, and one twice in the same batch) keep their first
/// payload; each re-sent message is parked, with its raw bytes, as a `conflicting_duplicate`, once even
/// when its batch is redelivered.
#[tokio::test]
async fn a_re_sent_id_with_other_content_is_parked_as_a_conflicting_duplicate() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let pool = writer_pool(&db.writer_role_url);
    let mut conn = pool.get().await.expect("connect as the writer role");

    let stored = event(1);
    write_batch(&mut conn, &[&read(&stored)], &[])
        .await
        .expect("first write");

    let mut changed = stored.clone();
    changed.payload = json!({"event_name": "changed"});
    // The same content, spelled differently (key order, number form), is the same content.
    let mut respelled = stored.clone();
    respelled.payload = json!({"n": 1.0, "event_name": "login"});
    let fresh = event(2);
    let mut fresh_changed = fresh.clone();
    fresh_changed.payload = json!({"event_name": "changed in the same batch"});
    let messages = [
        read(&changed),
        read(&respelled),
        read(&fresh),
        read(&fresh_changed),
    ];
    let batch: Vec<&Envelope> = messages.iter().collect();
    let written = write_batch(&mut conn, &batch, &[]).await.expect("write");
    assert_eq!(written.events, 1, "only the fresh event is new");
    let mut parked: Vec<_> = written.conflicts.iter().map(DeadLetter::key).collect();
    parked.sort();
    assert_eq!(
        parked,
        vec![messages[0].origin.clone(), messages[3].origin.clone()]
    );
    for dead in &written.conflicts {
        assert_eq!(dead.reason, DeadLetterReason::ConflictingDuplicate);
        assert!(
            dead.error.starts_with("conflicting_duplicate"),
            "{}",
            dead.error
        );
    }
    assert_eq!(written.dead_letters, 2);

    let row = db
        .count(&format!(
            "SELECT count(*) FROM events WHERE id = '{}' AND payload->>'event_name' = 'login'",
            stored.id
        ))
        .await
        .expect("count");
    assert_eq!(row, 1, "the first payload stays");
    let kept = db
        .count(&format!(
            "SELECT count(*) FROM dead_letters WHERE reason = 'conflicting_duplicate' \
             AND topic = 'audit.logs' AND kafka_offset = {} AND raw = decode('{}', 'hex')",
            messages[0].origin.kafka_offset,
            hex(messages[0].raw())
        ))
        .await
        .expect("count");
    assert_eq!(kept, 1, "parked with the message as read");

    // The batch is read again (the writer died before committing its offsets): nothing new.
    let again = write_batch(&mut conn, &batch, &[]).await.expect("replay");
    assert_eq!((again.events, again.dead_letters), (0, 0));
    assert!(again.conflicts.is_empty(), "counted once");
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters")
            .await
            .expect("count"),
        2
    );
}

/// An event id is unique per (topic, producer): the same id from another producer, or on another topic,
/// is another event — a producer cannot suppress, or learn of, another's event by its id.
#[tokio::test]
async fn the_same_id_from_another_producer_or_on_another_topic_is_another_event() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let pool = writer_pool(&db.writer_role_url);
    let mut conn = pool.get().await.expect("connect as the writer role");

    let alice_x = event(1);
    let mut bob_x = alice_x.clone();
    bob_x.producer = "bob".to_owned();
    let mut bob_y = bob_x.clone();
    bob_y.topic = "web.events".to_owned();
    let mut alice_y = alice_x.clone();
    alice_y.topic = "web.events".to_owned();

    let written = write_batch(&mut conn, &[&read(&alice_x)], &[])
        .await
        .expect("alice first");
    assert_eq!(written.events, 1);
    // Bob's events go in by the fast path (nothing of theirs is stored), in one batch with Alice's
    // event on the other topic.
    let later = [read(&bob_x), read(&bob_y), read(&alice_y)];
    let written = write_batch(&mut conn, &later.iter().collect::<Vec<_>>(), &[])
        .await
        .expect("the others");
    assert_eq!(written.events, 3);
    assert!(written.conflicts.is_empty());
    let rows = db
        .count(&format!(
            "SELECT count(*) FROM events WHERE id = '{}'",
            alice_x.id
        ))
        .await
        .expect("count");
    assert_eq!(rows, 4, "one event per (topic, producer)");

    // Mixed with a true duplicate, the skipping path keeps them apart as well.
    let mut carol_x = alice_x.clone();
    carol_x.producer = "carol".to_owned();
    let mixed = [read(&alice_x), read(&carol_x)];
    let written = write_batch(&mut conn, &mixed.iter().collect::<Vec<_>>(), &[])
        .await
        .expect("mixed");
    assert_eq!(written.events, 1, "Carol's event, not Alice's again");
    assert!(written.conflicts.is_empty());
    assert_eq!(
        db.count("SELECT count(*) FROM events")
            .await
            .expect("count"),
        5
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_replayed_batch_parks_its_dead_letters_once() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let pool = writer_pool(&db.writer_role_url);
    let mut conn = pool.get().await.expect("connect as the writer role");
    let events = read_all(&(0..10).map(event).collect::<Vec<_>>());
    let dead = DeadLetter {
        topic: Some("audit.logs".to_owned()),
        kafka_topic: "eventgate.audit.logs".to_owned(),
        partition: 1,
        offset: 42,
        raw: Some(b"{not json".to_vec()),
        reason: DeadLetterReason::Undecodable,
        error: "not JSON".to_owned(),
        event: None,
    };
    let refs: Vec<&Envelope> = events.iter().collect();
    let first = write_batch(&mut conn, &refs, std::slice::from_ref(&dead))
        .await
        .expect("first write");
    assert_eq!((first.events, first.dead_letters), (10, 1));
    assert_eq!(first.parked, vec![dead.key()]);

    // The redelivery of the same messages: the events' conflict sends it down the skipping path, which
    // must still treat the dead letter as parked already.
    let again = write_batch(&mut conn, &refs, std::slice::from_ref(&dead))
        .await
        .expect("replayed write");
    assert_eq!((again.events, again.dead_letters), (0, 0));
    assert!(again.parked.is_empty());
    assert_eq!(
        db.count("SELECT count(*) FROM dead_letters WHERE reason = 'undecodable'")
            .await
            .expect("count"),
        1
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_is_refused_data_and_nothing_of_its_batch_is_stored() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let pool = writer_pool(&db.writer_role_url);
    let mut conn = pool.get().await.expect("connect as the writer role");
    let good = read(&event(1));
    // Valid JSON, but jsonb cannot store U+0000: SQLSTATE 22P05.
    let mut refused = event(2);
    refused.payload = json!({"event_name": "nul\u{0}byte"});
    let refused = read(&refused);
    let error = write_batch(&mut conn, &[&good, &refused], &[])
        .await
        .expect_err("refused");
    assert_eq!(error.db_error().sqlstate(), Some("22P05"), "{error}");
    assert_eq!(error.cause(), Cause::RefusedData);
    assert_eq!(error.remedy(), Remedy::IsolateRefusedRows);
    assert_eq!(
        db.count("SELECT count(*) FROM events")
            .await
            .expect("count"),
        0
    );

    // The connection is usable after the rolled-back transaction: the good row alone goes in.
    let written = write_batch(&mut conn, &[&good], &[])
        .await
        .expect("good row");
    assert_eq!(written.events, 1);
}
