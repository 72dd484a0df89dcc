//! `eventgate topics list` and `topics describe` as the built binary, against the test stack's Postgres
//! and tansu: a topics directory of three topics (one with two versions), Kafka topics made for two of
//! them (one with fewer partitions than configured), events, dead letters and a watermark stored in a
//! database of its own. No service runs: the command reads the broker and the database directly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eventgate_test_support::{free_port, stack};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

/// The binary with the services' settings in the environment (and nothing of the caller's), in a
/// directory without a configuration file.
async fn eventgate(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventgate"));
    command.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("EVENTGATE_") {
            command.env_remove(key);
        }
    }
    command
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().await.expect("eventgate runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn write(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, value.to_string()).expect("schema");
}

/// audit.logs in two versions (the second adds an optional field and settings), web.events and
/// cli.orphan in one.
fn topics_dir(dir: &Path) -> PathBuf {
    let topics = dir.join("topics");
    let v1 = json!({
        "type": "object",
        "required": ["event_name", "description"],
        "properties": {
            "event_name": {"type": "string"},
            "description": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "customer_id": {"type": "integer"}
        },
        "additionalProperties": false
    });
    let mut v2 = v1.clone();
    v2["properties"]["source"] = json!({"type": ["string", "null"]});
    v2["x-eventgate"] = json!({"key_field": "event_name", "indexed_fields": ["event_name"]});
    write(&topics.join("audit.logs/1.json"), &v1);
    write(&topics.join("audit.logs/2.json"), &v2);
    let simple = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    write(&topics.join("web.events.json"), &simple);
    write(&topics.join("cli.orphan.json"), &simple);
    topics
}

