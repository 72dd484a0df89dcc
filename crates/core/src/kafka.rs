//! Kafka plumbing shared by the ingest-api and the db-writer (feature `kafka`).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::producer::future_producer::FutureProducerContext;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::catalogue::Catalogue;
use crate::config::KafkaConfig;

/// The base client configuration every eventgate Kafka client starts from.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    client
}

/// Every Kafka topic the catalogue maps to.
pub fn kafka_topics(config: &KafkaConfig, catalogue: &Catalogue) -> Vec<String> {
    catalogue
        .names()
        .map(|name| config.kafka_topic(name))
        .collect()
}

/// Creates the Kafka topics of the catalogue that do not exist yet, when `kafka.create_topics` is on.
/// Both the ingest-api and the writer call it at start-up, so whichever starts first creates them.
pub async fn ensure_topics(
    config: &KafkaConfig,
    catalogue: &Catalogue,
) -> Result<(), rdkafka::error::KafkaError> {
    if !config.create_topics {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let names = kafka_topics(config, catalogue);
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(kafka.topic = %name, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(kafka.topic = %name, error = %code, "cannot create Kafka topic");
                });
            }
        }
    }
    Ok(())
}

/// A client the broker probe can take onto a blocking thread: a producer (a cheap clone of a shared
/// handle) or a shared consumer.
pub trait ProbeClient: Send + 'static {
    type Context: ClientContext;
    fn probe_client(&self) -> &Client<Self::Context>;
}

impl<C: ClientContext + 'static> ProbeClient for FutureProducer<C> {
    type Context = FutureProducerContext<C>;
    fn probe_client(&self) -> &Client<Self::Context> {
        self.client()
    }
}

impl<C: ConsumerContext + 'static> ProbeClient for Arc<StreamConsumer<C>> {
    type Context = C;
    fn probe_client(&self) -> &Client<C> {
        self.as_ref().client()
    }
}

/// Whether the brokers answer a metadata request within `timeout`: the one broker probe of the
/// services (readiness, the writer's monitor). librdkafka blocks while it waits, so the request runs on
/// a blocking thread, never on an async worker. The error says why, for the probe's report.
pub async fn broker_reachable(client: impl ProbeClient, timeout: Duration) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        client
            .probe_client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|error| error.to_string())
    })
    .await
    .unwrap_or_else(|error| Err(format!("probe task failed: {error}")))
}
