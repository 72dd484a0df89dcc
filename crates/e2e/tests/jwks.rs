//! The JWKS URL under abuse and outage, against the real APIs and a JWKS server the test starts and
//! stops: keys expire after `auth.jwks_max_stale_secs` without a successful fetch (then 503
//! `auth_unavailable`, and the `eventgate_jwks_*` metrics say why), come back with the server; floods of
//! tokens with made-up `kid`s are refused and cause at most the rate-limited number of fetches while
//! real tokens keep working; an `http://` JWKS URL stops the start unless allowed. (Fetching itself —
//! https with a CA file, redirects, the verified-token cache — is tested in `core/src/auth/tests.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventgate_core::config::Config;
use eventgate_e2e::{repo_root, System};
use eventgate_test_support::{metric, stack, wait_until};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        repo_root()
            .join("crates/core/tests/fixtures/keys")
            .join(name),
    )
    .expect("key fixture")
}

/// The identity provider's document: the RSA fixture key under `kid`.
fn jwks(kid: &str) -> String {
    let decoding =
        DecodingKey::from_rsa_pem(&read_fixture("rsa-jwks-public.pem")).expect("public key");
    let mut jwk = Jwk::from_decoding_key(&decoding, Some(Algorithm::RS256)).expect("jwk");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("jwks")
}

/// A token for `dev` signed with the JWKS fixture key, naming `kid`.
fn token(kid: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(&read_fixture("rsa-jwks-private.pem")).expect("key");
    jsonwebtoken::encode(&header, &json!({"sub": "dev", "exp": exp}), &key).expect("sign")
}

