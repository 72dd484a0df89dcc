//! `write::store_batch` against a real Postgres, as the writer's role: new batches take the plain
//! `INSERT`, and a batch holding ids stored already (a redelivery, a producer retry, the same id twice in
//! one batch) falls back to skipping them — each event is stored exactly once, with its first content.
//! A row the database refuses fails with the cause that sends the writer to isolate it.

use serde_json::json;

use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::{Cause, PgPool};
use eventgate_core::envelope::Event;
use eventgate_db_writer::db::DeadLetter;
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

/// A pool of one connection as the writer's role.
fn writer_pool(url: &str) -> PgPool {
    eventgate_core::db::build_pool(url, &PoolSettings::new(1)).expect("writer pool")
}

#[tokio::test]
async fn a_batch_with_stored_ids_stores_only_the_new_ones_once() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let pool = writer_pool(&db.writer_role_url);
    let mut conn = pool.get().await.expect("connect as the writer role");

    let first: Vec<Event> = (0..300).map(event).collect();
    let written = write_batch(&mut conn, &first.iter().collect::<Vec<_>>(), &[])
        .await
        .expect("first batch");
    assert_eq!(written.events, 300);

    // A replay of the last 100 (with other content, which must not win), 200 new events, and one new
    // event twice in the same batch.
    let mut replayed: Vec<Event> = first[200..].to_vec();
    for stale in &mut replayed {
        stale.payload = json!({"event_name": "replayed"});
    }
    let new: Vec<Event> = (300..500).map(event).collect();
    let twice = event(500);
    let mut batch: Vec<&Event> = replayed.iter().chain(new.iter()).collect();
    batch.push(&twice);
    batch.push(&twice);
    let written = write_batch(&mut conn, &batch, &[])
        .await
        .expect("overlapping batch");
    assert_eq!(written.events, 201, "200 new events and the one sent twice");

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
    let overwritten = db
        .count("SELECT count(*) FROM events WHERE payload->>'event_name' = 'replayed'")
        .await
        .expect("count replayed content");
    assert_eq!(overwritten, 0, "the first content of an event stays");

    // A batch of nothing but stored ids adds nothing and is not an error.
    let written = write_batch(&mut conn, &first.iter().collect::<Vec<_>>(), &[])
        .await
        .expect("pure replay");
    assert_eq!(written.events, 0);
}

#[tokio::test]
async fn a_replayed_batch_parks_its_dead_letters_once() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let pool = writer_pool(&db.writer_role_url);
    let mut conn = pool.get().await.expect("connect as the writer role");
    let events: Vec<Event> = (0..10).map(event).collect();
    let dead = DeadLetter {
        topic: Some("audit.logs".to_owned()),
        kafka_topic: "eventgate.audit.logs".to_owned(),
        partition: 0,
        offset: 42,
        raw: Some(b"{not json".to_vec()),
        error: "not JSON".to_owned(),
    };
    let refs: Vec<&Event> = events.iter().collect();
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
        db.count("SELECT count(*) FROM dead_letters")
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
    let good = event(1);
    // Valid JSON, but jsonb cannot store U+0000: SQLSTATE 22P05.
    let mut refused = event(2);
    refused.payload = json!({"event_name": "nul\u{0}byte"});
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
