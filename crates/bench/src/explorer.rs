//! Phase 7: the explorer page's first paint, in headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` as `crates/stats-api/tests/explorer_browser.rs` drives it), on the generated history.
//!
//! Each repeat loads `GET /` afresh, pastes a token, loads the topics, picks `public.cps.za.runs` and
//! waits for its fields, as an analyst does; then a script in the page clicks "Run query" and times, with
//! the page's own clock, the moment the first page of events is in the table and painted (a
//! `MutationObserver` on the results, then the next animation frame), and then the chart (the
//! count-over-time aggregate the same click sends). Missing browser tools, or any failure of the browser,
//! skip the phase with a note: it never fails the run.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::load::Latency;
use crate::queries::RUNS;
use crate::services::{Bench, USER};
use crate::Sizes;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExplorerResults {
    /// Why nothing was measured (tools missing, the browser failed), or `None`.
    pub skipped: Option<String>,
    /// From the click on "Run query" to the first page of events painted.
    pub first_page: Option<Latency>,
    /// From the same click to the chart drawn (its aggregate runs beside the page query).
    pub chart: Option<Latency>,
    /// From navigation to the page's `load` event (HTML, CSS, script).
    pub page_load: Option<Latency>,
    /// Events on the first page.
    pub rows: u64,
}

impl ExplorerResults {
    fn skipped(why: String) -> ExplorerResults {
        eprintln!("bench: explorer: skipped: {why}");
        ExplorerResults {
            skipped: Some(why),
            ..ExplorerResults::default()
        }
    }
}

/// Never fails: what goes wrong is the note of a skipped measurement.
pub async fn run(bench: &Bench, sizes: &Sizes, stats_url: &str) -> ExplorerResults {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(tool).exists() {
            return ExplorerResults::skipped(format!(
                "{tool} is missing (`apt-get install chromium chromium-driver`)"
            ));
        }
    }
    match measure(bench, sizes, stats_url).await {
        Ok(results) => results,
        Err(error) => ExplorerResults::skipped(format!("{error:#}")),
    }
}

