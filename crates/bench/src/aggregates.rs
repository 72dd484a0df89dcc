//! Phase 5: aggregates on the generated history (`public.cps.za.runs`), through
//! `POST /stats/{topic}/aggregate`, each beside the hand-written SQL an analyst would run for the same
//! answer (as the stats-api's role, straight to Postgres, no HTTP):
//!
//! - count per day over the whole history on a payload time field (`timestamp_start`, epoch ms);
//! - the top 10 groups by count (`source_app`);
//! - a distinct count (`count_distinct(tenant_id)`);
//! - the explorer's chart: count per day over the whole history on the envelope `timestamp`
//!   (`received_at`), which the stats-api may answer from the rollups (`event_counts`), beside the SQL
//!   over `events`.
//!
//! The API call and its SQL alternate, after one unmeasured pair that warms both and gives the reference
//! answer (from the SQL); every API answer is compared with it (buckets or groups and their counts), so a
//! wrong answer cannot be fast. They scan millions of rows: a shape stops repeating once it has used up
//! its time budget (after at least 3 measured pairs).

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cpu::{self, Usage, Watched};
use crate::db;
use crate::load::{ms, round2, Latency};
use crate::queries::RUNS;
use crate::services::{Bench, DATABASE, USER};
use crate::Sizes;

/// Measured time (API and SQL together) after which a shape stops repeating.
const BUDGET: Duration = Duration::from_secs(30);
const MIN_REPEATS: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct AggregateResults {
    pub history_rows: u64,
    /// Whether the database has the rollups table (`event_counts`), filled for the history.
    pub rollups: bool,
    pub day_count: Shape,
    pub top_groups: Shape,
    pub count_distinct: Shape,
    /// The explorer's chart; its `sql` is the count per day over `events`.
    pub rollup: Shape,
    pub cpu: Usage,
}

/// One aggregate: the API's latency beside its hand-written SQL's.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub request: Value,
    pub sql: String,
    pub api: Latency,
    pub sql_latency: Latency,
    /// API p99 ÷ SQL p99.
    pub ratio: f64,
    /// What the answer held: buckets or groups, and the events they count.
    pub rows: usize,
    pub events: i64,
}

/// How an API answer is read into `(key, count)` pairs, as the SQL returns them.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// `data[].bucket` (as epoch seconds) and `data[].metrics.count`.
    Buckets,
    /// `data[].group.<field>` and `data[].metrics.count`.
    Groups(&'static str),
    /// `total.metrics.<metric>`, one pair with an empty key.
    Total(&'static str),
}

struct Spec {
    what: &'static str,
    request: Value,
    /// Returns `(key text, count bigint)` rows; `$1` is the topic. The hand-written query is the inner
    /// one; the outer one only turns its keys into text, once per row of the answer.
    sql: String,
    read: Read,
}

pub async fn run(
    bench: &Bench,
    sizes: &Sizes,
    stats_url: &str,
    watched: &[Watched],
) -> anyhow::Result<AggregateResults> {
    let owner = db::connect(&bench.owner_url()).await?;
    let rollups = db::has_rollups(&owner).await?;
    let client = db::connect(&bench.url("eventgate_stats", DATABASE)).await?;
    client.batch_execute("SET statement_timeout = 0").await?;
    let url = format!("{stats_url}/stats/{RUNS}/aggregate");
    let token = eventgate_test_support::token(USER);

    let day = |field: &str| {
        format!(
            "SELECT extract(epoch FROM day)::bigint::text, n FROM ( \
             SELECT date_trunc('day', {field}, 'UTC') AS day, count(*) AS n FROM events \
             WHERE topic = $1 GROUP BY 1 ORDER BY 1) AS hand"
        )
    };
    let specs = [
        Spec {
            what: "count per day (timestamp_start)",
            request: json!({"interval": {"unit": "day", "field": "timestamp_start"}, "limit": 10000}),
            sql: day("to_timestamp((payload->>'timestamp_start')::bigint / 1000.0)"),
            read: Read::Buckets,
        },
        Spec {
            what: "top 10 source_app",
            request: json!({"group_by": ["source_app"], "sort": ["-count"], "limit": 10}),
            sql: "SELECT payload->>'source_app', count(*) FROM events WHERE topic = $1 \
                  GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
                .to_owned(),
            read: Read::Groups("source_app"),
        },
        Spec {
            what: "count_distinct(tenant_id)",
            request: json!({"metrics": ["count_distinct(tenant_id)"]}),
            sql: "SELECT '', count(DISTINCT payload->>'tenant_id') FROM events WHERE topic = $1"
                .to_owned(),
            read: Read::Total("count_distinct(tenant_id)"),
        },
        Spec {
            what: "count per day (timestamp: the chart)",
            request: json!({"interval": {"unit": "day"}, "limit": 10000}),
            sql: day("received_at"),
            read: Read::Buckets,
        },
    ];
    let before = cpu::snapshot(watched);
    let mut shapes = Vec::new();
    for spec in specs {
        shapes.push(measure(bench, sizes, &client, &url, &token, spec).await?);
    }
    let after = cpu::snapshot(watched);
    let mut shapes = shapes.into_iter();
    let mut next = || shapes.next().context("four shapes");
    Ok(AggregateResults {
        history_rows: sizes.history_rows,
        rollups,
        day_count: next()?,
        top_groups: next()?,
        count_distinct: next()?,
        rollup: next()?,
        cpu: cpu::usage(&before, &after),
    })
}

async fn measure(
    bench: &Bench,
    sizes: &Sizes,
    client: &tokio_postgres::Client,
    url: &str,
    token: &str,
    spec: Spec,
) -> anyhow::Result<Shape> {
    let statement = client
        .prepare(&spec.sql)
        .await
        .with_context(|| format!("preparing the SQL of {}", spec.what))?;
    let body = Bytes::from(spec.request.to_string());
    let mut reference: Option<Vec<(String, i64)>> = None;
    let (mut api_ms, mut sql_ms) = (Vec::new(), Vec::new());
    let mut spent = Duration::ZERO;
    for i in 0..=sizes.aggregate_iterations {
        let sent = Instant::now();
        let (status, bytes) = post(&bench.http, url, token, body.clone()).await?;
        let api_elapsed = sent.elapsed();
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        anyhow::ensure!(
            status == 200,
            "aggregate {} answered {status}: {answer}",
            spec.what
        );

        let sent = Instant::now();
        let rows = client
            .query(&statement, &[&RUNS])
            .await
            .with_context(|| format!("the SQL of {}", spec.what))?;
        let sql_elapsed = sent.elapsed();
        let mut from_sql = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: Option<String> = row.try_get(0)?;
            from_sql.push((key.unwrap_or_else(|| "null".to_owned()), row.try_get(1)?));
        }
        let expected = reference.get_or_insert(from_sql.clone());
        anyhow::ensure!(
            &from_sql == expected,
            "the SQL of {} changed its answer between runs",
            spec.what
        );
        let got = read_answer(&answer, spec.read)
            .with_context(|| format!("reading the answer of aggregate {}", spec.what))?;
        anyhow::ensure!(
            &got == expected,
            "aggregate {} does not answer what its SQL does: {} rows {:?}… against {} rows {:?}…",
            spec.what,
            got.len(),
            got.iter().take(3).collect::<Vec<_>>(),
            expected.len(),
            expected.iter().take(3).collect::<Vec<_>>()
        );
        // The first pair warms both up and gives the reference.
        if i == 0 {
            continue;
        }
        api_ms.push(ms(api_elapsed));
        sql_ms.push(ms(sql_elapsed));
        spent += api_elapsed + sql_elapsed;
        if spent > BUDGET && api_ms.len() >= MIN_REPEATS && i < sizes.aggregate_iterations {
            eprintln!(
                "bench: aggregates: {}: stopping after {} repeats ({:.0} s measured)",
                spec.what,
                api_ms.len(),
                spent.as_secs_f64()
            );
            break;
        }
    }
    let expected = reference.unwrap_or_default();
    let api = Latency::of(api_ms);
    let sql_latency = Latency::of(sql_ms);
    let ratio = round2(api.p99_ms / sql_latency.p99_ms.max(0.01));
    eprintln!(
        "bench: aggregates: {}: API {}, SQL {}, ratio {ratio:.2} ({} rows)",
        spec.what,
        crate::report::percentiles_text(&api),
        crate::report::percentiles_text(&sql_latency),
        expected.len()
    );
    Ok(Shape {
        request: spec.request,
        sql: spec.sql,
        ratio,
        rows: expected.len(),
        events: expected.iter().map(|(_, n)| n).sum(),
        api,
        sql_latency,
    })
}

