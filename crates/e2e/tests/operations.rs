//! What operators see, against the real servers: `/metrics` after real traffic (the counters moved by
//! exactly the traffic sent, labelled by route pattern, never by raw path), request ids on every
//! answer, and readiness following Postgres down and up again.

use std::collections::BTreeMap;
use std::time::Duration;

use eventgate_core::shutdown::Lifecycle;
use eventgate_db_writer::Writer;
use eventgate_e2e::{repo_root, System};
use eventgate_test_support::{private_stack, stack, token, wait_until};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// One scrape: `name{label="value",...}` (labels sorted, as the exposition writes them) → value.
#[derive(Debug, Clone, Default)]
struct Samples(BTreeMap<String, f64>);

impl Samples {
    fn parse(text: &str) -> Samples {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Samples(samples)
    }

    /// The value of a series (0 when absent: a labelled counter appears on first use).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels = labels.to_vec();
        labels.sort();
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", inner.join(","))
        };
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// Metric family names present (histogram series folded into their family).
    fn families(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .keys()
            .map(|series| {
                let name = series.split('{').next().unwrap_or(series);
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name)
                    .to_owned()
            })
            .collect();
        names.dedup();
        names
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> Samples {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("text header")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Samples::parse(&response.text().await.expect("metrics body"))
}

fn writer_samples(system: &System) -> Samples {
    Samples::parse(&eventgate_core::metrics::render(
        &system.writers[0].metrics.registry,
    ))
}

fn audit(n: usize) -> Value {
    json!({"event_name": format!("op-{n}"), "description": "metrics test", "customer_id": n})
}

