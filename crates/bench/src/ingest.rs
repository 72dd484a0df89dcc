//! Phase 1: how many events/s the ingest-api accepts (202, i.e. acknowledged by the broker) with N
//! concurrent keep-alive clients, one event per request (16, 64 and 256 clients: a few producers' worth
//! of connections, where latency decides, up to where the machine does) and then batches. The ingest-api
//! runs alone (no writer), so the figure is the front door's: HTTP, token, schema validation, produce
//! and acknowledgement. Beside it, the broker's own acknowledgement time for one record at a time (the
//! floor of a single event's latency) and the ingest-api's CPU per request (from `/proc`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use serde_json::json;

use crate::load::{ms, ClosedLoop, Latency, LoadOutcome};
use crate::services::{Bench, Kind, USER};
use crate::Sizes;

pub const TOPIC: &str = "audit.logs";
const PHASE: &str = "ingest";

#[derive(Debug, Clone, Serialize)]
pub struct IngestResults {
    /// Single events, one run per number of clients, fewest first.
    pub singles: Vec<LoadOutcome>,
    pub batch: LoadOutcome,
    /// One record at a time straight to the broker (acks=all, idempotent, `linger.ms` 0): what a single
    /// event's acknowledgement costs without the ingest-api.
    pub broker_ack: Latency,
    /// The ingest-api's `linger.ms` in this run (`kafka.client` from the environment, else its default).
    pub linger_ms: Option<String>,
}

impl IngestResults {
    /// Single events with the most clients: the throughput figure (`ingest_single_events_per_s`).
    pub fn single(&self) -> &LoadOutcome {
        self.singles
            .iter()
            .max_by_key(|o| o.clients)
            .unwrap_or(&self.batch)
    }

    /// Single events with `clients` clients, if that run was made.
    pub fn single_with(&self, clients: usize) -> Option<&LoadOutcome> {
        self.singles.iter().find(|o| o.clients == clients)
    }
}

/// Microseconds of the ingest-api's CPU per request answered in a run (all its threads, user and
/// kernel time, from `/proc`).
pub fn ingest_cpu_us_per_request(outcome: &LoadOutcome) -> Option<f64> {
    let cores = outcome.cpu.cores.get(Kind::Ingest.name())?;
    (outcome.requests_per_s > 0.0)
        .then(|| (cores * 1e6 / outcome.requests_per_s * 10.0).round() / 10.0)
}

/// One `audit.logs` event, the shape every phase sends.
pub fn event(n: u64) -> serde_json::Value {
    json!({
        "event_name": if n.is_multiple_of(3) { "login" } else { "page_view" },
        "description": format!("benchmark event {n} from a producer that sends many"),
        "customer_id": n % 10_000,
    })
}

pub async fn run(bench: &Bench, sizes: &Sizes) -> anyhow::Result<IngestResults> {
    let ingest = bench.spawn(Kind::Ingest, PHASE).await?;
    let url = format!("{}/topics/{TOPIC}", ingest.url);
    let token = eventgate_test_support::token(USER);
    let watched = bench.watched(&[&ingest]);
    let warmup = Duration::from_secs_f64(sizes.warmup_secs);
    let duration = Duration::from_secs_f64(sizes.ingest_secs);

    let broker_ack = broker_ack(bench, sizes.broker_acks).await?;
    eprintln!(
        "bench: ingest, broker acknowledgement of one record at a time: {}",
        crate::report::percentiles_text(&broker_ack)
    );

    let singles: Arc<Vec<Bytes>> = Arc::new(
        (0..1000)
            .map(|n| Bytes::from(event(n).to_string()))
            .collect(),
    );
    let mut single_runs = Vec::new();
    for &clients in &sizes.clients {
        eprintln!(
            "bench: ingest, single events: {clients} clients, {:.0} s",
            sizes.ingest_secs
        );
        let outcome = ClosedLoop {
            url: url.clone(),
            token: token.clone(),
            bodies: singles.clone(),
            events_per_body: 1,
            clients,
            warmup,
            duration,
        }
        .run(&bench.http, &watched)
        .await;
        report_errors("single events", &outcome);
        single_runs.push(outcome);
    }

    let batches: Vec<Bytes> = (0..20u64)
        .map(|b| {
            let events: Vec<_> = (0..sizes.batch_size as u64)
                .map(|i| event(b * 1000 + i))
                .collect();
            Bytes::from(serde_json::Value::Array(events).to_string())
        })
        .collect();
    eprintln!(
        "bench: ingest, batches of {}: {} clients, {:.0} s",
        sizes.batch_size, sizes.batch_clients, sizes.ingest_secs
    );
    let batch = ClosedLoop {
        url,
        token,
        bodies: Arc::new(batches),
        events_per_body: sizes.batch_size as u64,
        clients: sizes.batch_clients,
        warmup,
        duration,
    }
    .run(&bench.http, &watched)
    .await;
    report_errors("batches", &batch);

    bench.stop(ingest).await?;
    bench.delete_topics(PHASE).await;
    let results = IngestResults {
        singles: single_runs,
        batch,
        broker_ack,
        linger_ms: std::env::var("EVENTGATE_KAFKA__CLIENT__LINGER_MS").ok(),
    };
    let single = results.single();
    anyhow::ensure!(
        single.events_per_s > 0.0 && results.batch.events_per_s > 0.0,
        "the ingest-api accepted nothing: {}",
        single
            .first_error
            .as_deref()
            .or(results.batch.first_error.as_deref())
            .unwrap_or("no answer")
    );
    Ok(results)
}

/// Produces `count` records one after the other (each waits for the previous one's acknowledgement)
/// to the phase's topic, with the ingest-api's guarantees and no lingering: the broker's round trip.
async fn broker_ack(bench: &Bench, count: usize) -> anyhow::Result<Latency> {
    let kafka = bench.kafka_config(&bench.prefix(PHASE));
    let producer: FutureProducer = eventgate_core::kafka::client_config(&kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .context("creating the round-trip producer")?;
    let topic = kafka.kafka_topic(TOPIC);
    let payload = event(0).to_string();
    let mut samples = Vec::with_capacity(count);
    // The first records also fetch metadata and the producer id: not part of the round trip.
    for n in 0..count + 20 {
        let key = n.to_string();
        let sent = Instant::now();
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map_err(|(error, _)| error)
            .context("producing one record to the broker")?;
        if n >= 20 {
            samples.push(ms(sent.elapsed()));
        }
    }
    Ok(Latency::of(samples))
}

fn report_errors(what: &str, outcome: &LoadOutcome) {
    if outcome.errors > 0 {
        eprintln!(
            "bench: ingest {what}: {} requests not accepted (first: {})",
            outcome.errors,
            outcome.first_error.as_deref().unwrap_or("?")
        );
    }
}
