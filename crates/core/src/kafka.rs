//! Kafka plumbing shared by the ingest-api and the db-writer (feature `kafka`): every client's
//! configuration (brokers, TLS, SASL and the pass-through properties of `[kafka.client]`), the start-up
//! check that fails on refused credentials or certificates, topic creation, the broker probe.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigResource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::future_producer::FutureProducerContext;
use rdkafka::producer::{BaseProducer, FutureProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::catalogue::Catalogue;
use crate::config::KafkaConfig;

/// The base client configuration every eventgate Kafka client starts from: the brokers, the pass-through
/// properties of `kafka.client` and the typed security settings. `Config::validate` refused any overlap
/// between the two, so their order does not matter; each service adds its own properties on top.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (property, value) in config.client.properties() {
        client.set(property, value);
    }
    client.set("security.protocol", config.security_protocol.as_str());
    if let Some(mechanism) = config.sasl_mechanism {
        client.set("sasl.mechanism", mechanism.as_str());
    }
    if let Some(username) = &config.sasl_username {
        client.set("sasl.username", username);
    }
    if let Some(password) = &config.sasl_password {
        client.set("sasl.password", password.expose());
    }
    let files = [
        ("ssl.ca.location", &config.ssl_ca_location),
        ("ssl.certificate.location", &config.ssl_certificate_location),
        ("ssl.key.location", &config.ssl_key_location),
    ];
    for (property, path) in files {
        if let Some(path) = path {
            client.set(property, path.to_string_lossy());
        }
    }
    if let Some(password) = &config.ssl_key_password {
        client.set("ssl.key.password", password.expose());
    }
    client
}

/// How long the start-up check waits for the brokers' answer before calling them unreachable.
pub const START_UP_CHECK: Duration = Duration::from_secs(10);

/// A Kafka setting that cannot work, named: the brokers refused the credentials or the certificate, or
/// librdkafka refused the value. Fatal at start-up: retrying would not change it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct KafkaSettingError {
    /// The configuration key to fix, e.g. `kafka.sasl_password`.
    pub setting: &'static str,
    pub message: String,
}

/// What the start-up check found when no setting was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerCheck {
    /// The brokers answered a metadata request with these settings.
    Reachable,
    /// No broker answered (down, not resolvable, not yet started): why.
    Unreachable(String),
}

/// The Kafka side of a service's start-up, for the ingest-api and the writers alike: logs how the
/// clients connect (secrets redacted), checks that the brokers accept these settings, and creates the
/// topics (when `kafka.create_topics`). Refused credentials or certificates are an error naming the
/// setting; unreachable brokers are only logged, since they may come later (the clients keep trying).
pub async fn start_up(
    config: &KafkaConfig,
    catalogue: &Catalogue,
) -> Result<BrokerCheck, KafkaSettingError> {
    tracing::info!(
        kafka.brokers = %config.brokers,
        kafka.security_protocol = config.security_protocol.as_str(),
        kafka.sasl_mechanism = config.sasl_mechanism.map(|m| m.as_str()),
        kafka.sasl_username = config.sasl_username.as_deref(),
        kafka.ssl_ca_location = ?config.ssl_ca_location,
        kafka.ssl_certificate_location = ?config.ssl_certificate_location,
        kafka.client = ?config.client,
        "connecting to Kafka"
    );
    let check = check_brokers(config, START_UP_CHECK).await?;
    match &check {
        BrokerCheck::Reachable => tracing::info!("Kafka brokers reachable, settings accepted"),
        BrokerCheck::Unreachable(reason) => tracing::warn!(
            %reason,
            "Kafka brokers unreachable at start-up; going on, the clients keep trying"
        ),
    }
    if let Err(error) = ensure_topics(config, catalogue).await {
        // Not fatal: the broker may come up later, and ops may own topic creation.
        tracing::warn!(%error, "could not ensure Kafka topics exist");
    }
    Ok(check)
}

