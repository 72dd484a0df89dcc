//! With `*.admin_listen` set, metrics and probes move to their own port and the public API port answers
//! them 404: traffic figures, topic names and host names stay off the port clients reach. Without it,
//! both are on the API's port (the `make run` default).

use eventgate_e2e::test_config;
use eventgate_test_support::{stack, token};

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("answer");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_answer_only_on_the_admin_port() {
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let mut config = test_config(stack, &database);
    config.ingest.admin_listen = Some("127.0.0.1:0".into());
    config.stats.admin_listen = Some("127.0.0.1:0".into());

    let ingest = eventgate_ingest_api::Application::build(config.clone())
        .await
        .expect("ingest-api starts");
    let stats = eventgate_stats_api::Application::build(config)
        .await
        .expect("stats-api starts");
    let apis = [
        ("ingest-api", ingest.port(), ingest.admin_port()),
        ("stats-api", stats.port(), stats.admin_port()),
    ];
    tokio::spawn(ingest.run_until_stopped());
    tokio::spawn(stats.run_until_stopped());

    for (service, port, admin_port) in apis {
        assert_ne!(port, admin_port, "{service}: a port of its own");
        for path in ["/metrics", "/health/live", "/health/ready", "/health"] {
            let (status, _) = get(&format!("http://127.0.0.1:{port}{path}")).await;
            assert_eq!(status, 404, "{service}: {path} is not on the API port");
        }
        let (status, body) = get(&format!("http://127.0.0.1:{admin_port}/metrics")).await;
        assert_eq!(status, 200, "{service}: {body}");
        assert!(body.contains("eventgate_"), "{service}: metrics: {body}");
        let (status, body) = get(&format!("http://127.0.0.1:{admin_port}/health/ready")).await;
        assert_eq!(status, 200, "{service}: ready: {body}");
        let (status, _) = get(&format!("http://127.0.0.1:{admin_port}/health/live")).await;
        assert_eq!(status, 200, "{service}: live");
    }

    // The API itself stays on its port, and not on the admin one.
    let (ingest_port, ingest_admin) = (apis[0].1, apis[0].2);
    let client = reqwest::Client::new();
    let on_api = client
        .get(format!("http://127.0.0.1:{ingest_port}/topics"))
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("answer");
    assert_eq!(on_api.status().as_u16(), 200);
    let on_admin = client
        .get(format!("http://127.0.0.1:{ingest_admin}/topics"))
        .bearer_auth(token("dev"))
        .send()
        .await
        .expect("answer");
    assert_eq!(on_admin.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_address_everything_shares_the_api_port() {
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let config = test_config(stack, &database);
    let stats = eventgate_stats_api::Application::build(config)
        .await
        .expect("stats-api starts");
    let port = stats.port();
    assert_eq!(stats.admin_port(), port);
    tokio::spawn(stats.run_until_stopped());
    let (status, _) = get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(status, 200);
}
