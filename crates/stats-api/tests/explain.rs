//! The plans Postgres chooses for the generated queries on a realistic amount of data (120,000 events over
//! three topics and two days, moved into their daily partitions by the maintenance, statistics up to
//! date, no planner switches): the default order and deep cursor pages are served by the
//! `(topic, received_at, id)` btree without a sort, payload equality by the topic's GIN index (inside
//! arrays too: `jobs[].status`), fields a topic declares indexed by their expression indexes — and
//! queries touch only the partitions they need: the first page never reads the older day, a deep page
//! and a time range do not even plan the partitions outside their time.

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
    /// The first of the two days of events (midnight UTC, two days ago).
    first_day: time::OffsetDateTime,
    reader: PgPool,
    fields: FieldCatalogue,
    key: CursorKey,
}

/// `events_p20261201`: the span of `day`.
fn span(day: time::OffsetDateTime) -> String {
    format!(
        "events_p{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

async fn setup() -> Ctx {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let mut conn = AsyncPgConnection::establish(&db.writer_url)
        .await
        .expect("writer connection");
    let first_day = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT)
        - time::Duration::days(2);
    // The two days' partitions first (split off events_before, as a bulk load does), with the topics'
    // indexes: the events go straight into them.
    let topics_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics");
    let catalogue = eventgate_core::catalogue::Catalogue::load_dir(&topics_dir).expect("catalogue");
    let policy = eventgate_core::db::StoragePolicy::new(
        &catalogue,
        &eventgate_core::config::StorageConfig::default(),
    );
    eventgate_core::db::partitions::maintain_covering(&db.writer_url, &policy, first_day)
        .await
        .expect("maintenance");
    // 40,000 events per topic, one per second from the first day's midnight, 1,000 distinct source apps.
    //
    // Statistics are deterministic: each topic's partition of a day holds at most 28,800 of these
    // events, under the 30,000 rows ANALYZE samples by default, so every row is in the sample. Postgres
    // estimates `payload @> …` from the payload column's histogram of whole values; when a random
    // sample happened to put a "failed" run among its ~100 bounds the estimate jumped from 0.01 % to 1 %
    // and the plan flipped to the btree. Over whole partitions the bounds are fixed, and the failed runs
    // (`i % 3000 = 1500`) are not among them.
    conn.batch_execute(&format!(
        "INSERT INTO events (id, topic, received_at, producer, payload)
         SELECT gen_random_uuid(),
                (ARRAY['public.cps.za.runs', 'audit.logs', 'web.events'])[1 + i % 3],
                timestamptz '{first}' + i * interval '1 second',
                'producer-' || (i % 7),
                jsonb_build_object('source_app', 'app-' || (i % 1000), 'run_id', i,
                                   'timestamp_start', 1735689600000 + i * 1000::bigint,
                                   'jobs', jsonb_build_array(
                                       jsonb_build_object('status', 'succeeded', 'timestamp_start', 1735689600000 + i * 1000::bigint),
                                       jsonb_build_object('status', CASE WHEN i % 3000 = 1500 THEN 'failed' ELSE 'succeeded' END,
                                                          'timestamp_start', 1735689600000 + i * 1000::bigint + 500)))
         FROM generate_series(1, 120000) AS i",
        first = first_day
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    ))
    .await
    .expect("generate history");
    let field_indexes = db
        .count(&format!(
            "SELECT count(*) FROM pg_indexes WHERE tablename LIKE '{}\\_public\\_cps%' \
             AND indexname ~ '_f[0-9a-f]{{16}}$'",
            span(first_day)
        ))
        .await
        .expect("count field indexes");
    assert_eq!(
        field_indexes, 2,
        "source_app and timestamp_start are declared indexed"
    );
    // VACUUM too, as autovacuum would have: it empties the GIN indexes' pending lists, which a plain
    // ANALYZE leaves full (the planner then prices the GIN index by the pending pages it must read).
    conn.batch_execute("VACUUM (ANALYZE) events")
        .await
        .expect("vacuum analyze");
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
        first_day,
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
    explain_with(ctx, plan, "EXPLAIN").await
}

/// `EXPLAIN (ANALYZE)`: which partitions were read (`never executed` for those that were not).
async fn explain_analyze(ctx: &Ctx, plan: &QueryPlan) -> String {
    explain_with(ctx, plan, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)").await
}

/// The plan's lines, `explain` (the command and its options) before the page query.
async fn explain_with(ctx: &Ctx, plan: &QueryPlan, explain: &str) -> String {
    let parts = page_sql(TOPIC, plan);
    let explained = SqlParts {
        sql: format!("{explain} {}", parts.sql),
        binds: parts.binds,
    };
    let reader = ctx.reader.get().await.expect("reader connection");
    let lines = reader
        .query_typed(&explained.sql, &explained.params())
        .await
        .unwrap_or_else(|e| panic!("{explain}: {e}"));
    lines
        .iter()
        .map(|row| row.try_get::<_, String>(0).expect("a plan line"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the plan reads a partition that holds events (one of the two days') with a sequential scan.
/// The empty partitions around them (today's, those ahead, `events_before`, `events_after`) are read
/// sequentially at no cost, rightly.
fn reads_events_sequentially(ctx: &Ctx, text: &str) -> bool {
    let days = [
        span(ctx.first_day),
        span(ctx.first_day + time::Duration::days(1)),
    ];
    text.lines().any(|line| {
        line.contains("Seq Scan on") && days.iter().any(|day| line.contains(day.as_str()))
    })
}

/// Whether the plan has a sort node (a Merge Append's `Sort Key` merges ordered inputs: no sort).
fn sorts(text: &str) -> bool {
    text.lines().any(|line| {
        let node = line.trim_start().trim_start_matches("->").trim_start();
        // A node is its name and two spaces before its costs; `Sort Key:` is a merge's detail.
        node.starts_with("Sort  (") || node.starts_with("Incremental Sort  (")
    })
}

/// The plan line that names `needle`.
fn line_of<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line names {needle}:\n{text}"))
}

/// Whether a plan line scans a field's expression index (`<partition>_f<16 hex digits>`).
fn uses_field_index(line: &str) -> bool {
    line.split_whitespace().any(|word| {
        word.len() > 18
            && word.as_bytes()[word.len() - 18] == b'_'
            && word.as_bytes()[word.len() - 17] == b'f'
            && word[word.len() - 16..]
                .chars()
                .all(|c| c.is_ascii_hexdigit())
    })
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
        text.contains("Index Scan Backward using") && text.contains("topic_received_at_id"),
        "first page:\n{text}"
    );
    // The newest day fills the page: the older day's partition is planned, never read.
    let analysed = explain_analyze(&ctx, &first).await;
    let older = line_of(&analysed, &format!("{}_public", span(ctx.first_day)));
    assert!(older.contains("never executed"), "first page:\n{analysed}");
    assert!(
        !sorts(&text) && !reads_events_sequentially(&ctx, &text),
        "first page:\n{text}"
    );

    let deep = event_at_depth(&ctx, 30_000).await;
    let cursor = first.next_cursor(&deep, &ctx.key);
    let deep_plan = plan_for(&ctx, json!({"cursor": cursor}));
    let text = explain(&ctx, &deep_plan).await;
    assert!(
        text.contains("Index Scan Backward using") && text.contains("topic_received_at_id"),
        "deep page:\n{text}"
    );
    // The cursor is on the first day: the second day's partitions are not even planned.
    assert!(
        text.contains(&format!("{}_", span(ctx.first_day)))
            && !text.contains(&format!(
                "{}_",
                span(ctx.first_day + time::Duration::days(1))
            )),
        "deep page prunes the newer day:\n{text}"
    );
    assert!(
        text.contains("ROW(received_at, id) <"),
        "the keyset is an index condition:\n{text}"
    );
    assert!(
        !sorts(&text) && !reads_events_sequentially(&ctx, &text),
        "deep page:\n{text}"
    );

    // A selective equality on a payload field (1 of 40,000 events) is found through the GIN index.
    let selective = plan_for(&ctx, json!({"filter": {"run_id": 7}}));
    let text = explain(&ctx, &selective).await;
    assert!(
        text.contains("Bitmap Index Scan on") && text.contains("_gin"),
        "equality:\n{text}"
    );
    assert!(!reads_events_sequentially(&ctx, &text), "equality:\n{text}");

    // "Runs with a failed job" (one in 1,000 runs: 40 of 40,000): containment inside the array, through the GIN index.
    for filter in [
        json!({"jobs[].status": "failed"}),
        json!({"jobs[].status_in": ["failed", "killed"]}),
    ] {
        let failed = plan_for(&ctx, json!({ "filter": filter }));
        let text = explain(&ctx, &failed).await;
        assert!(
            text.contains("Bitmap Index Scan on") && text.contains("_gin"),
            "{filter}:\n{text}"
        );
        assert!(!reads_events_sequentially(&ctx, &text), "{filter}:\n{text}");
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
        text.contains("topic_received_at_id") && !reads_events_sequentially(&ctx, &text),
        "range inside an array:\n{text}"
    );

    // A range of time: only the partitions of its day are planned.
    let at = |hours: i64| {
        (ctx.first_day + time::Duration::hours(hours))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let morning = plan_for(
        &ctx,
        json!({"filter": {"timestamp_between": [at(8), at(12)]}}),
    );
    let text = explain(&ctx, &morning).await;
    assert!(
        text.contains(&format!("{}_", span(ctx.first_day)))
            && !text.contains(&format!(
                "{}_",
                span(ctx.first_day + time::Duration::days(1))
            )),
        "a time range prunes the other day:\n{text}"
    );
    assert!(
        !reads_events_sequentially(&ctx, &text),
        "time range:\n{text}"
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
            !text.contains("_gin") && !reads_events_sequentially(&ctx, &text),
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
    assert!(
        !reads_events_sequentially(&ctx, &text),
        "seed request:\n{text}"
    );

    // A field the topic declares indexed: sorting by it and paging deep is served by its expression
    // index in each partition, merged in order (a Merge Append), without a sort.
    let by_start = plan_for(&ctx, json!({"sort": ["-timestamp_start"]}));
    let text = explain(&ctx, &by_start).await;
    assert!(
        text.lines()
            .any(|line| line.contains("Index Scan Backward using") && uses_field_index(line)),
        "sort by an indexed field:\n{text}"
    );
    assert!(
        !sorts(&text) && !reads_events_sequentially(&ctx, &text),
        "sort by an indexed field:\n{text}"
    );
    let deep_by_start = plan_for(
        &ctx,
        json!({"sort": ["-timestamp_start"], "cursor": by_start.next_cursor(&deep, &ctx.key)}),
    );
    let text = explain(&ctx, &deep_by_start).await;
    assert!(
        text.lines().any(uses_field_index),
        "deep page by an indexed field:\n{text}"
    );
    assert!(
        !reads_events_sequentially(&ctx, &text),
        "deep page by an indexed field:\n{text}"
    );
}
