//! Issue 16, part b, against the real services: an event by id (`GET /stats/{topic}/events/{id}`) under
//! the read rules; a producer's "where is my event?" (`…/events/{id}/status`) for its own events only;
//! totals (`count`, `Prefer: count=`); field selection (`fields`); audit-log's own request
//! (`page_size`/`page`, `total_records`, the depth cap); `GET /token`; dead letters by reason.

use std::time::Duration;

use eventgate_e2e::System;
use eventgate_test_support::token;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const AUDIT: &str = "audit.logs";

/// dev reads and writes everything; alice and bob only write; `only7` reads only customer 7's events;
/// `reader` only reads.
const ACCESS: &str = r#"{
  "audit.logs": {
    "write": ["dev", "alice", "bob"],
    "read": ["dev", "reader", {"user": "only7", "fields": {"customer_id": [7]}}]
  },
  "public.cps.za.runs": {"write": ["dev"], "read": ["dev"]},
  "web.events": {"write": ["dev"], "read": ["dev"]}
}"#;

async fn start(configure: impl FnOnce(&mut eventgate_core::config::Config)) -> System {
    System::start_with(eventgate_test_support::stack().await, 1, |config| {
        std::fs::write(&config.catalogue.access_file, ACCESS).expect("access file");
        configure(config);
    })
    .await
}

fn audit(event_id: &str, name: &str, customer: i64) -> Value {
    json!({"event_id": event_id, "event_name": name, "description": format!("{name} of {customer}"),
           "customer_id": customer})
}

async fn post(system: &System, user: &str, body: &Value) {
    let (status, answer) = system.post(AUDIT, user, body).await;
    assert_eq!(status, 202, "{user}: {answer}");
}