/// The largest message (record batch) the broker takes for a topic, as it told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageLimit {
    /// The topic's `max.message.bytes`.
    Topic(u64),
    /// The broker's `message.max.bytes` (the topic did not name its own).
    Broker(u64),
    /// The broker did not tell (it does not answer DescribeConfigs, or without these keys): why.
    Unknown(String),
}

/// What [`check_message_limits`] found when the configured event size fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLimits {
    /// The smallest limit of a topic that told one, and that topic.
    pub smallest: Option<(String, u64)>,
    /// The topics whose limit is unknown, with why.
    pub unknown: Vec<(String, String)>,
}

/// Whether the largest event the ingest-api accepts (`max_event_bytes`, its record's key and value)
/// plus the record's overhead fits every topic's limit, and whether the producer's `batch.size` (when
/// `kafka.client` sets it) does: a record batch above the limit is refused whole, valid events with it.
/// A limit the broker did not tell is only reported: the check cannot be made, and start-up goes on.
pub fn check_message_limits(
    max_event_bytes: usize,
    configured_batch_size: Option<u64>,
    limits: &[(String, MessageLimit)],
) -> Result<MessageLimits, KafkaSettingError> {
    let needed = (max_event_bytes + crate::ingest::RECORD_OVERHEAD_BYTES) as u64;
    let mut found = MessageLimits {
        smallest: None,
        unknown: Vec::new(),
    };
    for (topic, limit) in limits {
        let (bytes, whose) = match limit {
            MessageLimit::Topic(bytes) => (*bytes, "the topic's max.message.bytes"),
            MessageLimit::Broker(bytes) => (*bytes, "the broker's message.max.bytes"),
            MessageLimit::Unknown(why) => {
                found.unknown.push((topic.clone(), why.clone()));
                continue;
            }
        };
        if needed > bytes {
            return Err(KafkaSettingError {
                setting: "ingest.max_event_bytes",
                message: format!(
                    "Kafka topic `{topic}` takes messages of at most {bytes} bytes ({whose}), but \
                     ingest.max_event_bytes {max_event_bytes} plus {} bytes of record overhead needs \
                     {needed}: lower ingest.max_event_bytes to at most {} or raise the topic's \
                     max.message.bytes",
                    crate::ingest::RECORD_OVERHEAD_BYTES,
                    bytes.saturating_sub(crate::ingest::RECORD_OVERHEAD_BYTES as u64)
                ),
            });
        }
        if found
            .smallest
            .as_ref()
            .is_none_or(|(_, smallest)| bytes < *smallest)
        {
            found.smallest = Some((topic.clone(), bytes));
        }
    }
    if let (Some(batch_size), Some((topic, bytes))) = (configured_batch_size, &found.smallest) {
        if batch_size > *bytes {
            return Err(KafkaSettingError {
                setting: "kafka.client",
                message: format!(
                    "batch.size {batch_size} is above the {bytes} bytes Kafka topic `{topic}` takes \
                     in one message: the broker would refuse a full batch, valid events with it"
                ),
            });
        }
    }
    Ok(found)
}

