//! Auto-indexes end to end on a real Postgres: analysts' queries over HTTP filter `public.cps.za.runs`
//! by `tenant_id`, which the topic does not declare indexed → the stats-api counts the uses and flushes
//! them into `field_usage` → the maintenance gives the field an expression index on every leaf of the
//! topic → the stats-api, having read `auto_indexed_fields` again, compares the indexed expression, and
//! Postgres's plan for the query uses the new index; the answers stay the same.

mod common;

use std::time::Duration;

use serde_json::Value;

use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::StorageConfig;
use eventgate_core::db::field_index::expression_hash;
use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::typed_value::LiteralPaths;
use eventgate_core::db::{build_pool, StoragePolicy};
use eventgate_core::query::{plan, CursorKey, FieldType, QueryLimits, QueryRequest};
use eventgate_stats_api::db::query_sql::{page_sql, SqlParts};
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
