//! Exports stream: a history far larger than what the server may hold is written out with the process's
//! resident memory staying flat (measured from /proc while the body is read), every row exactly once.

mod common;

use std::collections::HashSet;

use eventgate_test_support::token;

/// Rows of the generated history, and the size of each row's description (the bulk of its bytes).
const ROWS: i64 = 200_000;
const DESCRIPTION_BYTES: i64 = 500;
/// What the whole answer in memory would cost at the very least is its size: well over 100 MB here.
/// Streaming must stay far below.
const MAX_RSS_GROWTH_BYTES: u64 = 48 * 1024 * 1024;

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_streams_in_flat_memory() {
    let api = common::start_stats_api().await;
    // The history, generated inside Postgres: one event per second, alternating names.
    api.database
        .execute(&format!(
            "INSERT INTO events (id, topic, received_at, producer, payload) \
             SELECT gen_random_uuid(), 'audit.logs', timestamptz '2025-01-01' + i * interval '1 second', 'gen', \
                    jsonb_build_object('event_name', CASE WHEN i % 2 = 0 THEN 'login' ELSE 'logout' END, \
                                       'description', repeat('x', {DESCRIPTION_BYTES}), 'customer_id', i) \
             FROM generate_series(1, {ROWS}) AS i; ANALYZE events"
        ))
        .await
        .expect("generate the history");

    let http = reqwest::Client::new();
    let baseline = resident_bytes();
    let mut response = http
        .get(format!("{}/stats/audit.logs/export?format=ndjson", api.url))
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("export answers");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "{:?}",
        response.headers()
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .contains("audit.logs.ndjson"),
        "{:?}",
        response.headers()
    );

    let mut bytes: u64 = 0;
    let mut peak = baseline;
    let mut next_sample = 0;
    let mut partial: Vec<u8> = Vec::new();
    let mut customers: HashSet<i64> = HashSet::new();
    let mut last_timestamp: Option<String> = None;
    while let Some(chunk) = response.chunk().await.expect("body chunk") {
        bytes += chunk.len() as u64;
        partial.extend_from_slice(&chunk);
        // Only whole lines are parsed; the tail waits for the next chunk.
        let cut = partial
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for line in partial[..cut]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let event: serde_json::Value =
                serde_json::from_slice(line).expect("one JSON event per line");
            let customer = event["payload"]["customer_id"]
                .as_i64()
                .expect("customer_id");
            assert!(customers.insert(customer), "customer {customer} twice");
            let timestamp = event["timestamp"].as_str().expect("timestamp").to_owned();
            // Newest first, the default order of queries.
            if let Some(previous) = &last_timestamp {
                assert!(timestamp < *previous, "{timestamp} after {previous}");
            }
            last_timestamp = Some(timestamp);
        }
        partial.drain(..cut);
        if bytes >= next_sample {
            peak = peak.max(resident_bytes());
            next_sample = bytes + 2 * 1024 * 1024;
        }
    }
    peak = peak.max(resident_bytes());
    assert!(partial.is_empty(), "the body ends with a whole line");
    assert_eq!(customers.len() as i64, ROWS, "every row exactly once");
    assert!(
        bytes > (ROWS * DESCRIPTION_BYTES) as u64,
        "the export is larger than its descriptions: {bytes} bytes"
    );
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < MAX_RSS_GROWTH_BYTES,
        "resident memory grew by {} MiB while streaming {} MiB",
        growth / (1024 * 1024),
        bytes / (1024 * 1024)
    );
    eprintln!(
        "exported {ROWS} rows, {} MiB; resident memory grew by {} MiB",
        bytes / (1024 * 1024),
        growth / (1024 * 1024)
    );
}
