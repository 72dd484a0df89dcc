//! Typed configuration, layered: built-in defaults < `config/eventgate.toml` (or the file named by
//! `EVENTGATE_CONFIG`) < `EVENTGATE_*` environment variables, nested keys separated by `__`
//! (`EVENTGATE_KAFKA__BROKERS=host:9092`). Every key is documented in `.env.example`.
//!
//! Secrets (database URLs with passwords, the cursor secret, SMTP credentials, the Kafka SASL password and
//! key passphrase) are never logged: the `Debug` of [`Secret`] prints a placeholder, and so does that of
//! [`KafkaClientProperties`] for the values of secret-looking properties.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The environment variable that names the configuration file.
pub const CONFIG_FILE_ENV: &str = "EVENTGATE_CONFIG";
pub const DEFAULT_CONFIG_FILE: &str = "config/eventgate.toml";
/// `EVENTGATE_*` variables that are not service settings: the configuration file's name and the CLI's.
const NOT_SETTINGS: [&str; 6] = [
    "config",
    "token",
    "profile",
    "cli_config",
    "ingest_url",
    "stats_url",
];

mod check;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub catalogue: CatalogueConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub ingest: IngestConfig,
    pub writer: WriterConfig,
    pub stats: StatsConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
    pub limits: LimitsConfig,
    pub ratelimit: RateLimitConfig,
    pub smtp: SmtpConfig,
    pub alerts: AlertsConfig,
    pub storage: StorageConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogueConfig {
    /// Directory with one JSON Schema per topic, named `<topic>.json`.
    pub topics_dir: PathBuf,
    /// Who may write and read each topic.
    pub access_file: PathBuf,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        CatalogueConfig {
            topics_dir: "config/topics".into(),
            access_file: "config/access.json".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// PEM files with the public keys tokens may be signed with (RSA for RS256, EC P-256 for ES256).
    /// Several keys allow rotation: a token verified by any of them is accepted. Re-read on SIGHUP.
    pub public_keys: Vec<PathBuf>,
    /// A JWKS document (`{"keys": [...]}`) on disk; its keys are selected by the token's `kid`.
    /// Re-read every `jwks_refresh_secs` and on SIGHUP.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document served by the identity provider over https, fetched at start-up and every
    /// `jwks_refresh_secs`, and early (at most every `jwks_min_refetch_secs`) when a token names an
    /// unknown `kid`. Redirects are followed only to the same scheme, host and port.
    pub jwks_url: Option<String>,
    pub jwks_refresh_secs: u64,
    /// Allows an `http://` `jwks_url`: for a local identity provider in development only (keys fetched
    /// in clear text can be replaced by anyone on the path, and then any token is accepted).
    pub jwks_allow_http: bool,
    /// A PEM file of certificate authorities trusted for `jwks_url`, besides the public (Mozilla) roots:
    /// an identity provider with a certificate of an internal CA.
    pub jwks_ca_file: Option<PathBuf>,
    /// When every fetch of `jwks_url` failed for this long, its keys are dropped: tokens that need them
    /// are answered 503 `auth_unavailable` (a key the identity provider withdrew must not stay valid
    /// forever because it cannot be reached). At least twice `jwks_refresh_secs`.
    pub jwks_max_stale_secs: u64,
    /// Tokens naming an unknown `kid` make `jwks_url` be fetched early, at most once per this many
    /// seconds (since the last fetch): made-up key ids cannot make us hammer the identity provider.
    pub jwks_min_refetch_secs: u64,
    /// The signature algorithms accepted; only `RS256` and `ES256` are supported.
    pub algorithms: Vec<String>,
    /// A development set-up (`make run` sets it): no start-up warnings about what is unsafe in
    /// production (no `issuer`/`audience`, `jwks_allow_http`). Changes nothing else.
    pub development: bool,
    /// When set, a token's `iss` must equal it. Unset (outside development a start-up warning): tokens
    /// of any issuer whose key is configured are accepted.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must contain it. Unset (outside development a start-up warning): a token
    /// the identity provider issued for any other application is accepted.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// The claim holding the user's groups (an array of strings, or one string), used by `group:` entries
    /// of the access file. A name that is not a top-level claim is tried as a dot path
    /// (`realm_access.roles`).
    pub groups_claim: String,
    /// Where `GET /token` sends a client to obtain a token (303 See Other): the identity provider's
    /// login or token page. Unset: `GET /token` answers 404 with a hint. An absolute http(s) URL.
    pub token_provider_url: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            public_keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            development: false,
            jwks_allow_http: false,
            jwks_ca_file: None,
            jwks_max_stale_secs: 86_400,
            jwks_min_refetch_secs: 30,
            algorithms: vec!["RS256".into(), "ES256".into()],
            issuer: None,
            audience: None,
            leeway_secs: 30,
            groups_claim: "groups".into(),
            token_provider_url: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Kafka topic of an eventgate topic = prefix + topic name.
    pub topic_prefix: String,
    /// Create missing Kafka topics at start-up (with `partitions` partitions). Off where ops own topics.
    pub create_topics: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    /// `security.protocol`: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` or `SASL_SSL` (SASL over TLS).
    pub security_protocol: KafkaSecurityProtocol,
    /// `sasl.mechanism`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with a SASL protocol.
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `sasl.username` / `sasl.password`; required with a SASL protocol.
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    /// `ssl.ca.location`: PEM file of the CA(s) the brokers' certificates must be signed by. Unset: the
    /// system's trust store (enough for managed services with public certificates).
    pub ssl_ca_location: Option<PathBuf>,
    /// `ssl.certificate.location` / `ssl.key.location`: the client's certificate and private key (PEM)
    /// for mutual TLS; both or neither. `ssl.key.password`: the key's passphrase, if it is encrypted.
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub ssl_key_password: Option<Secret>,
    /// Any other librdkafka property, passed to every Kafka client (see [`KafkaClientProperties`]).
    pub client: KafkaClientProperties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "eventgate.".into(),
            create_topics: true,
            partitions: 3,
            replication_factor: 1,
            security_protocol: KafkaSecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            client: KafkaClientProperties::default(),
        }
    }
}