fn topic<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_describe_show_the_configured_topics_beside_kafka_and_postgres() {
    let stack = stack().await;
    let dir = Dir(std::env::temp_dir().join(format!(
        "eventgate-topics-list-{}",
        uuid::Uuid::new_v4().simple()
    )));
    std::fs::create_dir_all(&dir.0).expect("dir");
    let topics = topics_dir(&dir.0);
    let prefix = format!("{}.", stack.unique_name("tl"));
    let database = stack.fresh_database().await;

    // Kafka: audit.logs as configured (3 partitions) with two records, web.events with 1, no cli.orphan.
    stack
        .create_kafka_topic(&format!("{prefix}audit.logs"), 3)
        .await;
    stack
        .create_kafka_topic(&format!("{prefix}web.events"), 1)
        .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_brokers)
        .create()
        .expect("producer");
    for n in 0..2 {
        let payload = format!("record {n}");
        producer
            .send(
                FutureRecord::<str, str>::to(&format!("{prefix}audit.logs"))
                    .partition(0)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }

    // Postgres: 3 events of audit.logs and 1 of web.events; 2 unresolved dead letters of audit.logs
    // and 1 discarded; the writers' watermark of audit.logs.
    let (client, connection) = tokio_postgres::connect(&database.writer_url, tokio_postgres::NoTls)
        .await
        .expect("database");
    tokio::spawn(connection);
    client
        .batch_execute(
            "INSERT INTO events (id, topic, received_at, producer, payload)
               SELECT gen_random_uuid(), t, now(), 'dev', '{}'::jsonb
               FROM unnest(ARRAY['audit.logs', 'audit.logs', 'audit.logs', 'web.events']) AS t;
             INSERT INTO dead_letters (topic, kafka_topic, kafka_partition, kafka_offset, error, reason,
                                       resolution, resolved_at, resolved_by)
               VALUES ('audit.logs', 'k', 0, 1, 'database refused', 'refused', NULL, NULL, NULL),
                      ('audit.logs', 'k', 0, 2, 'not an envelope', 'undecodable', NULL, NULL, NULL),
                      ('audit.logs', 'k', 0, 3, 'not an envelope', 'undecodable', 'discarded', now(), 't');
             INSERT INTO topic_watermarks (topic, newest_event_at, stored_at)
               VALUES ('audit.logs', '2025-01-31T09:14:03.120Z', '2025-01-31T09:14:03.301Z');",
        )
        .await
        .expect("test data");

    let topics_path = topics.to_str().expect("path");
    let env = [
        ("EVENTGATE_CATALOGUE__TOPICS_DIR", topics_path),
        ("EVENTGATE_KAFKA__BROKERS", stack.kafka_brokers.as_str()),
        ("EVENTGATE_KAFKA__TOPIC_PREFIX", prefix.as_str()),
        ("EVENTGATE_KAFKA__PARTITIONS", "3"),
        (
            "EVENTGATE_WRITER__MIGRATION_DATABASE_URL",
            database.writer_url.as_str(),
        ),
    ];

    let list = eventgate(&dir.0, &env, &["topics", "list", "--format", "json"])
        .await
        .expect(0)
        .json();
    assert_eq!(list["broker"]["state"], "read", "{list}");
    assert_eq!(list["database"]["state"], "read", "{list}");
    let names: Vec<&str> = list["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["audit.logs", "cli.orphan", "web.events"]);
    let audit = topic(&list, "audit.logs");
    assert_eq!(audit["versions"], json!([1, 2]));
    assert_eq!(audit["latest_version"], 2);
    assert_eq!(audit["compatibility"], "backward");
    assert_eq!(audit["kafka_topic"], format!("{prefix}audit.logs"));
    assert_eq!(audit["kafka_status"], "present");
    assert_eq!(audit["partitions_configured"], 3);
    assert_eq!(audit["partitions_in_kafka"], 3);
    assert_eq!(audit["retention"], Value::Null);
    assert_eq!(audit["events_stored"], 3);
    assert_eq!(audit["events_exact"], true);
    assert_eq!(
        audit["dead_letters_unresolved"], 2,
        "the discarded one is not"
    );
    let web = topic(&list, "web.events");
    assert_eq!(web["partitions_in_kafka"], 1);
    assert_eq!(web["events_stored"], 1);
    assert_eq!(web["dead_letters_unresolved"], 0);
    let orphan = topic(&list, "cli.orphan");
    assert_eq!(orphan["kafka_status"], "missing");
    assert_eq!(orphan["partitions_in_kafka"], Value::Null);
    assert_eq!(orphan["partitions_configured"], 3);
    assert_eq!(orphan["events_stored"], 0);

    let table = eventgate(&dir.0, &env, &["topics", "list", "--format", "table"])
        .await
        .expect(0);
    for cell in ["3 / 3", "3 / 1 (differs)", "3 / missing", "1–2"] {
        assert!(table.stdout.contains(cell), "{cell}:\n{}", table.stdout);
    }

    let described = eventgate(
        &dir.0,
        &env,
        &["topics", "describe", "audit.logs", "--format", "json"],
    )
    .await
    .expect(0)
    .json();
    let audit = &described["topic"];
    assert_eq!(audit["events_stored"], 3);
    assert_eq!(audit["events_exact"], true);
    assert_eq!(audit["key_field"], "event_name");
    assert_eq!(audit["indexed_fields"], json!(["event_name"]));
    assert_eq!(
        audit["dead_letters_by_reason"],
        json!({"refused": 1, "undecodable": 1})
    );
    assert_eq!(audit["freshness"]["lag_ms"], 181, "{audit}");
    assert_eq!(
        audit["freshness"]["newest_event_at"],
        "2025-01-31T09:14:03.12Z"
    );
    let versions = audit["schema_versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[0]["required"],
        json!([{"name": "description", "type": "string"}, {"name": "event_name", "type": "string"}])
    );
    assert!(
        versions[1]["optional"]
            .as_array()
            .expect("optional")
            .contains(&json!({"name": "source", "type": "string|null"})),
        "{versions:?}"
    );
    assert_eq!(versions[0]["settings"], json!({}));
    assert_eq!(versions[1]["settings"]["key_field"], "event_name");
    let partitions = audit["kafka_partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3, "{partitions:?}");
    let high: i64 = partitions
        .iter()
        .map(|p| p["high"].as_i64().unwrap_or_else(|| panic!("high: {p}")))
        .sum();
    assert_eq!(high, 2, "the two records: {partitions:?}");
    assert_eq!(partitions[0]["partition"], 0);

    let shown = eventgate(
        &dir.0,
        &env,
        &["topics", "describe", "audit.logs", "--format", "table"],
    )
    .await
    .expect(0);
    for part in [
        "1–2 (compatibility backward)",
        "2 unresolved: refused 1, undecodable 1",
        "source: string|null",
        "the writers' lag then 181 ms",
    ] {
        assert!(shown.stdout.contains(part), "{part}:\n{}", shown.stdout);
    }

    // Without a database: the broker's columns still, the database's null.
    let offline = eventgate(
        &dir.0,
        &env,
        &["topics", "list", "--format", "json", "--no-database"],
    )
    .await
    .expect(0)
    .json();
    assert_eq!(offline["database"]["state"], "not_configured");
    let audit = topic(&offline, "audit.logs");
    assert_eq!(audit["partitions_in_kafka"], 3);
    assert_eq!(audit["events_stored"], Value::Null);
    assert_eq!(audit["dead_letters_unresolved"], Value::Null);

    // A broker that does not answer: `?` within the timeout, a warning, exit 0 while the database was
    // read, 3 when nothing live was.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut down = env.to_vec();
    down[1] = ("EVENTGATE_KAFKA__BROKERS", nowhere.as_str());
    let started = Instant::now();
    let run = eventgate(
        &dir.0,
        &down,
        &["topics", "list", "--format", "json", "--timeout", "2"],
    )
    .await
    .expect(0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );
    assert!(
        run.stderr
            .contains("warning: the Kafka broker did not answer"),
        "{}",
        run.stderr
    );
    let unreachable = run.json();
    assert_eq!(unreachable["broker"]["state"], "unreachable");
    let audit = topic(&unreachable, "audit.logs");
    assert_eq!(audit["kafka_status"], "unknown");
    assert_eq!(audit["partitions_in_kafka"], Value::Null);
    assert_eq!(audit["events_stored"], 3);
    eventgate(
        &dir.0,
        &down,
        &["topics", "list", "--no-database", "--timeout", "2"],
    )
    .await
    .expect(3);

    // A topic that does not load: reported as `topics check` says it, exit 1, the others listed.
    std::fs::write(topics.join("broken.json"), "{not json").expect("broken schema");
    let run = eventgate(
        &dir.0,
        &env,
        &["topics", "list", "--format", "json", "--no-database"],
    )
    .await
    .expect(1);
    assert!(
        run.stderr.contains("broken.json is not valid JSON"),
        "{}",
        run.stderr
    );
    let partial = run.json();
    assert_eq!(partial["topics"].as_array().map(Vec::len), Some(3));
    assert_eq!(partial["problems"].as_array().map(Vec::len), Some(1));
    std::fs::remove_file(topics.join("broken.json")).expect("remove");

    // An unknown topic: exit 1, naming the known ones.
    let unknown = eventgate(&dir.0, &env, &["topics", "describe", "audit.log"])
        .await
        .expect(1);
    assert!(
        unknown
            .stderr
            .contains("known topics: audit.logs, cli.orphan, web.events"),
        "{}",
        unknown.stderr
    );
}
