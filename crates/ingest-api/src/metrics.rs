//! The ingest-api's Prometheus collectors (all listed in `docs/OPERATIONS.md`).

use prometheus::{HistogramVec, IntCounter, IntCounterVec, Registry};

use eventgate_core::error::ErrorKind;
use eventgate_core::ingest::{Delivery, EventOutcome};
use eventgate_core::metrics::{counter_vec, histogram_vec, HttpMetrics, LATENCY_BUCKETS};

pub struct IngestMetrics {
    pub registry: Registry,
    pub http: HttpMetrics,
    /// Events acknowledged by the broker (the ids of a 202/207), by topic.
    pub events_accepted: IntCounterVec,
    /// Events refused, by topic and reason: the error kind of the event (`validation`, `too_large`), or
    /// `queue` when the broker did not acknowledge them (the client got a 503, or a 207 naming them, and
    /// should retry them).
    pub events_rejected: IntCounterVec,
    /// Time from handing a message to the producer to the broker's acknowledgement, by topic.
    pub produce_duration: HistogramVec,
    /// Messages the broker did not acknowledge, by topic and librdkafka error code.
    pub produce_errors: IntCounterVec,
    /// Kafka producers replaced after a failure that wedged the producer (`publisher.rs`).
    pub producer_replaced: IntCounter,
}

impl IngestMetrics {
    pub fn new() -> IngestMetrics {
        let registry = Registry::new();
        eventgate_core::metrics::register_build_info(&registry, "ingest-api");
        IngestMetrics {
            http: HttpMetrics::new(&registry),
            events_accepted: counter_vec(
                &registry,
                "eventgate_ingest_events_accepted_total",
                "Events acknowledged by Kafka (answered 202, or 202 within a 207), by topic",
                &["topic"],
            ),
            events_rejected: counter_vec(
                &registry,
                "eventgate_ingest_events_rejected_total",
                "Events refused (validation, too_large) or not acknowledged by Kafka (queue), by topic and reason",
                &["topic", "reason"],
            ),
            produce_duration: histogram_vec(
                &registry,
                "eventgate_kafka_produce_duration_seconds",
                "Time from produce to the broker's acknowledgement (or failure), by topic",
                &["topic"],
                LATENCY_BUCKETS,
            ),
            produce_errors: counter_vec(
                &registry,
                "eventgate_kafka_produce_errors_total",
                "Messages the broker did not acknowledge, by topic and librdkafka error",
                &["topic", "error"],
            ),
            producer_replaced: {
                let counter = IntCounter::new(
                    "eventgate_kafka_producer_replaced_total",
                    "Kafka producers replaced after a failure that wedged the producer (not after one \
                     event's refusal)",
                )
                .expect("a valid metric");
                registry
                    .register(Box::new(counter.clone()))
                    .expect("registered once");
                counter
            },
            registry,
        }
    }

    pub fn accepted(&self, topic: &str, events: usize) {
        if events > 0 {
            self.events_accepted
                .with_label_values(&[topic])
                .inc_by(events as u64);
        }
    }

    /// Counts the refused events of a prepared body, each under the kind of its first error.
    pub fn rejected_events(&self, topic: &str, outcomes: &[EventOutcome]) {
        for outcome in outcomes {
            if let EventOutcome::Rejected(errors) = outcome {
                let reason = errors
                    .first()
                    .map_or(ErrorKind::Validation, |error| error.kind);
                self.rejected(topic, reason.as_str(), 1);
            }
        }
    }

    /// Counts the broker's answers: acknowledged events, and the others under their error kind
    /// (`queue`, `too_large`).
    pub fn delivered(&self, topic: &str, deliveries: &[Delivery]) {
        let mut acknowledged = 0;
        for delivery in deliveries {
            match delivery {
                Delivery::Acknowledged => acknowledged += 1,
                Delivery::Failed(error) => self.rejected(topic, error.kind.as_str(), 1),
            }
        }
        self.accepted(topic, acknowledged);
    }

    pub fn rejected(&self, topic: &str, reason: &str, events: usize) {
        if events > 0 {
            self.events_rejected
                .with_label_values(&[topic, reason])
                .inc_by(events as u64);
        }
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics::new()
    }
}