/// librdkafka's `security.protocol`. Spelled as librdkafka spells it (`SASL_SSL`), any case.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum KafkaSecurityProtocol {
    #[serde(rename = "PLAINTEXT", alias = "plaintext")]
    Plaintext,
    #[serde(rename = "SSL", alias = "ssl")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT", alias = "sasl_plaintext")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL", alias = "sasl_ssl")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSecurityProtocol::Plaintext => "PLAINTEXT",
            KafkaSecurityProtocol::Ssl => "SSL",
            KafkaSecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            KafkaSecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::SaslPlaintext | KafkaSecurityProtocol::SaslSsl
        )
    }

    pub fn uses_tls(self) -> bool {
        matches!(
            self,
            KafkaSecurityProtocol::Ssl | KafkaSecurityProtocol::SaslSsl
        )
    }
}

/// librdkafka's `sasl.mechanism`s that eventgate's build supports. GSSAPI (Kerberos) would need Cyrus
/// SASL and OAUTHBEARER/OIDC libcurl, neither of which is linked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// librdkafka properties passed through to every Kafka client: the `[kafka.client]` table of the file
/// (real, dotted names: `"socket.keepalive.enable" = true`, or unquoted dotted keys, which TOML nests and
/// which are joined again with dots) and `EVENTGATE_KAFKA__CLIENT__<NAME>` variables, whose names cannot
/// hold dots: there every `_` stands for a `.` (`EVENTGATE_KAFKA__CLIENT__SOCKET_KEEPALIVE_ENABLE=true` →
/// `socket.keepalive.enable`), except in the one librdkafka property with an underscore, `log_level`.
/// When the file and a variable name the same property, the variable wins, as everywhere else. Values
/// may be strings, numbers or booleans; they are passed as text.
///
/// A property that a typed setting covers (`bootstrap.servers` → `kafka.brokers`, `sasl.password` →
/// `kafka.sasl_password`, …) or that eventgate sets itself for its guarantees (`acks`,
/// `enable.auto.commit`, …) is refused at start-up (`Config::validate`), naming what to set instead:
/// one place per setting, and no silent override either way.
///
/// `Debug` (logs, config dumps) prints the value of a property whose name contains `password`, `secret`,
/// `sasl.jaas`, `key.pem` or `oauthbearer.config` as a placeholder.
#[derive(Clone, Default, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct KafkaClientProperties(BTreeMap<String, String>);

/// The librdkafka properties with underscores in their names that can be set (the others are callbacks).
const UNDERSCORE_PROPERTIES: [&str; 1] = ["log_level"];

