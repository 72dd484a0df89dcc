//! Publishing accepted events to Kafka. A request is answered 202 only after the broker acknowledged
//! every one of its events (acks=all, idempotent producer): an acknowledged event is durable in Kafka and
//! will reach Postgres through the writers. Each message carries the request's trace context in a
//! `traceparent` header, so the writer's insert joins the trace of the request that published it.

use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use eventgate_core::catalogue::Topic;
use eventgate_core::config::KafkaConfig;
use eventgate_core::envelope::Event;
use eventgate_core::error::{ApiError, ErrorKind};

use crate::metrics::IngestMetrics;

pub struct Publisher {
    /// The producer and its generation; replaced after a failed publish (see `replace_after_failure`).
    producer: RwLock<(u64, FutureProducer)>,
    client_config: ClientConfig,
    replaced_at: Mutex<Instant>,
    kafka: KafkaConfig,
    timeout: Duration,
    produce_duration: prometheus::HistogramVec,
    produce_errors: prometheus::IntCounterVec,
}

impl Publisher {
    pub fn new(
        kafka: &KafkaConfig,
        timeout: Duration,
        metrics: &IngestMetrics,
    ) -> Result<Publisher, KafkaError> {
        let timeout_ms = timeout.as_millis().max(1).to_string();
        let mut client_config = eventgate_core::kafka::client_config(kafka);
        client_config
            // Durability: the leader waits for all in-sync replicas; retries cannot reorder or duplicate.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A message not acknowledged within the request's budget fails instead of hanging the request.
            .set("message.timeout.ms", &timeout_ms)
            // Small batching window: concurrent requests share produce requests.
            .set("linger.ms", "5");
        let producer: FutureProducer = client_config.create()?;
        Ok(Publisher {
            producer: RwLock::new((0, producer)),
            client_config,
            replaced_at: Mutex::new(Instant::now()),
            kafka: kafka.clone(),
            timeout,
            produce_duration: metrics.produce_duration.clone(),
            produce_errors: metrics.produce_errors.clone(),
        })
    }

    /// Publishes the events and waits for the broker's acknowledgement of every one of them.
    /// Any failure (broker down, queue full, timeout) is a 503 of type `queue`.
    pub async fn publish(&self, topic: &Topic, events: &[&Event]) -> Result<(), ApiError> {
        let span = tracing::info_span!(
            "kafka.publish",
            otel.name = %format_args!("publish {}", topic.name),
            otel.kind = "producer",
            kafka.topic = %self.kafka.kafka_topic(&topic.name),
            batch.size = events.len(),
        );
        self.publish_traced(topic, events, &span)
            .instrument(span.clone())
            .await
    }

    async fn publish_traced(
        &self,
        topic: &Topic,
        events: &[&Event],
        span: &tracing::Span,
    ) -> Result<(), ApiError> {
        let kafka_topic = self.kafka.kafka_topic(&topic.name);
        let (generation, producer) = self.producer();
        let headers = if eventgate_core::telemetry::tracing_enabled() {
            eventgate_core::telemetry::kafka_context::inject(OwnedHeaders::new(), &span.context())
        } else {
            OwnedHeaders::new()
        };
        let messages: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|event| {
                (
                    topic.message_key(&event.payload, &event.id),
                    event.to_json_bytes(),
                )
            })
            .collect();
        let deliveries = messages.iter().map(|(key, payload)| {
            let record = FutureRecord::to(&kafka_topic)
                .key(key)
                .payload(payload)
                .headers(headers.clone());
            let started = Instant::now();
            // Waiting for room in a full local queue counts against the same budget as the delivery.
            let delivery = producer.send(record, Timeout::After(self.timeout));
            async move {
                let result = delivery.await;
                self.produce_duration
                    .with_label_values(&[topic.name.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                if let Err((error, _)) = &result {
                    self.produce_errors
                        .with_label_values(&[topic.name.as_str(), &error_label(error)])
                        .inc();
                }
                result
            }
        });
        // librdkafka's message.timeout.ms already bounds each delivery; the outer timeout is a backstop.
        let results =
            tokio::time::timeout(self.timeout + Duration::from_secs(1), join_all(deliveries))
                .await
                .map_err(|_| {
                    self.produce_errors
                        .with_label_values(&[topic.name.as_str(), "timeout"])
                        .inc_by(messages.len() as u64);
                    self.replace_after_failure(generation);
                    queue_unavailable("the broker did not acknowledge in time")
                })?;
        for result in results {
            if let Err((error, _message)) = result {
                tracing::warn!(kafka.topic = %kafka_topic, %error, "publish failed");
                self.replace_after_failure(generation);
                return Err(queue_unavailable(&format!(
                    "the broker did not acknowledge: {error}"
                )));
            }
        }
        Ok(())
    }

    fn producer(&self) -> (u64, FutureProducer) {
        self.producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An idempotent producer can stay wedged after a broker outage: the broker fences the epoch it
    /// bumped after its timeouts, or (a broker that lost its state) no longer knows its producer id, and
    /// every later message fails while the broker is fine. So after a failed publish the producer is
    /// replaced by a fresh one (a new producer id), at most once per publish timeout: during an outage
    /// that is cheap, and after it the next request goes through. Requests in flight finish on the
    /// producer they started with; none of their events is answered 202 without an acknowledgement.
    fn replace_after_failure(&self, failed_generation: u64) {
        let mut replaced_at = self
            .replaced_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if replaced_at.elapsed() < self.timeout {
            return;
        }
        let fresh: FutureProducer = match self.client_config.create() {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(%error, "cannot create a new Kafka producer");
                return;
            }
        };
        let mut current = self
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.0 != failed_generation {
            return; // Another request replaced it already.
        }
        let old = std::mem::replace(&mut *current, (failed_generation + 1, fresh));
        drop(current);
        *replaced_at = Instant::now();
        tracing::warn!(
            producer.generation = failed_generation + 1,
            "Kafka producer replaced after a failed publish"
        );
        // Destroying a librdkafka client joins its threads: not on an async worker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Whether the broker answers a metadata request, for readiness.
    pub async fn check_broker(&self) -> Result<(), String> {
        let (_, producer) = self.producer();
        eventgate_core::kafka::broker_reachable(producer, Duration::from_secs(2)).await
    }

    /// Waits for queued messages to be delivered, at shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer().1.flush(timeout) {
            tracing::warn!(%error, "producer flush at shutdown did not complete");
        }
    }
}

/// A bounded label for a produce error: librdkafka's error code name (`MessageTimedOut`, `QueueFull`…).
fn error_label(error: &KafkaError) -> String {
    error
        .rdkafka_error_code()
        .map(|code| format!("{code:?}"))
        .unwrap_or_else(|| "other".to_owned())
}

fn queue_unavailable(message: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Queue,
        format!("{message}; nothing was accepted, retry later"),
    )
}
