//! Load generation and latency statistics shared by the phases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cpu::{self, Usage, Watched};

/// Latency percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
}

impl Latency {
    pub fn of(mut samples_ms: Vec<f64>) -> Latency {
        samples_ms.sort_by(f64::total_cmp);
        Latency {
            p50_ms: round2(percentile(&samples_ms, 50.0)),
            p99_ms: round2(percentile(&samples_ms, 99.0)),
            max_ms: round2(samples_ms.last().copied().unwrap_or(0.0)),
            samples: samples_ms.len(),
        }
    }
}

/// Nearest-rank percentile of sorted samples (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// N clients, each sending its next request as soon as the previous one is answered, on keep-alive
/// connections: the throughput the service sustains.
pub struct ClosedLoop {
    pub url: String,
    pub token: String,
    /// Request bodies, used in turn.
    pub bodies: Arc<Vec<Bytes>>,
    pub events_per_body: u64,
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadOutcome {
    pub clients: usize,
    pub events_per_request: u64,
    pub events_per_s: f64,
    pub requests_per_s: f64,
    pub latency: Latency,
    /// Answers other than 202 (and transport errors) in the measured window.
    pub errors: u64,
    pub first_error: Option<String>,
    pub cpu: Usage,
}

#[derive(Default)]
struct ClientTally {
    latencies: Vec<f64>,
    accepted: u64,
    errors: u64,
    first_error: Option<String>,
}

impl ClosedLoop {
    /// Runs the warm-up and the measured window; counts the requests answered within the window.
    pub async fn run(self, http: &reqwest::Client, watched: &[Watched]) -> LoadOutcome {
        let start = Instant::now();
        let from = start + self.warmup;
        let to = from + self.duration;
        let mut tasks = JoinSet::new();
        for client in 0..self.clients {
            let http = http.clone();
            let url = self.url.clone();
            let token = self.token.clone();
            let bodies = self.bodies.clone();
            let events = self.events_per_body;
            let clients = self.clients;
            tasks.spawn(async move {
                let mut tally = ClientTally::default();
                let mut next = client;
                while Instant::now() < to {
                    let body = bodies[next % bodies.len()].clone();
                    next += clients;
                    let sent = Instant::now();
                    let outcome = post_json(&http, &url, &token, body).await;
                    let done = Instant::now();
                    if done < from || done > to {
                        continue;
                    }
                    tally.latencies.push(ms(done - sent));
                    match outcome {
                        Ok(202) => tally.accepted += events,
                        Ok(status) => {
                            tally.errors += 1;
                            tally
                                .first_error
                                .get_or_insert_with(|| format!("HTTP {status}"));
                        }
                        Err(error) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert(error);
                        }
                    }
                }
                tally
            });
        }
        tokio::time::sleep_until(from.into()).await;
        let before = cpu::snapshot(watched);
        tokio::time::sleep_until(to.into()).await;
        let after = cpu::snapshot(watched);
        let mut all = ClientTally::default();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(tally) = joined {
                all.latencies.extend(tally.latencies);
                all.accepted += tally.accepted;
                all.errors += tally.errors;
                if all.first_error.is_none() {
                    all.first_error = tally.first_error;
                }
            }
        }
        let seconds = self.duration.as_secs_f64();
        LoadOutcome {
            clients: self.clients,
            events_per_request: self.events_per_body,
            events_per_s: (all.accepted as f64 / seconds).round(),
            requests_per_s: (all.latencies.len() as f64 / seconds).round(),
            latency: Latency::of(all.latencies),
            errors: all.errors,
            first_error: all.first_error,
            cpu: cpu::usage(&before, &after),
        }
    }
}

/// POSTs a JSON body and reads the whole answer (so the connection can be reused); the status, or the
/// transport error.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Bytes,
) -> Result<u16, String> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response.bytes().await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// POSTs a JSON body and returns the status and the parsed answer.
pub async fn post_for_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Bytes,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 50.0);
        assert_eq!(percentile(&samples, 99.0), 99.0);
        assert_eq!(percentile(&samples, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let l = Latency::of(vec![3.0, 1.0, 2.0]);
        assert_eq!(
            (l.p50_ms, l.p99_ms, l.max_ms, l.samples),
            (2.0, 3.0, 3.0, 3)
        );
    }
}