/// Parts of property names whose values are secrets.
const SECRET_PROPERTY_PARTS: [&str; 5] = [
    "password",
    "secret",
    "sasl.jaas",
    "key.pem",
    "oauthbearer.config",
];

impl KafkaClientProperties {
    pub fn new(
        entries: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> KafkaClientProperties {
        KafkaClientProperties(
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The keys and values as configured (environment names not yet turned into property names).
    pub fn raw(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The librdkafka property a configured key stands for (see the type's docs).
    pub fn property_name(key: &str) -> String {
        if key.contains('.') || UNDERSCORE_PROPERTIES.contains(&key) {
            key.to_owned()
        } else {
            key.replace('_', ".")
        }
    }

    /// Whether a property's value must not be logged.
    pub fn is_secret(property: &str) -> bool {
        let property = property.to_ascii_lowercase();
        SECRET_PROPERTY_PARTS
            .iter()
            .any(|part| property.contains(part))
    }

    /// The librdkafka properties and their values. An environment-style key (no dot) wins over the
    /// file's dotted key for the same property: the environment overrides the file.
    pub fn properties(&self) -> BTreeMap<String, &str> {
        let mut properties = BTreeMap::new();
        let (dotted, env_style): (Vec<_>, Vec<_>) =
            self.0.iter().partition(|(key, _)| key.contains('.'));
        for (key, value) in dotted.into_iter().chain(env_style) {
            properties.insert(Self::property_name(key), value.as_str());
        }
        properties
    }
}

impl fmt::Debug for KafkaClientProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, value)| {
                let shown = if Self::is_secret(&Self::property_name(key)) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (key, shown)
            }))
            .finish()
    }
}

impl<'de> Deserialize<'de> for KafkaClientProperties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Environment values arrive parsed (`true`, `30000`), and TOML nests unquoted dotted keys: both
        // become the text librdkafka takes, under the dotted name.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Scalar(ScalarText),
            Table(BTreeMap<String, Raw>),
        }
        fn flatten(prefix: &str, table: BTreeMap<String, Raw>, out: &mut BTreeMap<String, String>) {
            for (key, value) in table {
                let key = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                match value {
                    Raw::Scalar(ScalarText(text)) => {
                        out.insert(key, text);
                    }
                    Raw::Table(table) => flatten(&key, table, out),
                }
            }
        }
        let table = BTreeMap::<String, Raw>::deserialize(deserializer)?;
        let mut properties = BTreeMap::new();
        flatten("", table, &mut properties);
        Ok(KafkaClientProperties(properties))
    }
}

impl WriterConfig {
    /// The connection migrations are applied with.
    pub fn migration_url(&self) -> &str {
        match self.migration_database_url.expose() {
            "" => self.database_url.expose(),
            url => url,
        }
    }
}

