//! Fair use of the stats-api against real Postgres: answers bounded by bytes (a page the budget cuts keeps
//! `has_more` and its cursor yields the rest, every event once), one analyst's concurrent statements
//! bounded (429) while another is served, a busy pool answered 503 fast, the statement timeout on every
//! path, exports ended by their row and time caps with the documented marker, and an export whose client
//! stopped reading dropped after the send timeout.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use eventgate_core::config::Config;
use eventgate_test_support::{stack, token, wait_until, TestDatabase};

use common::{repo_root, start_stats_api_on, StatsApi};

const BUDGET: usize = 64 * 1024;

/// `count` events of audit.logs, one second apart (customer_id = i, newest = highest), each with a
/// `description` of `bytes` bytes; the one with customer_id `huge` (if any) has 200 KB, over the budget.
/// Counted in the rollups, as a writer would.
async fn fill(db: &TestDatabase, count: i64, bytes: i64, huge: Option<i64>) {
    let huge = huge.unwrap_or(-1);
    db.execute(&format!(
        "WITH stored AS ( \
           INSERT INTO events (id, topic, received_at, producer, payload) \
           SELECT gen_random_uuid(), 'audit.logs', timestamptz '2025-01-01' + i * interval '1 second', 'gen', \
                  jsonb_build_object('event_name', 'e' || (i % 3), \
                                     'description', repeat(chr(97 + (i % 26)::int), CASE WHEN i = {huge} THEN 200000 ELSE {bytes} END) || i, \
                                     'customer_id', i) \
           FROM generate_series(1, {count}) AS i \
           RETURNING topic, received_at) \
         INSERT INTO event_counts (topic, minute, xact_id, events) \
         SELECT topic, date_trunc('minute', received_at, 'UTC'), pg_current_xact_id()::text::bigint, count(*) \
         FROM stored GROUP BY 1, 2; ANALYZE events"
    ))
    .await
    .expect("fill the history");
}

