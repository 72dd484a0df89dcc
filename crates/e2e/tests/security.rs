//! Security over the real HTTP APIs: every kind of token, the access file (users, groups, topic families,
//! field restrictions on writes and reads, SIGHUP reload), abuse limits (rate, depth, size, slow
//! clients), hostile query input against a real Postgres, and what the database roles may do.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use eventgate_core::config::Config;
use eventgate_e2e::{repo_root, test_config, System};
use eventgate_test_support::{stack, test_keys, token, token_with, wait_until};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);
const ISSUER: &str = "https://login.eventgate.test";
const AUDIENCE: &str = "eventgate";
const RUNS: &str = "public.cps.za.runs";

fn fixture(name: &str) -> PathBuf {
    repo_root()
        .join("crates/core/tests/fixtures/keys")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("key fixture")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn sign(algorithm: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn test_rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(test_keys().private_pem.as_bytes()).expect("test key")
}

/// A token with any header, unsigned (`alg: none` and friends): `header.claims.`
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A JWKS document with the public key in `pem` under `kid`.
fn jwks(keys: &[(&str, Algorithm, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(pem, algorithm, kid)| {
            let decoding = match algorithm {
                Algorithm::ES256 => DecodingKey::from_ec_pem(&read_fixture(pem)),
                _ => DecodingKey::from_rsa_pem(&read_fixture(pem)),
            }
            .expect("public key fixture");
            let mut jwk = Jwk::from_decoding_key(&decoding, Some(*algorithm)).expect("jwk");
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).expect("jwks")
}

async fn send(
    system: &System,
    method: &str,
    url: String,
    authorization: Option<String>,
    body: Option<String>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = match method {
        "GET" => system.http.get(url),
        _ => system.http.post(url),
    };
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
    (status, value, headers)
}

async fn post_json_as(system: &System, url: String, jwt: &str, body: &Value) -> (u16, Value) {
    let (status, answer, _) = send(
        system,
        "POST",
        url,
        Some(format!("Bearer {jwt}")),
        Some(body.to_string()),
    )
    .await;
    (status, answer)
}

async fn post_as(system: &System, topic: &str, jwt: &str, body: &Value) -> (u16, Value) {
    post_json_as(
        system,
        format!("{}/topics/{topic}", system.ingest_url),
        jwt,
        body,
    )
    .await
}

async fn query_as(system: &System, topic: &str, jwt: &str, body: &Value) -> (u16, Value) {
    post_json_as(
        system,
        format!("{}/stats/{topic}", system.stats_url),
        jwt,
        body,
    )
    .await
}

async fn get_as(system: &System, path_and_query: &str, jwt: &str) -> (u16, Value) {
    let url = format!("{}{path_and_query}", system.stats_url);
    let (status, answer, _) = send(system, "GET", url, Some(format!("Bearer {jwt}")), None).await;
    (status, answer)
}

/// A token of `sub` in `groups`, valid for ten minutes.
fn member(sub: &str, groups: &[&str]) -> String {
    token_with(json!({"sub": sub, "groups": groups, "exp": now() + 600}))
}

fn run(tenant: &str, environment: &str, source_app: &str, n: i64) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(), "run_id": n, "tenant_id": tenant,
        "source_app": source_app, "source_app_version": "1.0", "environment": environment,
        "timestamp_start": 1_736_000_000_000_i64 + n * 1000, "timestamp_end": 1_736_000_000_000_i64 + n * 1000 + 500,
        "jobs": [{"catalog_id": "db.table", "status": "succeeded", "timestamp_start": 0, "timestamp_end": 1}],
        "additional_info": {"region": if n % 2 == 0 { "eu" } else { "us" }}
    })
}

fn error_type(answer: &Value) -> &str {
    answer["errors"][0]["type"].as_str().unwrap_or("")
}

/// A 403 `permission` answer, naming `field` when given.
fn assert_permission_refused(status: u16, answer: &Value, field: Option<&str>) {
    assert_eq!(
        (status, error_type(answer)),
        (403, "permission"),
        "{answer}"
    );
    if let Some(field) = field {
        assert_eq!(answer["errors"][0]["field"], field, "{answer}");
    }
}

/// A directory removed on drop, for access files and JWKS documents.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("eventgate-security-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        // Write-then-rename: a reload never reads a half-written file.
        let staging = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&staging, text).expect("write");
        std::fs::rename(&staging, &path).expect("rename");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads one HTTP response from a raw socket: until its body is complete or the server closes.
