//! The plans Postgres chooses for the generated queries on a realistic amount of data (120,000 events over
//! three topics, statistics up to date, no planner switches): the default order and deep cursor pages are
//! served by the `(topic, received_at, id)` btree without a sort, payload equality by the GIN index (inside
//! arrays too: `jobs[].status`), and fields a topic declares indexed by their expression indexes.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{json, Value};

use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::{build_pool, PgPool};
use eventgate_core::envelope::Event;
use eventgate_core::query::{
    plan, CursorKey, FieldCatalogue, QueryLimits, QueryPlan, QueryRequest,
};
use eventgate_stats_api::db::page::load_events;
use eventgate_stats_api::db::query_sql::{page_sql, Bind, SqlParts};

const TOPIC: &str = "public.cps.za.runs";

struct Ctx {
    reader: PgPool,
    fields: FieldCatalogue,
    key: CursorKey,
}

async fn setup() -> Ctx {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let mut conn = AsyncPgConnection::establish(&db.writer_url)
        .await
        .expect("writer connection");
    // 40,000 events per topic, one per second, 1,000 distinct source apps.
    //
    // Statistics are made deterministic: with a target of 1,000 ANALYZE samples all 120,000 rows (300 rows per
    // unit of target), where the default samples 30,000 at random. Postgres estimates `payload @> …` from
    // the payload column's histogram of whole values; when a random sample happened to put a "failed" run
    // among its ~100 bounds the estimate jumped from 0.01 % to 1 % and the plan flipped to the btree (about
    // one run in twenty). Over the whole table the bounds are every 120th event in payload order (which is
    // `i` order here), and the failed runs (`i % 3000 = 1500`) are never among them: the estimate is the
    // planner's floor, as it is on a real history where a rare value is rare in the sample too.
    conn.batch_execute(
        "INSERT INTO events (id, topic, received_at, producer, payload)
         SELECT gen_random_uuid(),
                (ARRAY['public.cps.za.runs', 'audit.logs', 'web.events'])[1 + i % 3],
                timestamptz '2025-01-01' + i * interval '1 second',
                'producer-' || (i % 7),
                jsonb_build_object('source_app', 'app-' || (i % 1000), 'run_id', i,
                                   'timestamp_start', 1735689600000 + i * 1000::bigint,
                                   'jobs', jsonb_build_array(
                                       jsonb_build_object('status', 'succeeded', 'timestamp_start', 1735689600000 + i * 1000::bigint),
                                       jsonb_build_object('status', CASE WHEN i % 3000 = 1500 THEN 'failed' ELSE 'succeeded' END,
                                                          'timestamp_start', 1735689600000 + i * 1000::bigint + 500)))
         FROM generate_series(1, 120000) AS i;
         ALTER TABLE events ALTER COLUMN payload SET STATISTICS 1000;
         ANALYZE events;",
    )
    .await
    .expect("generate history");
    let topics_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics");
    let catalogue = eventgate_core::catalogue::Catalogue::load_dir(&topics_dir).expect("catalogue");
    // Idempotent: the template database may have them already (`eventgate migrate` creates them).
    eventgate_core::db::ensure_field_indexes(&db.admin_url, &catalogue)
        .await
        .expect("field indexes");
    let field_indexes = db
        .count("SELECT count(*) FROM pg_indexes WHERE tablename = 'events' AND indexname LIKE 'events\\_field\\_%'")
        .await
        .expect("count field indexes");
    assert!(
        field_indexes >= 2,
        "source_app and timestamp_start are declared indexed"
    );
    conn.batch_execute("ANALYZE events").await.expect("analyze");
    let schema = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config/topics/public.cps.za.runs.json"),
    )
    .expect("schema file");
    let schema: Value = serde_json::from_str(&schema).expect("schema JSON");
    let mut fields = FieldCatalogue::from_schema(&schema);
    fields
        .mark_indexed(&["source_app".to_owned(), "timestamp_start".to_owned()])
        .expect("indexable");
    Ctx {
        reader: build_pool(&db.reader_url, &PoolSettings::new(1)).expect("reader pool"),
        fields,
        key: CursorKey::new(b"explain-test-secret"),
    }
}

fn plan_for(ctx: &Ctx, request: Value) -> QueryPlan {
    let request = QueryRequest::from_json(&request).expect("request");
    plan(
        TOPIC,
        &request,
        &ctx.fields,
        &QueryLimits::default(),
        &ctx.key,
    )
    .expect("plan")
}