/// A plain-http JWKS server on 127.0.0.1 that counts the requests it answers; [`JwksServer::stop`]
/// closes its port (connections refused), [`JwksServer::start`] opens the same port again.
struct JwksServer {
    port: u16,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JwksServer {
    async fn new(document: String) -> JwksServer {
        let mut server = JwksServer {
            port: 0,
            document: Arc::new(Mutex::new(document)),
            fetches: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        server.start().await;
        server
    }

    async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind");
        self.port = listener.local_addr().expect("addr").port();
        let (document, fetches) = (self.document.clone(), self.fetches.clone());
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let body = document.lock().expect("lock").clone();
                fetches.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        }));
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // The listener is dropped with the task.
            let _ = task.await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn post(system: &System, jwt: &str) -> (u16, Value, Option<String>) {
    let response = system
        .http
        .post(format!("{}/topics/audit.logs", system.ingest_url))
        .bearer_auth(jwt)
        .json(&json!({"event_name": "login", "description": "jwks", "customer_id": 1}))
        .send()
        .await
        .expect("ingest-api answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

fn ingest_port(system: &System) -> u16 {
    system
        .ingest_url
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("ingest port")
}

fn use_jwks(config: &mut Config, url: String) {
    config.auth.public_keys = Vec::new();
    config.auth.jwks_url = Some(url);
    config.auth.jwks_allow_http = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_when_the_jwks_server_stays_away_and_come_back_with_it() {
    let mut server = JwksServer::new(jwks("k1")).await;
    let system = System::start_with(stack().await, 0, |config| {
        use_jwks(config, server.url());
        config.auth.jwks_refresh_secs = 1;
        config.auth.jwks_max_stale_secs = 4;
    })
    .await;
    let port = ingest_port(&system);
    let jwt = token("k1");
    assert_eq!(post(&system, &jwt).await.0, 202);
    assert_eq!(
        metric(&system.http, port, "eventgate_jwks_keys").await,
        Some(1.0)
    );

    // The identity provider goes away: the keys stay for the staleness bound, then go.
    server.stop().await;
    // The last fetch was at most about 2 s ago (refresh every 1 s): within the 4 s bound, the keys stay.
    assert_eq!(
        post(&system, &jwt).await.0,
        202,
        "keys kept within the bound"
    );
    wait_until("tokens to be refused", WAIT, || async {
        post(&system, &jwt).await.0 != 202
    })
    .await
    .expect("the keys expire");
    let (status, body, retry_after) = post(&system, &jwt).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errors"][0]["type"], "auth_unavailable", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("auth.jwks_max_stale_secs (4 s)"),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1"),
        "no internal address: {message}"
    );
    assert!(retry_after.is_some(), "503 with Retry-After");
    assert_eq!(
        metric(&system.http, port, "eventgate_jwks_keys").await,
        Some(0.0)
    );
    let failures = metric(&system.http, port, "eventgate_jwks_refresh_failures_total")
        .await
        .expect("failures counted");
    assert!(failures >= 2.0, "{failures}");
    let age = metric(&system.http, port, "eventgate_jwks_keys_age_seconds")
        .await
        .expect("age");
    assert!(age > 4.0, "{age}");
    // The stats-api has its own verifier (and refresher): it drops its keys too, within a second or so.
    wait_until("the stats-api to answer 503", WAIT, || async {
        let response = system
            .http
            .post(format!("{}/stats/audit.logs", system.stats_url))
            .bearer_auth(&jwt)
            .json(&json!({"limit": 1}))
            .send()
            .await
            .expect("stats-api answers");
        response.status() == 503
    })
    .await
    .expect("the stats-api's keys expire too");

    // Back: the next refresh restores the keys.
    server.start().await;
    wait_until("tokens to be accepted again", WAIT, || async {
        post(&system, &jwt).await.0 == 202
    })
    .await
    .expect("keys fetched again");
    assert_eq!(
        metric(&system.http, port, "eventgate_jwks_keys").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_floods_are_refused_and_fetch_at_most_once_per_interval() {
    let server = JwksServer::new(jwks("k1")).await;
    let system = System::start_with(stack().await, 0, |config| {
        use_jwks(config, server.url());
        config.auth.jwks_refresh_secs = 3_600;
        config.auth.jwks_max_stale_secs = 7_200;
        config.auth.jwks_min_refetch_secs = 2;
    })
    .await;
    let jwt = token("k1");
    assert_eq!(post(&system, &jwt).await.0, 202);

    // Two APIs, two verifiers: each may refetch once per 2 s.
    let before = server.fetches();
    let flood = Instant::now();
    let mut refused = 0;
    while flood.elapsed() < Duration::from_secs(5) {
        for _ in 0..20 {
            let made_up = token(&uuid::Uuid::new_v4().to_string());
            let (status, body, _) = post(&system, &made_up).await;
            assert_eq!(status, 401, "{body}");
            assert_eq!(body["errors"][0]["type"], "auth", "{body}");
            refused += 1;
        }
        // The real token is served throughout.
        assert_eq!(post(&system, &jwt).await.0, 202);
    }
    let elapsed = flood.elapsed().as_secs();
    let fetches = server.fetches() - before;
    assert!(refused >= 100, "{refused}");
    // Only the ingest-api saw the flood: one fetch per 2 s at most (plus one at the edge).
    assert!(
        fetches <= elapsed.div_ceil(2) as usize + 1,
        "{fetches} fetches in {elapsed} s for {refused} made-up kids"
    );
    assert!(fetches >= 1, "unknown kids do ask for a refetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_jwks_url_stops_the_start_unless_allowed() {
    let server = JwksServer::new(jwks("k1")).await;
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let mut config = eventgate_e2e::test_config(stack, &database);
    config.auth.public_keys = Vec::new();
    config.auth.jwks_url = Some(server.url());

    let error = config.validate().expect_err("http refused");
    let text = error.to_string();
    assert!(text.contains("auth.jwks_url"), "{text}");
    assert!(text.contains("plain http"), "{text}");
    assert!(text.contains("auth.jwks_allow_http"), "{text}");
    // Also when the configuration did not go through `Config::load`.
    let error = match eventgate_ingest_api::Application::build(config.clone()).await {
        Ok(_) => panic!("the ingest-api started with an http JWKS URL"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("plain http"), "{error}");

    config.auth.jwks_allow_http = true;
    assert!(config.validate().is_ok());
}
