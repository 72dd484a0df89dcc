//! The live tail (`GET /stats/{topic}/tail`) and freshness, against real Postgres: batches are stored
//! with the writer's own code (`eventgate_db_writer::write::store_batch`: events, watermarks, commit
//! log and NOTIFY in one transaction), as the writer's role.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use eventgate_db_writer::envelope::Envelope;
use eventgate_test_support::{stack, token};

use common::writer::{event, store, writer_pool};
use common::{start_stats_api_on, StatsApi};

const TOPIC: &str = "audit.logs";

fn batch(n: std::ops::Range<u64>, name: &str) -> Vec<Envelope> {
    n.map(|i| event(TOPIC, time::OffsetDateTime::now_utc(), name, i))
        .collect()
}

async fn start(change: impl FnOnce(&mut eventgate_core::config::Config)) -> StatsApi {
    let database = stack().await.fresh_database().await;
    start_stats_api_on(database, |c| {
        c.stats.tail_heartbeat_ms = 500;
        change(c);
    })
    .await
}

/// One Server-Sent Events frame.
#[derive(Debug, Clone, Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// A tail read as a client reads it.
struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
    last_id: Option<String>,
}

async fn open(api: &StatsApi, user: &str, query: &str, last_id: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{}/stats/{TOPIC}/tail{query}", api.url))
        .bearer_auth(token(user));
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("the tail answers")
}

async fn tail(api: &StatsApi, user: &str, query: &str, last_id: Option<&str>) -> Sse {
    let response = open(api, user, query, last_id).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(
        response.headers().contains_key("eventgate-freshness"),
        "{:?}",
        response.headers()
    );
    Sse {
        response,
        buffer: Vec::new(),
        last_id: last_id.map(str::to_owned),
    }
}