/// An access file where `dev`, `analyst-a` and `analyst-b` read every topic.
fn analysts_access(config: &mut Config) {
    let dir = std::env::temp_dir().join(format!("eventgate-fair-use-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let readers = json!({"write": ["dev"], "read": ["dev", "analyst-a", "analyst-b", "analyst-c"]});
    let access = json!({
        "public.cps.za.runs": readers,
        "audit.logs": readers,
        "web.events": readers,
    });
    let file = dir.join("access.json");
    std::fs::write(&file, access.to_string()).expect("access file");
    config.catalogue.access_file = file;
    config.catalogue.topics_dir = repo_root().join("config/topics");
}

async fn post(
    api: &StatsApi,
    path: &str,
    user: &str,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", api.url))
        .bearer_auth(token(user))
        .json(body)
        .send()
        .await
        .expect("stats-api answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value, headers)
}

async fn get_text(api: &StatsApi, path_and_query: &str, user: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{path_and_query}", api.url))
        .bearer_auth(token(user))
        .send()
        .await
        .expect("stats-api answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_the_byte_budget_come_shorter_and_the_cursor_yields_the_rest() {
    let database = stack().await.fresh_database().await;
    fill(&database, 40, 10_000, Some(17)).await;
    database
        .execute(
            "INSERT INTO dead_letters (topic, kafka_topic, kafka_partition, kafka_offset, raw, error, reason, created_at) \
             SELECT 'audit.logs', 'k', 0, i, convert_to(repeat('r', 20000), 'UTF8'), 'undecodable: test', 'undecodable', \
                    timestamptz '2025-01-01' + i * interval '1 second' \
             FROM generate_series(1, 12) AS i",
        )
        .await
        .expect("dead letters");
    let api = start_stats_api_on(database, |c| c.stats.max_page_bytes = BUDGET).await;

    // Newest first, `limit` far above what fits: every page within the budget (one event alone may pass
    // it: the 200 KB one), has_more until the last, every event exactly once, in order.
    for sort in [
        json!(["-timestamp"]),
        json!(["customer_id"]),
        json!(["event_name", "-customer_id"]),
    ] {
        let mut body = json!({"limit": 1000, "sort": sort});
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (status, answer, _) = post(&api, "/stats/audit.logs", "dev", &body).await;
            assert_eq!(status, 200, "{answer}");
            pages += 1;
            let data = answer["data"].as_array().expect("data");
            assert!(!data.is_empty(), "every page makes progress");
            // The budget bounds the events; the cursor carries the last row's sort key on top (a
            // description of 10 KB here).
            let size = answer["data"].to_string().len();
            if data.len() > 1 {
                assert!(
                    size <= BUDGET,
                    "{sort}: a page of {} events is {size} bytes",
                    data.len()
                );
            } else {
                assert!(size <= 210_000, "a page alone is {size} bytes");
            }
            seen.extend(
                data.iter()
                    .map(|e| e["payload"]["customer_id"].as_i64().expect("id")),
            );
            if answer["pagination"]["has_more"] != json!(true) {
                assert!(answer["pagination"]["cursor"].is_null());
                break;
            }
            body["cursor"] = answer["pagination"]["cursor"].clone();
            assert!(pages < 100, "the cursor does not advance");
        }
        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(
            seen.len(),
            40,
            "every event exactly once with sort {sort}: {seen:?}"
        );
        assert_eq!(unique.len(), 40);
        assert!(
            pages >= 7,
            "40 events of 10 KB in pages of 64 KB: {pages} pages"
        );
        if sort == json!(["-timestamp"]) {
            let expected: Vec<i64> = (1..=40).rev().collect();
            assert_eq!(seen, expected);
        }
        if sort == json!(["customer_id"]) {
            let expected: Vec<i64> = (1..=40).collect();
            assert_eq!(seen, expected);
        }
    }

    // An export reads its batches within the same budget: every event once.
    let (status, text) = get_text(&api, "/stats/audit.logs/export?format=ndjson", "dev").await;
    assert_eq!(status, 200);
    let ids: HashSet<i64> = text
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("one event per line");
            event["payload"]["customer_id"]
                .as_i64()
                .expect("customer_id")
        })
        .collect();
    assert_eq!(ids.len(), 40);
    assert_eq!(text.lines().count(), 40);

    // Aggregate groups: 40 groups of 10 KB keys do not fit; the answer says there are more.
    let (status, answer, _) = post(
        &api,
        "/stats/audit.logs/aggregate",
        "dev",
        &json!({"group_by": ["description"], "limit": 1000}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let groups = answer["data"].as_array().expect("data").len();
    assert!((1..40).contains(&groups), "{groups} groups in the answer");
    assert_eq!(answer["total"]["groups"], 40);
    assert_eq!(answer["has_more"], true);
    assert!(answer.to_string().len() <= BUDGET + 4096);

    // Dead letters: 12 raw messages of 20 KB (each listed twice: bytes and text) over several pages.
    let mut cursor: Option<String> = None;
    let mut offsets = Vec::new();
    for _ in 0..20 {
        let mut path = "/stats/audit.logs/dead-letters?limit=100".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, text) = get_text(&api, &path, "dev").await;
        assert_eq!(status, 200, "{text}");
        let answer: Value = serde_json::from_str(&text).expect("json");
        let data = answer["data"].as_array().expect("data");
        assert!(!data.is_empty());
        if data.len() > 1 {
            assert!(text.len() <= BUDGET + 512, "{} bytes", text.len());
        }
        offsets.extend(data.iter().map(|d| d["offset"].as_i64().expect("offset")));
        match answer["pagination"]["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        offsets,
        (1..=12).rev().collect::<Vec<i64>>(),
        "every dead letter once, newest first"
    );
}

/// Waits until `n` statements of the stats role wait on a lock.
async fn wait_for_lock_waiters(db: &TestDatabase, n: i64) {
    wait_until(&format!("{n} statements waiting on the lock"), Duration::from_secs(20), || async {
        db.count(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'eventgate_stats' AND wait_event_type = 'Lock'",
        )
        .await
        .unwrap_or(0)
            >= n
    })
    .await
    .expect("statements wait on the lock");
}

/// A connection that holds `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` until `release`.
struct TableLock {
    client: tokio_postgres::Client,
}

impl TableLock {
    async fn take(db: &TestDatabase, tables: &str) -> TableLock {
        let (client, connection) = tokio_postgres::connect(&db.admin_url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .expect("lock");
        TableLock { client }
    }

    async fn release(self) {
        self.client.batch_execute("COMMIT").await.expect("unlock");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_is_answered_503_with_retry_after_within_the_pool_wait() {
    let database = stack().await.fresh_database().await;
    fill(&database, 10, 100, None).await;
    let api = start_stats_api_on(database.clone(), |c| {
        analysts_access(c);
        c.stats.pool_size = 2;
        c.stats.pool_wait_ms = 500;
        c.stats.statement_timeout_ms = 30_000;
    })
    .await;
    let lock = TableLock::take(&database, "events").await;
    // Two analysts' statements hold both connections, waiting on the lock.
    let holders: Vec<_> = ["analyst-a", "analyst-b"]
        .into_iter()
        .map(|user| {
            let url = api.url.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{url}/stats/audit.logs"))
                    .bearer_auth(token(user))
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("answer")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    wait_for_lock_waiters(&database, 2).await;

    let started = Instant::now();
    let (status, answer, headers) = post(&api, "/stats/audit.logs", "analyst-c", &json!({})).await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["errors"][0]["type"], "database");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("busy"),
        "{answer}"
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(
        waited >= Duration::from_millis(450),
        "answered before the pool wait: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "a busy pool must fail fast, took {waited:?}"
    );

    lock.release().await;
    for holder in holders {
        assert_eq!(
            holder.await.expect("task"),
            200,
            "the held statements finish once the lock goes"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", api.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("eventgate_stats_limit_hits_total{limit=\"pool_wait\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_statement_is_bounded_by_the_statement_timeout() {
    let database = stack().await.fresh_database().await;
    fill(&database, 10, 100, None).await;
    let api = start_stats_api_on(database.clone(), |c| {
        c.stats.statement_timeout_ms = 300;
        c.stats.pool_wait_ms = 10_000;
    })
    .await;
    // The rollups too: a count over time is answered from them.
    let lock = TableLock::take(&database, "events, event_counts, dead_letters").await;
    let http = reqwest::Client::new();
    let requests = [
        http.post(format!("{}/stats/audit.logs", api.url)).json(&json!({})),
        http.get(format!("{}/stats/audit.logs?event_name=e1", api.url)),
        http.post(format!("{}/stats/audit.logs/aggregate", api.url)).json(
            &json!({"interval": {"unit": "day", "field": "timestamp", "time_zone": "Europe/Berlin"}}),
        ),
        http.get(format!("{}/stats/audit.logs/export?format=csv", api.url)),
        http.get(format!("{}/stats/audit.logs/dead-letters", api.url)),
    ];
    for request in requests {
        let started = Instant::now();
        let response = request
            .bearer_auth(token("dev"))
            .send()
            .await
            .expect("answer");
        let status = response.status().as_u16();
        let has_retry_after = response.headers().contains_key("retry-after");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(status, 503, "{answer}");
        assert!(has_retry_after);
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .expect("message")
                .contains("statement timeout"),
            "{answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    lock.release().await;
    let (status, _, _) = post(&api, "/stats/audit.logs", "dev", &json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_analysts_expensive_queries_beyond_its_limit_get_429_while_another_analyst_is_served() {
    let database = stack().await.fresh_database().await;
    // A history on which a substring search that matches nothing, sorted by free text, reads every
    // description: hundreds of milliseconds to seconds each.
    fill(&database, 60_000, 2_000, None).await;
    let pool_wait = Duration::from_secs(2);
    let api = start_stats_api_on(database.clone(), |c| {
        analysts_access(c);
        c.stats.pool_size = 8;
        c.stats.max_concurrent_per_user = 4;
        c.stats.pool_wait_ms = pool_wait.as_millis() as u64;
        c.stats.statement_timeout_ms = 60_000;
    })
    .await;
    let expensive =
        json!({"filter": {"description_contains": "no such text"}, "sort": ["description"]});
    let started = Instant::now();
    let analyst_a: Vec<_> = (0..20)
        .map(|_| {
            let url = api.url.clone();
            let body = expensive.clone();
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(format!("{url}/stats/audit.logs"))
                    .bearer_auth(token("analyst-a"))
                    .json(&body)
                    .send()
                    .await
                    .expect("answer");
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").cloned();
                let answer: Value = response.json().await.expect("json");
                (status, retry_after, answer, started.elapsed())
            })
        })
        .collect();
    // A's four running statements are in the database now.
    wait_until("analyst-a's statements to run", Duration::from_secs(20), || async {
        database
            .count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'eventgate_stats' AND state = 'active'")
            .await
            .unwrap_or(0)
            >= 4
    })
    .await
    .expect("A's statements run");
    let b_started = Instant::now();
    let (status, answer, _) = post(
        &api,
        "/stats/audit.logs",
        "analyst-b",
        &json!({"filter": {"event_name": "e1"}, "limit": 5}),
    )
    .await;
    let b_took = b_started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"].as_array().expect("data").len(), 5);
    assert!(
        b_took < pool_wait,
        "analyst-b waited {b_took:?} behind analyst-a"
    );

    let mut refused = 0;
    let mut answered = 0;
    for task in analyst_a {
        let (status, retry_after, answer, _) = task.await.expect("task");
        match status {
            429 => {
                refused += 1;
                assert!(retry_after.is_some(), "429 without Retry-After");
                assert_eq!(answer["errors"][0]["type"], "rate_limit");
                assert!(
                    answer["errors"][0]["message"]
                        .as_str()
                        .expect("message")
                        .contains("at most 4"),
                    "{answer}"
                );
            }
            200 => answered += 1,
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    eprintln!(
        "analyst-a: {answered} answered, {refused} refused; analyst-b answered in {b_took:?}"
    );
    assert!(answered >= 4, "the first four run: {answered} answered");
    assert!(
        refused >= 12,
        "beyond four at once, analyst-a is refused: {refused} refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_end_with_the_truncation_marker_and_its_cursor_resumes_them() {
    let database = stack().await.fresh_database().await;
    fill(&database, 60, 50, None).await;
    let api = start_stats_api_on(database.clone(), |c| c.stats.export_max_rows = 25).await;

    // NDJSON: 25 events, then the marker line; the cursor resumes; the last part has no marker.
    let mut seen = Vec::new();
    let mut path = "/stats/audit.logs/export?format=ndjson".to_owned();
    let mut markers = 0;
    loop {
        let (status, text) = get_text(&api, &path, "dev").await;
        assert_eq!(status, 200, "{text}");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let last = lines.last().expect("lines").clone();
        if last["truncated"] == true {
            markers += 1;
            assert_eq!(last["reason"], "row_limit");
            assert_eq!(last["rows"], 25);
            assert_eq!(lines.len(), 26);
            assert!(last["message"]
                .as_str()
                .expect("message")
                .contains("export_max_rows"));
            let cursor = last["cursor"].as_str().expect("cursor");
            seen.extend(
                lines[..25]
                    .iter()
                    .map(|e| e["payload"]["customer_id"].as_i64().expect("id")),
            );
            path = format!("/stats/audit.logs/export?format=ndjson&cursor={cursor}");
        } else {
            seen.extend(
                lines
                    .iter()
                    .map(|e| e["payload"]["customer_id"].as_i64().expect("id")),
            );
            break;
        }
    }
    assert_eq!(markers, 2);
    assert_eq!(
        seen,
        (1..=60).rev().collect::<Vec<i64>>(),
        "every event once, in order"
    );

    // CSV: the marker is the last line, its first cell says so.
    let (status, text) = get_text(
        &api,
        "/stats/audit.logs/export?format=csv&fields=timestamp,customer_id",
        "dev",
    )
    .await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1 + 25 + 1, "header, 25 rows, marker");
    let marker: Vec<&str> = lines[26].split(',').collect();
    assert_eq!(
        marker[..3],
        ["#eventgate-export-truncated", "row_limit", "25"]
    );

    // An export of exactly the cap has no marker.
    let (status, text) = get_text(&api, "/stats/audit.logs/export?customer_id_lte=25", "dev").await;
    assert_eq!(status, 200);
    assert_eq!(text.lines().count(), 25);
    assert!(!text.contains("truncated"));

    // The time cap: an export allowed 1 ms stops after its first batch.
    let api = start_stats_api_on(database, |c| {
        c.stats.export_max_ms = 1;
        c.stats.max_page_bytes = 4096;
    })
    .await;
    let (status, text) = get_text(&api, "/stats/audit.logs/export", "dev").await;
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("json");
    assert_eq!(last["truncated"], true, "{text}");
    assert_eq!(last["reason"], "time_limit");
    assert!(text.lines().count() < 61);
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

/// Opens an export over a raw connection and reads only its first bytes.
async fn stalled_export(api: &StatsApi) -> tokio::net::TcpStream {
    let address = api.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!(
        "GET /stats/audit.logs/export?format=ndjson HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
        token("dev")
    );
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut head = vec![0u8; 4096];
    let n = stream.read(&mut head).await.expect("first bytes");
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_client_stops_reading_is_dropped_after_the_send_timeout() {
    let database = stack().await.fresh_database().await;
    // About 60 MB of NDJSON: far more than the socket buffers between the two ends hold.
    fill(&database, 60_000, 1_000, None).await;
    let api = start_stats_api_on(database, |c| {
        c.stats.export_send_timeout_ms = 1_000;
        c.stats.max_concurrent_per_user = 3;
    })
    .await;
    let baseline = resident_bytes();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_export(&api).await);
    }
    // The three exports hold dev's three slots while they stream.
    let (status, _, _) = post(&api, "/stats/audit.logs", "dev", &json!({"limit": 1})).await;
    assert_eq!(status, 429, "the stalled exports hold the user's slots");

    // After the send timeout the exports are dropped: the slots come back, the drops are counted.
    let mut peak = baseline;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        peak = peak.max(resident_bytes());
        let metrics = reqwest::get(format!("{}/metrics", api.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains("eventgate_stats_limit_hits_total{limit=\"export_send_timeout\"} 3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the send timeout did not drop the exports:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer, _) = post(&api, "/stats/audit.logs", "dev", &json!({"limit": 1})).await;
    assert_eq!(status, 200, "the slots were given back: {answer}");
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 64 * 1024 * 1024,
        "three stalled exports grew the resident memory by {} MiB",
        growth / (1024 * 1024)
    );

    // A client that reads again gets what was buffered, then a transfer that never completes: never a
    // silently short file.
    let mut stream = stalled.pop().expect("one");
    let mut tail = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut tail)).await;
    let complete = tail.ends_with(b"\r\n0\r\n\r\n");
    assert!(read.is_ok(), "the aborted connection closes");
    assert!(
        !complete,
        "the chunked body of a dropped export is not terminated"
    );
}