impl KafkaConfig {
    pub fn kafka_topic(&self, topic: &str) -> String {
        format!("{}{}", self.topic_prefix, topic)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: String,
    /// Where `/metrics` and the health probes are served instead of `listen` (then the API port answers
    /// them 404): keep traffic figures, topic names and host names off the public port. Unset: on
    /// `listen`.
    pub admin_listen: Option<String>,
    /// A payload field whose value (a UUID) becomes the event id instead of a fresh UUIDv7; lets a
    /// producer retry without creating duplicates.
    pub id_field: String,
    /// Largest accepted request body, in bytes (413 beyond): bounds a batch.
    pub max_body_bytes: usize,
    /// Largest event, in bytes, as it is queued: its Kafka record's key and value (the envelope JSON:
    /// payload, id, topic, timestamp, producer). 413 beyond (in a batch: that event's outcome). The
    /// ingest-api refuses to start when this plus the record overhead is above a topic's
    /// `max.message.bytes` (`core::kafka::check_message_limits`).
    pub max_event_bytes: usize,
    /// Most JSON values (objects, arrays, strings, numbers, literals) in one event, counted on the raw
    /// bytes before parsing (413 beyond): bounds the memory a parsed event takes.
    pub max_event_nodes: usize,
    /// Most events in one batch request.
    pub max_batch_events: usize,
    /// How long a request waits for the broker's acknowledgement before answering 503.
    pub publish_timeout_ms: u64,
    pub workers: Option<usize>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: None,
            id_field: "event_id".into(),
            max_body_bytes: 1024 * 1024,
            // A quarter of Kafka's default message limit (1 MiB): room for the envelope and batching.
            max_event_bytes: 256 * 1024,
            max_event_nodes: 10_000,
            max_batch_events: 1000,
            publish_timeout_ms: 5000,
            workers: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// The writer's connection: a role that may only INSERT and SELECT events and dead letters (a member
    /// of `eventgate_write`), so a compromised writer cannot drop or alter anything.
    pub database_url: Secret,
    /// The schema owner's connection, used only to apply migrations (`run_migrations`, `eventgate
    /// migrate`). Empty: `database_url` (which then must be the owner).
    pub migration_database_url: Secret,
    pub pool_size: u32,
    pub group_id: String,
    /// Flush a batch when it holds this many events...
    pub batch_size: usize,
    /// ...or when its oldest event has waited this long...
    pub batch_timeout_ms: u64,
    /// ...or when its messages (their Kafka keys and values, as read) reach this many bytes (a larger
    /// message is a batch of its own). A writer holds at most three batches (one collected, two being
    /// written), and librdkafka prefetches at most this much, so its memory for messages is bounded by
    /// about four times this, whatever the producers send.
    pub max_batch_bytes: usize,
    /// Apply pending migrations at start-up.
    pub run_migrations: bool,
    /// Backoff between retries of a failed insert: starts here, doubles, capped at `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Listens for `/health` and `/metrics`.
    pub listen: String,
    /// Kafka `session.timeout.ms`: how long the group waits for a silent (killed) writer before its
    /// partitions go to the others.
    pub session_timeout_ms: u64,
    /// Kafka `max.poll.interval.ms`: a writer that has not polled for this long leaves the group and its
    /// partitions go to the others. The writer keeps polling while a write is retried (its partitions
    /// paused), so only a wedged writer reaches it. At least `session_timeout_ms` (librdkafka's rule).
    pub max_poll_interval_ms: u64,
    /// The server-side `lock_timeout` of the writer's statements: a lock held on `events` longer than
    /// this fails the write with a lock timeout (55P03), which is retried, never parked. 0: wait forever.
    pub lock_timeout_ms: u64,
    /// How long the commit log a live tail reads (`event_commits`, a row per batch and topic) is kept;
    /// the writers delete older rows. A tail cannot resume (`Last-Event-ID`) from a position older than
    /// this; the stats-api refuses such a position instead of skipping what was pruned.
    pub commit_log_retention_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            database_url: Secret::new("postgres://eventgate_writer@127.0.0.1:5432/eventgate"),
            migration_database_url: Secret::new("postgres://eventgate@127.0.0.1:5432/eventgate"),
            pool_size: 4,
            group_id: "eventgate-db-writer".into(),
            batch_size: 1000,
            batch_timeout_ms: 200,
            max_batch_bytes: 16 * 1024 * 1024,
            run_migrations: true,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            listen: "127.0.0.1:8082".into(),
            session_timeout_ms: 45_000,
            // librdkafka's default.
            max_poll_interval_ms: 300_000,
            lock_timeout_ms: 10_000,
            commit_log_retention_ms: 86_400_000,
        }
    }
}

/// The mail server failure emails go through (see [`AlertsConfig`] for who gets them and when).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `none` (plain text: a local relay only), `starttls` (upgrade required) or `tls` (TLS from the first
    /// byte, usually port 465).
    pub tls: SmtpTls,
    /// Unset: no authentication.
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    /// The `From` of failure emails, `Name <address>` or a bare address.
    pub from: String,
    /// Bound on one delivery attempt (connect, TLS, SMTP dialogue).
    pub timeout_ms: u64,
    /// A failed delivery is retried after `retry_initial_ms`, doubling, at most `max_attempts` times in all.
    pub retry_initial_ms: u64,
    pub max_attempts: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "localhost".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            from: "eventgate <eventgate@localhost>".into(),
            timeout_ms: 10_000,
            retry_initial_ms: 2_000,
            max_attempts: 6,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

