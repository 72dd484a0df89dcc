//! The OpenAPI documents against the running APIs: schemathesis (PyPI, installed by
//! `scripts/schemathesis.sh`, its path in `EVENTGATE_TEST_SCHEMATHESIS`; `make test` exports it) generates
//! requests from each API's `/openapi.json` and sends them with a valid token; the test fails when it
//! finds a 5xx or an answer the document does not describe (its configuration:
//! `crates/e2e/schemathesis.toml`). Also: the document and its page are served, self-contained.

use std::time::{Duration, Instant};

use eventgate_e2e::{repo_root, System};
use eventgate_test_support::token;
use serde_json::{json, Value};

fn schemathesis() -> std::path::PathBuf {
    std::env::var_os("EVENTGATE_TEST_SCHEMATHESIS")
        .map(Into::into)
        .expect(
        "EVENTGATE_TEST_SCHEMATHESIS must name the schemathesis binary: `bash scripts/schemathesis.sh` \
             installs it and prints its path (make test exports it)",
    )
}

/// Runs schemathesis against one API; returns how long it took, or its report.
async fn run_schemathesis(binary: &std::path::Path, api: &str, url: &str) -> Duration {
    let started = Instant::now();
    let work_dir = repo_root().join("target/schemathesis");
    std::fs::create_dir_all(&work_dir).expect("target/schemathesis");
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--no-color")
        .arg("--config-file")
        .arg(repo_root().join("crates/e2e/schemathesis.toml"))
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .env("EVENTGATE_SCHEMATHESIS_TOKEN", token("dev"))
        // Hypothesis keeps files in the working directory: not in the source tree.
        .current_dir(&work_dir)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis against the {api} did not finish in 5 minutes"))
        .unwrap_or_else(|e| panic!("schemathesis ({}) cannot run: {e}", binary.display()));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems in the {api} ({}):\n{report}",
        output.status
    );
    let elapsed = started.elapsed();
    println!("schemathesis against the {api}: {elapsed:.1?}\n{report}");
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_documents() {
    let binary = schemathesis();
    let system = System::start(1).await;
    // Events to find: queries, aggregates and exports answer with rows.
    let (status, body) = system
        .post(
            "audit.logs",
            "dev",
            &json!([
                {"event_name": "login", "description": "alice signed in", "customer_id": 42},
                {"event_name": "logout", "description": "alice left", "customer_id": 42}
            ]),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    system.wait_for_rows(2, Duration::from_secs(30)).await;

    let ingest = run_schemathesis(&binary, "ingest-api", &system.ingest_url).await;
    let stats = run_schemathesis(&binary, "stats-api", &system.stats_url).await;
    println!("schemathesis: ingest-api {ingest:.1?}, stats-api {stats:.1?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_serves_its_document_and_a_self_contained_page() {
    let system = System::start(0).await;
    for url in [&system.ingest_url, &system.stats_url] {
        let response = system
            .http
            .get(format!("{url}/openapi.json"))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("a body");
        let document: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(document["openapi"], "3.1.0");
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(document["paths"]["/token"]["get"].is_object(), "{url}");
        // Public, so it names no topic.
        for topic in ["audit.logs", "web.events", "public.cps.za.runs"] {
            assert!(!text.contains(topic), "{url}/openapi.json names {topic}");
        }

        let page = system
            .http
            .get(format!("{url}/api"))
            .send()
            .await
            .expect("answers");
        assert_eq!(page.status(), 200);
        let csp = page
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // Nothing from elsewhere: scripts, styles and requests from this origin only.
        assert!(csp.contains("default-src 'none'"), "{csp}");
        let html = page.text().await.expect("a body");
        assert!(html.contains(r#"src="api/api.js""#), "{html}");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
        for asset in ["api.js", "api.css"] {
            let response = system
                .http
                .get(format!("{url}/api/{asset}"))
                .send()
                .await
                .expect("answers");
            assert_eq!(response.status(), 200, "{asset}");
        }
    }
}

/// The page in Debian's Chromium (installed by `make test`), offline: every operation of the document
/// is rendered, and nothing is fetched from elsewhere (the page's policy allows this origin only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_every_operation_in_a_browser() {
    let system = System::start(0).await;
    let profile = repo_root().join("target/schemathesis/chromium-profile");
    for url in [&system.ingest_url, &system.stats_url] {
        let document: Value = system
            .http
            .get(format!("{url}/openapi.json"))
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
        let operations: usize = document["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|item| item.as_object().map_or(0, serde_json::Map::len))
            .sum();
        let output = tokio::process::Command::new("/usr/bin/chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=10000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("{url}/api"))
            .kill_on_drop(true)
            .output()
            .await
            .expect("chromium runs (make test installs it)");
        let dom = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            dom.matches(r#"<details class="op""#).count(),
            operations,
            "{url}/api rendered:\n{dom}"
        );
        assert!(dom.contains("ErrorEnvelope"), "{dom}");
        assert!(!dom.contains("could not be loaded"), "{dom}");
    }
}