async fn read_response(socket: &mut tokio::net::TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn sighup_self() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

// ------------------------------------------------------------------------------------------- tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_case_has_its_status_and_type() {
    let dir = TempDir::new();
    let jwks_file = dir.write(
        "jwks.json",
        &jwks(&[("rsa-jwks-public.pem", Algorithm::RS256, "jwks-1")]),
    );
    let system = System::start_with(stack().await, 0, |config| {
        config.auth.public_keys = vec![
            test_keys().public_key_path.clone(),
            fixture("es256-public.pem"),
        ];
        config.auth.jwks_file = Some(jwks_file.clone());
        config.auth.issuer = Some(ISSUER.into());
        config.auth.audience = Some(AUDIENCE.into());
    })
    .await;

    let rsa = test_rsa();
    let es256 = EncodingKey::from_ec_pem(&read_fixture("es256-private.pem")).expect("es256 key");
    let jwks_key =
        EncodingKey::from_rsa_pem(&read_fixture("rsa-jwks-private.pem")).expect("jwks key");
    let stranger =
        EncodingKey::from_rsa_pem(&read_fixture("rsa-other-private.pem")).expect("other key");
    let public_pem_as_secret = EncodingKey::from_secret(test_keys().public_pem.as_bytes());
    let claims =
        |sub: &str| json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600});
    let with = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = claims("dev");
        change(claims.as_object_mut().expect("object"));
        claims
    };
    let good = sign(Algorithm::RS256, &rsa, None, &claims("dev"));
    let tampered = {
        let parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(claims("admin").to_string());
        format!("{}.{forged}.{}", parts[0], parts[2])
    };

    // (case, Authorization header, expected status, expected error type)
    let bearer = |jwt: String| Some(format!("Bearer {jwt}"));
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("RS256, PEM key", bearer(good.clone()), 202, ""),
        (
            "scheme in lower case",
            Some(format!("bearer {good}")),
            202,
            "",
        ),
        (
            "scheme in upper case",
            Some(format!("BEARER {good}")),
            202,
            "",
        ),
        (
            "ES256, second PEM key",
            bearer(sign(Algorithm::ES256, &es256, None, &claims("dev"))),
            202,
            "",
        ),
        (
            "RS256, JWKS key chosen by kid",
            bearer(sign(
                Algorithm::RS256,
                &jwks_key,
                Some("jwks-1"),
                &claims("dev"),
            )),
            202,
            "",
        ),
        (
            "unknown kid, verified by a PEM key",
            bearer(sign(Algorithm::RS256, &rsa, Some("nope"), &claims("dev"))),
            202,
            "",
        ),
        (
            "exp just past, within the leeway",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.insert("exp".into(), json!(now() - 5));
                }),
            )),
            202,
            "",
        ),
        ("no Authorization header", None, 401, "auth"),
        ("Basic scheme", Some(format!("Basic {good}")), 401, "auth"),
        ("token without scheme", Some(good.clone()), 401, "auth"),
        ("Bearer without token", Some("Bearer ".into()), 401, "auth"),
        ("not a JWT", bearer("not-a-jwt".into()), 401, "auth"),
        ("two parts", bearer("a.b".into()), 401, "auth"),
        (
            "alg none",
            bearer(unsigned(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims("dev"),
            )),
            401,
            "auth",
        ),
        (
            "alg None",
            bearer(unsigned(&json!({"alg": "None"}), &claims("dev"))),
            401,
            "auth",
        ),
        (
            "alg none with a signature copied from a good token",
            bearer(format!(
                "{}{}",
                unsigned(&json!({"alg": "none"}), &claims("dev")),
                good.rsplit('.').next().unwrap_or_default()
            )),
            401,
            "auth",
        ),
        (
            "no alg",
            bearer(unsigned(&json!({"typ": "JWT"}), &claims("dev"))),
            401,
            "auth",
        ),
        (
            "HS256 keyed with the RSA public key",
            bearer(sign(
                Algorithm::HS256,
                &public_pem_as_secret,
                None,
                &claims("dev"),
            )),
            401,
            "auth",
        ),
        (
            "HS256 keyed with the public key, naming the JWKS kid",
            bearer(sign(
                Algorithm::HS256,
                &public_pem_as_secret,
                Some("jwks-1"),
                &claims("dev"),
            )),
            401,
            "auth",
        ),
        (
            "RS384 with the right key (not configured)",
            bearer(sign(Algorithm::RS384, &rsa, None, &claims("dev"))),
            401,
            "auth",
        ),
        (
            "PS256 with the right key (not configured)",
            bearer(sign(Algorithm::PS256, &rsa, None, &claims("dev"))),
            401,
            "auth",
        ),
        (
            "signed by an unknown key",
            bearer(sign(Algorithm::RS256, &stranger, None, &claims("dev"))),
            401,
            "auth",
        ),
        (
            "signed by an unknown key, naming the JWKS kid",
            bearer(sign(
                Algorithm::RS256,
                &stranger,
                Some("jwks-1"),
                &claims("dev"),
            )),
            401,
            "auth",
        ),
        (
            "PEM key's token naming the JWKS kid",
            bearer(sign(Algorithm::RS256, &rsa, Some("jwks-1"), &claims("dev"))),
            401,
            "auth",
        ),
        (
            "claims changed after signing",
            bearer(tampered),
            401,
            "auth",
        ),
        (
            "expired",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.insert("exp".into(), json!(now() - 3600));
                }),
            )),
            401,
            "auth",
        ),
        (
            "not valid yet (nbf)",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.insert("nbf".into(), json!(now() + 3600));
                }),
            )),
            401,
            "auth",
        ),
        (
            "no exp",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.remove("exp");
                }),
            )),
            401,
            "auth",
        ),
        (
            "no sub",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.remove("sub");
                }),
            )),
            401,
            "auth",
        ),
        (
            "empty sub",
            bearer(sign(Algorithm::RS256, &rsa, None, &claims(""))),
            401,
            "auth",
        ),
        (
            "sub not a string",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.insert("sub".into(), json!(42));
                }),
            )),
            401,
            "auth",
        ),
        (
            "wrong iss",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.insert("iss".into(), json!("https://evil.test"));
                }),
            )),
            401,
            "auth",
        ),
        (
            "no iss",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.remove("iss");
                }),
            )),
            401,
            "auth",
        ),
        (
            "wrong aud",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.insert("aud".into(), json!(["other-service"]));
                }),
            )),
            401,
            "auth",
        ),
        (
            "no aud",
            bearer(sign(
                Algorithm::RS256,
                &rsa,
                None,
                &with(&|c| {
                    c.remove("aud");
                }),
            )),
            401,
            "auth",
        ),
        (
            "a 17 kB token",
            bearer(format!("{good}{}", "A".repeat(17_000))),
            401,
            "auth",
        ),
        (
            "good token, user may not write",
            bearer(sign(Algorithm::RS256, &rsa, None, &claims("reader"))),
            403,
            "permission",
        ),
    ];

    let event = json!({"event_name": "login", "description": "token table"}).to_string();
    let mut failures = Vec::new();
    for (case, authorization, status, kind) in &cases {
        let url = format!("{}/topics/audit.logs", system.ingest_url);
        let (got, answer, _) = send(
            &system,
            "POST",
            url,
            authorization.clone(),
            Some(event.clone()),
        )
        .await;
        let got_kind = if got == 202 { "" } else { error_type(&answer) };
        if got != *status || got_kind != *kind {
            failures.push(format!(
                "{case}: expected {status} {kind:?}, got {got} {got_kind:?}: {answer}"
            ));
        }
        // The stats-api verifies the same way (a writer-only user gets 403 there too).
        if *status == 401 {
            let url = format!("{}/stats/audit.logs", system.stats_url);
            let (got, answer, _) = send(&system, "GET", url, authorization.clone(), None).await;
            if got != 401 || error_type(&answer) != "auth" {
                failures.push(format!("{case} (stats-api): got {got}: {answer}"));
            }
        }
    }
    // Only in the Authorization header: a token in the query string is not looked at.
    let url = format!("{}/stats/audit.logs?access_token={good}", system.stats_url);
    let (got, _, _) = send(&system, "GET", url, None, None).await;
    if got != 401 {
        failures.push(format!("token in the query string: got {got}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A JWKS served over HTTP, refreshed: a key published later is used without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_is_fetched_and_refreshed() {
    let document = Arc::new(Mutex::new(jwks(&[(
        "rsa-jwks-public.pem",
        Algorithm::RS256,
        "url-1",
    )])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let jwks_url = format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        listener.local_addr().expect("addr").port()
    );
    {
        let (document, fetches) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
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
        });
    }
    let system = System::start_with(stack().await, 0, |config| {
        config.auth.public_keys = Vec::new();
        config.auth.jwks_url = Some(jwks_url.clone());
        // The test's identity provider is plain http (tests/jwks.rs and core's auth tests cover https).
        config.auth.jwks_allow_http = true;
        config.auth.jwks_refresh_secs = 1;
    })
    .await;
    let claims = json!({"sub": "dev", "exp": now() + 600});
    let url_1 = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&read_fixture("rsa-jwks-private.pem")).expect("key"),
        Some("url-1"),
        &claims,
    );
    let url_2 = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&read_fixture("es256-private.pem")).expect("key"),
        Some("url-2"),
        &claims,
    );
    let event = json!({"event_name": "login", "description": "jwks"});
    assert_eq!(post_as(&system, "audit.logs", &url_1, &event).await.0, 202);
    let (status, answer) = post_as(&system, "audit.logs", &url_2, &event).await;
    assert_eq!((status, error_type(&answer)), (401, "auth"), "{answer}");

    // The identity provider rotates: url-2 is published, url-1 withdrawn.
    *document.lock().expect("lock") = jwks(&[("es256-public.pem", Algorithm::ES256, "url-2")]);
    let before = fetches.load(Ordering::SeqCst);
    wait_until("the new key to be used", WAIT, || async {
        post_as(&system, "audit.logs", &url_2, &event).await.0 == 202
    })
    .await
    .expect("rotated key accepted");
    assert!(fetches.load(Ordering::SeqCst) > before);
    let (status, _) = post_as(&system, "audit.logs", &url_1, &event).await;
    assert_eq!(status, 401, "a withdrawn key is no longer accepted");

    // A broken document keeps the keys in use.
    *document.lock().expect("lock") = "{\"keys\": []}".to_owned();
    let seen = fetches.load(Ordering::SeqCst);
    wait_until("two more fetches", WAIT, || async {
        fetches.load(Ordering::SeqCst) >= seen + 2
    })
    .await
    .expect("refreshed");
    assert_eq!(post_as(&system, "audit.logs", &url_2, &event).await.0, 202);
}