/// When the writers email the maintainers (rules: `eventgate_db_writer::alerts::rules`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Who gets failure emails. Empty: failures are only logged.
    pub maintainers: Vec<String>,
    /// At most one email per kind of failure per window (plus a "recovered" email when it clears).
    pub window_ms: u64,
    /// A burst of dead letters is gathered this long before the first email, so it makes one email.
    pub group_wait_ms: u64,
    /// How many examples an email lists.
    pub max_examples: usize,
    /// The database must stay unreachable this long before an email (a restart is not worth one).
    pub database_after_ms: u64,
    /// The broker must stay unreachable this long before an email.
    pub broker_after_ms: u64,
    /// Writer crashes (starts that ended without a clean stop) within one window that make a crash loop.
    pub crash_loop_crashes: u32,
    /// How often a writer checks the database and the broker and records that it is alive.
    pub probe_interval_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            maintainers: Vec::new(),
            window_ms: 15 * 60 * 1000,
            group_wait_ms: 30_000,
            max_examples: 5,
            database_after_ms: 60_000,
            broker_after_ms: 60_000,
            crash_loop_crashes: 3,
            probe_interval_ms: 5_000,
        }
    }
}

/// How the event history is laid out and kept (`crate::db::partitions`): read by the writers, which
/// maintain it every `maintenance_interval_ms`, and by `eventgate maintain`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// How much time one partition holds: hours dividing a day (`1h`, `6h`) or whole days (`1d`, `7d`).
    /// A change applies to partitions created from then on.
    pub partition_span: crate::retention::Period,
    /// How many spans after the current one exist at any time, so an insert never waits for one.
    pub partitions_ahead: u32,
    /// How long events of a topic that names no `retention` are kept: `forever` or `<n>h|d|w`.
    pub retention: crate::retention::Retention,
    /// How long a dead letter is kept once replayed or discarded (unresolved ones stay until resolved).
    pub resolved_dead_letter_retention: crate::retention::Retention,
    /// How often each writer runs the maintenance (one at a time, under an advisory lock); 0: never,
    /// `eventgate maintain` is run by other means (cron, a Kubernetes CronJob).
    pub maintenance_interval_ms: u64,
    /// `lock_timeout` of the maintenance's DDL: a partition it cannot lock within this (a long query on
    /// it) is left for the next run, never waited for while writers queue behind.
    pub maintenance_lock_timeout_ms: u64,
    /// A producer's retry (same event id, topic and producer) is recognised as the same event when it
    /// reaches a writer within this time of the first one: the writer looks its key up in the
    /// partitions of this window before inserting. 0: within one partition only.
    pub idempotency_window_ms: u64,
    /// Auto-indexes (docs/OPERATIONS.md "Auto-indexes"): a payload field the stats-api saw analysts
    /// filter or sort by at least `auto_index_min_uses` times within this window gets an expression
    /// index like a declared one; an auto-index unused for a whole window is dropped.
    pub auto_index_window: crate::retention::Period,
    /// Uses within `auto_index_window` that earn a field its auto-index.
    pub auto_index_min_uses: u64,
    /// Auto-indexes per topic at most, the most used first; 0 turns them off (and drops those made).
    pub auto_index_max_per_topic: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            partition_span: crate::retention::Period::days(1),
            partitions_ahead: 3,
            retention: crate::retention::Retention::Forever,
            resolved_dead_letter_retention: crate::retention::Retention::For(
                crate::retention::Period::days(30),
            ),
            maintenance_interval_ms: 5 * 60 * 1000,
            maintenance_lock_timeout_ms: 5_000,
            idempotency_window_ms: 3600 * 1000,
            auto_index_window: crate::retention::Period::days(7),
            auto_index_min_uses: 100,
            auto_index_max_per_topic: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    pub listen: String,
    /// Where `/metrics` and the health probes are served instead of `listen` (see
    /// `ingest.admin_listen`).
    pub admin_listen: Option<String>,
    /// A read-only role (a read replica in production).
    pub database_url: Secret,
    pub pool_size: u32,
    /// Signs pagination cursors; a cursor signed with another secret is rejected.
    pub cursor_secret: Secret,
    /// Postgres `statement_timeout` of every statement the stats-api runs (queries, aggregates, each
    /// export batch, dead letters, the readiness probe); a statement that hits it answers 503.
    pub statement_timeout_ms: u64,
    /// How long a request waits for a free database connection before it is answered 503 with
    /// `Retry-After` (the pool is `pool_size` connections shared by every analyst).
    pub pool_wait_ms: u64,
    /// Statements one user (the token's `sub`) may have running at once on this instance; one more is
    /// answered 429 with `Retry-After`. An export holds one for as long as it streams.
    pub max_concurrent_per_user: u32,
    /// Byte budget of one answer: a query page, a dead-letter page, an aggregate's groups and each batch
    /// an export reads are filled until the next row would pass it (at least one row always comes, so
    /// an event larger than the budget is still served alone). A query page cut short keeps `has_more`
    /// and its cursor continues with the next row.
    pub max_page_bytes: usize,
    /// Most events one export writes; beyond, it ends with a truncation marker (docs/API.md).
    pub export_max_rows: u64,
    /// Longest time one export may stream; beyond, it ends with a truncation marker.
    pub export_max_ms: u64,
    /// An export whose client does not take the next piece of the body within this time is dropped:
    /// the connection is aborted and what was buffered for it is freed.
    pub export_send_timeout_ms: u64,
    /// A live tail (`GET /stats/{topic}/tail`) looks for newly committed events at least this often,
    /// also when no notification of the writers' commits arrives (a read replica does not relay
    /// `NOTIFY`): the tail's latency on a replica.
    pub tail_poll_ms: u64,
    /// A tail sends a comment (and its position) when it has sent nothing for this long, so proxies
    /// and clients can tell an idle stream from a dead one.
    pub tail_heartbeat_ms: u64,
    /// Live tails one user may hold open on this instance; one more is answered 429.
    pub tail_max_streams_per_user: u32,
    /// Live tails this instance serves at once, all users together; one more is answered 429.
    pub tail_max_streams: u32,
    /// A tail whose client does not take the next piece within this time is dropped with a last
    /// `event: error` (`slow_consumer`); what was buffered for it is freed.
    pub tail_send_timeout_ms: u64,
    /// How often the payload fields analysts filtered and sorted by are added to `field_usage` (what
    /// auto-indexes are chosen from); counted in memory meanwhile.
    pub field_usage_flush_ms: u64,
    /// How often the fields the maintenance auto-indexed are read again (queries on them then compare
    /// the indexed expression).
    pub auto_index_refresh_ms: u64,
    /// Where the field usage is written: a role that may INSERT/UPDATE `field_usage` on the primary.
    /// Unset: `database_url`, which on a read replica refuses it (logged once, counted).
    pub usage_database_url: Option<Secret>,
    pub workers: Option<usize>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            listen: "127.0.0.1:8081".into(),
            admin_listen: None,
            database_url: Secret::new("postgres://eventgate_stats@127.0.0.1:5432/eventgate"),
            pool_size: 8,
            cursor_secret: Secret::new(""),
            statement_timeout_ms: 5000,
            pool_wait_ms: 2000,
            max_concurrent_per_user: 4,
            max_page_bytes: 4 * 1024 * 1024,
            export_max_rows: 1_000_000,
            export_max_ms: 600_000,
            export_send_timeout_ms: 30_000,
            tail_poll_ms: 1_000,
            tail_heartbeat_ms: 15_000,
            tail_max_streams_per_user: 4,
            tail_max_streams: 256,
            tail_send_timeout_ms: 10_000,
            field_usage_flush_ms: 10_000,
            auto_index_refresh_ms: 10_000,
            usage_database_url: None,
            workers: None,
        }
    }
}

