//! The `eventgate` binary against the real services: the ingest-api, a db-writer and the stats-api
//! in-process on the test stack's Postgres and tansu (eventgate-e2e's `System`), with two topics of the
//! tests' own, and a proxy that loses answers.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use eventgate_e2e::System;
use eventgate_test_support::{stack, token};

/// Events may carry `event_id`: the CLI gives each one before sending.
pub const TOPIC: &str = "cli.events";
/// Refuses any property it does not declare, `event_id` included: the CLI sends without ids.
pub const STRICT: &str = "cli.strict";

const EVENTS_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["seq", "name"],
  "properties": {
    "event_id": {"type": "string", "format": "uuid"},
    "seq": {"type": "integer"},
    "name": {"type": "string", "minLength": 1},
    "=formula": {"type": "string"}
  },
  "additionalProperties": false
}"#;

const STRICT_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["seq", "name"],
  "properties": {"seq": {"type": "integer"}, "name": {"type": "string", "minLength": 1}},
  "additionalProperties": false
}"#;

const ACCESS: &str = r#"{
  "cli.events": {"write": ["dev"], "read": ["dev"]},
  "cli.strict": {"write": ["dev"], "read": ["dev"]}
}"#;

pub struct Env {
    pub system: System,
    pub dir: PathBuf,
    pub token: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    /// As [`Env::start`], with the services' configuration changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut eventgate_core::config::Config)) -> Env {
        let dir =
            std::env::temp_dir().join(format!("eventgate-cli-{}", uuid::Uuid::new_v4().simple()));
        let topics = dir.join("topics");
        std::fs::create_dir_all(&topics).expect("topics dir");
        std::fs::create_dir_all(dir.join("home")).expect("home dir");
        std::fs::write(topics.join(format!("{TOPIC}.json")), EVENTS_SCHEMA).expect("schema");
        std::fs::write(topics.join(format!("{STRICT}.json")), STRICT_SCHEMA).expect("schema");
        std::fs::write(dir.join("access.json"), ACCESS).expect("access");
        let system = System::start_with(stack().await, 1, |config| {
            config.catalogue.topics_dir = topics.clone();
            config.catalogue.access_file = dir.join("access.json");
            configure(config);
        })
        .await;
        Env {
            system,
            dir,
            token: token("dev"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `eventgate ARGS` with nothing of the caller's environment that could steer it (no `EVENTGATE_*`,
    /// an empty home), pointed at this system with the `dev` token through the environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = self.bare_command(args);
        self.connect(&mut command);
        command
    }

    /// As [`Env::command`] without token or URLs: what a profile must supply.
    pub fn bare_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventgate"));
        command.args(args);
        self.isolate(&mut command);
        command
    }

    /// As [`Env::command`], on a pseudo-terminal (script(1)): stdout is a terminal, as for a person.
    pub fn in_terminal(&self, args: &[&str]) -> tokio::process::Command {
        let mut line = shell_quote(env!("CARGO_BIN_EXE_eventgate"));
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        let mut command = tokio::process::Command::new("script");
        command
            .args(["-qec", &line, "/dev/null"])
            .env("COLUMNS", "200");
        self.isolate(&mut command);
        self.connect(&mut command);
        command
    }

    fn isolate(&self, command: &mut tokio::process::Command) {
        for (key, _) in std::env::vars() {
            if key.starts_with("EVENTGATE_") {
                command.env_remove(key);
            }
        }
        command
            .env("HOME", self.dir.join("home"))
            .env("XDG_CONFIG_HOME", self.dir.join("home/.config"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
    }

    fn connect(&self, command: &mut tokio::process::Command) {
        command
            .env("EVENTGATE_TOKEN", &self.token)
            .env("EVENTGATE_INGEST_URL", &self.system.ingest_url)
            .env("EVENTGATE_STATS_URL", &self.system.stats_url);
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        Run::of(self.command(args).output().await.expect("eventgate runs"))
    }
}

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Fails the test, showing both streams, unless the exit code is `code`.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Standard output as NDJSON.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

pub fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("file"));
    for line in lines {
        writeln!(file, "{line}").expect("write");
    }
    file.flush().expect("flush");
}

/// An HTTP proxy in front of the ingest-api that loses the answer to the first copy of every request
/// body: it forwards the request (the events are published and will be stored), then tells the client
/// `503` with `Retry-After: 0`, as when the broker's acknowledgement does not arrive in time. A client
/// that sends the same body again gets the real answer.
pub struct LossyProxy {
    pub url: String,
    pub lost: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

struct ProxyState {
    upstream: String,
    seen: Arc<Mutex<HashSet<Vec<u8>>>>,
    lost: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl LossyProxy {
    pub fn start(upstream: &str) -> LossyProxy {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let lost = Arc::new(AtomicUsize::new(0));
        let (upstream, seen_, lost_) = (upstream.to_owned(), seen.clone(), lost.clone());
        let server = HttpServer::new(move || {
            // A client per worker: each worker runs a runtime of its own.
            App::new()
                .app_data(web::Data::new(ProxyState {
                    upstream: upstream.clone(),
                    seen: seen_.clone(),
                    lost: lost_.clone(),
                    http: reqwest::Client::new(),
                }))
                .default_service(web::to(forward))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("proxy binds");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        LossyProxy {
            url: format!("http://127.0.0.1:{port}"),
            lost,
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn forward(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ProxyState>,
) -> HttpResponse {
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes()).expect("method");
    let mut upstream = state
        .http
        .request(
            method.clone(),
            format!("{}{}", state.upstream, request.uri()),
        )
        .body(body.to_vec());
    for name in ["authorization", "content-type"] {
        if let Some(value) = request.headers().get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let answer_body = answer.bytes().await.unwrap_or_default();
    let first_copy = method == reqwest::Method::POST
        && state
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(body.to_vec());
    if first_copy {
        state.lost.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "0"))
            .content_type("application/json")
            .body(
                r#"{"success":false,"statusCode":503,"errors":[{"type":"queue","message":"the broker did not acknowledge in time (answer lost by the test's proxy)"}]}"#,
            );
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
        .content_type(content_type)
        .body(answer_body.to_vec())
}