// ------------------------------------------------------------------------------------------- access

const ACCESS: &str = r#"{
  "audit.logs": {"write": ["writer"], "read": ["reader"]},
  "public.cps.za.*": {
    "write": [
      "group:cps-producers",
      {"user": "dev-bot", "fields": {"environment": ["dev"]}},
      {"user": "app-bot", "fields": {"source_app": {"regex": "unify(-[a-z]+)?"}}}
    ],
    "read": ["dev", "group:analysts", {"user": "avms-reader", "fields": {"tenant_id": ["avms"]}}]
  }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_users_groups_families_and_field_restrictions() {
    let dir = TempDir::new();
    let access = dir.write("access.json", ACCESS);
    let system = System::start_with(stack().await, 1, |config| {
        config.catalogue.access_file = access.clone();
    })
    .await;
    let log = json!({"event_name": "login", "description": "access"});

    // Writer-not-reader and reader-not-writer.
    assert_eq!(system.post("audit.logs", "writer", &log).await.0, 202);
    let (status, answer) = system.query("audit.logs", "writer", &json!({})).await;
    assert_permission_refused(status, &answer, None);
    let (status, answer) = system.post("audit.logs", "reader", &log).await;
    assert_permission_refused(status, &answer, None);
    assert_eq!(
        system.query("audit.logs", "reader", &json!({})).await.0,
        200
    );
    // No rule for web.events: closed.
    assert_eq!(system.post("web.events", "writer", &json!({})).await.0, 403);
    // Topic names and schemas only for those with a right to the topic.
    let topics = |auth: Option<String>, path: &str| {
        let url = format!("{}{path}", system.ingest_url);
        let system = &system;
        async move {
            let (status, answer, _) = send(system, "GET", url, auth, None).await;
            (status, answer)
        }
    };
    let bearer = |user: &str| Some(format!("Bearer {}", token(user)));
    assert_eq!(topics(None, "/topics").await.0, 401);
    assert_eq!(topics(None, "/topics/audit.logs").await.0, 401);
    let (status, answer) = topics(bearer("reader"), "/topics").await;
    assert_eq!(
        (status, answer["topics"].clone()),
        (200, json!(["audit.logs"])),
        "{answer}"
    );
    assert_eq!(topics(bearer("writer"), "/topics/audit.logs").await.0, 200);
    assert_eq!(topics(bearer("nobody"), "/topics/audit.logs").await.0, 403);
    assert_eq!(
        topics(bearer("nobody"), "/topics").await.1["topics"],
        json!([])
    );

    // Groups, through the topic family `public.cps.za.*`.
    let producer = member("alice", &["cps-producers"]);
    let analyst = member("ann", &["analysts"]);
    let stranger = member("alice", &["analysts-not"]);
    let (status, answer) = post_as(&system, RUNS, &producer, &run("x", "prod", "a", 1)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        post_as(&system, RUNS, &stranger, &run("x", "prod", "a", 1))
            .await
            .0,
        403
    );
    assert_eq!(
        post_as(&system, RUNS, &analyst, &run("x", "prod", "a", 1))
            .await
            .0,
        403
    );
    assert_eq!(query_as(&system, RUNS, &analyst, &json!({})).await.0, 200);
    assert_eq!(query_as(&system, RUNS, &producer, &json!({})).await.0, 403);

    // Field restrictions on writes: a value set and a regex; 403 names the field; nothing of a refused
    // batch is published.
    let dev_bot = token("dev-bot");
    assert_eq!(
        post_as(&system, RUNS, &dev_bot, &run("x", "dev", "a", 2))
            .await
            .0,
        202
    );
    let (status, answer) = post_as(&system, RUNS, &dev_bot, &run("x", "prod", "a", 3)).await;
    assert_permission_refused(status, &answer, Some("environment"));
    let published = system.published_messages(RUNS);
    let batch = json!([
        run("x", "dev", "a", 4),
        run("x", "uat", "a", 5),
        run("x", "dev", "a", 6)
    ]);
    let (status, answer) = post_as(&system, RUNS, &dev_bot, &batch).await;
    assert_permission_refused(status, &answer, Some("[1].environment"));
    assert_eq!(
        answer["errors"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    let app_bot = token("app-bot");
    assert_eq!(
        post_as(&system, RUNS, &app_bot, &run("x", "prod", "unify-etl", 7))
            .await
            .0,
        202
    );
    let (status, answer) = post_as(&system, RUNS, &app_bot, &run("x", "prod", "unifyetl", 8)).await;
    assert_permission_refused(status, &answer, Some("source_app"));
    // Sentinel: the next accepted event is the only one added since the refused batch.
    assert_eq!(
        post_as(&system, RUNS, &dev_bot, &run("x", "dev", "a", 9))
            .await
            .0,
        202
    );
    assert_eq!(
        system.published_messages(RUNS),
        published + 2,
        "app-bot's and the sentinel"
    );

    // Field restrictions on reads: avms-reader only ever sees tenant avms, whatever it asks.
    let mut batch = Vec::new();
    for n in 0..24 {
        let tenant = ["avms", "other", "third"][n % 3];
        batch.push(run(tenant, "prod", ["a", "b"][n % 2], 100 + n as i64));
    }
    assert_eq!(
        post_as(&system, RUNS, &producer, &json!(batch)).await.0,
        202
    );
    // 1 (alice) + 1 (dev-bot) + 1 (app-bot) + 1 (sentinel) + 24 + 1 audit log.
    system.wait_for_rows(29, WAIT).await;
    let avms = system
        .database
        .count("SELECT count(*) FROM events WHERE payload->>'tenant_id' = 'avms'")
        .await
        .expect("count");
    assert_eq!(avms, 8);

    let reader = token("avms-reader");
    let filters = [
        json!({}),
        json!({"tenant_id": "other"}),
        json!({"tenant_id_in": ["avms", "other", "third"]}),
        json!({"tenant_id_ne": "avms"}),
        json!({"tenant_id_exists": false}),
        json!({"tenant_id": null}),
        json!({"source_app": "a"}),
        json!({"tenant_id_contains": "o"}),
    ];
    let sorts = [
        json!(["-timestamp"]),
        json!(["tenant_id"]),
        json!(["-source_app", "run_id"]),
    ];
    for filter in &filters {
        for sort in &sorts {
            let mut body = json!({"filter": filter, "sort": sort, "limit": 1});
            let mut seen = Vec::new();
            for _ in 0..100 {
                let (status, answer) = query_as(&system, RUNS, &reader, &body).await;
                assert_eq!(status, 200, "{body}: {answer}");
                for event in answer["data"].as_array().expect("data") {
                    assert_eq!(event["payload"]["tenant_id"], "avms", "{body}: {answer}");
                    seen.push(event["id"].clone());
                }
                if answer["pagination"]["has_more"] != true {
                    break;
                }
                body["cursor"] = answer["pagination"]["cursor"].clone();
            }
            let expected = system
                .query_all(RUNS, json!({"filter": filter, "sort": sort, "limit": 50}))
                .await
                .into_iter()
                .filter(|e| e["payload"]["tenant_id"] == "avms")
                .count();
            assert_eq!(seen.len(), expected, "{filter} {sort}");
        }
    }
    // The GET form is restricted the same way.
    let (status, answer) =
        get_as(&system, &format!("/stats/{RUNS}?tenant_id=other"), &reader).await;
    assert_eq!(status, 200);
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(0), "{answer}");
    let (_, answer) = get_as(&system, &format!("/stats/{RUNS}?limit=100"), &reader).await;
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(8), "{answer}");
    // An unrestricted reader's cursor does not carry over: the query (with its restriction) differs.
    let body = json!({"filter": {}, "limit": 1});
    let (_, answer) = query_as(&system, RUNS, &analyst, &body).await;
    let foreign = json!({"filter": {}, "limit": 1, "cursor": answer["pagination"]["cursor"]});
    let (status, answer) = query_as(&system, RUNS, &reader, &foreign).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "cursor", "{answer}");
    // Dead letters cannot be filtered by tenant: refused to a restricted reader.
    let (status, answer) = get_as(&system, &format!("/stats/{RUNS}/dead-letters"), &reader).await;
    assert_permission_refused(status, &answer, None);
    assert_eq!(
        get_as(&system, &format!("/stats/{RUNS}/dead-letters"), &analyst)
            .await
            .0,
        200
    );
}

