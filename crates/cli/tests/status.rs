//! `eventgate status TOPIC ID` against the real services: stored (exit 0), a later conflicting re-send
//! listed with it, not found (exit 4, also after `--wait`), a malformed id (exit 2), and the JSON form.

mod common;

use std::time::Duration;

use common::{Env, TOPIC};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_what_became_of_an_event_with_its_exit_code() {
    let env = Env::start().await;
    let id = uuid::Uuid::now_v7().to_string();
    let file = env.path("one.ndjson");
    std::fs::write(
        &file,
        format!("{}\n", json!({"event_id": id, "seq": 1, "name": "first"})),
    )
    .expect("file");
    env.run(&["send", TOPIC, file.to_str().expect("path")])
        .await
        .expect(0);

    // --wait asks again until the writer stored it.
    let stored = env
        .run(&["status", TOPIC, &id, "--wait", "60"])
        .await
        .expect(0);
    assert!(
        stored.stdout.starts_with("stored (received "),
        "{}",
        stored.stdout
    );

    // The same id with another payload: the first stays; the re-send is listed as a dead letter.
    std::fs::write(
        &file,
        format!("{}\n", json!({"event_id": id, "seq": 1, "name": "changed"})),
    )
    .expect("file");
    env.run(&["send", TOPIC, file.to_str().expect("path")])
        .await
        .expect(0);
    env.system
        .wait_for(
            "the conflicting re-send parked",
            WAIT,
            "SELECT count(*) FROM dead_letters WHERE reason = 'conflicting_duplicate'",
        )
        .await;
    let json_form = env
        .run(&["status", TOPIC, &id, "--format", "json"])
        .await
        .expect(0);
    let data: Value = serde_json::from_str(json_form.stdout.trim()).expect("JSON");
    assert_eq!(data["status"], "stored", "{data}");
    assert_eq!(data["dead_letters"][0]["reason"], "conflicting_duplicate");
    let text = env.run(&["status", TOPIC, &id]).await.expect(0);
    assert!(
        text.stdout
            .contains("  dead letter: conflicting_duplicate (parked "),
        "{}",
        text.stdout
    );

    // Never sent: exit 4, after --wait too.
    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = env
        .run(&["status", TOPIC, &unknown, "--wait", "1"])
        .await
        .expect(4);
    assert!(
        missing.stdout.starts_with("not_found: "),
        "{}",
        missing.stdout
    );
    // Not an id: a usage error, before any request.
    let bad = env.run(&["status", TOPIC, "42"]).await.expect(2);
    assert!(bad.stderr.contains("not an event id"), "{}", bad.stderr);
    // An unknown topic is the API's 404: refused, exit 1.
    env.run(&["status", "no.such.topic", &id]).await.expect(1);
}
