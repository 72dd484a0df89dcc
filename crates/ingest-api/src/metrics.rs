//! The ingest-api's Prometheus collectors.

use prometheus::{IntCounterVec, Opts, Registry};

pub struct IngestMetrics {
    pub registry: Registry,
    /// Events by topic and outcome (`accepted`, `rejected`, `failed` = not acknowledged by the broker).
    pub events: IntCounterVec,
}

impl IngestMetrics {
    pub fn new() -> IngestMetrics {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new(
                "eventgate_ingest_events_total",
                "Events received, by topic and outcome",
            ),
            &["topic", "outcome"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(events.clone()))
            .expect("metric registered once");
        IngestMetrics { registry, events }
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics::new()
    }
}