/// SIGHUP reloads the access file while requests keep flowing: none fails, the new rules apply, an
/// invalid file keeps the old rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_access_file_without_dropping_requests() {
    let stack = stack().await;
    let database = stack.fresh_database().await;
    let dir = TempDir::new();
    let before = r#"{"audit.logs": {"write": ["steady"], "read": ["steady"]}}"#;
    let after =
        r#"{"audit.logs": {"write": ["steady", "newcomer"], "read": ["steady", "newcomer"]}}"#;
    let mut config: Config = test_config(stack, &database);
    config.catalogue.access_file = dir.write("access.json", before);
    let ingest = eventgate_ingest_api::Application::build(config.clone())
        .await
        .expect("ingest-api starts");
    let access = ingest.access();
    let ingest_url = format!("http://127.0.0.1:{}", ingest.port());
    tokio::spawn(ingest.run_until_stopped());
    let stats = eventgate_stats_api::Application::build(config.clone())
        .await
        .expect("stats-api starts");
    let stats_url = format!("http://127.0.0.1:{}", stats.port());
    tokio::spawn(stats.run_until_stopped());
    let http = reqwest::Client::new();
    let event = json!({"event_name": "steady", "description": "keeps writing"});

    // Steady traffic on both APIs for the whole test; every answer must be a success.
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = {
        let (http, ingest_url, stats_url, stop, event) = (
            http.clone(),
            ingest_url.clone(),
            stats_url.clone(),
            stop.clone(),
            event.clone(),
        );
        tokio::spawn(async move {
            let steady = token("steady");
            let mut answered = 0usize;
            let mut failures = Vec::new();
            while !stop.is_cancelled() {
                let write = http
                    .post(format!("{ingest_url}/topics/audit.logs"))
                    .bearer_auth(&steady)
                    .json(&event)
                    .send()
                    .await;
                let read = http
                    .get(format!("{stats_url}/stats/audit.logs?limit=1"))
                    .bearer_auth(&steady)
                    .send()
                    .await;
                for (what, result, ok) in [("write", write, 202), ("read", read, 200)] {
                    match result {
                        Ok(response) if response.status().as_u16() == ok => answered += 1,
                        Ok(response) => failures.push(format!("{what}: {}", response.status())),
                        Err(error) => failures.push(format!("{what}: {error}")),
                    }
                }
            }
            (answered, failures)
        })
    };

    let newcomer = token("newcomer");
    let newcomer_writes = || async {
        http.post(format!("{ingest_url}/topics/audit.logs"))
            .bearer_auth(&newcomer)
            .json(&event)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let newcomer_reads = || async {
        http.get(format!("{stats_url}/stats/audit.logs"))
            .bearer_auth(&newcomer)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(newcomer_writes().await, 403);
    assert_eq!(newcomer_reads().await, 403);

    dir.write("access.json", after);
    sighup_self();
    wait_until("the ingest-api to reload", WAIT, || async {
        access.reloads() == 1
    })
    .await
    .expect("reloaded");
    assert_eq!(newcomer_writes().await, 202);
    wait_until("the stats-api to reload", WAIT, || async {
        newcomer_reads().await == 200
    })
    .await
    .expect("stats-api reloaded");

    // An invalid file changes nothing.
    dir.write("access.json", r#"{"audit.logs": {"write": ["steady"]"#);
    sighup_self();
    wait_until("the failed reload", WAIT, || async {
        access.failed_reloads() == 1
    })
    .await
    .expect("reload attempted");
    assert_eq!(access.reloads(), 1);
    assert_eq!(newcomer_writes().await, 202, "the previous rules stay");

    // And a valid one again takes effect.
    dir.write("access.json", before);
    sighup_self();
    wait_until("the second reload", WAIT, || async {
        access.reloads() == 2
    })
    .await
    .expect("reloaded");
    assert_eq!(newcomer_writes().await, 403);

    stop.cancel();
    let (answered, failures) = traffic.await.expect("traffic task");
    assert!(
        failures.is_empty(),
        "requests failed during reloads: {failures:?}"
    );
    assert!(answered >= 2, "the traffic ran: {answered}");
}

// ------------------------------------------------------------------------------------ abuse limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_depth_size_and_slow_clients() {
    let system = System::start_with(stack().await, 0, |config| {
        config.ratelimit.queries_per_second = 1;
        config.ratelimit.queries_burst = 5;
        config.limits.max_json_depth = 8;
        config.limits.query_max_body_bytes = 4096;
        config.limits.body_timeout_ms = 500;
        config.limits.request_head_timeout_ms = 500;
    })
    .await;

    // Per-user token bucket: after the burst, 429 with Retry-After; another user is not affected. The
    // topic does not exist, so each request costs nothing but the checks (401 → 429 → 404).
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let url = format!("{}/stats/no.such.topic", system.stats_url);
        let (status, answer, headers) = send(
            &system,
            "GET",
            url,
            Some(format!("Bearer {}", token("greedy"))),
            None,
        )
        .await;
        if status == 429 {
            assert_eq!(error_type(&answer), "rate_limit", "{answer}");
            retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        statuses.push(status);
    }
    assert!(statuses[..5].iter().all(|&s| s == 404), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let url = format!("{}/stats/no.such.topic", system.stats_url);
    let (status, _, _) = send(
        &system,
        "GET",
        url,
        Some(format!("Bearer {}", token("other"))),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // JSON depth: an event nested deeper than the limit is a 400 naming the body, in a batch too.
    let deep = |levels: usize| {
        let mut value = json!("x");
        for _ in 0..levels {
            value = json!({"a": value});
        }
        value
    };
    let event = |nested: Value| json!({"event_name": "deep", "description": "d", "extra": nested});
    let (status, answer) = system.post("audit.logs", "dev", &event(deep(20))).await;
    assert_eq!(
        (status, error_type(&answer)),
        (400, "validation"),
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["field"], "body", "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested"),
        "{answer}"
    );
    let (status, _) = system
        .post("audit.logs", "dev", &json!([event(deep(20))]))
        .await;
    assert_eq!(status, 400);
    let (status, answer) = system
        .query(
            "audit.logs",
            "dev",
            &json!({"filter": {"event_name_in": [[[[[[[[["x"]]]]]]]]]}}),
        )
        .await;
    assert_eq!(
        (status, error_type(&answer)),
        (400, "validation"),
        "{answer}"
    );

    // Query body size.
    let big = json!({"filter": {"event_name": "x".repeat(5000)}});
    let (status, answer) = system.query("audit.logs", "dev", &big).await;
    assert_eq!(
        (status, error_type(&answer)),
        (413, "too_large"),
        "{answer}"
    );

    // A client that sends half a body and stalls gets 408 once the body timeout is over, and its
    // connection is released.
    let address = system.ingest_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /topics/audit.logs HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"event_name\":",
        token("dev")
    );
    socket.write_all(head.as_bytes()).await.expect("send");
    let answer = tokio::time::timeout(WAIT, read_response(&mut socket))
        .await
        .expect("the server answers a stalled body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");

    // A client that never finishes its request head is answered 408 and disconnected too.
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    socket
        .write_all(b"POST /topics/audit.logs HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .expect("the server gives up on a stalled head")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

// ------------------------------------------------------------------------------------ hostile input

async fn fingerprint(system: &System) -> (i64, i64) {
    let count = system.count_events().await;
    let hash = system
        .database
        .count("SELECT coalesce(sum(hashtext(id::text || topic || producer || payload::text)), 0) FROM events")
        .await
        .expect("hash");
    (count, hash)
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url).await.expect("connect")
}

/// Runs `sql` and returns the error text (empty when it succeeded).
async fn attempt(conn: &mut AsyncPgConnection, sql: &str) -> String {
    match conn.batch_execute(sql).await {
        Ok(()) => String::new(),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_injection_is_rejected_or_matched_literally_and_roles_cannot_write() {
    let dir = TempDir::new();
    let access = dir.write(
        "access.json",
        r#"{"public.cps.za.runs": {"write": ["dev"], "read": ["dev", {"user": "avms-reader", "fields": {"tenant_id": ["avms'; DELETE FROM events; --"]}}]}}"#,
    );
    let system = System::start_with(stack().await, 1, |config| {
        config.catalogue.access_file = access.clone();
    })
    .await;
    let hostile_tenant = "' OR '1'='1";
    let hostile_app = "x'); DROP TABLE events; --";
    let hostile_region = "\"; DELETE FROM events WHERE true; --";
    let mut literal = run(hostile_tenant, "prod", hostile_app, 1);
    literal["additional_info"]["region"] = json!(hostile_region);
    let mut restricted = run("avms'; DELETE FROM events; --", "prod", "b", 2);
    restricted["additional_info"]["owner"] = json!("$1; SELECT pg_sleep(10)");
    let batch = json!([
        literal,
        restricted,
        run("avms", "prod", "a", 3),
        run("other", "dev", "a", 4)
    ]);
    let (status, answer) = system.post(RUNS, "dev", &batch).await;
    assert_eq!(status, 202, "{answer}");
    system.wait_for_rows(4, WAIT).await;
    // Stored verbatim.
    let stored = system
        .database
        .count(&format!(
            "SELECT count(*) FROM events WHERE payload->>'source_app' = '{}'",
            hostile_app.replace('\'', "''")
        ))
        .await
        .expect("count");
    assert_eq!(stored, 1);
    let before = fingerprint(&system).await;

    // Values are bind parameters: they match exactly the events that hold them, nothing more.
    let literal_matches: Vec<(Value, usize)> = vec![
        (json!({"tenant_id": hostile_tenant}), 1),
        (json!({"tenant_id": "avms' OR 1=1 --"}), 0),
        (
            json!({"tenant_id_in": [hostile_tenant, "nobody'); DROP TABLE events; --"]}),
            1,
        ),
        (json!({"tenant_id_contains": "' or '1'='1"}), 1),
        (json!({"tenant_id_contains": "%"}), 0),
        (json!({"tenant_id_contains": "_"}), 0),
        (json!({"source_app": hostile_app}), 1),
        (json!({"source_app_gte": "x'); DROP"}), 1),
        (json!({"additional_info.region": hostile_region}), 1),
        (
            json!({"payload.additional_info.owner": "$1; SELECT pg_sleep(10)"}),
            1,
        ),
        (json!({"tenant_id": "\\'; DROP TABLE events; --"}), 0),
        (json!({"tenant_id_ne": "' OR ''='"}), 4),
    ];
    for (filter, expected) in &literal_matches {
        let (status, answer) = system
            .query(RUNS, "dev", &json!({"filter": filter, "limit": 100}))
            .await;
        assert_eq!(status, 200, "{filter}: {answer}");
        assert_eq!(
            answer["data"].as_array().map(Vec::len),
            Some(*expected),
            "{filter}: {answer}"
        );
    }

    // Field names, dot paths, sort keys, cursors and limits that are not what they should be: 400.
    let rejected = vec![
        json!({"filter": {"tenant_id'; DROP TABLE events; --": "x"}}),
        json!({"filter": {"tenant_id' OR '1'='1": "x"}}),
        json!({"filter": {"payload.tenant_id')::text; DELETE FROM events; --": "x"}}),
        json!({"filter": {"additional_info.region') OR ('1'='1": "x"}}),
        json!({"filter": {"additional_info\u{0}.region": "x"}}),
        json!({"filter": {"payload->>'tenant_id'": "x"}}),
        json!({"filter": {"jobs.0.status": "failed"}}),
        json!({"filter": {"tenant_id_in; DROP TABLE events": ["x"]}}),
        json!({"filter": {"tenant_id": "\u{0}"}}),
        json!({"filter": {"tenant_id": {"$ne": 1}}}),
        json!({"sort": ["tenant_id; DROP TABLE events"]}),
        json!({"sort": ["-timestamp DESC, (SELECT 1)"]}),
        json!({"sort": ["payload->>'tenant_id'"]}),
        json!({"sort": ["(SELECT pg_sleep(10))"]}),
        json!({"sort": ["-"]}),
        json!({"cursor": "'; DROP TABLE events; --"}),
        json!({"limit": "1; DROP TABLE events"}),
        json!({"limit": -1}),
        json!({"filter": {}, "union": "SELECT * FROM pg_shadow"}),
    ];
    for body in &rejected {
        let (status, answer) = system.query(RUNS, "dev", body).await;
        assert_eq!(
            (status, error_type(&answer)),
            (400, "validation"),
            "{body}: {answer}"
        );
    }
    let hostile_gets = [
        ("?sort=timestamp;DROP%20TABLE%20events", 400),
        ("?tenant_id%27%3BDROP%20TABLE%20events%3B--=1", 400),
        ("?limit=1%3BDELETE%20FROM%20events", 400),
        ("?tenant_id=%27%20OR%20%271%27%3D%271", 200),
        ("?source_app=x%27)%3B%20DROP%20TABLE%20events%3B%20--", 200),
    ];
    let dev = token("dev");
    for (query, expected) in hostile_gets {
        let (status, answer) = get_as(&system, &format!("/stats/{RUNS}{query}"), &dev).await;
        assert_eq!(status, expected, "{query}: {answer}");
        if status == 200 {
            assert_eq!(
                answer["data"].as_array().map(Vec::len),
                Some(1),
                "{query}: {answer}"
            );
        }
    }
    // A restriction value that looks like SQL is a plain value too.
    let (status, answer) = system.query(RUNS, "avms-reader", &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(1), "{answer}");

    assert_eq!(
        fingerprint(&system).await,
        before,
        "the events table changed"
    );

    // The stats role can only read: not even after asking for a read-write transaction.
    let mut reader = connect(&system.database.reader_url).await;
    assert!(attempt(&mut reader, "SELECT count(*) FROM events")
        .await
        .is_empty());
    for sql in [
        "INSERT INTO events VALUES (gen_random_uuid(), 't', now(), 'p', '{}')",
        "UPDATE events SET producer = 'x'",
        "DELETE FROM events",
        "TRUNCATE events",
        "DROP TABLE events",
        "ALTER TABLE events ADD COLUMN x int",
        "CREATE TABLE stolen (x int)",
        "DELETE FROM dead_letters",
    ] {
        let error = attempt(&mut reader, sql).await;
        assert!(error.contains("read-only"), "{sql}: {error:?}");
        let error = attempt(&mut reader, &format!("BEGIN READ WRITE; {sql}; COMMIT")).await;
        let _ = attempt(&mut reader, "ROLLBACK").await;
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{sql} in a read-write transaction: {error:?}"
        );
    }
    assert_eq!(
        fingerprint(&system).await,
        before,
        "the stats role changed events"
    );

    // The writer's role inserts and reads, and can neither change nor remove anything.
    let mut writer = connect(&system.database.writer_role_url).await;
    for sql in [
        "UPDATE events SET producer = 'x'",
        "DELETE FROM events",
        "TRUNCATE events",
        "DROP TABLE events",
        "ALTER TABLE events ADD COLUMN x int",
        "ALTER TABLE events DROP CONSTRAINT events_pkey",
        "CREATE INDEX sneaky ON events (producer)",
        "DROP TABLE dead_letters",
        "UPDATE dead_letters SET error = 'x'",
        "DELETE FROM dead_letters",
        "ALTER TABLE dead_letters ADD COLUMN x int",
    ] {
        let error = attempt(&mut writer, sql).await;
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{sql}: {error:?}"
        );
    }
    assert_eq!(
        fingerprint(&system).await,
        before,
        "the writer role changed events"
    );
    let error = attempt(
        &mut writer,
        "INSERT INTO events VALUES (gen_random_uuid(), 'security.test', now(), 'p', '{}')",
    )
    .await;
    assert!(error.is_empty(), "{error}");
    assert_eq!(fingerprint(&system).await.0, before.0 + 1);
}

/// Arbitrary JSON bodies against both APIs: every answer is a success or a 4xx in the error envelope,
/// never a 5xx or a dropped connection.
#[test]
fn arbitrary_bodies_over_http_are_accepted_or_4xx() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let system = runtime.block_on(System::start(0));
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z_.]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "event_name",
            "description",
            "customer_id",
            "filter",
            "sort",
            "limit",
            "cursor",
            "event_name_in",
            "customer_id_between",
            "created_at_gte",
            "-timestamp",
            "payload.x",
        ])
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        prop::sample::select(vec![
            "event_name",
            "description",
            "customer_id",
            "created_at",
            "filter",
            "sort",
            "limit",
            "cursor",
            "event_name_in",
            "customer_id_gt",
            "customer_id_between",
            "created_at_gte",
            "event_name_contains",
            "description_exists",
            "id",
            "timestamp",
            "producer",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    let json = leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let body = prop_oneof![
        json.clone().prop_map(|v| v.to_string().into_bytes()),
        json.prop_map(|v| json!({"filter": v, "limit": 3}).to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&body, |bytes| {
        runtime.block_on(async {
            for url in [
                format!("{}/topics/audit.logs", system.ingest_url),
                format!("{}/stats/audit.logs", system.stats_url),
            ] {
                let response = system
                    .http
                    .post(&url)
                    .bearer_auth(token("dev"))
                    .header("content-type", "application/json")
                    .body(bytes.clone())
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if !(200..500).contains(&status) {
                    return Err(TestCaseError::fail(format!("{url}: {status} {text}")));
                }
                if status >= 400 {
                    let answer: Value = serde_json::from_str(&text)
                        .map_err(|_| TestCaseError::fail(format!("{url}: not JSON: {text}")))?;
                    prop_assert_eq!(&answer["statusCode"], &json!(status));
                }
            }
            Ok(())
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
