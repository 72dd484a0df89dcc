//! Auto-indexes end to end on a real Postgres: analysts' queries over HTTP filter `public.cps.za.runs`
//! by `tenant_id`, which the topic does not declare indexed → the stats-api counts the uses and flushes
//! them into `field_usage` → the maintenance gives the field an expression index on every leaf of the
//! topic → the stats-api, having read `auto_indexed_fields` again, compares the indexed expression, and
//! Postgres's plan for the query uses the new index; the answers stay the same. Likewise a sort by two
//! fields gets a composite index its pages use.

mod common;

use std::time::Duration;

use serde_json::Value;

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::StorageConfig;
use eventgate_core::db::auto_index::sort_index_definition;
use eventgate_core::db::field_index::expression_hash;
use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::typed_value::LiteralPaths;
use eventgate_core::db::{build_pool, StoragePolicy};
use eventgate_core::envelope::Event;
use eventgate_core::query::{plan, CursorKey, FieldType, QueryLimits, QueryPlan, QueryRequest};
use eventgate_stats_api::db::page::load_events;
use eventgate_stats_api::db::query_sql::{page_sql, Bind, SqlParts};
use eventgate_stats_api::field_usage::FieldUsage;
use eventgate_test_support::{stack, token, wait_until};

use common::{repo_root, start_stats_api_on};

const TOPIC: &str = "public.cps.za.runs";

fn policy() -> StoragePolicy {
    let catalogue = Catalogue::load_dir(&repo_root().join("config/topics")).expect("catalogue");
    let storage = StorageConfig {
        auto_index_min_uses: 3,
        ..StorageConfig::default()
    };
    StoragePolicy::new(&catalogue, &storage)
}