/// Asks the brokers for each topic's message limit: DescribeConfigs of the topic (`max.message.bytes`),
/// else of a broker (`message.max.bytes`). A broker that does not answer, or answers without these keys
/// (tansu keeps only the configs a topic was created with, and none of a broker's), leaves the limit
/// [`MessageLimit::Unknown`].
pub async fn message_limits(
    config: &KafkaConfig,
    topics: &[String],
    timeout: Duration,
) -> Vec<(String, MessageLimit)> {
    let unknown = |why: String| -> Vec<(String, MessageLimit)> {
        topics
            .iter()
            .map(|topic| (topic.clone(), MessageLimit::Unknown(why.clone())))
            .collect()
    };
    let admin: AdminClient<DefaultClientContext> = match client_config(config).create() {
        Ok(admin) => admin,
        Err(error) => return unknown(format!("no admin client: {error}")),
    };
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let specifiers: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|topic| ResourceSpecifier::Topic(topic))
        .collect();
    let described = match admin.describe_configs(&specifiers, &options).await {
        Ok(described) => described,
        Err(error) => return unknown(format!("DescribeConfigs of the topics failed: {error}")),
    };
    let mut limits: Vec<(String, MessageLimit)> = topics
        .iter()
        .zip(described)
        .map(|(topic, result)| {
            let limit = match result {
                Ok(resource) => config_bytes(&resource, "max.message.bytes")
                    .map(MessageLimit::Topic)
                    .unwrap_or_else(|| {
                        MessageLimit::Unknown(
                            "the topic's configs hold no max.message.bytes".into(),
                        )
                    }),
                Err(code) => MessageLimit::Unknown(format!("DescribeConfigs of the topic: {code}")),
            };
            (topic.clone(), limit)
        })
        .collect();
    if limits
        .iter()
        .any(|(_, limit)| matches!(limit, MessageLimit::Unknown(_)))
    {
        if let Some(broker) = broker_message_limit(config, &admin, &options, timeout).await {
            for (_, limit) in &mut limits {
                if let MessageLimit::Unknown(why) = limit {
                    *limit = match &broker {
                        Ok(bytes) => MessageLimit::Broker(*bytes),
                        Err(broker_why) => MessageLimit::Unknown(format!("{why}; {broker_why}")),
                    };
                }
            }
        }
    }
    limits
}

/// A broker's `message.max.bytes`, asked of the first broker the metadata names.
async fn broker_message_limit(
    config: &KafkaConfig,
    admin: &AdminClient<DefaultClientContext>,
    options: &AdminOptions,
    timeout: Duration,
) -> Option<Result<u64, String>> {
    // A metadata request blocks: on a blocking thread, with a client of its own.
    let client = client_config(config);
    let ids = tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = client.create().map_err(|error| error.to_string())?;
        let metadata = producer
            .client()
            .fetch_metadata(None, timeout)
            .map_err(|error| error.to_string())?;
        Ok::<_, String>(
            metadata
                .brokers()
                .iter()
                .map(|b| b.id())
                .collect::<Vec<_>>(),
        )
    })
    .await
    .unwrap_or_else(|error| Err(error.to_string()));
    let id = match ids {
        Ok(ids) => *ids.first()?,
        Err(error) => return Some(Err(format!("no broker metadata: {error}"))),
    };
    let described = admin
        .describe_configs(&[ResourceSpecifier::Broker(id)], options)
        .await;
    Some(match described.as_deref() {
        Ok([Ok(resource)]) => config_bytes(resource, "message.max.bytes")
            .ok_or_else(|| format!("broker {id}'s configs hold no message.max.bytes")),
        Ok([Err(code)]) => Err(format!("DescribeConfigs of broker {id}: {code}")),
        Ok(_) => Err(format!("DescribeConfigs of broker {id}: no answer")),
        Err(error) => Err(format!("DescribeConfigs of broker {id}: {error}")),
    })
}

fn config_bytes(resource: &ConfigResource, name: &str) -> Option<u64> {
    resource
        .get(name)
        .and_then(|entry| entry.value.as_deref())
        .and_then(|value| value.trim().parse().ok())
}

/// Asks the brokers for metadata with these settings, within `timeout`, and tells a refused setting
/// (an error naming it) from unreachable brokers. librdkafka reports refused credentials and failed TLS
/// handshakes only asynchronously, as error events and log lines, and keeps retrying; so the check runs
/// a throw-away producer whose context records them, and reads them between metadata requests. It
/// returns as soon as the answer is clear: metadata (reachable), a refusal (error), or every broker
/// down for another reason (unreachable).
pub async fn check_brokers(
    config: &KafkaConfig,
    timeout: Duration,
) -> Result<BrokerCheck, KafkaSettingError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || check_brokers_blocking(&config, timeout))
        .await
        .unwrap_or_else(|error| {
            Ok(BrokerCheck::Unreachable(format!(
                "check task failed: {error}"
            )))
        })
}

