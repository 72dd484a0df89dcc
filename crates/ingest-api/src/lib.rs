//! eventgate-ingest-api: the HTTP front door for producers.
//!
//! `POST /topics/{topic}` → authenticate (401) → topic exists (404) → may write (403) → body valid (400)
//! → publish to Kafka and wait for each event's acknowledgement → 202 (or 207 when only some events of a
//! batch were acknowledged: the others refused before publishing, or not acknowledged).
//! The rules themselves live in `eventgate_core` (`auth`, `access`, `ingest`); this crate wires them to
//! HTTP and Kafka. Invariant: a 202 is sent only after the broker acknowledged every accepted event.

pub mod metrics;
pub mod openapi;
pub mod publisher;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use eventgate_core::access::SharedAccess;
use eventgate_core::config::{Config, LimitsConfig};
use eventgate_core::gate::Gatekeeping;
use eventgate_core::http::{ApiServer, ApiServerSettings};
use eventgate_core::ingest::IngestRules;
use eventgate_core::shutdown::Lifecycle;

use crate::publisher::{Publisher, SizeLimits};

/// How long the start-up waits for the brokers to tell the topics' message limits.
const LIMITS_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses to start when the largest event the ingest-api accepts would not fit a topic's message
/// limit (an error naming the topic and both numbers); the smallest limit a topic told, which the
/// producer's batches must fit. A broker that cannot be asked (unreachable now, or one that does not
/// tell: tansu keeps no `max.message.bytes` unless a topic was created with one) is a warning: the
/// check is skipped for those topics.
async fn check_message_limits(
    config: &Config,
    gate: &Gatekeeping,
    brokers: &eventgate_core::kafka::BrokerCheck,
) -> anyhow::Result<Option<u64>> {
    use eventgate_core::kafka::{self, BrokerCheck};
    let topics = kafka::kafka_topics(&config.kafka, &gate.catalogue.current());
    let limits = match brokers {
        BrokerCheck::Reachable => {
            kafka::message_limits(&config.kafka, &topics, LIMITS_TIMEOUT).await
        }
        BrokerCheck::Unreachable(_) => {
            tracing::warn!(
                "Kafka brokers unreachable: the topics' message limits were not checked against \
                 ingest.max_event_bytes"
            );
            return Ok(None);
        }
    };
    let batch_size = config
        .kafka
        .client
        .properties()
        .get("batch.size")
        .and_then(|value| value.trim().parse().ok());
    let found = kafka::check_message_limits(config.ingest.max_event_bytes, batch_size, &limits)?;
    for (topic, why) in &found.unknown {
        tracing::warn!(
            kafka.topic = %topic,
            reason = %why,
            ingest.max_event_bytes = config.ingest.max_event_bytes,
            "the broker did not tell the topic's message limit: not checked against \
             ingest.max_event_bytes"
        );
    }
    if let Some((topic, bytes)) = &found.smallest {
        tracing::info!(
            kafka.topic = %topic,
            kafka.max_message_bytes = bytes,
            ingest.max_event_bytes = config.ingest.max_event_bytes,
            "events fit the topics' message limits (the smallest named)"
        );
    }
    Ok(found.smallest.map(|(_, bytes)| bytes))
}

/// What the handlers need besides the gate (token, rate, topic, permission: `eventgate_core::gate`,
/// registered beside this state and passed by the `TopicWriter` extractor), shared by all workers.
pub struct AppState {
    pub limits: LimitsConfig,
    pub rules: IngestRules,
    pub publisher: Publisher,
    pub max_body_bytes: usize,
    pub metrics: metrics::IngestMetrics,
    /// Readiness answers 503 once a shutdown started.
    pub lifecycle: Lifecycle,
}

pub struct Application {
    server: ApiServer,
    state: Arc<AppState>,
    gate: Arc<Gatekeeping>,
}