/// The ids of the answer to `GET /stats/{TOPIC}?tenant_id=<tenant>`.
async fn ids_of_tenant(url: &str, tenant: &str) -> Vec<String> {
    let response = reqwest::Client::new()
        .get(format!("{url}/stats/{TOPIC}"))
        .query(&[("tenant_id", tenant), ("limit", "100")])
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("query");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|event| event["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_analysts_filter_by_get_an_index_the_queries_use() {
    let database = stack().await.fresh_database().await;
    let policy = policy();
    let first_day = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT)
        - time::Duration::days(1);
    eventgate_core::db::partitions::maintain_covering(&database.writer_url, &policy, first_day)
        .await
        .expect("partitions");
    // 40,000 runs over two days, 1,000 tenants: 40 runs each.
    database
        .execute(&format!(
            "INSERT INTO events (id, topic, received_at, producer, payload)
             SELECT gen_random_uuid(), '{TOPIC}', timestamptz '{first}' + i * interval '2 seconds', 'p',
                    jsonb_build_object('tenant_id', 'tenant-' || (i % 1000), 'source_app', 'app-' || (i % 50),
                                       'timestamp_start', 1735689600000 + i * 1000::bigint)
             FROM generate_series(1, 40000) AS i",
            first = first_day
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format")
        ))
        .await
        .expect("history");
    // VACUUM runs outside a transaction block: a statement of its own.
    database
        .execute("VACUUM (ANALYZE) events")
        .await
        .expect("vacuum");

    let api = start_stats_api_on(database.clone(), |c| {
        c.stats.field_usage_flush_ms = 100;
        c.stats.auto_index_refresh_ms = 100;
    })
    .await;
    let before = ids_of_tenant(&api.url, "tenant-7").await;
    assert_eq!(before.len(), 40);
    for _ in 0..2 {
        ids_of_tenant(&api.url, "tenant-7").await;
    }
    wait_until("the uses flushed", Duration::from_secs(20), || async {
        database
            .count(&format!(
                "SELECT coalesce(sum(uses), 0) FROM field_usage \
                 WHERE topic = '{TOPIC}' AND field = 'tenant_id'"
            ))
            .await
            .is_ok_and(|uses| uses >= 3)
    })
    .await
    .expect("field_usage holds the three uses");
    let metrics = reqwest::get(format!("{}/metrics", api.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|l| l
            .starts_with("eventgate_stats_field_usage_flushes_total{outcome=\"ok\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );

    let maintained = eventgate_core::db::maintain_now(&database.writer_url, &policy)
        .await
        .expect("maintenance");
    assert_eq!(
        maintained.report.auto_indexes_chosen,
        [format!("{TOPIC} tenant_id")],
        "{:?}",
        maintained.report
    );
    assert_eq!(maintained.auto_indexes[TOPIC], ["tenant_id"]);
    let tenant = LiteralPaths::typed_value(FieldType::String, &["tenant_id".to_owned()])
        .expect("plain path");
    let suffix = format!("_f{}", expression_hash(&tenant));
    let (leaves, indexed) = (
        database
            .count(&format!(
                "SELECT count(*) FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid
                 WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (''{TOPIC}'')'"
            ))
            .await
            .expect("leaves"),
        database
            .count(&format!(
                "SELECT count(*) FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid
                 JOIN pg_index x ON x.indrelid = c.oid JOIN pg_class i ON i.oid = x.indexrelid
                 WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (''{TOPIC}'')'
                   AND i.relname = c.relname || '{suffix}' AND x.indisvalid"
            ))
            .await
            .expect("indexes"),
    );
    assert!(
        leaves >= 5,
        "two past days, today and the spans ahead: {leaves}"
    );
    assert_eq!(indexed, leaves, "the auto-index on every leaf of the topic");

    // The stats-api's view of it: what its refresh reads, applied to the query's plan as it does.
    let reader = build_pool(&database.reader_url, &PoolSettings::new(1)).expect("reader pool");
    let usage = FieldUsage::new(&prometheus::Registry::new());
    usage.refresh(&reader).await;
    let catalogue = Catalogue::load_dir(&repo_root().join("config/topics")).expect("catalogue");
    let fields = &catalogue.get(TOPIC).expect("the topic").fields;
    let request =
        QueryRequest::from_json(&serde_json::json!({"filter": {"tenant_id": "tenant-7"}}))
            .expect("request");
    let mut query = plan(
        TOPIC,
        &request,
        fields,
        &QueryLimits::default(),
        &CursorKey::new(b"auto-index-test-key"),
    )
    .expect("plan");
    usage.mark_indexed(TOPIC, &mut query);
    assert!(query.filters[0].field.indexed, "tenant_id is auto-indexed");
    let parts = page_sql(TOPIC, &query);
    let explain = SqlParts {
        sql: format!("EXPLAIN {}", parts.sql),
        binds: parts.binds,
    };
    let conn = reader.get().await.expect("connection");
    let text: Vec<String> = conn
        .query_typed(&explain.sql, &explain.params())
        .await
        .expect("EXPLAIN")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let text = text.join("\n");
    assert!(
        text.contains(&suffix),
        "the plan uses the auto-index:\n{text}"
    );

    // The stats-api's own refresh (every 100 ms) took it too; the answer is the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = ids_of_tenant(&api.url, "tenant-7").await;
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(after, before);
}

/// The ids of the pages of `GET /stats/{TOPIC}?sort=<sort>&limit=<limit>`, following the cursor `pages`
/// times.
async fn pages_sorted(url: &str, sort: &str, limit: &str, pages: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..pages {
        let mut query = vec![("sort", sort.to_owned()), ("limit", limit.to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let response = reqwest::Client::new()
            .get(format!("{url}/stats/{TOPIC}"))
            .query(&query)
            .bearer_auth(token("dev"))
            .send()
            .await
            .expect("query");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON");
        out.push(
            body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|event| event["id"].as_str().expect("id").to_owned())
                .collect(),
        );
        cursor = body["pagination"]["cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    out
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of the page query of `query`: the plan and its execution time (ms).
async fn explain_analyze(reader: &eventgate_core::db::PgPool, query: &QueryPlan) -> (String, f64) {
    let parts = page_sql(TOPIC, query);
    let explain = SqlParts {
        sql: format!("EXPLAIN (ANALYZE, BUFFERS) {}", parts.sql),
        binds: parts.binds,
    };
    let conn = reader.get().await.expect("connection");
    let text: Vec<String> = conn
        .query_typed(&explain.sql, &explain.params())
        .await
        .expect("EXPLAIN")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let text = text.join("\n");
    let ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Execution Time: "))
        .and_then(|l| l.trim_end_matches(" ms").parse().ok())
        .expect("execution time");
    (text, ms)
}

/// How many sort nodes the plan has (a Merge Append's `Sort Key` merges ordered inputs: no sort).
fn sorts(text: &str) -> usize {
    text.lines()
        .filter(|line| {
            let node = line.trim_start().trim_start_matches("->").trim_start();
            // A node is its name and two spaces before its costs; `Sort Key:` is a merge's detail.
            node.starts_with("Sort  (") || node.starts_with("Incremental Sort  (")
        })
        .count()
}

/// A sort by two payload fields (`source_app` declared, `-timestamp_start`): counted as a sort, given a
/// composite `_s` index ordered as the page query's `ORDER BY`, which Postgres then merges in order
/// (first page and a page after a cursor in the middle, split at the first key's "no value"); the
/// answers stay the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorts_by_two_fields_get_a_composite_index_the_pages_use() {
    const SORT: &str = "source_app,-timestamp_start";
    let database = stack().await.fresh_database().await;
    let policy = policy();
    let first_day = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT)
        - time::Duration::days(1);
    eventgate_core::db::partitions::maintain_covering(&database.writer_url, &policy, first_day)
        .await
        .expect("partitions");
    // 120,000 runs over two days, 50 apps (2,400 runs each, a group the index of `source_app` alone
    // makes Postgres sort), one run in 97 without an app (last in the order).
    database
        .execute(&format!(
            "INSERT INTO events (id, topic, received_at, producer, payload)
             SELECT gen_random_uuid(), '{TOPIC}', timestamptz '{first}' + i * interval '1 second', 'p',
                    jsonb_build_object('tenant_id', 'tenant-' || (i % 1000),
                                       'source_app', CASE WHEN i % 97 = 0 THEN NULL ELSE 'app-' || (i % 50) END,
                                       'timestamp_start', 1735689600000 + ((i * 7919) % 120000) * 1000::bigint)
             FROM generate_series(1, 120000) AS i",
            first = first_day
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format")
        ))
        .await
        .expect("history");
    database
        .execute("VACUUM (ANALYZE) events")
        .await
        .expect("vacuum");

    let api = start_stats_api_on(database.clone(), |c| {
        c.stats.field_usage_flush_ms = 100;
        c.stats.auto_index_refresh_ms = 100;
    })
    .await;
    let before = pages_sorted(&api.url, SORT, "1000", 3).await;
    assert_eq!(before.len(), 3);
    let key = format!("sort:{SORT}");
    wait_until("the uses flushed", Duration::from_secs(20), || async {
        database
            .count(&format!(
                "SELECT coalesce(sum(uses), 0) FROM field_usage \
                 WHERE topic = '{TOPIC}' AND field = '{key}'"
            ))
            .await
            .is_ok_and(|uses| uses >= 3)
    })
    .await
    .expect("field_usage holds the sort's three uses");

    // The page queries as the stats-api writes them, and a cursor in the middle of the order.
    let reader = build_pool(&database.reader_url, &PoolSettings::new(1)).expect("reader pool");
    let catalogue = Catalogue::load_dir(&repo_root().join("config/topics")).expect("catalogue");
    let fields = &catalogue.get(TOPIC).expect("the topic").fields;
    let cursor_key = CursorKey::new(b"auto-index-test-key");
    let plan_of = |cursor: Option<String>| {
        let mut request = QueryRequest::from_json(&serde_json::json!({
            "sort": ["source_app", "-timestamp_start"]
        }))
        .expect("request");
        request.cursor = cursor;
        plan(
            TOPIC,
            &request,
            fields,
            &QueryLimits::default(),
            &cursor_key,
        )
        .expect("plan")
    };
    let first_page = plan_of(None);
    let middle = load_events(
        &reader,
        &SqlParts {
            sql: "SELECT id, topic, received_at, producer, payload FROM events WHERE topic = $1
                  AND payload @> '{\"source_app\": \"app-25\"}' ORDER BY id LIMIT 1"
                .to_owned(),
            binds: vec![Bind::Text(TOPIC.to_owned())],
        },
    )
    .await
    .expect("a run of app-25");
    let middle = Event::from(middle.into_iter().next().expect("a run of app-25"));
    let deep_page = plan_of(Some(first_page.next_cursor(&middle, &cursor_key)));
    let deep_sql = page_sql(TOPIC, &deep_page).sql;
    assert!(deep_sql.contains(" UNION ALL ("), "{deep_sql}");
    let deep_rows_before = load_events(&reader, &page_sql(TOPIC, &deep_page))
        .await
        .expect("deep page");
    let (first_before, first_ms_before) = explain_analyze(&reader, &first_page).await;
    let (deep_before, deep_ms_before) = explain_analyze(&reader, &deep_page).await;

    let maintained = eventgate_core::db::maintain_now(&database.writer_url, &policy)
        .await
        .expect("maintenance");
    assert_eq!(
        maintained.report.auto_indexes_chosen,
        [format!("{TOPIC} {key}")],
        "{:?}",
        maintained.report
    );
    assert_eq!(maintained.auto_indexes[TOPIC], std::slice::from_ref(&key));
    let definition =
        sort_index_definition(&policy.topics[TOPIC].sort_columns, &key).expect("a definition");
    let source_app = LiteralPaths::typed_value(FieldType::String, &["source_app".to_owned()])
        .expect("plain path");
    let start = LiteralPaths::typed_value(FieldType::EpochMillis, &["timestamp_start".to_owned()])
        .expect("plain path");
    assert_eq!(
        definition,
        format!("(topic, {source_app}, {start} DESC, id DESC)")
    );
    let suffix = format!("_s{}", expression_hash(&definition));
    let (leaves, indexed) = (
        database
            .count(&format!(
                "SELECT count(*) FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid
                 WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (''{TOPIC}'')'"
            ))
            .await
            .expect("leaves"),
        database
            .count(&format!(
                "SELECT count(*) FROM pg_partition_tree('events') t JOIN pg_class c ON c.oid = t.relid
                 JOIN pg_index x ON x.indrelid = c.oid JOIN pg_class i ON i.oid = x.indexrelid
                 WHERE t.isleaf AND pg_get_expr(c.relpartbound, c.oid) = 'FOR VALUES IN (''{TOPIC}'')'
                   AND i.relname = c.relname || '{suffix}' AND x.indisvalid"
            ))
            .await
            .expect("indexes"),
    );
    assert!(
        leaves >= 5,
        "two past days, today and the spans ahead: {leaves}"
    );
    assert_eq!(indexed, leaves, "the sort index on every leaf of the topic");

    // The stats-api's view: the sort's keys are written as the index's expressions.
    let usage = FieldUsage::new(&prometheus::Registry::new());
    usage.refresh(&reader).await;
    let mut first_page = first_page;
    let mut deep_page = deep_page;
    usage.mark_indexed(TOPIC, &mut first_page);
    usage.mark_indexed(TOPIC, &mut deep_page);
    assert!(first_page.sort.iter().take(2).all(|k| k.field.indexed));
    let (first_after, first_ms_after) = explain_analyze(&reader, &first_page).await;
    let (deep_after, deep_ms_after) = explain_analyze(&reader, &deep_page).await;
    eprintln!(
        "first page: {first_ms_before} ms → {first_ms_after} ms; page after a cursor in the middle: \
         {deep_ms_before} ms → {deep_ms_after} ms\n--- first page before:\n{first_before}\n--- after:\n\
         {first_after}\n--- deep page before:\n{deep_before}\n--- after:\n{deep_after}"
    );
    assert!(
        first_after.contains(&suffix)
            && first_after.contains("Merge Append")
            && sorts(&first_after) == 0,
        "the plan merges the sort index in order:\n{first_after}"
    );
    // The deep page: each half merges the index in order; only the union's at most 2 × 51 rows are
    // sorted.
    assert!(
        deep_after.matches("Merge Append").count() == 2
            && deep_after.contains(&suffix)
            && sorts(&deep_after) == 1,
        "{deep_after}"
    );
    let top_sort = deep_after
        .lines()
        .find(|l| l.contains("Sort  ("))
        .expect("the union's sort");
    assert!(top_sort.contains("rows=51 loops=1)"), "{deep_after}");
    // The deep page's halves: the index range from the cursor's app on, and the runs without one.
    let index_conditions = |what: &str| {
        deep_after
            .lines()
            .any(|l| l.contains("Index Cond:") && l.contains(what))
    };
    assert!(
        index_conditions(" >= ") && index_conditions(" IS NULL"),
        "{deep_after}"
    );
    let deep_rows_after = load_events(&reader, &page_sql(TOPIC, &deep_page))
        .await
        .expect("deep page");
    let ids = |rows: &[eventgate_core::db::EventRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&deep_rows_after), ids(&deep_rows_before));
    assert_eq!(deep_rows_after.len(), 51);

    // The stats-api's own refresh took it too; the answers are the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = pages_sorted(&api.url, SORT, "1000", 3).await;
    assert_eq!(after, before);
}
