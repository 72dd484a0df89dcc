//! Postgres conditions are recognised by SQLSTATE, never by message text: on a server whose messages are
//! German (`lc_messages`), a query cancelled by the statement timeout is still the 503 with Retry-After
//! of a timeout, not a 500. (`scripts/test.sh` generates the `de_DE.UTF-8` locale the server needs.)

mod common;

use std::time::Duration;

use serde_json::json;
use tokio_postgres::NoTls;

use common::start_stats_api_on;
use eventgate_test_support::{stack, token};

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_on_a_german_server_is_a_503() {
    let database = stack().await.fresh_database().await;
    let admin = connect(&database.admin_url).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET lc_messages TO 'de_DE.UTF-8'",
            database.name
        ))
        .await
        .expect("German messages (is the de_DE.UTF-8 locale generated? scripts/test.sh does it)");

    // The server really answers in German now: the English text a matcher would look for is absent.
    let german = connect(&database.admin_url).await;
    let error = german
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    let message = error
        .as_db_error()
        .expect("a server error")
        .message()
        .to_owned();
    assert!(!message.contains("division by zero"), "{message}");
    assert_eq!(error.code().map(|c| c.code()), Some("22012"));

    let api = start_stats_api_on(database, |config| config.stats.statement_timeout_ms = 300).await;

    // A lock held by another transaction makes the stats-api's query wait until its statement timeout.
    let mut locker = connect(&api.database.admin_url).await;
    let lock = locker.transaction().await.expect("transaction");
    lock.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    let response = reqwest::Client::new()
        .post(format!("{}/stats/audit.logs", api.url))
        .bearer_auth(token("dev"))
        .json(&json!({"limit": 1}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: serde_json::Value = response.json().await.expect("JSON");
    lock.rollback().await.expect("unlock");

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errors"][0]["type"], "database", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("statement timeout")),
        "{body}"
    );
    assert!(retry_after.is_some(), "a 503 says when to retry");
}
