//! The `eventgate` command line against the real pipeline: send → ingest-api → Kafka → db-writer →
//! Postgres → stats-api → query/export, as a person or a script runs it.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{write_lines, Env, LossyProxy, Run, STRICT, TOPIC};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

fn seq(event: &Value) -> i64 {
    event["payload"]["seq"].as_i64().expect("seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_ndjson_lines_are_sent_and_queried_back_with_all() {
    const N: i64 = 100_000;
    let env = Env::start().await;
    // Every other event brings its own id; the CLI gives the others one.
    let own_id = |i: i64| format!("00000000-0000-7000-8000-{i:012}");
    let file = env.path("events.ndjson");
    write_lines(
        &file,
        (0..N).map(|i| {
            if i % 2 == 0 {
                json!({"seq": i, "name": format!("event {i}"), "event_id": own_id(i)}).to_string()
            } else {
                json!({"seq": i, "name": format!("event {i}")}).to_string()
            }
        }),
    );

    let started = std::time::Instant::now();
    let sent = env
        .run(&[
            "send",
            TOPIC,
            file.to_str().expect("path"),
            "--batch-size",
            "1000",
        ])
        .await
        .expect(0);
    eprintln!("send took {:?}: {}", started.elapsed(), sent.stderr.trim());
    assert!(
        sent.stderr.contains("100,000 accepted, 0 refused"),
        "{}",
        sent.stderr
    );
    env.system.wait_for_rows(N, WAIT).await;

    let started = std::time::Instant::now();
    // Piped: NDJSON without being asked.
    let queried = env
        .run(&["query", TOPIC, "--all", "--sort", "seq"])
        .await
        .expect(0);
    eprintln!("query --all took {:?}", started.elapsed());
    let events = queried.lines();
    assert_eq!(events.len() as i64, N);
    let seqs: Vec<i64> = events.iter().map(seq).collect();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "in order, each once");
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len() as i64, N, "distinct stored ids");
    for event in &events {
        let event_id = event["payload"]["event_id"]
            .as_str()
            .expect("every event has an id");
        if seq(event) % 2 == 0 {
            assert_eq!(
                event_id,
                own_id(seq(event)),
                "the producer's own id is kept"
            );
        } else {
            assert!(uuid::Uuid::parse_str(event_id).is_ok(), "{event}");
        }
    }
    let given: HashSet<&str> = events
        .iter()
        .map(|e| e["payload"]["event_id"].as_str().expect("id"))
        .collect();
    assert_eq!(given.len() as i64, N, "the ids the CLI gave are distinct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_whose_answer_was_lost_are_sent_again_and_stored_once() {
    const N: i64 = 2_000;
    let env = Env::start().await;
    let proxy = LossyProxy::start(&env.system.ingest_url);
    let file = env.path("events.ndjson");
    write_lines(
        &file,
        (0..N).map(|i| json!({"seq": i, "name": "x"}).to_string()),
    );

    let sent = Run::of(
        env.command(&[
            "send",
            TOPIC,
            file.to_str().expect("path"),
            "--batch-size",
            "200",
        ])
        .env("EVENTGATE_INGEST_URL", &proxy.url)
        .output()
        .await
        .expect("runs"),
    )
    .expect(0);
    let lost = proxy.lost.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        lost, 10,
        "every batch's first answer was lost: {}",
        sent.stderr
    );
    assert!(
        sent.stderr.contains("2,000 accepted, 0 refused")
            && sent.stderr.contains("2,000 events retried in 10 requests"),
        "{}",
        sent.stderr
    );
    // Each batch reached the broker twice…
    assert_eq!(env.system.published_messages(TOPIC), 2 * N);
    // …and is stored once: the retries carried the ids the first attempt had.
    env.system.wait_for_rows(N, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let db = &env.system.database;
    assert_eq!(
        db.count("SELECT count(*) FROM events")
            .await
            .expect("count"),
        N
    );
    assert_eq!(
        db.count("SELECT count(DISTINCT payload->>'seq') FROM events")
            .await
            .expect("count"),
        N
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_are_reported_by_line_and_field_and_the_rest_is_stored() {
    let env = Env::start().await;
    let file = env.path("mixed.ndjson");
    write_lines(
        &file,
        [
            r#"{"seq": 1, "name": "ok"}"#.to_owned(),
            r#"{"seq": "two", "name": "wrong type"}"#.to_owned(),
            "not json".to_owned(),
            String::new(),
            r#"{"seq": 5}"#.to_owned(),
            r#"{"seq": 6, "name": "ok"}"#.to_owned(),
        ],
    );
    let refused_file = env.path("refused.ndjson");
    // STRICT closes its properties without declaring `event_id`; the id field is the gateway's, so the
    // CLI still gives every event an id of its own.
    let sent = env
        .run(&[
            "send",
            STRICT,
            file.to_str().expect("path"),
            "--refused",
            refused_file.to_str().expect("path"),
        ])
        .await
        .expect(1);
    let err = &sent.stderr;
    assert!(err.contains("2 accepted, 3 refused"), "{err}");
    assert!(
        err.contains("line 2: seq: \"two\" is not of type \"integer\""),
        "{err}"
    );
    assert!(err.contains("line 3: not JSON"), "{err}");
    assert!(
        err.contains("line 5:") && err.contains("\"name\" is a required property"),
        "{err}"
    );
    assert!(!err.contains("\"statusCode\""), "no JSON dumps: {err}");

    let refused: Vec<Value> = std::fs::read_to_string(&refused_file)
        .expect("refused file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let lines: Vec<i64> = refused
        .iter()
        .map(|r| r["line"].as_i64().expect("line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines.contains(&2) && lines.contains(&3) && lines.contains(&5),
        "{refused:?}"
    );
    let line2 = refused.iter().find(|r| r["line"] == 2).expect("line 2");
    // The refused event as it was sent: the line's fields and the id the CLI gave it.
    let mut sent_event = line2["event"].clone();
    let given_id = sent_event
        .as_object_mut()
        .and_then(|event| event.remove("event_id"));
    assert!(given_id.is_some_and(|id| id.is_string()), "{line2}");
    assert_eq!(sent_event, json!({"seq": "two", "name": "wrong type"}));
    assert_eq!(line2["errors"][0]["field"], "seq");

    env.system.wait_for_rows(2, WAIT).await;
    let stored = env
        .run(&["query", STRICT, "--sort", "seq"])
        .await
        .expect(0)
        .lines();
    assert_eq!(stored.iter().map(seq).collect::<Vec<_>>(), [1, 6]);
    for event in &stored {
        assert_eq!(event["payload"]["event_id"], event["id"], "{event}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_is_sent_and_query_formats_follow_the_terminal() {
    let env = Env::start().await;
    let file = env.path("events.json");
    let events: Vec<Value> = (1..=5)
        .map(|i| json!({"seq": i, "name": format!("n{i}"), "=formula": "=1+1"}))
        .collect();
    std::fs::write(&file, serde_json::to_vec_pretty(&events).expect("json")).expect("file");
    env.run(&["send", TOPIC, file.to_str().expect("path")])
        .await
        .expect(0);
    env.system.wait_for_rows(5, WAIT).await;

    // Piped, by default: NDJSON, newest first (the API's default order).
    let ndjson = env
        .run(&["query", TOPIC, "--filter", "seq_gte=2"])
        .await
        .expect(0);
    let seqs: Vec<i64> = ndjson.lines().iter().map(seq).collect();
    assert_eq!(seqs.len(), 4);
    assert!(!seqs.contains(&1));

    // --limit pages as needed and tells where to go on.
    let limited = env
        .run(&[
            "query",
            TOPIC,
            "--sort",
            "seq",
            "--limit",
            "3",
            "--page-size",
            "2",
        ])
        .await
        .expect(0);
    assert_eq!(
        limited.lines().iter().map(seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(limited.stderr.contains("--cursor "), "{}", limited.stderr);
    let cursor = limited
        .stderr
        .split("--cursor ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("cursor");
    let rest = env
        .run(&["query", TOPIC, "--sort", "seq", "--cursor", cursor, "--all"])
        .await
        .expect(0);
    assert_eq!(rest.lines().iter().map(seq).collect::<Vec<_>>(), [4, 5]);

    // CSV: the columns asked for, formulas defused as the export does.
    let csv = env
        .run(&[
            "query",
            TOPIC,
            "--sort",
            "seq",
            "--format",
            "csv",
            "--columns",
            "seq,name,=formula",
            "-n",
            "2",
        ])
        .await
        .expect(0);
    assert_eq!(
        csv.stdout,
        "seq,name,=formula\r\n1,n1,'=1+1\r\n2,n2,'=1+1\r\n"
    );

    // One JSON array.
    let json_run = env
        .run(&["query", TOPIC, "--format", "json"])
        .await
        .expect(0);
    let array: Vec<Value> = serde_json::from_str(&json_run.stdout).expect("an array");
    assert_eq!(array.len(), 5);

    // On a terminal (a pseudo-terminal from script(1)): a table with the topic's fields as columns.
    let table = Run::of(
        env.in_terminal(&["query", TOPIC, "--sort", "seq", "-n", "2"])
            .output()
            .await
            .expect("script(1) runs (util-linux)"),
    )
    .expect(0);
    let out = &table.stdout;
    for header in ["id", "timestamp", "producer", "seq", "name", "event_id"] {
        assert!(out.contains(header), "{header} in\n{out}");
    }
    assert!(
        out.contains('│') && out.contains("n1") && out.contains("n2"),
        "{out}"
    );
    assert!(!out.contains("{\""), "a table, not JSON:\n{out}");
    // Asked for, a table in a pipe too.
    let piped_table = env
        .run(&[
            "query",
            TOPIC,
            "--format",
            "table",
            "--columns",
            "seq,name",
            "--sort",
            "seq",
            "-n",
            "1",
        ])
        .await
        .expect(0);
    assert!(
        piped_table.stdout.contains("seq") && piped_table.stdout.contains("n1"),
        "{}",
        piped_table.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_of_the_config_file_choose_the_environment() {
    let env = Env::start().await;
    let config_dir = env.dir.join("home/.config/eventgate");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let closed = format!("http://127.0.0.1:{}", eventgate_test_support::free_port());
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            r#"
default_profile = "down"

[profiles.local]
ingest_url = "{ingest}"
stats_url = "{stats}"
token_command = "printf %s {token}"

[profiles.down]
ingest_url = "{closed}"
stats_url = "{closed}"
token = "not-used"
"#,
            ingest = env.system.ingest_url,
            stats = env.system.stats_url,
            token = env.token,
        ),
    )
    .expect("config file");
    let line = env.path("one.ndjson");
    write_lines(
        &line,
        [json!({"seq": 1, "name": "from a profile"}).to_string()],
    );
    let line = line.to_str().expect("path");

    // --profile picks the environment; its token comes from token_command.
    let run = |args: &[&str]| env.bare_command(args);
    Run::of(
        run(&["send", TOPIC, line, "--profile", "local"])
            .output()
            .await
            .expect("runs"),
    )
    .expect(0);
    env.system.wait_for_rows(1, WAIT).await;
    // EVENTGATE_PROFILE does the same.
    let queried = Run::of(
        run(&["query", TOPIC])
            .env("EVENTGATE_PROFILE", "local")
            .output()
            .await
            .expect("runs"),
    )
    .expect(0);
    assert_eq!(queried.lines()[0]["payload"]["name"], "from a profile");

    // The default profile points where nothing listens: exit 3, saying where.
    let down = Run::of(run(&["query", TOPIC]).output().await.expect("runs")).expect(3);
    assert!(
        down.stderr.contains("cannot reach the stats-api"),
        "{}",
        down.stderr
    );
    // Flags beat the profile.
    Run::of(
        run(&[
            "query",
            TOPIC,
            "--stats-url",
            &env.system.stats_url,
            "--token",
            &env.token,
        ])
        .output()
        .await
        .expect("runs"),
    )
    .expect(0);
    // An unknown profile is a usage error that names the known ones.
    let unknown = Run::of(
        run(&["query", TOPIC, "--profile", "prod"])
            .output()
            .await
            .expect("runs"),
    )
    .expect(2);
    assert!(
        unknown.stderr.contains("no profile `prod`") && unknown.stderr.contains("down, local"),
        "{}",
        unknown.stderr
    );
    // A config file that does not parse says where.
    std::fs::write(
        config_dir.join("config.toml"),
        "[profiles.local]\ningest_ur = 1\n",
    )
    .expect("file");
    let broken = Run::of(run(&["query", TOPIC]).output().await.expect("runs")).expect(2);
    assert!(broken.stderr.contains("ingest_ur"), "{}", broken.stderr);
    // No token anywhere.
    std::fs::remove_file(config_dir.join("config.toml")).expect("rm");
    let none = Run::of(run(&["query", TOPIC]).output().await.expect("runs")).expect(2);
    assert!(none.stderr.contains("no token"), "{}", none.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_field_level_messages_with_documented_exit_codes() {
    let env = Env::start().await;
    let bad = env
        .run(&[
            "query",
            TOPIC,
            "--filter",
            "nosuch=1",
            "--filter",
            "seq_between=a,b",
            "--sort",
            "-name,-name",
        ])
        .await
        .expect(1);
    let err = &bad.stderr;
    assert!(
        err.contains("the stats-api refused the query (400)"),
        "{err}"
    );
    assert!(err.contains("  nosuch: unknown field `nosuch`"), "{err}");
    assert!(err.contains("  seq_between:"), "{err}");
    assert!(!err.contains("\"errors\""), "no JSON dumps: {err}");

    let unknown = env.run(&["query", "no.such.topic"]).await.expect(1);
    assert!(unknown.stderr.contains("(404)"), "{}", unknown.stderr);

    let forged = Run::of(
        env.command(&["send", TOPIC, "-"])
            .env("EVENTGATE_TOKEN", "not.a.token")
            .output()
            .await
            .expect("runs"),
    )
    .expect(3);
    assert!(forged.stderr.contains("(401)"), "{}", forged.stderr);

    let missing = env
        .run(&["send", TOPIC, "/no/such/file.ndjson"])
        .await
        .expect(2);
    assert!(
        missing.stderr.contains("cannot open /no/such/file.ndjson"),
        "{}",
        missing.stderr
    );
    env.run(&["query", TOPIC, "--filter", "novalue"])
        .await
        .expect(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_csv_and_ndjson_to_a_file_or_stdout() {
    let env = Env::start().await;
    let file = env.path("events.ndjson");
    write_lines(
        &file,
        (1..=300).map(|i| json!({"seq": i, "name": format!("n{i}")}).to_string()),
    );
    env.run(&["send", TOPIC, file.to_str().expect("path")])
        .await
        .expect(0);
    env.system.wait_for_rows(300, WAIT).await;

    let csv = env.path("out.csv");
    env.run(&[
        "export",
        TOPIC,
        "--format",
        "csv",
        "--fields",
        "seq,name",
        "--sort",
        "seq",
        "--filter",
        "seq_lte=250",
        "-o",
        csv.to_str().expect("path"),
    ])
    .await
    .expect(0);
    let text = std::fs::read_to_string(&csv).expect("csv written");
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 251, "header and 250 rows");
    assert_eq!(lines[0], "seq,name");
    assert_eq!(lines[250], "250,n250");
    assert!(!env.path("out.csv.partial").exists());

    let ndjson = env.run(&["export", TOPIC]).await.expect(0);
    assert_eq!(ndjson.lines().len(), 300);

    let refused = env
        .run(&["export", TOPIC, "--filter", "limit=5"])
        .await
        .expect(1);
    assert!(refused.stderr.contains("limit"), "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_at_the_servers_row_cap_is_resumed_with_its_cursor() {
    let env = Env::start_with(|config| config.stats.export_max_rows = 40).await;
    let file = env.path("events.ndjson");
    write_lines(
        &file,
        (1..=100).map(|i| json!({"seq": i, "name": format!("n{i}")}).to_string()),
    );
    env.run(&["send", TOPIC, file.to_str().expect("path")])
        .await
        .expect(0);
    env.system.wait_for_rows(100, WAIT).await;

    // Three answers (40 + 40 + 20), one file: a header, every event once, no marker.
    let csv = env
        .run(&[
            "export", TOPIC, "--format", "csv", "--fields", "seq,name", "--sort", "seq",
        ])
        .await
        .expect(0);
    let expected: String = std::iter::once("seq,name\r\n".to_owned())
        .chain((1..=100).map(|i| format!("{i},n{i}\r\n")))
        .collect();
    assert_eq!(csv.stdout, expected);
    assert_eq!(
        csv.stderr.matches("asking for the rest").count(),
        2,
        "{}",
        csv.stderr
    );

    let ndjson = env.run(&["export", TOPIC, "--sort", "seq"]).await.expect(0);
    assert_eq!(
        ndjson.lines().iter().map(seq).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );

    // --no-resume keeps the stats-api's marker as the last line.
    let cut = env.run(&["export", TOPIC, "--no-resume"]).await.expect(0);
    let lines = cut.lines();
    assert_eq!(lines.len(), 41);
    assert_eq!(lines[40]["truncated"], true);
}

#[test]
fn completions_are_generated_for_the_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_eventgate"))
            .args(["completions", shell])
            .output()
            .expect("runs");
        let run = Run::of(output).expect(0);
        assert!(
            run.stdout.contains("eventgate") && run.stdout.contains("send"),
            "{shell}"
        );
    }
}
