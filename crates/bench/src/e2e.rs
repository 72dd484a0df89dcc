//! Phase 2: end to end. Requests are offered at a fixed rate (open loop: a slow answer does not slow the
//! sender down), and for a sample of them ("probes", about 50 a second) the time from the 202 to the
//! event being returned by the stats API is measured: one `id_in` query every 10 ms asks for every probe
//! not seen yet, so the figure has a resolution of about 10 ms plus one query.
//!
//! Two runs on the same services: first nearly idle (100 events/s as 100 requests of one event a second:
//! what is left of the latency when nothing waits for a batch to fill), then the load (10,000 events/s
//! as 1,000 requests of 10).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cpu::{self, Usage};
use crate::ingest::{event, TOPIC};
use crate::load::{ms, post_for_json, round2, Latency};
use crate::services::{Bench, Kind, Service, USER};
use crate::Sizes;

const PHASE: &str = "e2e";
/// Probes a second, whatever the offered rate.
const PROBES_PER_SECOND: f64 = 50.0;
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Requests in flight beyond which the sender skips (and counts) requests instead of piling them up.
const MAX_IN_FLIGHT: usize = 4096;
/// The most ids one `id_in` filter may hold (the query language's limit).
const MAX_IN_VALUES: usize = 100;

/// Both runs: the loaded one's figures at the top (as before the idle run existed), the idle one beside.
#[derive(Debug, Clone, Serialize)]
pub struct E2eResults {
    #[serde(flatten)]
    pub load: E2eRun,
    pub idle: E2eRun,
}

/// One run at a fixed offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct E2eRun {
    pub offered_events_per_s: f64,
    pub events_per_request: usize,
    pub accepted_events_per_s: f64,
    /// Requests the sender could not even start (more than 4096 in flight) or that were not answered 202.
    pub skipped_requests: u64,
    pub failed_requests: u64,
    pub first_error: Option<String>,
    /// Ingest latency (request to 202) at the offered rate.
    pub ingest: Latency,
    /// From 202 to the event returned by the stats API.
    pub visible: Latency,
    pub probes_missing: usize,
    pub cpu: Usage,
}

#[derive(Default)]
struct Tally {
    accepted_events: u64,
    failed: u64,
    first_error: Option<String>,
    ingest_ms: Vec<f64>,
}

pub async fn run(bench: &Bench, sizes: &Sizes) -> anyhow::Result<E2eResults> {
    let ingest = bench.spawn(Kind::Ingest, PHASE).await?;
    let writer = bench.spawn(Kind::Writer, PHASE).await?;
    let stats = bench.spawn(Kind::Stats, PHASE).await?;
    let outcome = measure(bench, sizes, &ingest, &writer, &stats).await;
    for service in [ingest, writer, stats] {
        bench.stop(service).await?;
    }
    bench.delete_topics(PHASE).await;
    outcome
}

