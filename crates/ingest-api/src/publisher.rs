//! Publishing accepted events to Kafka. A request is answered 202 only after the broker acknowledged
//! every one of its events (acks=all, idempotent producer): an acknowledged event is durable in Kafka and
//! will reach Postgres through the writers. Each message carries the request's trace context in a
//! `traceparent` header, so the writer's insert joins the trace of the request that published it.
//!
//! Each event's delivery is reported on its own ([`Delivery`]): a request whose events were partly
//! acknowledged is answered so (`core::ingest::answer`), and only a failure that means the producer
//! itself is wedged (timeouts, fencing, a lost producer id) replaces it; one event's refusal (too large,
//! an unknown topic) does not.
//!
//! Two producers share the work (docs/PERFORMANCE.md, "Producers that send one event at a time"): an
//! *eager* one without a batching window (`linger.ms` 0) for single events while few requests are
//! publishing, so a request of a few producers' connections is acknowledged in about the broker's round
//! trip instead of waiting 5 ms; and a *batching* one (`linger.ms` 5) for batches and for single events
//! under load, so that events share produce requests and the broker's and the service's CPU per event
//! stays low. Events of one
//! request always go through one producer; the order between concurrent requests was never defined. A
//! `linger.ms` in `kafka.client` means one producer with that setting.

use std::sync::atomic::{AtomicUsize, Ordering};
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
use eventgate_core::error::{ErrorDetail, ErrorKind};
use eventgate_core::ingest::{Delivery, Record, RECORD_OVERHEAD_BYTES, TRACE_HEADERS_MAX_BYTES};
use rdkafka::message::Headers;
use rdkafka::types::RDKafkaErrorCode;

use crate::metrics::IngestMetrics;

pub struct Publisher {
    /// The producers and their generation; replaced after a failed publish (see
    /// `replace_after_failure`).
    producer: RwLock<(u64, Producers)>,
    client_config: ClientConfig,
    /// The eager producer's configuration; `None` when `kafka.client` sets `linger.ms`.
    eager_config: Option<ClientConfig>,
    /// Requests waiting for their acknowledgements now.
    publishing: AtomicUsize,
    replaced_at: Mutex<Instant>,
    kafka: KafkaConfig,
    timeout: Duration,
    produce_duration: prometheus::HistogramVec,
    produce_errors: prometheus::IntCounterVec,
    producer_replaced: prometheus::IntCounter,
}

/// The batching producer's `linger.ms` unless `kafka.client` sets it.
const LINGER_MS: &str = "5";

/// A single event goes to the eager producer while fewer than this many requests are waiting for
/// their acknowledgements (through either producer). A few producers' connections never reach it;
/// many concurrent requests do, and then share the batching producer's produce requests, which cost
/// the broker and librdkafka far less per event: without this, 256 clients got ≈ 40 % fewer single
/// events through on 2 cores (docs/PERFORMANCE.md). Once there, the 5 ms window keeps the count up,
/// so the eager producer is used again only when the load falls back to about this concurrency.
const EAGER_MAX_PUBLISHING: usize = 24;

/// ...and while the eager producer has fewer messages than this outstanding (queued or awaiting
/// acknowledgement): a slow broker makes it back up, and the batching producer takes over.
const EAGER_MAX_OUTSTANDING: i32 = 8;

/// Counts a request as publishing until dropped.
struct Publishing<'a>(&'a AtomicUsize);