fn invalid() -> Value {
    json!({"event_name": 5})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_the_traffic_sent() {
    let system = System::start_with(stack().await, 1, |config| {
        config.telemetry.kafka_stats_interval_ms = 200;
    })
    .await;
    let http = &system.http;
    let before = scrape(http, &system.ingest_url).await;
    let stats_before = scrape(http, &system.stats_url).await;

    // 4 accepted events in 3 requests (one 207), 2 refused by the schema, one 401, one unknown route.
    let (status, _) = system.post("audit.logs", "dev", &audit(1)).await;
    assert_eq!(status, 202);
    let (status, _) = system
        .post("audit.logs", "dev", &json!([audit(2), audit(3)]))
        .await;
    assert_eq!(status, 202);
    let (status, _) = system
        .post("audit.logs", "dev", &json!([audit(4), invalid()]))
        .await;
    assert_eq!(status, 207);
    let (status, _) = system.post("audit.logs", "dev", &invalid()).await;
    assert_eq!(status, 400);
    let unauthenticated = http
        .post(format!("{}/topics/audit.logs", system.ingest_url))
        .json(&audit(9))
        .send()
        .await
        .expect("answer");
    assert_eq!(unauthenticated.status(), 401);
    let unknown = http
        .get(format!(
            "{}/no/such/path-{}",
            system.ingest_url,
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(unknown.status(), 404);

    let after = scrape(http, &system.ingest_url).await;
    let moved =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let topic = [("topic", "audit.logs")];
    assert_eq!(moved("eventgate_ingest_events_accepted_total", &topic), 4.0);
    assert_eq!(
        moved(
            "eventgate_ingest_events_rejected_total",
            &[("topic", "audit.logs"), ("reason", "validation")]
        ),
        2.0
    );
    assert_eq!(
        moved("eventgate_kafka_produce_duration_seconds_count", &topic),
        4.0
    );
    let requests = |status: &str| {
        moved(
            "eventgate_http_requests_total",
            &[
                ("route", "/topics/{topic}"),
                ("method", "POST"),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("202"), 2.0);
    assert_eq!(requests("207"), 1.0);
    assert_eq!(requests("400"), 1.0);
    assert_eq!(requests("401"), 1.0);
    assert_eq!(
        moved(
            "eventgate_http_request_duration_seconds_count",
            &[
                ("route", "/topics/{topic}"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "eventgate_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    // Route patterns only: no raw path (topic names, random paths) ever becomes a label value.
    let raw_paths: Vec<&String> = after
        .0
        .keys()
        .filter(|series| series.contains("route=\"/topics/audit") || series.contains("/no/such"))
        .collect();
    assert!(raw_paths.is_empty(), "{raw_paths:?}");
    assert_eq!(
        after.get(
            "eventgate_build_info",
            &[
                ("service", "ingest-api"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        1.0
    );

    // The writer: exactly the 4 accepted events, in batches whose sizes add up to 4.
    system.wait_for_rows(4, WAIT).await;
    let writer = writer_samples(&system);
    assert_eq!(writer.get("eventgate_writer_rows_inserted_total", &[]), 4.0);
    assert_eq!(writer.get("eventgate_writer_batch_size_sum", &[]), 4.0);
    assert_eq!(writer.get("eventgate_writer_dead_letters_total", &[]), 0.0);
    assert_eq!(
        writer.get("eventgate_db_pool_max_connections", &[("pool", "writer")]),
        f64::from(system.config.writer.pool_size)
    );
    // Consumer lag per owned partition, from librdkafka's statistics: all caught up once committed.
    let kafka_topic = system.config.kafka.kafka_topic("audit.logs");
    let lag_series = |samples: &Samples| -> Vec<f64> {
        let prefix = "eventgate_writer_consumer_lag{";
        samples
            .0
            .iter()
            .filter(|(series, _)| {
                series.starts_with(prefix) && series.contains(&format!("topic=\"{kafka_topic}\""))
            })
            .map(|(_, value)| *value)
            .collect()
    };
    wait_until(
        "the writer to report zero lag on its partitions",
        WAIT,
        || async {
            let lags = lag_series(&writer_samples(&system));
            lags.len() == system.config.kafka.partitions as usize
                && lags.iter().all(|lag| *lag == 0.0)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}: {:?}", lag_series(&writer_samples(&system))));

    // The stats-api: query latency by topic and outcome, the read pool's usage.
    let (status, _) = system
        .query("audit.logs", "dev", &json!({"limit": 2}))
        .await;
    assert_eq!(status, 200);
    let (status, answer) = system
        .query(
            "audit.logs",
            "dev",
            &json!({"filter": {"no_such_field": "x"}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let stats_after = scrape(http, &system.stats_url).await;
    let queries = |outcome: &str| {
        let labels = [("topic", "audit.logs"), ("outcome", outcome)];
        stats_after.get("eventgate_stats_query_duration_seconds_count", &labels)
            - stats_before.get("eventgate_stats_query_duration_seconds_count", &labels)
    };
    assert_eq!(queries("ok"), 1.0);
    assert_eq!(queries("validation"), 1.0);
    assert_eq!(
        stats_after.get("eventgate_db_pool_max_connections", &[("pool", "stats")]),
        f64::from(system.config.stats.pool_size)
    );
    let open = stats_after.get(
        "eventgate_db_pool_connections",
        &[("pool", "stats"), ("state", "idle")],
    ) + stats_after.get(
        "eventgate_db_pool_connections",
        &[("pool", "stats"), ("state", "in_use")],
    );
    assert!(open >= 1.0, "the pool served two queries: {open}");

    // Every metric family a service exposes is documented for operators.
    let operations = std::fs::read_to_string(repo_root().join("docs/OPERATIONS.md"))
        .expect("docs/OPERATIONS.md");
    let mut undocumented: Vec<String> = after
        .families()
        .into_iter()
        .chain(stats_after.families())
        .chain(writer.families())
        .filter(|family| !operations.contains(&format!("`{family}`")))
        .collect();
    undocumented.dedup();
    assert!(
        undocumented.is_empty(),
        "not in docs/OPERATIONS.md: {undocumented:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id() {
    let system = System::start(0).await;
    let http = &system.http;
    // The caller's id is kept when it is valid...
    let kept = http
        .post(format!("{}/topics/audit.logs", system.ingest_url))
        .bearer_auth(token("dev"))
        .header("X-Request-ID", "client-req.42")
        .json(&invalid())
        .send()
        .await
        .expect("answer");
    assert_eq!(kept.status(), 400);
    assert_eq!(kept.headers()["x-request-id"], "client-req.42");
    // ...and replaced when it is not (spaces, too long), as on answers without one.
    for (base, path, header) in [
        (&system.ingest_url, "/topics", Some("not valid!")),
        (&system.stats_url, "/stats/audit.logs", None),
        (&system.stats_url, "/health/live", Some(&*"x".repeat(200))),
    ] {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(header) = header {
            request = request.header("X-Request-ID", header);
        }
        let response = request.send().await.expect("answer");
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{path}: {id}");
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    match http.get(url).timeout(Duration::from_secs(10)).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(error) => panic!("{url} did not answer: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_postgres_down_and_up() {
    let stack = private_stack().await;
    let system = System::start_with(&stack, 0, |_| {}).await;
    // A writer with its health server, as the binary runs it.
    let writer = Writer::build(&system.config).await.expect("writer starts");
    let (health, port) = eventgate_db_writer::health::serve(
        "127.0.0.1:0",
        writer.readiness(),
        writer.metrics.clone(),
        Lifecycle::new(),
    )
    .expect("health server");
    tokio::spawn(health);
    let stop = CancellationToken::new();
    let writer_task = tokio::spawn(writer.run(stop.clone()));
    let writer_url = format!("http://127.0.0.1:{port}");
    let http = &system.http;

    let stats_ready = format!("{}/health/ready", system.stats_url);
    let writer_ready = format!("{writer_url}/health/ready");
    let (status, body) = get_json(http, &stats_ready).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "stats-api");
    assert_eq!(body["dependencies"]["postgres"]["status"], "ok");
    let (status, body) = get_json(http, &writer_ready).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dependencies"]["postgres"]["status"], "ok");
    assert_eq!(body["dependencies"]["kafka"]["status"], "ok");
    let (status, body) = get_json(http, &format!("{}/health/ready", system.ingest_url)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dependencies"]["kafka"]["status"], "ok");

    tokio::task::block_in_place(|| stack.stop_postgres());
    for url in [&stats_ready, &writer_ready] {
        wait_until(&format!("{url} to answer 503"), WAIT, || async {
            get_json(http, url).await.0 == 503
        })
        .await
        .unwrap();
        let (_, body) = get_json(http, url).await;
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(body["success"], false);
        assert_eq!(body["statusCode"], 503);
        assert_eq!(
            body["dependencies"]["postgres"]["status"], "unreachable",
            "{body}"
        );
        assert!(
            body["dependencies"]["postgres"]["error"].is_string(),
            "{body}"
        );
    }
    let (_, body) = get_json(http, &writer_ready).await;
    assert_eq!(body["dependencies"]["kafka"]["status"], "ok", "{body}");
    // Alive all along: an outage of a dependency is no reason to restart the process.
    for url in [
        format!("{}/health/live", system.stats_url),
        format!("{writer_url}/health/live"),
    ] {
        assert_eq!(get_json(http, &url).await.0, 200, "{url}");
    }

    tokio::task::block_in_place(|| stack.start_postgres());
    for url in [&stats_ready, &writer_ready] {
        wait_until(&format!("{url} to answer 200 again"), WAIT, || async {
            get_json(http, url).await.0 == 200
        })
        .await
        .unwrap();
    }

    stop.cancel();
    writer_task
        .await
        .expect("writer task")
        .expect("writer stops cleanly");
}