fn check_brokers_blocking(
    config: &KafkaConfig,
    timeout: Duration,
) -> Result<BrokerCheck, KafkaSettingError> {
    let context = CheckContext::default();
    let events = context.events.clone();
    let mut client = client_config(config);
    // rdkafka derives librdkafka's log level from the `log` crate's, which no service sets up: the
    // check wants the lines that say why a connection was closed.
    client.set_log_level(RDKafkaLogLevel::Info);
    // A listener that takes the connection but never answers the TLS handshake (a plain one that waits
    // for a whole request) would hold it for librdkafka's 30 s; within the check, half its time.
    if !config
        .client
        .properties()
        .contains_key("socket.connection.setup.timeout.ms")
    {
        let setup_ms = (timeout / 2).as_millis().clamp(1_000, 30_000);
        client.set("socket.connection.setup.timeout.ms", setup_ms.to_string());
    }
    let producer: BaseProducer<CheckContext> = client
        .create_with_context(context)
        .map_err(|error| creation_error(config, &error))?;
    let deadline = Instant::now() + timeout;
    let mut last_failure = String::from("no answer");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Short requests: the events that tell the answer are read between two of them.
        let step = remaining.min(Duration::from_millis(300));
        let metadata = producer.client().fetch_metadata(None, step);
        // Serves the error events queued meanwhile into the context.
        producer.poll(Duration::from_millis(50));
        if metadata.is_ok() {
            return Ok(BrokerCheck::Reachable);
        }
        let seen: Vec<Event> =
            std::mem::take(&mut *events.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(refused) = seen.iter().find_map(|event| classify(config, event)) {
            return Err(refused);
        }
        if let Some(event) = seen
            .iter()
            .rev()
            .find(|event| event.code != Some(RDKafkaErrorCode::AllBrokersDown))
        {
            last_failure = event.text.clone();
        }
        let all_down = seen
            .iter()
            .any(|event| event.code == Some(RDKafkaErrorCode::AllBrokersDown));
        if all_down || Instant::now() >= deadline {
            return Ok(BrokerCheck::Unreachable(with_hint(config, last_failure)));
        }
    }
}

/// Why brokers were unreachable, with what to check when the way they closed the connection suggests
/// a protocol mismatch (not fatal: a broker that is starting behaves the same way).
fn with_hint(config: &KafkaConfig, reason: String) -> String {
    let lower = reason.to_ascii_lowercase();
    let protocol = config.security_protocol.as_str();
    if lower.contains("in state ssl_handshake") {
        format!("{reason} (no TLS handshake: is the listener a TLS one? kafka.security_protocol is {protocol})")
    } else if lower.contains("disconnected")
        && (lower.contains("in state up") || lower.contains("in state apiversion_query"))
    {
        format!(
            "{reason} (the broker closes the connection at once: does it expect SASL or TLS? \
             kafka.security_protocol is {protocol})"
        )
    } else {
        reason
    }
}

/// An error event or a warning log line of librdkafka.
#[derive(Debug, Clone)]
struct Event {
    code: Option<RDKafkaErrorCode>,
    text: String,
}

/// Records what librdkafka reports asynchronously, for [`check_brokers`].
#[derive(Default)]
struct CheckContext {
    events: Arc<Mutex<Vec<Event>>>,
}

impl CheckContext {
    fn record(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

impl ClientContext for CheckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "Kafka start-up check: error event");
        self.record(Event {
            code: error.rdkafka_error_code(),
            text: reason.to_owned(),
        });
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(facility, message, "Kafka start-up check: librdkafka log");
        // Some details (the TLS alert a proxy sent, how a connection was closed) appear only in log
        // lines, at warning and info levels.
        if (level as i32) <= (RDKafkaLogLevel::Info as i32) {
            self.record(Event {
                code: None,
                text: message.to_owned(),
            });
        }
    }
}

