//! `eventgate dead-letters` against the real services (ingest-api, a db-writer and the stats-api
//! in-process on the test stack's Postgres and tansu), run as the built binary.
//!
//! The poison event: the writer does not validate payloads (the ingest-api did), so what parks a valid
//! event is the database refusing it. Here the bug is in the topic's schema: it declares a long
//! free-text field indexed (`x-eventgate.indexed_fields`), `eventgate migrate` builds that expression
//! index, and Postgres refuses an event whose text is too large for a btree entry (54000): the writer
//! parks it as `refused`. A first fix that only caps the field's length makes the replay refuse it
//! (the current schema names the field); the real fix drops the field from the indexed ones and the
//! index (`eventgate maintain`), and the replay stores the event once, with its original id. A forced second replay stores
//! nothing new. Raw garbage is refused by replay and discarded.

mod common;

use std::time::Duration;

use common::Env;
use serde_json::{json, Value};

const TOPIC: &str = "cli.notes";
const WAIT: Duration = Duration::from_secs(60);

fn schema(note: Value, indexed: bool) -> String {
    let mut schema = json!({
        "type": "object",
        "required": ["note"],
        "properties": {
            "event_id": {"type": "string", "format": "uuid"},
            "note": note,
            "n": {"type": "integer"}
        },
        "additionalProperties": false
    });
    if indexed {
        // The bug: free text of any length in a btree index, whose entries hold about 2.7 kB at most.
        schema["x-eventgate"] = json!({"indexed_fields": ["note"]});
    }
    schema.to_string()
}

/// Random hex: no compression brings 30,000 characters of it under the btree entry limit.
fn long_note() -> String {
    (0..940)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect()
}

struct Notes {
    env: Env,
    topics_dir: std::path::PathBuf,
}

impl Notes {
    async fn start() -> Notes {
        let mut topics_dir = std::path::PathBuf::new();
        let env = Env::start_with(|config| {
            topics_dir = config.catalogue.topics_dir.clone();
            std::fs::write(
                topics_dir.join(format!("{TOPIC}.json")),
                schema(json!({"type": "string"}), true),
            )
            .expect("schema");
            let access: serde_json::Map<String, Value> = [TOPIC, common::TOPIC, common::STRICT]
                .iter()
                .map(|t| ((*t).to_owned(), json!({"write": ["dev"], "read": ["dev"]})))
                .collect();
            std::fs::write(
                &config.catalogue.access_file,
                Value::Object(access).to_string(),
            )
            .expect("access");
        })
        .await;
        Notes { env, topics_dir }
    }

    fn write_schema(&self, note: Value, indexed: bool) {
        std::fs::write(
            self.topics_dir.join(format!("{TOPIC}.json")),
            schema(note, indexed),
        )
        .expect("schema");
    }

    /// `eventgate ARGS` as an operator runs it: the schema owner's URL and the services' settings
    /// from the environment, in a directory without a configuration file.
    async fn eventgate(&self, args: &[&str]) -> common::Run {
        let config = &self.env.system.config;
        let mut command = self.env.command(args);
        command
            .current_dir(&self.env.dir)
            .env("USER", "tester")
            .env(
                "EVENTGATE_WRITER__MIGRATION_DATABASE_URL",
                &self.env.system.database.writer_url,
            )
            .env("EVENTGATE_KAFKA__BROKERS", &config.kafka.brokers)
            .env("EVENTGATE_KAFKA__TOPIC_PREFIX", &config.kafka.topic_prefix)
            .env("EVENTGATE_CATALOGUE__TOPICS_DIR", &self.topics_dir);
        common::Run::of(command.output().await.expect("eventgate runs"))
    }

    async fn count(&self, sql: &str) -> i64 {
        self.env
            .system
            .database
            .count(sql)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn list(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["dead-letters", "list", "--format", "json"];
        all.extend_from_slice(args);
        let run = self.eventgate(&all).await.expect(0);
        let listed: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON array");
        listed.as_array().expect("array").clone()
    }
}

/// The field indexes of the topics' partitions (`<partition>_f<hash>`).
const FIELD_INDEXES: &str =
    "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'events\\_%' AND indexname ~ '_f[0-9a-f]{16}$'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_replayed_once_after_its_schema_is_fixed() {
    let notes = Notes::start().await;
    let owner = notes.env.system.database.writer_url.clone();
    let topics = notes.topics_dir.to_str().expect("path").to_owned();
    // The operator's migration builds the buggy schema's index (and applies any pending migration).
    notes
        .eventgate(&["migrate", "--database-url", &owner, "--topics-dir", &topics])
        .await
        .expect(0);
    assert!(
        notes.count(FIELD_INDEXES).await >= 1,
        "the buggy schema's index"
    );