/// A topic added by a reload (SIGHUP) gets its Kafka topic now, as the topics at start-up did: its
/// first event is published without waiting for the writers' reload (and the broker's auto-creation
/// is not relied on). Not fatal, as at start-up: the broker may be away, or its operators create topics.
fn create_kafka_topics_of_new_topics(config: &Config, gate: &Gatekeeping) {
    let kafka = config.kafka.clone();
    let runtime = tokio::runtime::Handle::current();
    gate.catalogue.on_new_topics(move |catalogue, added| {
        let kafka = kafka.clone();
        runtime.spawn(async move {
            match eventgate_core::kafka::ensure_topics(&kafka, &catalogue).await {
                Ok(()) => tracing::info!(topics = ?added, "Kafka topics of the new topics ensured"),
                Err(error) => tracing::warn!(%error, topics = ?added, "could not ensure the new topics' Kafka topics"),
            }
        });
    });
}

impl Application {
    /// Loads topics, access rules and keys, connects the producer, binds the listener. Fails early on
    /// any configuration problem, so a broken deployment never starts serving.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let gate = Arc::new(eventgate_core::reload::load_gatekeeping(&config).await?);
        let timeout = Duration::from_millis(config.ingest.publish_timeout_ms);
        let metrics = metrics::IngestMetrics::new();
        eventgate_core::metrics::JwksCollector::register(&metrics.registry, gate.verifier.clone());
        eventgate_core::metrics::TopicsCollector::register(
            &metrics.registry,
            gate.catalogue.clone(),
        );
        // Refused credentials or certificates stop the start; unreachable brokers do not (they may come
        // later), nor does topic creation (ops may own it).
        let brokers =
            eventgate_core::kafka::start_up(&config.kafka, &gate.catalogue.current()).await?;
        create_kafka_topics_of_new_topics(&config, &gate);
        let smallest_topic_limit = check_message_limits(&config, &gate, &brokers).await?;
        let sizes = SizeLimits {
            max_event_bytes: config.ingest.max_event_bytes,
            smallest_topic_limit,
        };
        let publisher = Publisher::new(&config.kafka, timeout, sizes, &metrics)
            .context("creating Kafka producer")?;
        let lifecycle = Lifecycle::new();
        let state = Arc::new(AppState {
            limits: config.limits.clone(),
            rules: IngestRules {
                id_field: config.ingest.id_field.clone(),
                max_batch_events: config.ingest.max_batch_events,
                max_event_nodes: config.ingest.max_event_nodes,
                max_event_bytes: config.ingest.max_event_bytes,
            },
            publisher,
            max_body_bytes: config.ingest.max_body_bytes,
            metrics,
            lifecycle: lifecycle.clone(),
        });
        let server = ApiServer::start(
            ApiServerSettings {
                service: "ingest-api",
                listen: config.ingest.listen.clone(),
                admin_listen: config.ingest.admin_listen.clone(),
                workers: config.ingest.workers,
                routes: routes::configure,
                admin_routes: routes::configure_admin,
                openapi: openapi::document,
                admin_openapi: openapi::admin_document,
            },
            state.clone(),
            gate.clone(),
            state.metrics.http.clone(),
            lifecycle,
            &config,
        )?;
        Ok(Application {
            server,
            state,
            gate,
        })
    }

    /// The producer's generation: how many times it was replaced after a failure that wedged it.
    pub fn producer_generation(&self) -> u64 {
        self.state.publisher.generation()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Where `/metrics` and the probes answer (`ingest.admin_listen`, or the API's port).
    pub fn admin_port(&self) -> u16 {
        self.server.admin_port()
    }

    /// The access rules in use (reloaded on SIGHUP), e.g. to see that a reload happened.
    pub fn access(&self) -> Arc<SharedAccess> {
        self.gate.access.clone()
    }

    /// Serves until SIGTERM or SIGINT, then stops gracefully (see [`Application::run_until`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(eventgate_core::shutdown::signal()).await
    }

    /// Serves until `stop` resolves, then: readiness 503, drain, in-flight requests answered (each still
    /// waits for its acknowledgement), and the producer flushed with what is left of the deadline.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let deadline = self.server.serve_until(stop).await?;
        let state = self.state.clone();
        let budget = deadline.remaining();
        let _ = tokio::task::spawn_blocking(move || state.publisher.flush(budget)).await;
        tracing::info!("ingest-api stopped");
        Ok(())
    }
}