/// POSTs a JSON body and returns the status and the whole answer's bytes (timed by the caller up to
/// here: the JSON is parsed after).
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(Duration::from_secs(600))
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.bytes().await?))
}

/// The answer as `(key, count)` pairs in its order.
fn read_answer(answer: &Value, read: Read) -> anyhow::Result<Vec<(String, i64)>> {
    if let Read::Total(metric) = read {
        let value = answer["total"]["metrics"][metric]
            .as_i64()
            .with_context(|| format!("no total.metrics.{metric} in {answer}"))?;
        return Ok(vec![(String::new(), value)]);
    }
    // Every bucket is asked for (a top-N leaves the other groups out, and says so).
    anyhow::ensure!(
        matches!(read, Read::Groups(_)) || answer["has_more"] != json!(true),
        "the answer left buckets out (has_more)"
    );
    let data = answer["data"]
        .as_array()
        .with_context(|| format!("no data in {answer}"))?;
    let mut pairs = Vec::with_capacity(data.len());
    for row in data {
        let key = match read {
            Read::Buckets => match row["bucket"].as_str() {
                Some(text) => OffsetDateTime::parse(text, &Rfc3339)
                    .with_context(|| format!("bucket {text}"))?
                    .unix_timestamp()
                    .to_string(),
                None => "null".to_owned(),
            },
            Read::Groups(field) => row["group"][field]
                .as_str()
                .map_or_else(|| "null".to_owned(), str::to_owned),
            Read::Total(_) => String::new(),
        };
        let count = row["metrics"]["count"]
            .as_i64()
            .with_context(|| format!("no metrics.count in {row}"))?;
        pairs.push((key, count));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_buckets_groups_and_totals() {
        let answer = json!({
            "data": [
                {"bucket": "2025-01-14T00:00:00Z", "metrics": {"count": 3}, "group": {"app": "a"}},
                {"bucket": null, "metrics": {"count": 1}, "group": {"app": null}},
            ],
            "total": {"groups": 2, "metrics": {"count": 4, "count_distinct(x)": 2}},
            "has_more": false,
        });
        assert_eq!(
            read_answer(&answer, Read::Buckets).unwrap(),
            vec![("1736812800".to_owned(), 3), ("null".to_owned(), 1)]
        );
        assert_eq!(
            read_answer(&answer, Read::Groups("app")).unwrap(),
            vec![("a".to_owned(), 3), ("null".to_owned(), 1)]
        );
        assert_eq!(
            read_answer(&answer, Read::Total("count_distinct(x)")).unwrap(),
            vec![(String::new(), 2)]
        );
        assert!(read_answer(&json!({"data": [], "has_more": true}), Read::Buckets).is_err());
    }
}