impl Sse {
    /// The next frame (comments dropped), or `None` at the end of the stream or after `timeout`.
    async fn frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = find(&self.buffer, b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(raw).expect("utf-8");
                let mut frame = Frame::default();
                let mut any = false;
                for line in text.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        frame.id = Some(id.to_owned());
                        any = true;
                    } else if let Some(event) = line.strip_prefix("event: ") {
                        frame.event = Some(event.to_owned());
                        any = true;
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        frame.data.push_str(data);
                        any = true;
                    }
                }
                if let Some(id) = &frame.id {
                    self.last_id = Some(id.clone());
                }
                if any {
                    return Some(frame);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("the stream reads")?;
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next `n` events (other frames skipped), failing after `timeout`.
    async fn events(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while events.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.frame(left).await else {
                panic!(
                    "{} of {n} events arrived within {timeout:?}: {events:?}",
                    events.len()
                );
            };
            match frame.event.as_deref() {
                None if !frame.data.is_empty() => {
                    assert!(frame.id.is_some(), "an event without id: {frame:?}");
                    events.push(serde_json::from_str(&frame.data).expect("an event as JSON"));
                }
                Some("error") => panic!("the tail ended: {}", frame.data),
                _ => {}
            }
        }
        events
    }

    /// No event for `wait`.
    async fn quiet(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Some(frame) = self
            .frame(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            assert!(
                frame.event.is_some() || frame.data.is_empty(),
                "an unexpected event: {frame:?}"
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn numbers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["payload"]["customer_id"].as_u64().expect("customer_id"))
        .collect()
}

const WAIT: Duration = Duration::from_secs(10);

/// Transaction A starts first (its id is the smaller, its events the older) and commits last: a tail
/// that followed `received_at` or the transaction ids would skip it. The tail delivers B as soon as it
/// commits, then A, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_late_with_older_events_is_not_skipped() {
    let api = start(|_| {}).await;
    let pool = writer_pool(&api.database, 2);
    let mut sse = tail(&api, "dev", "", None).await;

    // A lock on a watermark row that batch A must upsert before its commit ("aaa.block" sorts first).
    let admin = eventgate_core::db::tls::connect(&api.database.writer_url)
        .await
        .expect("owner connection");
    admin
        .batch_execute(
            "BEGIN; INSERT INTO topic_watermarks (topic, newest_event_at, stored_at) \
             VALUES ('aaa.block', now(), now())",
        )
        .await
        .expect("the lock is held");
    let mut a = vec![event(TOPIC, time::OffsetDateTime::now_utc(), "login", 1)];
    a.push(event(
        "aaa.block",
        time::OffsetDateTime::now_utc(),
        "login",
        0,
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = batch(2..4, "login");
    let pool_a = pool.clone();
    let writer_a = tokio::spawn(async move { store(&pool_a, &a).await });
    // A has inserted its event and waits on the lock, uncommitted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer_a.is_finished(), "batch A waits for the lock");
    store(&pool, &b).await;
    assert_eq!(
        numbers(&sse.events(2, WAIT).await),
        [2, 3],
        "B as it commits"
    );

    admin.batch_execute("COMMIT").await.expect("the lock goes");
    writer_a.await.expect("A is stored");
    assert_eq!(
        numbers(&sse.events(1, WAIT).await),
        [1],
        "A, committed later with an older event"
    );
    sse.quiet(Duration::from_millis(1500)).await;
}

/// Two writers commit batches concurrently: the tail delivers every event once, each writer's batches
/// in the order they committed, each batch's events in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_committing_concurrently_every_event_arrives_once_in_order() {
    let api = start(|_| {}).await;
    let pool = writer_pool(&api.database, 2);
    let mut sse = tail(&api, "dev", "", None).await;
    const BATCHES: u64 = 40;
    const EACH: u64 = 25;
    let started = Instant::now();
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for b in 0..BATCHES {
                    let first = (w * BATCHES + b) * EACH;
                    store(&pool, &batch(first..first + EACH, "login")).await;
                }
            })
        })
        .collect();
    let events = sse
        .events((2 * BATCHES * EACH) as usize, Duration::from_secs(60))
        .await;
    for writer in writers {
        writer.await.expect("writer");
    }
    let got = numbers(&events);
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "nothing twice");
    assert_eq!(unique, (0..2 * BATCHES * EACH).collect(), "everything");
    for w in 0..2 {
        let own: Vec<u64> = got
            .iter()
            .copied()
            .filter(|n| n / (BATCHES * EACH) == w)
            .collect();
        assert!(
            own.windows(2).all(|p| p[0] < p[1]),
            "writer {w}'s events in commit order"
        );
    }
    sse.quiet(Duration::from_millis(1500)).await;
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A client that reconnects with the id of the last event it got resumes right after it: what was
/// stored meanwhile arrives, nothing twice — also from the middle of a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_resumes_exactly() {
    let api = start(|_| {}).await;
    let pool = writer_pool(&api.database, 1);
    let mut sse = tail(&api, "dev", "", None).await;
    store(&pool, &batch(0..10, "login")).await;
    let first = sse.events(4, WAIT).await;
    assert_eq!(numbers(&first), [0, 1, 2, 3]);
    let last_id = sse.last_id.clone().expect("an id");
    drop(sse);
    // Stored while no one listens.
    store(&pool, &batch(10..15, "login")).await;
    let mut again = tail(&api, "dev", "", Some(&last_id)).await;
    assert_eq!(
        numbers(&again.events(11, WAIT).await),
        (4..15).collect::<Vec<_>>()
    );
    again.quiet(Duration::from_millis(1500)).await;

    // A forged or foreign id is a 400 naming the header.
    let response = open(&api, "dev", "", Some("forged")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errors"][0]["field"], "Last-Event-ID", "{body}");
    // A tail takes no sort or cursor: 400 naming them.
    let response = open(&api, "dev", "?sort=-timestamp&limit=5", None).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["sort", "limit"], "{body}");
}

