//! Publishing accepted events to Kafka. A request is answered 202 only after the broker acknowledged
//! every one of its events (acks=all, idempotent producer): an acknowledged event is durable in Kafka and
//! will reach Postgres through the writers.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use eventgate_core::catalogue::Topic;
use eventgate_core::config::KafkaConfig;
use eventgate_core::envelope::Event;
use eventgate_core::error::{ApiError, ErrorKind};

pub struct Publisher {
    producer: FutureProducer,
    kafka: KafkaConfig,
    timeout: Duration,
}

impl Publisher {
    pub fn new(kafka: &KafkaConfig, timeout: Duration) -> Result<Publisher, KafkaError> {
        let timeout_ms = timeout.as_millis().max(1).to_string();
        let producer: FutureProducer = eventgate_core::kafka::client_config(kafka)
            // Durability: the leader waits for all in-sync replicas; retries cannot reorder or duplicate.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A message not acknowledged within the request's budget fails instead of hanging the request.
            .set("message.timeout.ms", &timeout_ms)
            // Small batching window: concurrent requests share produce requests.
            .set("linger.ms", "5")
            .create()?;
        Ok(Publisher {
            producer,
            kafka: kafka.clone(),
            timeout,
        })
    }

    /// Publishes the events and waits for the broker's acknowledgement of every one of them.
    /// Any failure (broker down, queue full, timeout) is a 503 of type `queue`.
    pub async fn publish(&self, topic: &Topic, events: &[&Event]) -> Result<(), ApiError> {
        let kafka_topic = self.kafka.kafka_topic(&topic.name);
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
                .headers(OwnedHeaders::new());
            // Waiting for room in a full local queue counts against the same budget as the delivery.
            self.producer.send(record, Timeout::After(self.timeout))
        });
        // librdkafka's message.timeout.ms already bounds each delivery; the outer timeout is a backstop.
        let results =
            tokio::time::timeout(self.timeout + Duration::from_secs(1), join_all(deliveries))
                .await
                .map_err(|_| queue_unavailable("the broker did not acknowledge in time"))?;
        for result in results {
            if let Err((error, _message)) = result {
                tracing::warn!(kafka.topic = %kafka_topic, %error, "publish failed");
                return Err(queue_unavailable(&format!(
                    "the broker did not acknowledge: {error}"
                )));
            }
        }
        Ok(())
    }

    /// Whether the broker answers a metadata request, for readiness.
    pub async fn broker_reachable(&self) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Waits for queued messages to be delivered, at shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "producer flush at shutdown did not complete");
        }
    }
}

fn queue_unavailable(message: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Queue,
        format!("{message}; nothing was accepted, retry later"),
    )
}