async fn measure(
    bench: &Bench,
    sizes: &Sizes,
    ingest: &Service,
    writer: &Service,
    stats: &Service,
) -> anyhow::Result<E2eResults> {
    let token = eventgate_test_support::token(USER);
    let ingest_url = format!("{}/topics/{TOPIC}", ingest.url);
    let stats_url = format!("{}/stats/{TOPIC}", stats.url);
    wait_for_assignment(bench, writer).await?;

    // One event through the whole pipeline first: it works, and connections and caches are warm.
    let (status, answer) = post_for_json(
        &bench.http,
        &ingest_url,
        &token,
        Bytes::from(event(0).to_string()),
    )
    .await?;
    let first_id = match (status, answer["ids"][0].as_str()) {
        (202, Some(id)) => id.to_owned(),
        _ => bail!("the ingest-api refused the first event: {status} {answer}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while find(bench, &stats_url, &token, std::slice::from_ref(&first_id))
        .await?
        .is_empty()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the first event did not reach the stats API within 60 s"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }

    let idle = offered_run(
        bench,
        &token,
        &ingest_url,
        &stats_url,
        &[ingest, writer, stats],
        Offer {
            events_per_s: sizes.e2e_idle_rate,
            events_per_request: 1,
            seconds: sizes.e2e_idle_secs,
        },
    )
    .await?;
    // Let the idle run's last writes and the machine settle before the load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let load = offered_run(
        bench,
        &token,
        &ingest_url,
        &stats_url,
        &[ingest, writer, stats],
        Offer {
            events_per_s: sizes.e2e_rate,
            events_per_request: sizes.e2e_batch,
            seconds: sizes.e2e_secs,
        },
    )
    .await?;
    Ok(E2eResults { load, idle })
}

/// The load of one run.
#[derive(Debug, Clone, Copy)]
struct Offer {
    events_per_s: f64,
    events_per_request: usize,
    seconds: f64,
}

async fn offered_run(
    bench: &Bench,
    token: &str,
    ingest_url: &str,
    stats_url: &str,
    services: &[&Service],
    offer: Offer,
) -> anyhow::Result<E2eRun> {
    let batch_size = offer.events_per_request;
    let requests_per_s = offer.events_per_s / batch_size as f64;
    let total_requests = (requests_per_s * offer.seconds).round().max(1.0) as u64;
    let probe_every = (requests_per_s / PROBES_PER_SECOND).round().max(1.0) as u64;
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..50u64)
            .map(|b| {
                if batch_size == 1 {
                    // A single event, as a producer that sends one at a time does.
                    return Bytes::from(event(b * 1000).to_string());
                }
                let events: Vec<Value> = (0..batch_size as u64)
                    .map(|i| event(b * 1000 + i))
                    .collect();
                Bytes::from(Value::Array(events).to_string())
            })
            .collect(),
    );
    eprintln!(
        "bench: end to end: {:.0} events/s offered as {:.0} requests/s of {} event(s), {:.0} s",
        offer.events_per_s, requests_per_s, batch_size, offer.seconds
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let probes: Arc<Mutex<VecDeque<(String, Instant)>>> = Arc::default();
    let sending_done = Arc::new(AtomicU64::new(0));
    let poller = tokio::spawn(poll_probes(
        bench.http.clone(),
        stats_url.to_owned(),
        token.to_owned(),
        probes.clone(),
        sending_done.clone(),
    ));

    let watched = bench.watched(services);
    let before = cpu::snapshot(&watched);
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut skipped = 0u64;
    let mut tasks = JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / requests_per_s);
    for seq in 0..total_requests {
        // Open loop: request `seq` is due at a fixed time, however the previous ones fare.
        tokio::time::sleep_until((started + interval.mul_f64(seq as f64)).into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let http = bench.http.clone();
        let url = ingest_url.to_owned();
        let token = token.to_owned();
        let body = bodies[(seq % bodies.len() as u64) as usize].clone();
        let tally = tally.clone();
        let probes = probes.clone();
        let batch = batch_size as u64;
        tasks.spawn(async move {
            let sent = Instant::now();
            let result = post_for_json(&http, &url, &token, body).await;
            let answered = Instant::now();
            drop(permit);
            let Ok(mut tally) = tally.lock() else { return };
            match result {
                Ok((202, answer)) => {
                    tally.accepted_events += batch;
                    tally.ingest_ms.push(ms(answered - sent));
                    if seq.is_multiple_of(probe_every) {
                        if let (Some(id), Ok(mut probes)) =
                            (answer["ids"][0].as_str(), probes.lock())
                        {
                            probes.push_back((id.to_owned(), answered));
                        }
                    }
                }
                Ok((status, answer)) => {
                    tally.failed += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("HTTP {status}: {answer}"));
                }
                Err(error) => {
                    tally.failed += 1;
                    tally.first_error.get_or_insert_with(|| error.to_string());
                }
            }
        });
        // Reap finished requests as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let sending_secs = started.elapsed().as_secs_f64();
    let after = cpu::snapshot(&watched);
    sending_done.store(1, Ordering::SeqCst);
    let (visible_ms, missing) = poller.await.context("the probe poller failed")??;

    let tally = tally
        .lock()
        .map_err(|_| anyhow::anyhow!("a request task panicked"))?;
    let run = E2eRun {
        offered_events_per_s: offer.events_per_s,
        events_per_request: batch_size,
        accepted_events_per_s: round2(tally.accepted_events as f64 / sending_secs),
        skipped_requests: skipped,
        failed_requests: tally.failed,
        first_error: tally.first_error.clone(),
        ingest: Latency::of(tally.ingest_ms.clone()),
        visible: Latency::of(visible_ms),
        probes_missing: missing,
        cpu: cpu::usage(&before, &after),
    };
    eprintln!(
        "bench: end to end at {:.0} events/s: {} ({} probes, {} missing)",
        offer.events_per_s,
        crate::report::percentiles_text(&run.visible),
        run.visible.samples,
        run.probes_missing
    );
    Ok(run)
}

