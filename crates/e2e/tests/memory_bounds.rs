//! The memory bound of issue #14, on the service binaries run as separate processes (so each one's peak
//! resident memory is its own, read from `/proc/<pid>/status`): 300 events at the ingest limits —
//! `ingest.max_event_bytes` and `ingest.max_event_nodes`, most of the values small array elements, the
//! shape that used to grow twentyfold when parsed — posted concurrently to `web.events`. Nothing crashes,
//! every accepted event is stored, a default query and an export over them succeed, and every writer's
//! and the stats-api's peak RSS stays under [`MAX_PEAK_RSS`] (the ingest-api's under
//! [`MAX_INGEST_PEAK_RSS`]).
//!
//! The binaries are the workspace's own ([`eventgate_e2e::processes`]).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use eventgate_core::config::Config;
use eventgate_e2e::processes::{start_ingest_api, start_stats_api, start_writer};
use eventgate_e2e::test_config;
use eventgate_test_support::{accepted_ids, get_json, stack, token, wait_until};

/// The bound the writers' and the stats-api's peak resident memory must stay under (the issue's bound;
/// their Kubernetes limit is 512 Mi).
const MAX_PEAK_RSS: u64 = 256 * 1024 * 1024;
/// The ingest-api holds up to 300 request bodies at once here (each up to `ingest.max_body_bytes`, with
/// its parsed event and the producer's queue): its bound is its Kubernetes limit. Measured: 231 MiB on
/// a debug build.
const MAX_INGEST_PEAK_RSS: u64 = 512 * 1024 * 1024;
const EVENTS: usize = 300;
const WRITERS: usize = 2;
const WAIT: Duration = Duration::from_secs(180);

/// Peak resident set size of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmHWM line")
        * 1024
}

/// A `web.events` event at both ingest limits: `nodes` JSON values, nearly all zeros of one array, and
/// a filler string that brings its queued record to `bytes` less a margin for the envelope.
fn near_limit_event(i: usize, bytes: usize, nodes: usize) -> Value {
    let zeros = nodes.saturating_sub(16);
    let mut event = json!({
        "session_id": format!("s-{i}"),
        "category": "memory",
        "name": "near-limit",
        "timestamp": "2025-01-15T10:30:00Z",
        "data": {"a": vec![0; zeros], "pad": ""},
    });
    let size = serde_json::to_vec(&event).expect("json").len();
    // The envelope (id, topic, timestamp, producer) and the record's key take about 200 bytes.
    let pad = bytes.saturating_sub(size + 1024);
    event["data"]["pad"] = Value::String("p".repeat(pad));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_limit_array_heavy_events_keep_every_service_under_its_memory_bound() {
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let mut config = test_config(stack, &database);
    let dir = std::env::temp_dir().join(format!("eventgate-memory-{}", database.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("access.json"),
        r#"{"web.events": {"write": ["dev"], "read": ["dev"]}}"#,
    )
    .expect("access file");
    config.catalogue.access_file = dir.join("access.json");
    let limits = Config::default().ingest;
    let http = reqwest::Client::new();

    let ingest = start_ingest_api(&http, &dir, &config).await;
    let mut writers = Vec::new();
    for n in 0..WRITERS {
        writers.push(start_writer(&http, &dir, &config, &format!("writer-{n}")).await);
    }
    let stats = start_stats_api(&http, &dir, &config).await;

    // 300 requests at once, one event each.
    let event_bytes = serde_json::to_vec(&near_limit_event(
        0,
        limits.max_event_bytes,
        limits.max_event_nodes,
    ))
    .expect("json")
    .len();
    let started = Instant::now();
    let posts: Vec<_> = (0..EVENTS)
        .map(|i| {
            let http = http.clone();
            let body = near_limit_event(i, limits.max_event_bytes, limits.max_event_nodes);
            let url = ingest.url("/topics/web.events");
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(token("dev"))
                    .json(&body)
                    .timeout(Duration::from_secs(120))
                    .send()
                    .await
                    .expect("ingest-api answers");
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                (status, answer)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for post in posts {
        let (status, answer) = post.await.expect("task");
        match status {
            202 => accepted.extend(accepted_ids(&answer)),
            // The broker not acknowledging in time is a 503 the producer retries: not stored, not lost.
            503 => refused += 1,
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    eprintln!(
        "{} events of {} KiB posted in {:?}: {} accepted, {refused} answered 503",
        EVENTS,
        event_bytes / 1024,
        started.elapsed(),
        accepted.len()
    );
    assert!(
        accepted.len() >= EVENTS * 9 / 10,
        "most events are accepted"
    );

    // Every accepted event is stored, once.
    let expected = accepted.len() as i64;
    let stored = wait_until("every accepted event to be stored", WAIT, || async {
        database
            .count("SELECT count(*) FROM events WHERE topic = 'web.events'")
            .await
            .unwrap_or(0)
            >= expected
    })
    .await;
    if let Err(error) = stored {
        let logs: Vec<String> = writers.iter().map(|w| w.process.log()).collect();
        panic!("{error:#}\n{}", logs.join("\n"));
    }
    let distinct = database
        .count("SELECT count(DISTINCT id) FROM events WHERE topic = 'web.events'")
        .await
        .expect("count");
    assert_eq!(distinct, expected, "every accepted event once");

    // A default query and a whole export over them.
    let stats_url = stats.url("");
    let response = http
        .get(format!("{stats_url}/stats/web.events"))
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("query answers");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert!(!answer["data"].as_array().expect("data").is_empty());
    let mut export = http
        .get(format!("{stats_url}/stats/web.events/export?format=ndjson"))
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("export answers");
    assert_eq!(export.status(), 200);
    let mut lines = 0;
    let mut partial = Vec::new();
    while let Some(chunk) = export.chunk().await.expect("export body") {
        partial.extend_from_slice(&chunk);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Value = serde_json::from_slice(&partial[..end]).expect("a JSON line");
            assert!(
                line["id"].is_string(),
                "an event, not a truncation marker: {}",
                &partial[..200.min(end)].escape_ascii()
            );
            lines += 1;
            partial.drain(..=end);
        }
    }
    assert_eq!(lines, expected, "the export holds every stored event");

    // Nothing crashed, and every peak stayed under the bound.
    let mut report = Vec::new();
    for service in std::iter::once(&ingest)
        .chain(&writers)
        .chain(std::iter::once(&stats))
    {
        let health = format!("http://127.0.0.1:{}/health", service.port);
        assert!(
            matches!(get_json(&http, &health).await, Some((200, _))),
            "{} is not alive\n{}",
            service.name,
            service.process.log()
        );
        let peak = peak_rss(service.process.pid());
        report.push(format!("{} {} MiB", service.name, peak / (1024 * 1024)));
        let bound = if service.name == "ingest-api" {
            MAX_INGEST_PEAK_RSS
        } else {
            MAX_PEAK_RSS
        };
        assert!(
            peak <= bound,
            "{}'s peak resident memory was {} MiB, above {} MiB",
            service.name,
            peak / (1024 * 1024),
            bound / (1024 * 1024)
        );
    }
    eprintln!("peak RSS: {}", report.join(", "));
    let _ = std::fs::remove_dir_all(&dir);
}