/// Bounds on what one request may cost, for both APIs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Deepest nesting of objects and arrays in one event or one query body (400 beyond). A batch's own
    /// array does not count.
    pub max_json_depth: usize,
    /// Largest `POST /stats/{topic}` body, in bytes (413 beyond).
    pub query_max_body_bytes: usize,
    /// A client must send the request head within this time, else 408 and the connection is closed.
    pub request_head_timeout_ms: u64,
    /// A client must send the whole body within this time (408 beyond): a slow sender cannot hold a
    /// worker.
    pub body_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this many seconds (0: no keep-alive).
    pub keep_alive_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_json_depth: 32,
            query_max_body_bytes: 64 * 1024,
            request_head_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            keep_alive_secs: 30,
        }
    }
}

/// Token buckets per user (the token's `sub`), per instance: a user may write `writes_per_second`
/// events per second on average and `writes_burst` at once, and send `queries_per_second` queries.
/// Beyond: 429 with `Retry-After`. 0 per second turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Events written (`POST /topics/{topic}`): a batch of 100 counts 100, a single event 1, so the
    /// budget follows what costs (every event is produced, acknowledged and stored as a row), not how a
    /// producer packs its events into requests. A batch that does not fit in what is left is refused
    /// whole. At least `ingest.max_batch_events` (a full batch must fit, and within a second).
    pub writes_per_second: u32,
    pub writes_burst: u32,
    /// Query requests (`/stats/...`).
    pub queries_per_second: u32,
    pub queries_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            // A limit against runaway producers, not a quota: one producer service sends hundreds to a
            // few thousand events a second at its peaks, and must never see a 429 at 2,000 single
            // events/s (e2e `producer_rate.rs`). 10,000 is 5× that and about a seventh of what one
            // writer stores on 2 cores (docs/PERFORMANCE.md), so one runaway user cannot take the
            // pipeline alone; the burst absorbs two seconds of a producer catching up after a pause.
            writes_per_second: 10_000,
            writes_burst: 20_000,
            queries_per_second: 20,
            queries_burst: 40,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `pretty` for people, `json` for log collectors.
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info,eventgate=debug`. `RUST_LOG` overrides it.
    pub log_filter: String,
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver (`http://collector:4318`); traces are
    /// sent to `<endpoint>/v1/traces`. Unset: no traces are recorded or exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans; unset, each service uses its own binary name.
    pub service_name: Option<String>,
    /// Share of new traces recorded (0.0–1.0). A trace started upstream keeps its caller's decision when
    /// the request's token verifies; without one, a sampled `traceparent` cannot force recording (see
    /// `http::trace_parent`).
    pub sampling_ratio: f64,
    /// How often librdkafka reports its statistics (consumer lag per partition), in ms; 0 turns it off.
    pub kafka_stats_interval_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            otlp_endpoint: None,
            service_name: None,
            sampling_ratio: 1.0,
            kafka_stats_interval_ms: 5000,
        }
    }
}