/// Filters and `fields` as in queries; a reader restricted to some events sees only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_fields_and_read_restrictions_apply() {
    let dir = std::env::temp_dir().join(format!("eventgate-tail-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let access = dir.join("access.json");
    std::fs::write(
        &access,
        json!({TOPIC: {"write": ["dev"], "read": ["dev", {"user": "bob", "fields": {"event_name": ["login"]}}]}})
            .to_string(),
    )
    .expect("access file");
    let api = start(|c| c.catalogue.access_file = access.clone()).await;
    let pool = writer_pool(&api.database, 1);
    let mut bob = tail(&api, "bob", "", None).await;
    let mut filtered = tail(&api, "dev", "?customer_id_gte=3&fields=customer_id", None).await;
    let mut events = batch(0..3, "login");
    events.extend(batch(3..6, "logout"));
    store(&pool, &events).await;
    let seen = bob.events(3, WAIT).await;
    assert_eq!(numbers(&seen), [0, 1, 2], "bob sees the logins only");
    bob.quiet(Duration::from_millis(1000)).await;
    let seen = filtered.events(3, WAIT).await;
    assert_eq!(numbers(&seen), [3, 4, 5]);
    assert_eq!(
        seen[0]["payload"],
        json!({"customer_id": 3}),
        "fields keep the named members only"
    );
    // Someone without read access: 403, as for queries.
    let response = open(&api, "mallory", "", None).await;
    assert_eq!(response.status(), 403);
}

/// At most `stats.tail_max_streams_per_user` tails per user: one more is a 429; a tail that closes
/// gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streams_of_a_user_are_limited() {
    let api = start(|c| c.stats.tail_max_streams_per_user = 2).await;
    let first = tail(&api, "dev", "", None).await;
    let _second = tail(&api, "dev", "", None).await;
    let refused = open(&api, "dev", "", None).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("stats.tail_max_streams_per_user"),
        "{body}"
    );
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let response = open(&api, "dev", "", None).await;
        if response.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed tail's place came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Heartbeats carry the position and the topic's freshness; each stats answer carries freshness too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_freshness_and_idle_tails_heartbeats() {
    let api = start(|_| {}).await;
    let http = reqwest::Client::new();
    let query = || async {
        let response = http
            .get(format!("{}/stats/{TOPIC}?limit=1", api.url))
            .bearer_auth(token("dev"))
            .send()
            .await
            .expect("query");
        let header = response.headers()["eventgate-freshness"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let body: Value = response.json().await.expect("json");
        (header, body)
    };
    let (header, body) = query().await;
    assert_eq!(header, "none", "nothing stored yet");
    assert_eq!(body["freshness"]["newest_event_at"], Value::Null, "{body}");

    let pool = writer_pool(&api.database, 1);
    let stored = batch(0..3, "login");
    let newest = stored.iter().map(|e| e.received_at).max().expect("events");
    // Postgres keeps microseconds.
    let newest = newest
        .replace_nanosecond(newest.nanosecond() / 1000 * 1000)
        .expect("a time");
    store(&pool, &stored).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (header, body) = query().await;
    let newest_text = newest
        .format(&time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    assert_eq!(body["freshness"]["newest_event_at"], newest_text, "{body}");
    assert!(
        header.starts_with(&format!("newest-event-at=\"{newest_text}\", stored-at=\"")),
        "{header}"
    );
    let age = body["freshness"]["age_ms"].as_i64().expect("age");
    assert!(age >= 1000, "the newest event is over a second old: {body}");

    // The aggregate and the export say the same.
    let aggregate: Value = http
        .post(format!("{}/stats/{TOPIC}/aggregate", api.url))
        .bearer_auth(token("dev"))
        .json(&json!({"metrics": ["count"]}))
        .send()
        .await
        .expect("aggregate")
        .json()
        .await
        .expect("json");
    assert_eq!(
        aggregate["freshness"]["newest_event_at"], newest_text,
        "{aggregate}"
    );
    let export = http
        .get(format!("{}/stats/{TOPIC}/export", api.url))
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("export");
    assert!(export.headers()["eventgate-freshness"]
        .to_str()
        .expect("ascii")
        .contains(&newest_text));

    // An idle tail: heartbeats with an id and the freshness.
    let mut sse = tail(&api, "dev", "", None).await;
    let mut freshness = None;
    let mut heartbeat_id = None;
    let deadline = Instant::now() + WAIT;
    while freshness.is_none() || heartbeat_id.is_none() {
        let frame = sse
            .frame(deadline.saturating_duration_since(Instant::now()))
            .await
            .expect("heartbeats");
        match frame.event.as_deref() {
            Some("freshness") => {
                freshness = Some(serde_json::from_str::<Value>(&frame.data).expect("json"))
            }
            None if frame.data.is_empty() => heartbeat_id = frame.id,
            _ => {}
        }
    }
    assert_eq!(
        freshness.expect("freshness")["newest_event_at"],
        newest_text
    );
    // Resuming from a heartbeat's id loses nothing stored after it.
    drop(sse);
    store(&pool, &batch(3..5, "login")).await;
    let mut resumed = tail(&api, "dev", "", heartbeat_id.as_deref()).await;
    assert_eq!(numbers(&resumed.events(2, WAIT).await), [3, 4]);
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

async fn metrics(api: &StatsApi) -> String {
    reqwest::get(format!("{}/metrics", api.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// A client that stops reading is dropped after the send timeout, without the server holding more
/// than a piece for it; when it reads again it finds `event: error` with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_without_growing_the_memory() {
    let api = start(|c| c.stats.tail_send_timeout_ms = 1_000).await;
    let address = api.url.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut stalled = socket
        .connect(address.parse().expect("address"))
        .await
        .expect("connect");
    stalled
        .write_all(
            format!(
                "GET /stats/{TOPIC}/tail HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
                token("dev")
            )
            .as_bytes(),
        )
        .await
        .expect("request");
    let mut head = vec![0u8; 1024];
    let n = stalled.read(&mut head).await.expect("head");
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    assert!(metrics(&api)
        .await
        .contains("eventgate_stats_tail_streams 1"));

    // About 40 MB of events, generated in Postgres in batches with their commit-log rows, as the
    // writer records them.
    let baseline = resident_bytes();
    for _ in 0..20 {
        api.database
            .execute(&format!(
                "BEGIN; \
                 INSERT INTO events (id, topic, received_at, producer, payload) \
                 SELECT gen_random_uuid(), '{TOPIC}', clock_timestamp(), 'gen', \
                        jsonb_build_object('event_name', 'login', 'description', repeat('x', 2000), 'customer_id', i) \
                 FROM generate_series(1, 1000) AS i; \
                 INSERT INTO event_commits (topic, xact_id, oldest_received_at, newest_received_at, events) \
                 SELECT '{TOPIC}', pg_current_xact_id()::text::bigint, min(received_at), max(received_at), count(*) \
                 FROM events WHERE xmin = pg_current_xact_id()::xid; \
                 NOTIFY eventgate_events, '{TOPIC}'; COMMIT"
            ))
            .await
            .expect("a batch");
    }
    let mut peak = baseline;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        peak = peak.max(resident_bytes());
        let text = metrics(&api).await;
        if text.contains("eventgate_stats_limit_hits_total{limit=\"tail_slow_consumer\"} 1")
            && text.contains("eventgate_stats_tail_streams 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled tail was not dropped:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 24 * 1024 * 1024,
        "a stalled tail grew the resident memory by {} MiB",
        growth / (1024 * 1024)
    );
    // Reading again: what was buffered, then the reason, then the end of the body.
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(find(&rest, b"slow_consumer").is_some() && rest.ends_with(b"\r\n0\r\n\r\n")) {
        let mut buffer = vec![0u8; 64 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stalled.read(&mut buffer))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no error event at the end: …{}",
                    String::from_utf8_lossy(&rest[rest.len().saturating_sub(400)..])
                )
            })
            .expect("reads");
        assert!(n > 0, "the connection closed before the error event");
        rest.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("event: error\ndata: {"),
        "{}",
        &text[text.len().saturating_sub(400)..]
    );
}
