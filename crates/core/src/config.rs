//! Typed configuration, layered: built-in defaults < `config/eventgate.toml` (or the file named by
//! `EVENTGATE_CONFIG`) < `EVENTGATE_*` environment variables, nested keys separated by `__`
//! (`EVENTGATE_KAFKA__BROKERS=host:9092`). Every key is documented in `.env.example`.
//!
//! Secrets (database URLs with passwords, the cursor secret, SMTP credentials) are never logged: the
//! `Debug` of [`Secret`] prints a placeholder.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The environment variable that names the configuration file.
pub const CONFIG_FILE_ENV: &str = "EVENTGATE_CONFIG";
pub const DEFAULT_CONFIG_FILE: &str = "config/eventgate.toml";

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
    /// Several keys allow rotation: a token verified by any of them is accepted.
    pub public_keys: Vec<PathBuf>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must contain it.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            public_keys: Vec::new(),
            issuer: None,
            audience: None,
            leeway_secs: 30,
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
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "eventgate.".into(),
            create_topics: true,
            partitions: 3,
            replication_factor: 1,
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
    /// A payload field whose value (a UUID) becomes the event id instead of a fresh UUIDv7; lets a
    /// producer retry without creating duplicates.
    pub id_field: String,
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
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
            id_field: "event_id".into(),
            max_body_bytes: 1024 * 1024,
            max_batch_events: 1000,
            publish_timeout_ms: 5000,
            workers: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WriterConfig {
    /// The writer's connection: it owns the schema and applies migrations.
    pub database_url: Secret,
    pub pool_size: u32,
    pub group_id: String,
    /// Flush a batch when it holds this many events...
    pub batch_size: usize,
    /// ...or when its oldest event has waited this long.
    pub batch_timeout_ms: u64,
    /// Apply pending migrations at start-up.
    pub run_migrations: bool,
    /// Backoff between retries of a failed insert: starts here, doubles, capped at `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Listens for `/health` and `/metrics`.
    pub listen: String,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            database_url: Secret::new("postgres://eventgate@127.0.0.1:5432/eventgate"),
            pool_size: 4,
            group_id: "eventgate-db-writer".into(),
            batch_size: 1000,
            batch_timeout_ms: 200,
            run_migrations: true,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            listen: "127.0.0.1:8082".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    pub listen: String,
    /// A read-only role (a read replica in production).
    pub database_url: Secret,
    pub pool_size: u32,
    /// Signs pagination cursors; a cursor signed with another secret is rejected.
    pub cursor_secret: Secret,
    /// Postgres `statement_timeout` for queries; a query that hits it answers 503.
    pub statement_timeout_ms: u64,
    pub workers: Option<usize>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            listen: "127.0.0.1:8081".into(),
            database_url: Secret::new("postgres://eventgate_stats@127.0.0.1:5432/eventgate"),
            pool_size: 8,
            cursor_secret: Secret::new(""),
            statement_timeout_ms: 5000,
            workers: None,
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
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
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
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(String);

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
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// Loads the configuration the services use: defaults, then the file named by `EVENTGATE_CONFIG`
    /// (default `config/eventgate.toml`, skipped when absent), then `EVENTGATE_*` variables.
    pub fn load() -> Result<Config, ConfigError> {
        let file = std::env::var_os(CONFIG_FILE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        Config::figment(&file)
            .extract()
            .map_err(|e| ConfigError(Box::new(e)))
    }

    pub fn figment(file: &Path) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(
                // EVENTGATE_CONFIG names the file; EVENTGATE_TEST_* belong to the test harness.
                Env::prefixed("EVENTGATE_")
                    .filter(|key| key != "config" && !key.as_str().starts_with("test_"))
                    .split("__"),
            )
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "eg.toml",
                "[kafka]\nbrokers = \"file:9092\"\npartitions = 6\n",
            )?;
            jail.set_env("EVENTGATE_KAFKA__BROKERS", "env:9092");
            jail.set_env("EVENTGATE_AUTH__PUBLIC_KEYS", "[a.pem, b.pem]");
            let config: Config = Config::figment(Path::new("eg.toml")).extract()?;
            assert_eq!(config.kafka.brokers, "env:9092");
            assert_eq!(config.kafka.partitions, 6);
            assert_eq!(config.kafka.topic_prefix, "eventgate.");
            assert_eq!(
                config.auth.public_keys,
                vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EVENTGATE_KAFKA__BROKRES", "typo:9092");
            let result: Result<Config, _> = Config::figment(Path::new("missing.toml")).extract();
            assert!(result.is_err());
            Ok(())
        });
    }

    #[test]
    fn secrets_are_not_printed() {
        let config = Config::default();
        let printed = format!("{config:?}");
        assert!(!printed.contains("postgres://"), "{printed}");
    }

    #[test]
    fn every_key_is_documented_in_env_example() {
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example"),
        )
        .unwrap();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let mut missing = Vec::new();
        for (section, keys) in defaults.as_object().unwrap() {
            for key in keys.as_object().unwrap().keys() {
                let var = format!(
                    "EVENTGATE_{}__{}=",
                    section.to_uppercase(),
                    key.to_uppercase()
                );
                if !example.contains(&var) {
                    missing.push(var);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "undocumented in .env.example: {missing:?}"
        );
    }
}