/// How a service stops on SIGTERM/SIGINT: readiness answers 503 at once, the listener stays open for
/// `drain_ms` (so load balancers stop sending), then in-flight work finishes within what is left of
/// `timeout_ms` (requests answered, producer flushed, the writer's last batch written and committed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// The whole stop must fit in this; keep it below the orchestrator's grace period.
    pub timeout_ms: u64,
    /// Time between readiness turning 503 and the listener closing.
    pub drain_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout_ms: 20_000,
            drain_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A string that must not appear in logs.
#[derive(Clone, Serialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A password of digits (or `true`) arrives as a number (or a boolean) and is a secret all the
        // same. (Leading zeros are lost that way: quote such a value.)
        ScalarText::deserialize(deserializer).map(|ScalarText(text)| Secret(text))
    }
}

/// Any scalar as text: environment values arrive parsed (`true`, `30000`) where a setting wants the
/// text they were written as.
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Unsigned(u64),
            Signed(i64),
            Float(f64),
            Bool(bool),
        }
        Ok(ScalarText(match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text,
            Raw::Unsigned(n) => n.to_string(),
            Raw::Signed(n) => n.to_string(),
            Raw::Float(n) => n.to_string(),
            Raw::Bool(b) => b.to_string(),
        }))
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// `EVENTGATE_CONFIG` names a file that is not there: starting on defaults instead would listen on
    /// 127.0.0.1 and talk to localhost, silently.
    #[error("{CONFIG_FILE_ENV} names {0}, which cannot be read: {1}")]
    MissingFile(PathBuf, std::io::Error),
    #[error("invalid configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Loads the configuration the services use: defaults, then the file named by `EVENTGATE_CONFIG`
    /// (which must exist when set; the default `config/eventgate.toml` is skipped when absent), then
    /// `EVENTGATE_*` variables; then [`Config::validate`].
    pub fn load() -> Result<Config, ConfigError> {
        let file = match std::env::var_os(CONFIG_FILE_ENV) {
            Some(named) => {
                let file = PathBuf::from(named);
                std::fs::metadata(&file).map_err(|e| ConfigError::MissingFile(file.clone(), e))?;
                file
            }
            None => PathBuf::from(DEFAULT_CONFIG_FILE),
        };
        let config: Config = Config::figment(&file)
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn figment(file: &Path) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(
                // EVENTGATE_CONFIG names the file; EVENTGATE_TEST_* belong to the test harness; the
                // `eventgate` CLI's variables (docs/CLI.md) may be set in the same shell.
                Env::prefixed("EVENTGATE_")
                    .filter(|key| {
                        let key = key.as_str().to_ascii_lowercase();
                        !NOT_SETTINGS.contains(&key.as_str()) && !key.starts_with("test_")
                    })
                    .split("__"),
            )
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests;
