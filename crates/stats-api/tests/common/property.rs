//! What the property tests against real Postgres share: the test topic's fields, generated events stored
//! straight into the events table (and their rollups), payload values that may be missing or wrong, and the proptest runner.

use diesel::Insertable;
use diesel_async::RunQueryDsl;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::schema::events;
use eventgate_core::db::{build_pool, PgPool};
use eventgate_core::envelope::Event;
use eventgate_core::query::FieldCatalogue;

/// The owner's connections: rows are inserted with diesel, through core's table definitions.
pub type WriterPool = Pool<AsyncPgConnection>;

/// A generated event before it is stored: id (salted per insert), timestamp, producer, payload.
pub type RawEvent = (u128, OffsetDateTime, String, Value);

#[derive(Insertable)]
#[diesel(table_name = events)]
struct NewRow {
    id: Uuid,
    topic: String,
    received_at: OffsetDateTime,
    producer: String,
    payload: Value,
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "source_app": {"type": "string"},
            "run_id": {"type": "integer"},
            "score": {"type": ["number", "null"]},
            "ok": {"type": "boolean"},
            "ts_ms": {"type": "integer", "x-eventgate-type": "epoch-ms"},
            "finished_at": {"type": "string", "format": "date-time"},
            "info": {"type": "object", "properties": {"region": {"type": "string"}, "0": {"type": "integer"}}},
            "tags": {"type": "array"},
            "jobs": {"type": "array", "items": {"type": "object", "properties": {
                "status": {"type": "string"},
                "n": {"type": "number"},
                "at": {"type": "string", "format": "date-time"},
                "note": {"type": "object"}
            }}},
            "labels": {"type": "array", "items": {"type": "string"}}
        }
    })
}

pub struct Db {
    /// As the owner: inserts rows directly.
    pub writer: WriterPool,
    /// As the stats-api's read-only role: runs the generated queries.
    pub reader: PgPool,
    /// The test topic's fields, `indexed` ones declared indexed: their SQL names the path literally (the
    /// index expression) and must mean exactly the same as with bound paths.
    pub fields: FieldCatalogue,
}

/// A fresh database of the shared test stack.
pub async fn setup(indexed: &[&str]) -> Db {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let mut fields = FieldCatalogue::from_schema(&schema());
    let indexed: Vec<String> = indexed.iter().map(|f| (*f).to_owned()).collect();
    fields.mark_indexed(&indexed).expect("indexable fields");
    Db {
        writer: Pool::builder()
            .max_size(1)
            .build_unchecked(AsyncDieselConnectionManager::new(&db.writer_url)),
        reader: build_pool(&db.reader_url, &PoolSettings::new(1)).expect("reader pool"),
        fields,
    }
}

/// Stores the events in `topic`; returns them as stored, a repeated id once.
pub async fn insert(db: &Db, topic: &str, raw: &[RawEvent]) -> Vec<Event> {
    // Ids are a primary key across topics, and shrinking replays cases: salt them per call.
    let salt = Uuid::new_v4().as_u128();
    let mut seen = std::collections::HashSet::new();
    let events: Vec<Event> = raw
        .iter()
        .filter(|(id, ..)| seen.insert(*id))
        .map(|(id, ts, producer, payload)| Event {
            id: Uuid::from_u128(*id ^ salt),
            topic: topic.to_owned(),
            timestamp: *ts,
            producer: producer.clone(),
            payload: payload.clone(),
        })
        .collect();
    let rows: Vec<NewRow> = events
        .iter()
        .map(|e| NewRow {
            id: e.id,
            topic: e.topic.clone(),
            received_at: e.timestamp,
            producer: e.producer.clone(),
            payload: e.payload.clone(),
        })
        .collect();
    if !rows.is_empty() {
        let mut conn = db.writer.get().await.expect("writer connection");
        diesel::insert_into(events::table)
            .values(&rows)
            .execute(&mut *conn)
            .await
            .expect("insert");
        // Their rollups, as a writer adds them: per minute, one row per insert (a minute stored by
        // several inserts has several rows, which the stats-api sums).
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        diesel::sql_query(
            "INSERT INTO event_counts (topic, minute, xact_id, events) \
             SELECT topic, date_trunc('minute', received_at, 'UTC'), pg_current_xact_id()::text::bigint, count(*) \
             FROM events WHERE topic = $1 AND id = ANY($2) GROUP BY 1, 2",
        )
        .bind::<diesel::sql_types::Text, _>(topic)
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&ids)
        .execute(&mut *conn)
        .await
        .expect("insert rollups");
    }
    events
}

/// The numbers both tests draw from (the start of each one's list): equal ones written differently,
/// fractions, negatives.
pub fn numbers() -> Vec<Value> {
    vec![
        json!(-1),
        json!(0),
        json!(1),
        json!(1.0),
        json!(2),
        json!(0.5),
        json!(-0.25),
    ]
}

/// A JSON object of the members that are present (drawn by [`maybe`]), in the order given.
pub fn object_of<'a>(
    members: impl IntoIterator<Item = (&'a str, Option<Value>)>,
) -> Map<String, Value> {
    members
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect()
}

/// Present, missing, null, or of the wrong type.
pub fn maybe(values: BoxedStrategy<Value>, wrong: Value) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        6 => values.prop_map(Some),
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => Just(Some(wrong)),
    ]
    .boxed()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The number of cases: from the environment variable `var` when set to a number, else `default`.
pub fn cases_from_env(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `test` on `cases` values of `strategy`; panics with proptest's report (the shrunk failing input)
/// on the first failure. Nothing is persisted: each run draws new cases.
pub fn check<S: Strategy>(
    cases: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(strategy, test) {
        panic!("{e}");
    }
}
