//! Phase 1: how many events/s the ingest-api accepts (202, i.e. acknowledged by the broker) with N
//! concurrent keep-alive clients, one event per request and then batches. The ingest-api runs alone (no
//! writer), so the figure is the front door's: HTTP, token, schema validation, produce and acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::load::{ClosedLoop, LoadOutcome};
use crate::services::{Bench, Kind, USER};
use crate::Sizes;

pub const TOPIC: &str = "audit.logs";
const PHASE: &str = "ingest";

#[derive(Debug, Clone, Serialize)]
pub struct IngestResults {
    pub single: LoadOutcome,
    pub batch: LoadOutcome,
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

    let singles: Vec<Bytes> = (0..1000)
        .map(|n| Bytes::from(event(n).to_string()))
        .collect();
    eprintln!(
        "bench: ingest, single events: {} clients, {:.0} s",
        sizes.clients, sizes.ingest_secs
    );
    let single = ClosedLoop {
        url: url.clone(),
        token: token.clone(),
        bodies: Arc::new(singles),
        events_per_body: 1,
        clients: sizes.clients,
        warmup,
        duration,
    }
    .run(&bench.http, &watched)
    .await;
    report_errors("single events", &single);

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
    anyhow::ensure!(
        single.events_per_s > 0.0 && batch.events_per_s > 0.0,
        "the ingest-api accepted nothing: {}",
        single
            .first_error
            .as_deref()
            .or(batch.first_error.as_deref())
            .unwrap_or("no answer")
    );
    Ok(IngestResults { single, batch })
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