impl ProducerContext for CheckContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// The setting a librdkafka property comes from.
fn setting_of(property: &str) -> &'static str {
    match property {
        "bootstrap.servers" => "kafka.brokers",
        "security.protocol" => "kafka.security_protocol",
        "sasl.mechanism" | "sasl.mechanisms" => "kafka.sasl_mechanism",
        "sasl.username" => "kafka.sasl_username",
        "sasl.password" => "kafka.sasl_password",
        "ssl.ca.location" => "kafka.ssl_ca_location",
        "ssl.certificate.location" => "kafka.ssl_certificate_location",
        "ssl.key.location" => "kafka.ssl_key_location",
        "ssl.key.password" => "kafka.ssl_key_password",
        _ => "kafka.client",
    }
}

/// librdkafka refuses a client whose configuration it cannot use (an unknown property, a CA file it
/// cannot parse, a key it cannot decrypt); its message names the property, which names the setting.
fn creation_error(config: &KafkaConfig, error: &KafkaError) -> KafkaSettingError {
    let message = error.to_string();
    let property = [
        "ssl.key.location",
        "ssl.certificate.location",
        "ssl.ca.location",
        "ssl.key.password",
        "sasl.mechanism",
        "security.protocol",
        "bootstrap.servers",
    ]
    .into_iter()
    .find(|property| message.contains(property));
    let setting = property.map(setting_of).unwrap_or("kafka.client");
    if setting == "kafka.ssl_key_location" {
        // OpenSSL says only "PEM lib" for a wrong passphrase, a missing one and a malformed key alike.
        return match config.ssl_key_password {
            Some(_) => KafkaSettingError {
                setting: "kafka.ssl_key_password",
                message: format!(
                    "cannot unlock the private key {} with this passphrase (or it is no PEM key): \
                     {message}",
                    display(&config.ssl_key_location)
                ),
            },
            None => KafkaSettingError {
                setting,
                message: format!(
                    "cannot read the private key {} (encrypted? then set kafka.ssl_key_password): \
                     {message}",
                    display(&config.ssl_key_location)
                ),
            },
        };
    }
    KafkaSettingError {
        setting,
        message: format!("librdkafka refused the configuration: {message}"),
    }
}

fn display(path: &Option<std::path::PathBuf>) -> String {
    path.as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default()
}