/// `GET {stats}{path}` as `user`, with headers; the status, the headers and the JSON answer.
async fn get(
    system: &System,
    user: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = system
        .http
        .get(format!("{}{path}", system.stats_url))
        .bearer_auth(token(user));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("stats-api answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, headers, value)
}

fn fields_of(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_looked_up_by_id_under_the_read_rules() {
    let system = start(|_| {}).await;
    let (seven, forty_two, shared) = (new_id(), new_id(), new_id());
    post(&system, "dev", &audit(&seven, "login", 7)).await;
    post(&system, "dev", &audit(&forty_two, "login", 42)).await;
    // Two producers may each store an event with the same id (the key is topic, id, producer).
    post(&system, "alice", &audit(&shared, "alice's", 7)).await;
    post(&system, "bob", &audit(&shared, "bob's", 7)).await;
    system.wait_for_rows(4, WAIT).await;

    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}/events/{seven}"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["id"], json!(seven), "{answer}");
    assert_eq!(answer["data"]["producer"], "dev");
    assert_eq!(answer["data"]["payload"]["customer_id"], 7);
    assert_eq!(answer["data"]["payload"]["event_name"], "login");

    // A restricted reader sees its customer's event; another's is a 404 like an unknown id.
    let (status, _, answer) = get(
        &system,
        "only7",
        &format!("/stats/{AUDIT}/events/{seven}"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (hidden, _, hidden_answer) = get(
        &system,
        "only7",
        &format!("/stats/{AUDIT}/events/{forty_two}"),
        &[],
    )
    .await;
    let (unknown, _, unknown_answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}/events/{}", new_id()),
        &[],
    )
    .await;
    assert_eq!(
        (hidden, unknown),
        (404, 404),
        "{hidden_answer} {unknown_answer}"
    );
    assert_eq!(fields_of(&hidden_answer), ["id"]);
    // A restricted reader cannot widen its view by selecting fields.
    let (status, _, _) = get(
        &system,
        "only7",
        &format!("/stats/{AUDIT}/events/{forty_two}?fields=customer_id"),
        &[],
    )
    .await;
    assert_eq!(status, 404);

    // Not an id, a producer's token (no read right), an unknown parameter.
    let (status, _, answer) = get(&system, "dev", &format!("/stats/{AUDIT}/events/42"), &[]).await;
    assert_eq!(
        (status, fields_of(&answer)),
        (400, vec!["id".to_owned()]),
        "{answer}"
    );
    let (status, _, _) = get(
        &system,
        "alice",
        &format!("/stats/{AUDIT}/events/{seven}"),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}/events/{seven}?sort=x"),
        &[],
    )
    .await;
    assert_eq!((status, fields_of(&answer)), (400, vec!["sort".to_owned()]));

    // The same id of two producers: a 400 naming both, `?producer=` chooses.
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}/events/{shared}"),
        &[],
    )
    .await;
    assert_eq!(
        (status, fields_of(&answer)),
        (400, vec!["producer".to_owned()]),
        "{answer}"
    );
    let message = answer["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("\"alice\"") && message.contains("\"bob\""),
        "{message}"
    );
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}/events/{shared}?producer=bob"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["payload"]["event_name"], "bob's");

    // Field selection on a lookup.
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}/events/{seven}?fields=event_name,timestamp"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["payload"], json!({"event_name": "login"}));
    assert!(answer["data"]["timestamp"].is_string() && answer["data"].get("producer").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_learns_what_became_of_its_own_events_only() {
    let system = start(|_| {}).await;
    let (kept, refused) = (new_id(), new_id());
    post(&system, "alice", &audit(&kept, "login", 7)).await;
    system.wait_for_rows(1, WAIT).await;
    // The same id with another payload: the first stays, the second is a conflicting duplicate.
    post(&system, "alice", &audit(&kept, "changed", 7)).await;
    // An envelope the database refuses (jsonb takes no NUL), produced past the ingest-api, which would
    // have answered 400.
    let envelope = format!(
        r#"{{"id":"{refused}","topic":"{AUDIT}","timestamp":"2025-01-15T10:00:00Z","producer":"alice","payload":{{"event_name":"a\u0000b","description":"x"}}}}"#
    );
    system
        .produce_raw(AUDIT, &refused, envelope.as_bytes())
        .await;
    system
        .wait_for(
            "both dead letters",
            WAIT,
            "SELECT count(*) FROM dead_letters HAVING count(*) >= 2",
        )
        .await;

    let status_of = |user: &'static str, id: String| {
        let system = &system;
        async move {
            let (status, _, answer) = get(
                system,
                user,
                &format!("/stats/{AUDIT}/events/{id}/status"),
                &[],
            )
            .await;
            assert_eq!(status, 200, "{user} {id}: {answer}");
            answer["data"].clone()
        }
    };
    let stored = status_of("alice", kept.clone()).await;
    assert_eq!(stored["status"], "stored", "{stored}");
    assert!(stored["received_at"].is_string(), "{stored}");
    assert_eq!(
        stored["dead_letters"][0]["reason"], "conflicting_duplicate",
        "{stored}"
    );
    assert!(stored.get("payload").is_none(), "no payload: {stored}");

    let dead = status_of("alice", refused.clone()).await;
    assert_eq!(dead["status"], "dead_lettered", "{dead}");
    assert_eq!(dead["dead_letters"][0]["reason"], "refused", "{dead}");

    let unknown = status_of("alice", new_id()).await;
    assert_eq!(unknown["status"], "not_found", "{unknown}");
    assert!(unknown["hint"].is_string());

    // Bob (allowed to write too) learns nothing about alice's ids: the same answer as for an id never sent.
    let foreign = status_of("bob", kept.clone()).await;
    assert_eq!(foreign["status"], "not_found", "{foreign}");
    assert_eq!(foreign["dead_letters"], json!([]));
    let foreign = status_of("bob", refused.clone()).await;
    assert_eq!(foreign["status"], "not_found", "{foreign}");

    // A token that may only read the topic has no producer's status; not an id is a 400.
    let (status, _, _) = get(
        &system,
        "reader",
        &format!("/stats/{AUDIT}/events/{kept}/status"),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, answer) = get(
        &system,
        "alice",
        &format!("/stats/{AUDIT}/events/nope/status"),
        &[],
    )
    .await;
    assert_eq!((status, fields_of(&answer)), (400, vec!["id".to_owned()]));
    // The producer's token still cannot query the topic.
    let (status, _, _) = get(&system, "alice", &format!("/stats/{AUDIT}"), &[]).await;
    assert_eq!(status, 403);

    // The dead-letter listing shows each reason and filters by it.
    let (status, listed) = system
        .dead_letters(AUDIT, "dev", &[("reason", "refused")])
        .await;
    assert_eq!(status, 200, "{listed}");
    let rows = listed["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["reason"], "refused");
    let (status, listed) = system
        .dead_letters(AUDIT, "dev", &[("reason", "refused,conflicting_duplicate")])
        .await;
    assert_eq!(
        (status, listed["data"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    let (status, listed) = system
        .dead_letters(AUDIT, "dev", &[("reason", "bogus")])
        .await;
    assert_eq!(
        (status, fields_of(&listed)),
        (400, vec!["reason".to_owned()]),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_or_estimated_and_fields_select_the_payload() {
    let system = start(|_| {}).await;
    let events: Vec<Value> = (0..30)
        .map(|i| {
            audit(
                &new_id(),
                if i % 3 == 0 { "logout" } else { "login" },
                if i < 12 { 7 } else { 42 },
            )
        })
        .collect();
    post(&system, "dev", &Value::Array(events)).await;
    system.wait_for_rows(30, WAIT).await;

    let (status, answer) = system
        .query(AUDIT, "dev", &json!({"count": "exact", "limit": 5}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pagination"]["total"], 30, "{answer}");
    assert_eq!(answer["pagination"]["total_exact"], true);
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(5));

    // The total is the query's, filters and a reader's restriction included, the cursor not.
    let (_, answer) = system
        .query(
            AUDIT,
            "dev",
            &json!({"filter": {"event_name": "logout"}, "count": "exact", "limit": 2}),
        )
        .await;
    assert_eq!(answer["pagination"]["total"], 10, "{answer}");
    let cursor = answer["pagination"]["cursor"].clone();
    let (_, answer) = system
        .query(AUDIT, "dev", &json!({"filter": {"event_name": "logout"}, "count": "exact", "limit": 2, "cursor": cursor}))
        .await;
    assert_eq!(answer["pagination"]["total"], 10, "{answer}");
    let (_, answer) = system
        .query(AUDIT, "only7", &json!({"count": "exact"}))
        .await;
    assert_eq!(answer["pagination"]["total"], 12, "{answer}");

    // The planner's estimate: a number, not exact; `estimated` counts small results exactly.
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}?count=planned&limit=1"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["pagination"]["total"].is_u64(), "{answer}");
    assert_eq!(answer["pagination"]["total_exact"], false);
    let (_, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}?count=estimated&limit=1"),
        &[],
    )
    .await;
    assert_eq!(
        (
            answer["pagination"]["total"].clone(),
            answer["pagination"]["total_exact"].clone()
        ),
        (json!(30), json!(true))
    );

    // PostgREST's header, answered with Preference-Applied; no count unless asked.
    let (status, headers, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}?event_name=login&limit=1"),
        &[("Prefer", "return=minimal, count=exact")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pagination"]["total"], 20, "{answer}");
    assert_eq!(
        headers
            .get("preference-applied")
            .map(|v| v.to_str().unwrap_or("")),
        Some("count=exact")
    );
    let (_, _, answer) = get(&system, "dev", &format!("/stats/{AUDIT}?limit=1"), &[]).await;
    assert!(answer["pagination"].get("total").is_none(), "{answer}");
    let (status, _, answer) = get(&system, "dev", &format!("/stats/{AUDIT}?count=all"), &[]).await;
    assert_eq!(
        (status, fields_of(&answer)),
        (400, vec!["count".to_owned()])
    );

    // Fields: only the named members; the restriction still filters the rows.
    let (status, answer) = system
        .query(
            AUDIT,
            "dev",
            &json!({"fields": ["customer_id", "producer"], "limit": 3}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for event in answer["data"].as_array().expect("data") {
        let mut keys: Vec<&str> = event
            .as_object()
            .expect("event")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["id", "payload", "producer", "topic"], "{event}");
        assert_eq!(
            event["payload"].as_object().map(|p| p.len()),
            Some(1),
            "{event}"
        );
    }
    let (_, _, answer) = get(
        &system,
        "only7",
        &format!("/stats/{AUDIT}?fields=customer_id&limit=100"),
        &[],
    )
    .await;
    let customers: Vec<&Value> = answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| &e["payload"]["customer_id"])
        .collect();
    assert_eq!(customers.len(), 12, "{answer}");
    assert!(customers.iter().all(|c| **c == json!(7)), "{answer}");
    let (status, answer) = system
        .query(
            AUDIT,
            "dev",
            &json!({"fields": ["event_name", "nosuch"], "filter": {"oops": 1}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(fields_of(&answer), ["fields[1]", "oops"], "{answer}");
    assert!(answer["errors"][0]["message"]
        .as_str()
        .expect("m")
        .contains("nosuch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_request_works_verbatim_with_page_and_total_records() {
    let system = start(|_| {}).await;
    // 25 matching events with increasing created_at, and others that must not count.
    let mut events: Vec<Value> = (0..25)
        .map(|i| {
            json!({"event_name": "user.login", "description": format!("n{i}"), "customer_id": 42,
                   "created_at": format!("2025-01-15T10:{i:02}:00Z")})
        })
        .collect();
    events.push(json!({"event_name": "user.login", "description": "other", "customer_id": 7}));
    events.push(json!({"event_name": "user.logout", "description": "other", "customer_id": 42}));
    post(&system, "dev", &Value::Array(events)).await;
    system.wait_for_rows(27, WAIT).await;

    let request = |page: u32| {
        format!("/stats/{AUDIT}?event_name=user.login&customer_id=42&sort=-created_at&page_size=10&page={page}")
    };
    let (status, _, answer) = get(&system, "dev", &request(2), &[]).await;
    assert_eq!(status, 200, "{answer}");
    let descriptions: Vec<&str> = answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["payload"]["description"].as_str().expect("description"))
        .collect();
    let expected: Vec<String> = (5..15).rev().map(|i| format!("n{i}")).collect();
    assert_eq!(
        descriptions, expected,
        "newest created_at first, the second page of 10"
    );
    assert_eq!(
        answer["metadata"],
        json!({"current_page": 2, "page_size": 10, "first_page": 1, "last_page": 3, "total_records": 25}),
        "{answer}"
    );
    assert_eq!(answer["pagination"]["total"], 25);
    let (_, _, last) = get(&system, "dev", &request(3), &[]).await;
    assert_eq!(last["data"].as_array().map(Vec::len), Some(5), "{last}");
    assert_eq!(last["pagination"]["has_more"], false);

    // Beyond 10,000 events deep: a 400 at `page` that points to the cursor.
    let (status, _, answer) = get(&system, "dev", &request(1001), &[]).await;
    assert_eq!(
        (status, fields_of(&answer)),
        (400, vec!["page".to_owned()]),
        "{answer}"
    );
    let message = answer["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("10000") && message.contains("cursor"),
        "{message}"
    );
    let (status, _, _) = get(&system, "dev", &request(1000), &[]).await;
    assert_eq!(status, 200, "page 1000 of 10 is the deepest");
    // Their `sort=time` stays a field-level 400; `page` with `cursor`, or 0, are 400s too.
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}?sort=time&page_size=10&page=1"),
        &[],
    )
    .await;
    assert_eq!(
        (status, fields_of(&answer)),
        (400, vec!["sort[0]".to_owned()]),
        "{answer}"
    );
    let cursor = last["pagination"]["cursor"]
        .as_str()
        .unwrap_or("x")
        .to_owned();
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}?page=2&cursor={cursor}"),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(fields_of(&answer).contains(&"page".to_owned()), "{answer}");
    let (status, _, answer) = get(
        &system,
        "dev",
        &format!("/stats/{AUDIT}?page=0&page_size=5000"),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    let named = fields_of(&answer);
    assert!(
        named.contains(&"page".to_owned()) && named.contains(&"page_size".to_owned()),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_redirects_to_the_provider_or_answers_a_hint() {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let system = start(|_| {}).await;
    for base in [&system.ingest_url, &system.stats_url] {
        let response = no_redirects
            .get(format!("{base}/token"))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), 404, "{base}");
        let answer: Value = response.json().await.expect("json");
        let message = answer["errors"][0]["message"].as_str().expect("message");
        assert!(message.contains("auth.token_provider_url"), "{message}");
    }
    drop(system);

    let provider = "https://login.example.test/oauth/token?client=eventgate";
    let system = start(|config| config.auth.token_provider_url = Some(provider.into())).await;
    for base in [&system.ingest_url, &system.stats_url] {
        let response = no_redirects
            .get(format!("{base}/token"))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), 303, "{base}");
        assert_eq!(
            response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok()),
            Some(provider)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_count_past_the_statement_timeout_answers_the_estimate() {
    let mut system = start(|_| {}).await;
    // A history whose exact count takes longer than the timeout below, while a page of it (the newest
    // two by the (topic, received_at, id) index) stays quick.
    system
        .database
        .execute(
            "INSERT INTO events (id, topic, received_at, producer, payload)
             SELECT gen_random_uuid(), 'audit.logs', now() - n * interval '1 millisecond', 'dev',
                    jsonb_build_object('event_name', 'login', 'description', repeat('x', 200))
             FROM generate_series(1, 1500000) AS n;
             ANALYZE events;",
        )
        .await
        .expect("a large history");
    system
        // 150 ms: far below the count of 1.5 M rows (seconds here, the table not vacuumed), with room
        // for the page's own statement on a machine busy with other tests.
        .restart_stats_api(|config| config.stats.statement_timeout_ms = 150)
        .await;
    let (status, answer) = system
        .query(AUDIT, "dev", &json!({"count": "exact", "limit": 2}))
        .await;
    assert_eq!(status, 200, "the page itself answers: {answer}");
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(2));
    let pagination = &answer["pagination"];
    assert_eq!(pagination["total_exact"], false, "{answer}");
    assert_eq!(pagination["total_timed_out"], true, "{answer}");
    assert!(
        pagination["total"].as_u64().is_some_and(|n| n > 100_000),
        "the planner's estimate: {answer}"
    );
}