impl Publishing<'_> {
    /// Counts one more; returns how many were publishing before it.
    fn start(count: &AtomicUsize) -> (Publishing<'_>, usize) {
        (Publishing(count), count.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The batching producer, and the eager one unless `kafka.client` sets `linger.ms`.
#[derive(Clone)]
struct Producers {
    batching: FutureProducer,
    eager: Option<FutureProducer>,
}

impl Producers {
    fn create(
        config: &ClientConfig,
        eager_config: Option<&ClientConfig>,
    ) -> Result<Producers, KafkaError> {
        Ok(Producers {
            batching: config.create()?,
            eager: eager_config.map(ClientConfig::create).transpose()?,
        })
    }

    /// The producer for a request of `records` events while `publishing` other requests wait for
    /// their acknowledgements: the eager one for a single event when few do and it has no backlog; a
    /// batch shares produce requests anyway, and pays the window once for all its events.
    fn pick(&self, records: usize, publishing: usize) -> &FutureProducer {
        match &self.eager {
            Some(eager)
                if records == 1
                    && publishing < EAGER_MAX_PUBLISHING
                    && eager.in_flight_count() < EAGER_MAX_OUTSTANDING =>
            {
                eager
            }
            _ => &self.batching,
        }
    }
}

/// librdkafka's defaults of `message.max.bytes` and `batch.size`.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: u64 = 1_000_000;
const LIBRDKAFKA_BATCH_SIZE: u64 = 1_000_000;

/// What the producer's sizes follow: the largest event the ingest-api accepts, and the smallest
/// message limit a topic told at start-up (`core::kafka::check_message_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    pub max_event_bytes: usize,
    pub smallest_topic_limit: Option<u64>,
}

impl Publisher {
    pub fn new(
        kafka: &KafkaConfig,
        timeout: Duration,
        sizes: SizeLimits,
        metrics: &IngestMetrics,
    ) -> Result<Publisher, KafkaError> {
        let timeout_ms = timeout.as_millis().max(1).to_string();
        let mut client_config = eventgate_core::kafka::client_config(kafka);
        client_config
            // Durability: the leader waits for all in-sync replicas; retries cannot reorder or duplicate.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A message not acknowledged within the request's budget fails instead of hanging the request.
            .set("message.timeout.ms", &timeout_ms);
        let properties = kafka.client.properties();
        // Every request waits for its events' acknowledgement, so a batching window is latency each
        // request pays: the batching producer's is used only under load (see `Producers::pick`).
        let linger_configured = properties.contains_key("linger.ms");
        if !linger_configured {
            client_config.set("linger.ms", LINGER_MS);
        }
        // The producer refuses locally a record above its message.max.bytes: room for the largest event
        // (`Config::validate` refused a configured value that is smaller).
        if !properties.contains_key("message.max.bytes") {
            let needed = (sizes.max_event_bytes + RECORD_OVERHEAD_BYTES) as u64;
            client_config.set(
                "message.max.bytes",
                needed.max(LIBRDKAFKA_MESSAGE_MAX_BYTES).to_string(),
            );
        }
        // A record batch above a topic's limit is refused whole, with every valid event in it: batches
        // no larger than the smallest limit (a single record larger than batch.size still goes alone).
        if let Some(limit) = sizes.smallest_topic_limit {
            if !properties.contains_key("batch.size") && limit < LIBRDKAFKA_BATCH_SIZE {
                client_config.set("batch.size", limit.to_string());
            }
        }
        let eager_config = (!linger_configured).then(|| {
            let mut eager = client_config.clone();
            eager.set("linger.ms", "0");
            eager
        });
        let producers = Producers::create(&client_config, eager_config.as_ref())?;
        Ok(Publisher {
            producer: RwLock::new((0, producers)),
            client_config,
            eager_config,
            publishing: AtomicUsize::new(0),
            replaced_at: Mutex::new(Instant::now()),
            kafka: kafka.clone(),
            timeout,
            produce_duration: metrics.produce_duration.clone(),
            produce_errors: metrics.produce_errors.clone(),
            producer_replaced: metrics.producer_replaced.clone(),
        })
    }

    /// Publishes the records and waits for the broker's answer for each, in order: acknowledged, or
    /// failed with a `queue` error (transient: the client may retry) or `too_large`.
    pub async fn publish(&self, topic: &Topic, records: &[Record]) -> Vec<Delivery> {
        let span = tracing::info_span!(
            "kafka.publish",
            otel.name = %format_args!("publish {}", topic.name),
            otel.kind = "producer",
            kafka.topic = %self.kafka.kafka_topic(&topic.name),
            batch.size = records.len(),
        );
        self.publish_traced(topic, records, &span)
            .instrument(span.clone())
            .await
    }

    /// The producer's generation: how many times it was replaced (for tests and logs).
    pub fn generation(&self) -> u64 {
        self.producer().0
    }

    async fn publish_traced(
        &self,
        topic: &Topic,
        records: &[Record],
        span: &tracing::Span,
    ) -> Vec<Delivery> {
        let kafka_topic = self.kafka.kafka_topic(&topic.name);
        let (generation, producers) = self.producer();
        let (_publishing, others) = Publishing::start(&self.publishing);
        let producer = producers.pick(records.len(), others);
        let headers = if eventgate_core::telemetry::tracing_enabled() {
            let headers = eventgate_core::telemetry::kafka_context::inject(
                OwnedHeaders::new(),
                &span.context(),
            );
            // A caller's long `tracestate` must not make a record outgrow the overhead reserved for it.
            if headers_size(&headers) > TRACE_HEADERS_MAX_BYTES {
                tracing::debug!("trace headers too large for a record: not sent");
                OwnedHeaders::new()
            } else {
                headers
            }
        } else {
            OwnedHeaders::new()
        };
        // librdkafka's message.timeout.ms bounds each delivery; this deadline is a backstop for each.
        let deadline = tokio::time::Instant::now() + self.timeout + Duration::from_secs(1);
        let deliveries = records.iter().map(|record| {
            let future_record = FutureRecord::to(&kafka_topic)
                .key(&record.key)
                .payload(&record.value)
                .headers(headers.clone());
            let started = Instant::now();
            // Waiting for room in a full local queue counts against the same budget as the delivery.
            let delivery = producer.send(future_record, Timeout::After(self.timeout));
            async move {
                let result = tokio::time::timeout_at(deadline, delivery).await;
                self.produce_duration
                    .with_label_values(&[topic.name.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => {
                        self.produce_errors
                            .with_label_values(&[topic.name.as_str(), &error_label(&error)])
                            .inc();
                        Err(Failure::Kafka(error))
                    }
                    Err(_) => {
                        self.produce_errors
                            .with_label_values(&[topic.name.as_str(), "timeout"])
                            .inc();
                        Err(Failure::Timeout)
                    }
                }
            }
        });
        let results = join_all(deliveries).await;
        let mut producer_broken = false;
        let answers = results
            .into_iter()
            .map(|result| match result {
                Ok(()) => Delivery::Acknowledged,
                Err(failure) => {
                    let (detail, broken) = failure.judge();
                    tracing::warn!(kafka.topic = %kafka_topic, error = %detail.message, producer.broken = broken, "publish failed");
                    producer_broken |= broken;
                    Delivery::Failed(detail)
                }
            })
            .collect();
        if producer_broken {
            self.replace_after_failure(generation);
        }
        answers
    }

    fn producer(&self) -> (u64, Producers) {
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
        let fresh = match Producers::create(&self.client_config, self.eager_config.as_ref()) {
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
        self.producer_replaced.inc();
        tracing::warn!(
            producer.generation = failed_generation + 1,
            "Kafka producer replaced after a failed publish"
        );
        // Destroying a librdkafka client joins its threads: not on an async worker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Whether the broker answers a metadata request, for readiness.
    pub async fn check_broker(&self) -> Result<(), String> {
        let (_, producers) = self.producer();
        eventgate_core::kafka::broker_reachable(producers.batching, Duration::from_secs(2)).await
    }

    /// Waits for queued messages to be delivered, at shutdown.
    pub fn flush(&self, timeout: Duration) {
        let (_, producers) = self.producer();
        let started = Instant::now();
        for producer in std::iter::once(&producers.batching).chain(producers.eager.as_ref()) {
            let left = timeout.saturating_sub(started.elapsed());
            if let Err(error) = producer.flush(left) {
                tracing::warn!(%error, "producer flush at shutdown did not complete");
            }
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

/// Bytes the headers take in a record (names, values and their varint lengths, roughly).
fn headers_size(headers: &OwnedHeaders) -> usize {
    headers
        .iter()
        .map(|header| header.key.len() + header.value.map_or(0, <[u8]>::len) + 10)
        .sum()
}

/// Why one record was not acknowledged.
#[derive(Debug)]
enum Failure {
    Kafka(KafkaError),
    /// Not even a failure report before the deadline.
    Timeout,
}

impl Failure {
    /// What the client is told about the event, and whether the failure means the producer itself is
    /// broken (then it is replaced; see `replace_after_failure`).
    fn judge(&self) -> (ErrorDetail, bool) {
        match self {
            Failure::Timeout => (
                ErrorDetail::new(ErrorKind::Queue, "the broker did not acknowledge in time"),
                true,
            ),
            Failure::Kafka(error) => {
                let code = error.rdkafka_error_code();
                if code.is_some_and(is_too_large) {
                    return (
                        ErrorDetail::new(
                            ErrorKind::TooLarge,
                            format!("the broker refused the event as too large: {error}"),
                        ),
                        false,
                    );
                }
                (
                    ErrorDetail::new(
                        ErrorKind::Queue,
                        format!("the broker did not acknowledge: {error}"),
                    ),
                    code.is_none_or(means_broken_producer),
                )
            }
        }
    }
}

fn is_too_large(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge
    )
}

/// Whether a produce error may mean the producer is wedged, so that a fresh one (a new producer id)
/// helps: anything but a refusal of the message itself or of its topic, and back-pressure. After a
/// broker outage the failures are timeouts, fenced epochs, unknown producer ids, sequence errors and
/// transport errors, all of which do.
fn means_broken_producer(code: RDKafkaErrorCode) -> bool {
    !matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidTimestamp
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::BadMessage
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(code: RDKafkaErrorCode) -> (ErrorKind, bool) {
        let (detail, broken) = Failure::Kafka(KafkaError::MessageProduction(code)).judge();
        (detail.kind, broken)
    }

    #[test]
    fn one_events_refusal_keeps_the_producer_a_wedged_producer_is_replaced() {
        assert_eq!(
            judged(RDKafkaErrorCode::MessageSizeTooLarge),
            (ErrorKind::TooLarge, false)
        );
        assert_eq!(
            judged(RDKafkaErrorCode::UnknownTopicOrPartition),
            (ErrorKind::Queue, false)
        );
        assert_eq!(
            judged(RDKafkaErrorCode::QueueFull),
            (ErrorKind::Queue, false)
        );
        for wedged in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::UnknownProducerId,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert_eq!(judged(wedged), (ErrorKind::Queue, true), "{wedged:?}");
        }
        let (detail, broken) = Failure::Timeout.judge();
        assert_eq!((detail.kind, broken), (ErrorKind::Queue, true));
    }
}