    // The ingest-api accepts both events (the schema allows any note); the database refuses the long one.
    let poison_id = uuid::Uuid::now_v7().to_string();
    let note = long_note();
    let file = notes.env.path("notes.ndjson");
    common::write_lines(
        &file,
        [
            json!({"note": "short", "n": 1}).to_string(),
            json!({"event_id": poison_id, "note": note, "n": 2}).to_string(),
        ],
    );
    notes
        .eventgate(&["send", TOPIC, file.to_str().expect("path")])
        .await
        .expect(0);
    notes
        .env
        .system
        .wait_for(
            "the long note parked",
            WAIT,
            "SELECT count(*) FROM dead_letters WHERE reason = 'refused'",
        )
        .await;
    notes.env.system.wait_for_rows(1, WAIT).await;

    let listed = notes.list(&["--topic", TOPIC]).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["reason"], "refused");
    assert_eq!(listed[0]["event_id"], poison_id.as_str());
    assert!(listed[0]["resolution"].is_null());
    let dead_id = listed[0]["id"].as_i64().expect("id").to_string();
    let table = notes.eventgate(&["dead-letters", "list"]).await.expect(0);
    assert!(
        table.stdout.contains("refused") && table.stdout.contains(TOPIC),
        "{}",
        table.stdout
    );
    let shown = notes
        .eventgate(&["dead-letters", "show", &dead_id])
        .await
        .expect(0);
    assert!(
        shown.stdout.contains("resolution: unresolved"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains(&note), "the raw message");

    // A first fix caps the note's length: the replay checks the current schema and refuses, naming
    // the field; nothing is sent and the dead letter stays unresolved.
    notes.write_schema(json!({"type": "string", "maxLength": 2000}), true);
    let refused = notes
        .eventgate(&["dead-letters", "replay", &dead_id])
        .await
        .expect(1);
    assert!(
        refused
            .stderr
            .contains("still refused by the current schema of cli.notes")
            && refused.stderr.contains("\n    note: "),
        "{}",
        refused.stderr
    );
    let unresolved =
        format!("SELECT count(*) FROM dead_letters WHERE id = {dead_id} AND resolution IS NULL");
    assert_eq!(notes.count(&unresolved).await, 1);

    // The real fix: the note is not indexed any more, and its index goes.
    notes.write_schema(json!({"type": "string"}), false);
    // The maintenance drops the field indexes no topic asks for any more.
    let maintained = notes
        .eventgate(&["maintain", "--topics-dir", &topics])
        .await
        .expect(0);
    assert!(
        maintained.stdout.contains("indexes dropped:"),
        "{}",
        maintained.stdout
    );
    assert_eq!(notes.count(FIELD_INDEXES).await, 0, "{}", maintained.stdout);
    let dry = notes
        .eventgate(&["dead-letters", "replay", &dead_id, "--dry-run"])
        .await
        .expect(0);
    assert!(dry.stdout.contains("would replay event"), "{}", dry.stdout);
    assert_eq!(
        notes.count(&unresolved).await,
        1,
        "a dry run records nothing"
    );

    let replayed = notes
        .eventgate(&["dead-letters", "replay", &dead_id, "--by", "ops"])
        .await
        .expect(0);
    assert!(
        replayed
            .stdout
            .contains(&format!("replayed event {poison_id} (producer dev)")),
        "{}",
        replayed.stdout
    );
    let stored = format!(
        "SELECT count(*) FROM events WHERE id = '{poison_id}' AND topic = '{TOPIC}' \
         AND producer = 'dev' AND length(payload->>'note') = {}",
        note.len()
    );
    notes
        .env
        .system
        .wait_for("the replayed event stored", WAIT, &stored)
        .await;
    assert_eq!(
        notes.count(&stored).await,
        1,
        "stored once, with its original id"
    );
    assert_eq!(
        notes
            .count(&format!(
                "SELECT count(*) FROM dead_letters WHERE id = {dead_id} AND resolution = 'replayed' \
                 AND resolved_by = 'ops' AND resolved_at > now() - interval '5 minutes' \
                 AND resolution_note LIKE 'produced to %'"
            ))
            .await,
        1,
        "the replay is recorded with who and when"
    );

    // The stats-api's listing shows the resolution, and filters by it.
    let (status, page) = notes
        .env
        .system
        .dead_letters(TOPIC, "dev", &[("resolved", "true")])
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"][0]["resolution"], "replayed", "{page}");
    assert!(page["data"][0]["resolved_at"].is_string(), "{page}");
    assert!(page["data"][0]["resolved_by"].is_string(), "{page}");
    let (status, page) = notes
        .env
        .system
        .dead_letters(TOPIC, "dev", &[("resolved", "false")])
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"], json!([]), "{page}");

    // Resolved: hidden by default, listed with --all.
    assert!(notes.list(&["--topic", TOPIC]).await.is_empty());
    let everything = notes.list(&["--topic", TOPIC, "--all"]).await;
    assert_eq!(everything.len(), 1, "{everything:?}");
    assert_eq!(everything[0]["resolution"], "replayed");
    assert_eq!(everything[0]["resolved_by"], "ops");

    // Again: refused without --force; forced, it is produced again and stores nothing new.
    let again = notes
        .eventgate(&["dead-letters", "replay", &dead_id])
        .await
        .expect(1);
    assert!(
        again.stderr.contains("replayed already"),
        "{}",
        again.stderr
    );
    let writer = &notes.env.system.writers[0].metrics;
    let (batches, inserted) = (
        writer.batch_size.get_sample_count(),
        writer.rows_inserted.get(),
    );
    notes
        .eventgate(&["dead-letters", "replay", &dead_id, "--force"])
        .await
        .expect(0);
    eventgate_test_support::wait_until("the forced replay written", WAIT, || async {
        writer.batch_size.get_sample_count() > batches
    })
    .await
    .expect("the writer reads the forced replay");
    assert_eq!(writer.rows_inserted.get(), inserted, "nothing new inserted");
    assert_eq!(
        notes
            .count(&format!(
                "SELECT count(*) FROM events WHERE id = '{poison_id}'"
            ))
            .await,
        1
    );
    assert_eq!(
        notes.count("SELECT count(*) FROM dead_letters").await,
        1,
        "nor parked again"
    );
    assert_eq!(notes.count("SELECT count(*) FROM events").await, 2);

    // Raw garbage can never be replayed: refused, then discarded with a reason.
    notes
        .env
        .system
        .produce_raw(TOPIC, "k", b"not an envelope")
        .await;
    notes
        .env
        .system
        .wait_for(
            "the garbage parked",
            WAIT,
            "SELECT count(*) FROM dead_letters WHERE reason = 'undecodable'",
        )
        .await;
    let garbage = notes.list(&["--topic", TOPIC]).await;
    assert_eq!(garbage.len(), 1, "{garbage:?}");
    let garbage_id = garbage[0]["id"].as_i64().expect("id").to_string();
    let refused = notes
        .eventgate(&[
            "dead-letters",
            "replay",
            "--topic",
            TOPIC,
            "--all-unresolved",
        ])
        .await
        .expect(1);
    assert!(
        refused.stderr.contains("not an event envelope"),
        "{}",
        refused.stderr
    );
    notes
        .eventgate(&[
            "dead-letters",
            "discard",
            &garbage_id,
            "--reason",
            "test garbage",
        ])
        .await
        .expect(0);
    assert!(notes.list(&["--topic", TOPIC]).await.is_empty());
    let shown = notes
        .eventgate(&["dead-letters", "show", &garbage_id])
        .await
        .expect(0);
    assert!(
        shown.stdout.contains("discarded (") && shown.stdout.contains("by tester): test garbage"),
        "{}",
        shown.stdout
    );
    // Discarded once; a replayed one is not discarded; an unknown id is refused.
    let twice = notes
        .eventgate(&["dead-letters", "discard", &garbage_id, &dead_id, "999999"])
        .await
        .expect(1);
    assert!(
        twice.stderr.contains("discarded already"),
        "{}",
        twice.stderr
    );
    assert!(
        twice.stderr.contains("replayed already"),
        "{}",
        twice.stderr
    );
    assert!(
        twice.stderr.contains("999999: not found"),
        "{}",
        twice.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_role_may_not_resolve_dead_letters() {
    let notes = Notes::start().await;
    let owner = notes.env.system.database.writer_url.clone();
    let topics = notes.topics_dir.to_str().expect("path").to_owned();
    notes
        .eventgate(&["migrate", "--database-url", &owner, "--topics-dir", &topics])
        .await
        .expect(0);
    let run = notes
        .eventgate(&[
            "dead-letters",
            "discard",
            "1",
            "--database-url",
            &notes.env.system.database.writer_role_url,
        ])
        .await
        .expect(3);
    assert!(run.stderr.contains("schema owner's URL"), "{}", run.stderr);
}