async fn explain(ctx: &Ctx, plan: &QueryPlan) -> String {
    let parts = page_sql(TOPIC, plan);
    let explain = SqlParts {
        sql: format!("EXPLAIN {}", parts.sql),
        binds: parts.binds,
    };
    let reader = ctx.reader.get().await.expect("reader connection");
    let lines = reader
        .query_typed(&explain.sql, &explain.params())
        .await
        .expect("explain");
    lines
        .iter()
        .map(|row| row.try_get::<_, String>(0).expect("a plan line"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The event at `depth` in the default order, to make a cursor from.
async fn event_at_depth(ctx: &Ctx, depth: i64) -> Event {
    let rows = load_events(
        &ctx.reader,
        &SqlParts {
            sql: "SELECT id, topic, received_at, producer, payload FROM events WHERE topic = $1
                  ORDER BY received_at DESC, id DESC OFFSET $2 LIMIT 1"
                .to_owned(),
            binds: vec![Bind::Text(TOPIC.to_owned()), Bind::BigInt(depth)],
        },
    )
    .await
    .expect("row at depth");
    Event::from(rows.into_iter().next().expect("a row at that depth"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_use_the_indexes() {
    let ctx = setup().await;

    let first = plan_for(&ctx, json!({}));
    let text = explain(&ctx, &first).await;
    assert!(
        text.contains("Index Scan Backward using events_topic_received_at_id"),
        "first page:\n{text}"
    );
    assert!(
        !text.contains("Sort") && !text.contains("Seq Scan"),
        "first page:\n{text}"
    );

    let deep = event_at_depth(&ctx, 30_000).await;
    let cursor = first.next_cursor(&deep, &ctx.key);
    let deep_plan = plan_for(&ctx, json!({"cursor": cursor}));
    let text = explain(&ctx, &deep_plan).await;
    assert!(
        text.contains("Index Scan Backward using events_topic_received_at_id"),
        "deep page:\n{text}"
    );
    assert!(
        text.contains("ROW(received_at, id) <"),
        "the keyset is an index condition:\n{text}"
    );
    assert!(
        !text.contains("Sort") && !text.contains("Seq Scan"),
        "deep page:\n{text}"
    );

    // A selective equality on a payload field (1 of 40,000 events) is found through the GIN index.
    let selective = plan_for(&ctx, json!({"filter": {"run_id": 7}}));
    let text = explain(&ctx, &selective).await;
    assert!(
        text.contains("Bitmap Index Scan on events_payload_path_ops"),
        "equality:\n{text}"
    );
    assert!(!text.contains("Seq Scan"), "equality:\n{text}");

    // "Runs with a failed job" (one in 1,000 runs: 40 of 40,000): containment inside the array, through the GIN index.
    for filter in [
        json!({"jobs[].status": "failed"}),
        json!({"jobs[].status_in": ["failed", "killed"]}),
    ] {
        let failed = plan_for(&ctx, json!({ "filter": filter }));
        let text = explain(&ctx, &failed).await;
        assert!(
            text.contains("Bitmap Index Scan on events_payload_path_ops"),
            "{filter}:\n{text}"
        );
        assert!(!text.contains("Seq Scan"), "{filter}:\n{text}");
        let rows = load_events(&ctx.reader, &page_sql(TOPIC, &failed))
            .await
            .expect("runs with a failed job");
        assert_eq!(
            rows.len(),
            40,
            "{filter}: every 3,000th event, all in this topic"
        );
    }
    // A range inside the array is checked per row, on the rows the topic's btree gives in order: the
    // first page stops as soon as it is full, never a scan of the table.
    let range = plan_for(
        &ctx,
        json!({"filter": {"jobs[].timestamp_start_gt": "2025-01-01T10:00:00Z"}}),
    );
    let text = explain(&ctx, &range).await;
    assert!(
        text.contains("events_topic_received_at_id") && !text.contains("Seq Scan"),
        "range inside an array:\n{text}"
    );

    // Equality and `_in` on a field the topic declares indexed (40 and 200 of 40,000 events) compare its
    // expression, which has statistics: its index (or the time order), never a guess through the GIN.
    for filter in [
        json!({"source_app": "app-7"}),
        json!({"source_app_in": ["app-1", "app-2", "app-3", "app-4", "app-5"]}),
    ] {
        let indexed = plan_for(&ctx, json!({ "filter": filter }));
        let text = explain(&ctx, &indexed).await;
        assert!(
            !text.contains("events_payload_path_ops") && !text.contains("Seq Scan"),
            "{filter}:\n{text}"
        );
        assert!(text.contains("Index"), "{filter}:\n{text}");
    }

    // The seed request's shape: equality + time range on an epoch-ms field + sort on it.
    let seed = plan_for(
        &ctx,
        json!({"filter": {"source_app": "app-7", "timestamp_start_between": ["2025-01-01", "2025-01-31"]},
               "sort": ["-timestamp_start", "source_app"]}),
    );
    let text = explain(&ctx, &seed).await;
    assert!(text.contains("Index"), "seed request:\n{text}");
    assert!(!text.contains("Seq Scan"), "seed request:\n{text}");

    // A field the topic declares indexed: sorting by it and paging deep is served by its expression
    // index, without a sort, like the default order.
    let by_start = plan_for(&ctx, json!({"sort": ["-timestamp_start"]}));
    let text = explain(&ctx, &by_start).await;
    assert!(
        text.contains("Index Scan Backward using events_field_"),
        "sort by an indexed field:\n{text}"
    );
    assert!(
        !text.contains("Sort") && !text.contains("Seq Scan"),
        "sort by an indexed field:\n{text}"
    );
    let deep_by_start = plan_for(
        &ctx,
        json!({"sort": ["-timestamp_start"], "cursor": by_start.next_cursor(&deep, &ctx.key)}),
    );
    let text = explain(&ctx, &deep_by_start).await;
    assert!(
        text.contains("using events_field_"),
        "deep page by an indexed field:\n{text}"
    );
    assert!(
        !text.contains("Seq Scan"),
        "deep page by an indexed field:\n{text}"
    );
}
