//! Storing events as the writers do: `eventgate_db_writer::write::store_batch` in one transaction
//! (events, watermarks, commit log and NOTIFY), as the writer's role, so the tail and freshness see them.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;

use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::PgPool;
use eventgate_core::envelope::Event;
use eventgate_db_writer::envelope::{Envelope, KafkaCoordinates};
use eventgate_db_writer::write::store_batch;
use eventgate_test_support::TestDatabase;

/// An audit-style event of `topic` (`event_name`, `description`, `customer_id` = `n`), as read from Kafka.
pub fn event(topic: &str, at: time::OffsetDateTime, name: &str, n: u64) -> Envelope {
    static OFFSET: AtomicI64 = AtomicI64::new(0);
    let event = Event {
        id: uuid::Uuid::now_v7(),
        topic: topic.to_owned(),
        timestamp: at,
        producer: "dev".to_owned(),
        payload: json!({"event_name": name, "description": format!("event {n}"), "customer_id": n}),
    };
    let origin = KafkaCoordinates {
        kafka_topic: format!("eventgate.{topic}"),
        kafka_partition: 0,
        kafka_offset: OFFSET.fetch_add(1, Ordering::Relaxed),
    };
    Envelope::decode(event.to_json_bytes(), origin).expect("an envelope")
}

pub fn writer_pool(database: &TestDatabase, size: u32) -> PgPool {
    eventgate_core::db::build_pool(&database.writer_role_url, &PoolSettings::new(size))
        .expect("writer pool")
}

/// Stores one batch in one transaction, as a writer does.
pub async fn store(pool: &PgPool, events: &[Envelope]) {
    let mut conn = pool.get().await.expect("a connection");
    let refs: Vec<&Envelope> = events.iter().collect();
    store_batch(&mut conn, &refs, &[])
        .await
        .expect("the batch is stored");
}