/// Waits until the writer owns partitions (it joined its group and got its assignment).
async fn wait_for_assignment(bench: &Bench, writer: &Service) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = writer_metric(bench, writer, "eventgate_writer_assigned_partitions").await;
        if metrics.is_some_and(|n| n > 0.0) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the writer got no partitions within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One value of the writer's Prometheus metrics (the sum over its label sets).
pub async fn writer_metric(bench: &Bench, writer: &Service, name: &str) -> Option<f64> {
    let text = bench
        .http
        .get(format!("{}/metrics", writer.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metric_value(&text, name)
}

/// The value of metric `name` in a Prometheus text exposition, summed over label sets.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

/// The ids among `ids` the stats API returns.
async fn find(
    bench: &Bench,
    stats_url: &str,
    token: &str,
    ids: &[String],
) -> anyhow::Result<Vec<String>> {
    find_with(&bench.http, stats_url, token, ids).await
}

async fn find_with(
    http: &reqwest::Client,
    stats_url: &str,
    token: &str,
    ids: &[String],
) -> anyhow::Result<Vec<String>> {
    let body = json!({"filter": {"id_in": ids}, "limit": MAX_IN_VALUES});
    let (status, answer) =
        post_for_json(http, stats_url, token, Bytes::from(body.to_string())).await?;
    anyhow::ensure!(status == 200, "the stats API answered {status}: {answer}");
    Ok(answer["data"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|row| row["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Asks for the probes not seen yet every 10 ms (the oldest first, 100 per query, at most 5 queries a
/// round) until the sender is done and every probe was seen, or 60 s after the sender is done. Returns
/// the latencies and how many probes never showed up.
async fn poll_probes(
    http: reqwest::Client,
    stats_url: String,
    token: String,
    probes: Arc<Mutex<VecDeque<(String, Instant)>>>,
    sending_done: Arc<AtomicU64>,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut latencies = Vec::new();
    let mut done_at: Option<Instant> = None;
    loop {
        let round = Instant::now();
        let pending: Vec<(String, Instant)> = probes
            .lock()
            .map(|p| p.iter().take(MAX_IN_VALUES * 5).cloned().collect())
            .unwrap_or_default();
        for chunk in pending.chunks(MAX_IN_VALUES) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let found = find_with(&http, &stats_url, &token, &ids).await?;
            let seen = Instant::now();
            if found.is_empty() {
                continue;
            }
            if let Ok(mut probes) = probes.lock() {
                probes.retain(|(id, accepted)| {
                    if found.contains(id) {
                        latencies.push(ms(seen - *accepted));
                        false
                    } else {
                        true
                    }
                });
            }
        }
        let remaining = probes.lock().map(|p| p.len()).unwrap_or(0);
        if sending_done.load(Ordering::SeqCst) == 1 {
            let since = *done_at.get_or_insert_with(Instant::now);
            if remaining == 0 || since.elapsed() > Duration::from_secs(60) {
                return Ok((latencies, remaining));
            }
        }
        tokio::time::sleep_until((round + POLL_EVERY).into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_values() {
        let text = "# HELP x y\n# TYPE x counter\neventgate_writer_rows_inserted_total 1234\n\
                    eventgate_writer_rows_inserted_total_other 5\n\
                    eventgate_writer_assigned_partitions{a=\"1\"} 3\neventgate_writer_assigned_partitions{a=\"2\"} 6\n";
        assert_eq!(
            metric_value(text, "eventgate_writer_rows_inserted_total"),
            Some(1234.0)
        );
        assert_eq!(
            metric_value(text, "eventgate_writer_assigned_partitions"),
            Some(9.0)
        );
        assert_eq!(metric_value(text, "missing"), None);
    }
}