/// chromedriver and its browser profile, removed when dropped.
struct Driver {
    _child: Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn start_driver(bench: &Bench) -> anyhow::Result<Driver> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting chromedriver")?;
    let driver = Driver {
        _child: child,
        port,
        profile: std::env::temp_dir().join(format!("eventgate-bench-chromium-{}", bench.run_id)),
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let status = bench
            .http
            .get(format!("http://127.0.0.1:{port}/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if status.is_ok_and(|r| r.status().is_success()) {
            return Ok(driver);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "chromedriver did not answer within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_browser(driver: &Driver) -> anyhow::Result<Client> {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1800", "--lang=en-US",
                format!("--user-data-dir={}", driver.profile.display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        anyhow::bail!("the capabilities are not an object");
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .context("opening a Chromium session")?;
    client
        .update_timeouts(TimeoutConfiguration::new(
            Some(Duration::from_secs(180)),
            Some(Duration::from_secs(60)),
            None,
        ))
        .await
        .map_err(|e| anyhow!("setting the browser's timeouts: {e}"))?;
    Ok(client)
}

async fn measure(bench: &Bench, sizes: &Sizes, stats_url: &str) -> anyhow::Result<ExplorerResults> {
    let driver = start_driver(bench).await?;
    let browser = open_browser(&driver).await?;
    let outcome = repeats(&browser, sizes, stats_url).await;
    let _ = browser.close().await;
    drop(driver);
    outcome
}

/// Clicks "Run query" and resolves once the first page of events is in the table and painted, with
/// the time since the click on the page's clock (or the error the page shows).
const RUN_AND_TIME_ROWS: &str = r##"
const done = arguments[arguments.length - 1];
const results = document.getElementById("results");
const error = document.getElementById("error");
const rows = () => document.querySelectorAll("#events tbody tr[data-id]").length;
let finished = false;
const finish = (value) => { if (!finished) { finished = true; observer.disconnect(); done(value); } };
const check = () => {
  if (!results.hidden && rows() > 0) {
    const at = performance.now();
    // The next frame paints it.
    requestAnimationFrame(() => setTimeout(() => finish({ ms: performance.now() - window.__benchClick, dom_ms: at - window.__benchClick, rows: rows() }), 0));
    observer.disconnect();
  } else if (!error.hidden) {
    finish({ error: error.textContent });
  }
};
const observer = new MutationObserver(check);
observer.observe(document.body, { subtree: true, childList: true, attributes: true });
setTimeout(() => finish({ error: "no events shown within 120 s" }), 120000);
window.__benchClick = performance.now();
document.getElementById("run").click();
"##;

/// Resolves once the chart is drawn, with the time since the click (or null after 120 s).
const WAIT_FOR_CHART: &str = r##"
const done = arguments[arguments.length - 1];
const started = performance.now();
const poll = () => {
  if (document.querySelector("#chart svg")) {
    done(performance.now() - window.__benchClick);
  } else if (performance.now() - started > 120000 || !document.getElementById("error").hidden) {
    done(null);
  } else {
    setTimeout(poll, 2);
  }
};
poll();
"##;

const PAGE_LOAD: &str = r##"
const entry = performance.getEntriesByType("navigation")[0];
return entry ? entry.loadEventEnd - entry.startTime : null;
"##;

async fn repeats(
    browser: &Client,
    sizes: &Sizes,
    stats_url: &str,
) -> anyhow::Result<ExplorerResults> {
    let token = eventgate_test_support::token(USER);
    let step = |what: &'static str| move |e: fantoccini::error::CmdError| anyhow!("{what}: {e}");
    let (mut first_page, mut chart, mut page_load) = (Vec::new(), Vec::new(), Vec::new());
    let mut shown = 0;
    // One unmeasured load first: the browser's own start-up and caches.
    for i in 0..=sizes.explorer_iterations {
        browser
            .goto(&format!("{stats_url}/"))
            .await
            .map_err(step("loading the page"))?;
        let wait = || browser.wait().at_most(WAIT);
        wait()
            .for_element(Locator::Css("body[data-ready='true']"))
            .await
            .map_err(step("the page's script"))?;
        let loaded = browser
            .execute(PAGE_LOAD, Vec::new())
            .await
            .map_err(step("the navigation timing"))?;
        browser
            .find(Locator::Id("token"))
            .await
            .map_err(step("the token field"))?
            .send_keys(&token)
            .await
            .map_err(step("typing the token"))?;
        browser
            .find(Locator::Id("connect"))
            .await
            .map_err(step("the connect button"))?
            .click()
            .await
            .map_err(step("connecting"))?;
        wait()
            .for_element(Locator::Css("#query-form[data-fields-loaded]"))
            .await
            .map_err(step("the topics"))?;
        browser
            .find(Locator::Id("topic"))
            .await
            .map_err(step("the topic list"))?
            .select_by_value(RUNS)
            .await
            .map_err(step("picking the topic"))?;
        wait()
            .for_element(Locator::Css(&format!(
                "#query-form[data-fields-loaded='{RUNS}']"
            )))
            .await
            .map_err(step("the topic's fields"))?;

        let answer = browser
            .execute_async(RUN_AND_TIME_ROWS, Vec::new())
            .await
            .map_err(step("running the query"))?;
        if let Some(error) = answer.get("error") {
            anyhow::bail!("the explorer showed no events: {error}");
        }
        let rows_ms = answer["ms"]
            .as_f64()
            .with_context(|| format!("no time in {answer}"))?;
        shown = answer["rows"].as_u64().unwrap_or(0);
        let chart_ms = browser
            .execute_async(WAIT_FOR_CHART, Vec::new())
            .await
            .map_err(step("waiting for the chart"))?
            .as_f64();
        if i == 0 {
            continue;
        }
        first_page.push(rows_ms);
        if let Some(ms) = chart_ms {
            chart.push(ms);
        }
        if let Some(ms) = loaded.as_f64() {
            page_load.push(ms);
        }
    }
    let first_page = Latency::of(first_page);
    eprintln!(
        "bench: explorer: first page of {shown} events {}; chart {}",
        crate::report::percentiles_text(&first_page),
        if chart.is_empty() {
            "not drawn".to_owned()
        } else {
            crate::report::percentiles_text(&Latency::of(chart.clone()))
        }
    );
    Ok(ExplorerResults {
        skipped: None,
        first_page: Some(first_page),
        chart: (!chart.is_empty()).then(|| Latency::of(chart)),
        page_load: (!page_load.is_empty()).then(|| Latency::of(page_load)),
        rows: shown,
    })
}