/// Whether an event says that a setting cannot work, and which. Matched on librdkafka's codes and
/// (for the TLS details, which have no code of their own) on the words of its messages.
fn classify(config: &KafkaConfig, event: &Event) -> Option<KafkaSettingError> {
    let text = event.text.as_str();
    let lower = text.to_ascii_lowercase();
    let refused =
        |setting: &'static str, message: String| Some(KafkaSettingError { setting, message });
    let mechanism = config.sasl_mechanism.map(|m| m.as_str()).unwrap_or("SASL");
    if lower.contains("mechanism")
        && (lower.contains("not supported") || lower.contains("not enabled"))
    {
        return refused(
            "kafka.sasl_mechanism",
            format!("the broker does not offer {mechanism}: {text}"),
        );
    }
    if event.code == Some(RDKafkaErrorCode::Authentication)
        || lower.contains("sasl authentication error")
        || lower.contains("authentication failed")
    {
        return refused(
            "kafka.sasl_password",
            format!(
                "the broker refused the credentials of user `{}` ({mechanism}); check \
                 kafka.sasl_username and kafka.sasl_password: {text}",
                config.sasl_username.as_deref().unwrap_or("")
            ),
        );
    }
    if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
        return refused(
            "kafka.brokers",
            format!(
                "the broker's certificate does not name the host it was reached at ({}): {text}",
                config.brokers
            ),
        );
    }
    if lower.contains("certificate verify failed") || lower.contains("could not be verified") {
        let trusted = config
            .ssl_ca_location
            .as_ref()
            .map(|path| format!("the CA in {}", path.display()))
            .unwrap_or_else(|| "a CA of the system's trust store".to_owned());
        return refused(
            "kafka.ssl_ca_location",
            format!("the broker's certificate is not signed by {trusted}: {text}"),
        );
    }
    let client_certificate_refused = [
        "alert certificate required",
        "alert unknown ca",
        "alert bad certificate",
        "alert certificate unknown",
        "alert certificate expired",
        "alert handshake failure",
    ];
    if client_certificate_refused
        .iter()
        .any(|alert| lower.contains(alert))
    {
        let offered = config
            .ssl_certificate_location
            .as_ref()
            .map(|path| format!("the client certificate {}", path.display()))
            .unwrap_or_else(|| "the connection without a client certificate".to_owned());
        return refused(
            "kafka.ssl_certificate_location",
            format!("the broker refused {offered}: {text}"),
        );
    }
    if lower.contains("incorrect security.protocol")
        || (lower.contains("ssl handshake failed")
            && (lower.contains("wrong version number")
                || lower.contains("packet length too long")
                || lower.contains("record layer failure")
                || lower.contains("unexpected eof")))
    {
        return refused(
            "kafka.security_protocol",
            format!(
                "{} does not fit the broker's listener (TLS or not? SASL or not?): {text}",
                config.security_protocol.as_str()
            ),
        );
    }
    if event.code == Some(RDKafkaErrorCode::SSL) || lower.contains("ssl handshake failed") {
        return refused(
            "kafka.security_protocol",
            format!("the TLS handshake with the broker failed: {text}"),
        );
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaClientProperties, KafkaSecurityProtocol, SaslMechanism, Secret};

    fn event(code: Option<RDKafkaErrorCode>, text: &str) -> Event {
        Event {
            code,
            text: text.to_owned(),
        }
    }

    fn secured() -> KafkaConfig {
        KafkaConfig {
            security_protocol: KafkaSecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha256),
            sasl_username: Some("ingest".into()),
            sasl_password: Some(Secret::new("pw")),
            ssl_ca_location: Some("/etc/ca.pem".into()),
            client: KafkaClientProperties::new([("socket_keepalive_enable", "true")]),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn every_client_gets_the_security_settings_and_the_pass_through_properties() {
        let client = client_config(&secured());
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(client.get("sasl.username"), Some("ingest"));
        assert_eq!(client.get("sasl.password"), Some("pw"));
        assert_eq!(client.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(client.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(client.get("ssl.key.location"), None);
        // rdkafka's own Debug leaves the password out.
        assert!(!format!("{client:?}").contains("\"pw\""));
    }

    #[test]
    fn refusals_are_named_by_the_setting_to_fix() {
        let config = secured();
        let named = |code, text| classify(&config, &event(code, text)).map(|e| e.setting);
        assert_eq!(
            named(
                Some(RDKafkaErrorCode::Authentication),
                "SASL authentication error: Authentication failed during authentication due to \
                 invalid credentials with SASL mechanism SCRAM-SHA-256"
            ),
            Some("kafka.sasl_password")
        );
        assert_eq!(
            named(
                Some(RDKafkaErrorCode::Authentication),
                "Failed to initialize SASL authentication: SASL Handshake failed: Broker: \
                 Unsupported SASL mechanism: SASL mechanism SCRAM-SHA-256 not supported by broker"
            ),
            Some("kafka.sasl_mechanism")
        );
        assert_eq!(
            named(
                Some(RDKafkaErrorCode::SSL),
                "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: \
                 broker certificate could not be verified"
            ),
            Some("kafka.ssl_ca_location")
        );
        assert_eq!(
            named(
                Some(RDKafkaErrorCode::SSL),
                "SSL handshake failed: certificate verify failed: Hostname mismatch"
            ),
            Some("kafka.brokers")
        );
        assert_eq!(
            named(
                None,
                "Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required"
            ),
            Some("kafka.ssl_certificate_location")
        );
        assert_eq!(
            named(
                Some(RDKafkaErrorCode::SSL),
                "SSL handshake failed: error:0A00010B:SSL routines::wrong version number"
            ),
            Some("kafka.security_protocol")
        );
        // A broker that is down is not a setting to fix.
        assert_eq!(
            named(
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
            ),
            None
        );
        assert_eq!(
            named(
                Some(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down"
            ),
            None
        );
    }

    #[test]
    fn the_refusal_names_the_user_but_never_the_password() {
        let error = classify(
            &secured(),
            &event(
                Some(RDKafkaErrorCode::Authentication),
                "Authentication failed",
            ),
        )
        .expect("refused");
        assert!(
            error.to_string().starts_with("kafka.sasl_password: "),
            "{error}"
        );
        assert!(
            error.message.contains("user `ingest` (SCRAM-SHA-256)"),
            "{error}"
        );
        assert!(!error.message.contains("pw"), "{error}");
    }

    #[test]
    fn unreachable_reasons_hint_at_the_protocol_when_the_broker_hangs_up() {
        let config = KafkaConfig::default();
        let hinted = with_hint(
            &config,
            "Disconnected: connection reset by peer (after 0ms in state UP)".into(),
        );
        assert!(
            hinted.contains("kafka.security_protocol is PLAINTEXT"),
            "{hinted}"
        );
        let plain = with_hint(&config, "Connect failed: Connection refused".into());
        assert_eq!(plain, "Connect failed: Connection refused");
    }

    #[test]
    fn an_event_limit_above_a_topic_limit_is_refused_naming_both() {
        let limits = vec![
            ("t.a".to_owned(), MessageLimit::Topic(1_048_588)),
            ("t.b".to_owned(), MessageLimit::Broker(200_000)),
        ];
        let error = check_message_limits(256 * 1024, None, &limits).unwrap_err();
        assert_eq!(error.setting, "ingest.max_event_bytes");
        for part in ["`t.b`", "200000", "262144", "message.max.bytes"] {
            assert!(error.message.contains(part), "{part}: {error}");
        }
        let fits = check_message_limits(128 * 1024, None, &limits).unwrap();
        assert_eq!(fits.smallest, Some(("t.b".to_owned(), 200_000)));
        assert!(fits.unknown.is_empty());
        // The overhead counts: an event limit equal to the topic's does not fit.
        let exact = vec![("t".to_owned(), MessageLimit::Topic(300_000))];
        assert!(check_message_limits(300_000, None, &exact).is_err());
        assert!(
            check_message_limits(300_000 - crate::ingest::RECORD_OVERHEAD_BYTES, None, &exact)
                .is_ok()
        );
    }

    #[test]
    fn an_unknown_limit_is_reported_not_fatal_and_batch_size_must_fit() {
        let limits = vec![
            ("t.a".to_owned(), MessageLimit::Unknown("no answer".into())),
            ("t.b".to_owned(), MessageLimit::Topic(500_000)),
        ];
        let found = check_message_limits(256 * 1024, Some(400_000), &limits).unwrap();
        assert_eq!(
            found.unknown,
            vec![("t.a".to_owned(), "no answer".to_owned())]
        );
        let error = check_message_limits(256 * 1024, Some(600_000), &limits).unwrap_err();
        assert_eq!(error.setting, "kafka.client");
        assert!(error.message.contains("batch.size 600000"), "{error}");
        let unknown = vec![("t".to_owned(), MessageLimit::Unknown("no answer".into()))];
        let found = check_message_limits(100 * 1024 * 1024, Some(u64::MAX), &unknown).unwrap();
        assert_eq!(found.smallest, None);
    }
}
