//! `eventgate tail TOPIC` against the real services (ingest-api → broker → writer → Postgres →
//! stats-api): events sent after it started are printed once each, in the order they were stored; `--after` the last printed
//! position resumes exactly there (the `Last-Event-ID` the tail reconnects with); filters apply.

mod common;

use std::time::Duration;

use common::{write_lines, Env, TOPIC};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

async fn send(env: &Env, name: &str, seqs: std::ops::Range<u64>) {
    let file = env.path(&format!("{name}.ndjson"));
    write_lines(
        &file,
        seqs.map(|seq| json!({"seq": seq, "name": name}).to_string()),
    );
    env.run(&["send", TOPIC, file.to_str().expect("path")])
        .await
        .expect(0);
}

fn seqs(run: &common::Run) -> Vec<u64> {
    run.lines()
        .iter()
        .map(|e| e["payload"]["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_new_events_once_and_resumes_after_a_position() {
    let env = Env::start().await;
    send(&env, "before", 0..3).await;
    env.system
        .wait_for(
            "the earlier events stored",
            WAIT,
            "SELECT count(*) - 2 FROM events",
        )
        .await;

    let tail = env
        .command(&["tail", TOPIC, "--count", "5", "--ids", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tail starts");
    // Let it connect: it starts from now, so the earlier events are not printed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    send(&env, "live", 10..15).await;
    let output = tokio::time::timeout(WAIT, tail.wait_with_output())
        .await
        .expect("the tail printed 5 events in time")
        .expect("tail ran");
    let run = common::Run::of(output).expect(0);
    // Each once. In the order their batches were committed (docs/API.md, tail), which is not always the
    // order they were sent: an idle writer writes what it has at once, two writes at a time.
    let mut printed = seqs(&run);
    printed.sort_unstable();
    assert_eq!(printed, [10, 11, 12, 13, 14], "{}", run.stdout);
    let last_id = run
        .stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("id: "))
        .expect("positions on stderr")
        .to_owned();

    // Sent while no tail runs: resuming after the last printed position prints them, and only them.
    send(&env, "later", 20..23).await;
    send(&env, "skipped", 30..31).await;
    let resumed = env
        .run(&[
            "tail",
            TOPIC,
            "--after",
            &last_id,
            "--count",
            "3",
            "--filter",
            "name=later",
            "--format",
            "ndjson",
        ])
        .await
        .expect(0);
    let mut resumed_seqs = seqs(&resumed);
    resumed_seqs.sort_unstable();
    assert_eq!(resumed_seqs, [20, 21, 22], "{}", resumed.stdout);

    // A refusal ends it with the API's message and exit code: an unknown field.
    let refused = env
        .run(&["tail", TOPIC, "--filter", "nope=1", "--count", "1"])
        .await
        .expect(1);
    assert!(refused.stderr.contains("nope"), "{}", refused.stderr);
}
