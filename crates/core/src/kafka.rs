//! Kafka plumbing shared by the ingest-api and the db-writer (feature `kafka`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
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
