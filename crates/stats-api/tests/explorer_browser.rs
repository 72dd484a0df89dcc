//! The explorer page in a real browser: headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` from `chromium-driver`; `make test` installs both when missing) loads `GET /`, takes a
//! pasted token, runs a filtered query and shows exactly the rows Postgres holds for it, pages, expands a
//! payload, draws the count-over-time chart, downloads the CSV, and leaves a screenshot in
//! `target/explorer.png` (the one in `docs/img/` is a copy). Its live toggle shows the events stored
//! after it was switched on (as the writers store them), and after a dropped connection resumes with
//! `Last-Event-ID`: nothing missed, nothing twice.
//!
//! Every wait is for a condition on the page, with a deadline; none is a fixed sleep.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use eventgate_core::db::PgPool;
use eventgate_db_writer::envelope::Envelope;
use eventgate_test_support::{free_port, stack, token, wait_until};

use common::writer::{event, store, writer_pool};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "audit.logs";

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => common::repo_root().join(dir),
        None => common::repo_root().join("target"),
    }
}

async fn start_driver() -> Driver {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: `apt-get install -y chromium chromium-driver` (make test installs them)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile =
        TempDir(std::env::temp_dir().join(format!("eventgate-chromium-{}", uuid::Uuid::new_v4())));
    let driver = Driver {
        child,
        port,
        _profile: profile,
    };
    let http = reqwest::Client::new();
    wait_until("chromedriver to answer", WAIT, || async {
        http.get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await
    .expect("chromedriver is ready");
    driver
}

async fn open_browser(driver: &Driver) -> Client {
    let profile = driver._profile.0.display().to_string();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--window-size=1280,1800",
                "--lang=en-US", format!("--user-data-dir={profile}"),
            ],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("an object literal")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// The `data-id`s of the event rows on the page.
async fn shown_ids(browser: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    let rows = browser
        .find_all(Locator::Css("#events tbody tr[data-id]"))
        .await
        .unwrap_or_default();
    for row in rows {
        if let Ok(Some(id)) = row.attr("data-id").await {
            ids.push(id);
        }
    }
    ids
}

async fn wait_for_ids(browser: &Client, what: &str, want: &[String]) -> Result<(), String> {
    let result = wait_until(what, WAIT, || async { shown_ids(browser).await == want }).await;
    match result {
        Ok(()) => Ok(()),
        Err(error) => Err(format!(
            "{error:#}: the page shows {:?}, expected {want:?}",
            shown_ids(browser).await
        )),
    }
}

async fn wait_for_text(browser: &Client, css: &str, needle: &str) -> Result<(), String> {
    let result = wait_until(&format!("{css} to say {needle:?}"), WAIT, || async {
        match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.is_ok_and(|t| t.contains(needle)),
            Err(_) => false,
        }
    })
    .await;
    if let Err(error) = result {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => "(no such element)".to_owned(),
        };
        return Err(format!("{error:#}; it says {text:?}"));
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_runs_a_filtered_query_in_chromium() {
    let api = common::start_stats_api().await;
    // 120 audit events over ten days; every fourth is a password reset (30 of them).
    api.database
        .execute(
            "INSERT INTO events (id, topic, received_at, producer, payload) \
             SELECT gen_random_uuid(), 'audit.logs', timestamptz '2025-01-06T08:00:00Z' + i * interval '113 minutes', \
                    CASE WHEN i % 3 = 0 THEN 'web-portal' ELSE 'auth-service' END, \
                    jsonb_build_object( \
                        'event_name', (ARRAY['login', 'logout', 'password_reset', 'login'])[i % 4 + 1], \
                        'description', format('customer %s from %s', 1000 + i % 7, (ARRAY['Lisbon', 'Oslo', 'Nairobi', 'Osaka', 'Quito'])[i % 5 + 1]), \
                        'customer_id', 1000 + i % 7) \
             FROM generate_series(1, 120) AS i",
        )
        .await
        .expect("events");
    let expected: Vec<String> = {
        use diesel_async::RunQueryDsl;
        let mut conn = AsyncPgConnection::establish(&api.database.admin_url)
            .await
            .expect("connection");
        let rows: Vec<Id> = diesel::sql_query(
            "SELECT id::text AS id FROM events WHERE payload @> '{\"event_name\": \"password_reset\"}' \
             ORDER BY received_at DESC, id DESC",
        )
        .load(&mut conn)
        .await
        .expect("ids");
        rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(expected.len(), 30);

    let driver = start_driver().await;
    let browser = open_browser(&driver).await;
    let outcome = drive(&browser, &api.url, &expected).await;
    let _ = browser.close().await;
    outcome.unwrap_or_else(|e| panic!("{e}"));
}

async fn drive(browser: &Client, base: &str, expected: &[String]) -> Result<(), String> {
    let step = |what: &'static str| move |e: fantoccini::error::CmdError| format!("{what}: {e}");
    browser
        .goto(&format!("{base}/"))
        .await
        .map_err(step("load the page"))?;
    let wait = || browser.wait().at_most(WAIT);
    wait()
        .for_element(Locator::Css("body[data-ready='true']"))
        .await
        .map_err(step("the script runs"))?;
    let title = browser.title().await.map_err(step("title"))?;
    if title != "eventgate explorer" {
        return Err(format!("the page is titled {title:?}"));
    }

    // Paste a token; the topics it may read load, and the first one's fields with them.
    let token_input = browser
        .find(Locator::Id("token"))
        .await
        .map_err(step("token field"))?;
    token_input
        .send_keys(&token("dev"))
        .await
        .map_err(step("type the token"))?;
    browser
        .find(Locator::Id("connect"))
        .await
        .map_err(step("connect"))?
        .click()
        .await
        .map_err(step("click connect"))?;
    wait()
        .for_element(Locator::Css("#query-form[data-fields-loaded='audit.logs']"))
        .await
        .map_err(step("fields of audit.logs"))?;

    // One filter: event_name equals password_reset; 25 rows per page (the default).
    browser
        .find(Locator::Id("add-filter"))
        .await
        .map_err(step("add filter"))?
        .click()
        .await
        .map_err(step("click add filter"))?;
    let field = wait()
        .for_element(Locator::Id("filter-field-1"))
        .await
        .map_err(step("filter field"))?;
    field
        .select_by_value("event_name")
        .await
        .map_err(step("pick the field"))?;
    let value = browser
        .find(Locator::Id("filter-value-1"))
        .await
        .map_err(step("filter value"))?;
    value
        .send_keys("password_reset")
        .await
        .map_err(step("type the value"))?;
    browser
        .find(Locator::Id("run"))
        .await
        .map_err(step("run"))?
        .click()
        .await
        .map_err(step("click run"))?;

    wait_for_ids(browser, "the first page", &expected[..25]).await?;
    wait_for_text(
        browser,
        "#events-caption",
        "page 1, events 1–25, more follow",
    )
    .await?;
    for summary in browser
        .find_all(Locator::Css("#events td.summary"))
        .await
        .map_err(step("summaries"))?
    {
        let text = summary.text().await.map_err(step("summary text"))?;
        if !text.contains("event_name: password_reset") {
            return Err(format!("a row of another event: {text}"));
        }
    }

    // The next page holds the other 5, and back.
    browser
        .find(Locator::Id("next"))
        .await
        .map_err(step("next"))?
        .click()
        .await
        .map_err(step("click next"))?;
    wait_for_ids(browser, "the second page", &expected[25..]).await?;
    browser
        .find(Locator::Id("prev"))
        .await
        .map_err(step("prev"))?
        .click()
        .await
        .map_err(step("click prev"))?;
    wait_for_ids(browser, "the first page again", &expected[..25]).await?;

    // The chart counts the filter's 30 events.
    wait_for_text(
        browser,
        "#chart-caption",
        "30 matching event(s) in all, by day (UTC)",
    )
    .await?;
    let bars = browser
        .find_all(Locator::Css("#chart svg rect.bar"))
        .await
        .map_err(step("bars"))?;
    if bars.len() < 5 {
        return Err(format!("{} bars for ten days of events", bars.len()));
    }

    // Expand the first payload.
    let toggle = browser
        .find(Locator::Css("#events .payload-toggle"))
        .await
        .map_err(step("toggle"))?;
    toggle.click().await.map_err(step("expand the payload"))?;
    wait_for_text(browser, "#payload-0", "\"event_name\": \"password_reset\"").await?;
    if toggle
        .attr("aria-expanded")
        .await
        .map_err(step("aria-expanded"))?
        .as_deref()
        != Some("true")
    {
        return Err("the toggle does not say it is expanded".to_owned());
    }
    wait_for_text(browser, "#payload-0", &expected[0]).await?;

    // The CSV of the same filter downloads (its bytes come from the export endpoint).
    browser
        .find(Locator::Id("download"))
        .await
        .map_err(step("download"))?
        .click()
        .await
        .map_err(step("click download"))?;
    wait_for_text(browser, "#status", "Downloaded audit.logs.csv").await?;

    // The picture for the README: the whole form, the chart and the first rows.
    browser
        .execute("window.scrollTo(0, 0)", Vec::new())
        .await
        .map_err(step("scroll to the top"))?;
    let png = browser.screenshot().await.map_err(step("screenshot"))?;
    let path = target_dir().join("explorer.png");
    std::fs::write(&path, &png).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}

/// A TCP proxy in front of the stats-api whose open connections the test can cut: a network drop, as
/// the browser sees one.
struct CuttableProxy {
    url: String,
    cut: watch::Sender<u64>,
}

impl CuttableProxy {
    async fn start(upstream: &str) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let (cut, cuts) = watch::channel(0u64);
        let upstream = upstream.trim_start_matches("http://").to_owned();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        CuttableProxy {
            url: format!("http://127.0.0.1:{port}"),
            cut,
        }
    }

    /// Closes every connection open now; later ones pass again.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn click(browser: &Client, id: &str) -> Result<(), String> {
    browser
        .find(Locator::Id(id))
        .await
        .map_err(|e| format!("#{id}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("click #{id}: {e}"))
}

async fn wait_for_css(browser: &Client, css: &str) -> Result<(), String> {
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .map(|_| ())
        .map_err(|e| format!("{css}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_live_toggle_shows_new_events_and_resumes_after_a_drop() {
    let database = stack().await.fresh_database().await;
    let api = common::start_stats_api_on(database, |c| c.stats.tail_heartbeat_ms = 500).await;
    let writer = writer_pool(&api.database, 1);
    let now = time::OffsetDateTime::now_utc;
    // Stored before the toggle: never shown live.
    store(
        &writer,
        &[
            event(TOPIC, now(), "login", 0),
            event(TOPIC, now(), "logout", 0),
        ],
    )
    .await;
    let proxy = CuttableProxy::start(&api.url).await;

    let driver = start_driver().await;
    let browser = open_browser(&driver).await;
    let outcome = drive_live(&browser, &proxy, &writer).await;
    let _ = browser.close().await;
    outcome.unwrap_or_else(|e| panic!("{e}"));
}

/// Logins and logouts in turn; answers the batch and its logins' ids, newest first (as shown live).
fn logins_and_logouts(from: u64, n: u64) -> (Vec<Envelope>, Vec<String>) {
    let batch: Vec<_> = (from..from + n)
        .map(|i| {
            let name = if i % 2 == 0 { "login" } else { "logout" };
            event(TOPIC, time::OffsetDateTime::now_utc(), name, i)
        })
        .collect();
    let logins = batch
        .iter()
        .rev()
        .filter(|e| event_name(e) == "login")
        .map(|e| e.id.to_string())
        .collect();
    (batch, logins)
}

fn event_name(envelope: &Envelope) -> String {
    let payload: serde_json::Value =
        serde_json::from_slice(envelope.payload_json()).expect("a JSON payload");
    payload["event_name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn drive_live(
    browser: &Client,
    proxy: &CuttableProxy,
    writer: &PgPool,
) -> Result<(), String> {
    browser
        .goto(&format!("{}/", proxy.url))
        .await
        .map_err(|e| format!("load the page: {e}"))?;
    wait_for_css(browser, "body[data-ready='true']").await?;
    browser
        .find(Locator::Id("token"))
        .await
        .map_err(|e| format!("token field: {e}"))?
        .send_keys(&token("dev"))
        .await
        .map_err(|e| format!("type the token: {e}"))?;
    click(browser, "connect").await?;
    wait_for_css(browser, "#query-form[data-fields-loaded='audit.logs']").await?;

    // Live, filtered to logins.
    click(browser, "add-filter").await?;
    wait_for_css(browser, "#filter-field-1").await?;
    browser
        .find(Locator::Id("filter-field-1"))
        .await
        .map_err(|e| format!("filter field: {e}"))?
        .select_by_value("event_name")
        .await
        .map_err(|e| format!("pick the field: {e}"))?;
    browser
        .find(Locator::Id("filter-value-1"))
        .await
        .map_err(|e| format!("filter value: {e}"))?
        .send_keys("login")
        .await
        .map_err(|e| format!("type the value: {e}"))?;
    click(browser, "live").await?;
    wait_for_css(browser, "#results[data-live='open']").await?;
    wait_for_text(browser, "#events-caption", "no new events yet").await?;

    // A batch stored now shows its logins, newest on top, and none of what was stored before.
    let (first, mut shown) = logins_and_logouts(1, 6);
    store(writer, &first).await;
    wait_for_ids(browser, "the first live batch", &shown).await?;
    wait_for_text(browser, "#events-caption", "3 new event(s), newest first").await?;
    wait_for_text(browser, "#live-freshness", "The newest stored event is").await?;

    // The connection drops; what is stored meanwhile arrives once the page has reconnected with
    // Last-Event-ID, exactly once.
    proxy.cut();
    let (second, second_logins) = logins_and_logouts(7, 6);
    store(writer, &second).await;
    let (third, third_logins) = logins_and_logouts(13, 4);
    store(writer, &third).await;
    shown = [third_logins, second_logins, shown].concat();
    wait_for_ids(browser, "the batches stored across the drop", &shown).await?;
    wait_for_text(browser, "#events-caption", "8 new event(s)").await?;

    // Switched off: the stream is closed and paging comes back.
    click(browser, "live").await?;
    wait_for_css(browser, "#results:not([data-live])").await?;
    wait_for_css(browser, "#pager:not([hidden])").await?;
    wait_for_text(browser, "#status", "Live stopped").await?;
    Ok(())
}
