//! [`Config::validate`]: every numeric setting within a range that works, and no placeholder left in a
//! secret, each failure naming its key. A `batch_size` of 0 would silently stop consumption, a
//! `pool_size` of 0 would panic in the pool, a `change-me` password would be tried against a real
//! database: all are start-up errors instead.

use std::ops::RangeInclusive;

use super::{AuthConfig, Config, ConfigError, KafkaClientProperties, KafkaConfig, Secret};

/// Words that mark a value as a template's placeholder, never a real secret.
const PLACEHOLDERS: [&str; 3] = ["change-me", "changeme", "replace-me"];

const DAY_MS: u64 = 24 * 3600 * 1000;
const MIB: usize = 1024 * 1024;

fn in_range<T>(key: &'static str, value: T, range: RangeInclusive<T>) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            reason: format!(
                "{value} is out of range: it must be from {} to {}",
                range.start(),
                range.end()
            ),
        })
    }
}

fn not_placeholder(key: &'static str, secret: &Secret) -> Result<(), ConfigError> {
    let value = secret.expose().to_ascii_lowercase();
    match PLACEHOLDERS.iter().find(|p| value.contains(*p)) {
        Some(placeholder) => Err(ConfigError::Invalid {
            key,
            reason: format!(
                "still holds the placeholder `{placeholder}` of a template: set the real value"
            ),
        }),
        None => Ok(()),
    }
}

impl Config {
    /// Checks what types alone cannot: ranges and placeholders (see the module docs). Run by
    /// [`Config::load`]; the first problem is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        in_range(
            "auth.jwks_refresh_secs",
            c.auth.jwks_refresh_secs,
            1..=86_400,
        )?;
        in_range("auth.leeway_secs", c.auth.leeway_secs, 0..=3_600)?;
        check_auth(&c.auth)?;
        in_range("kafka.partitions", c.kafka.partitions, 1..=10_000)?;
        in_range(
            "kafka.replication_factor",
            c.kafka.replication_factor,
            1..=100,
        )?;
        in_range(
            "ingest.max_body_bytes",
            c.ingest.max_body_bytes,
            1..=256 * MIB,
        )?;
        in_range(
            "ingest.max_event_bytes",
            c.ingest.max_event_bytes,
            1024..=256 * MIB,
        )?;
        in_range(
            "ingest.max_event_nodes",
            c.ingest.max_event_nodes,
            1..=10_000_000,
        )?;
        check_producer_message_size(c)?;
        in_range(
            "ingest.max_batch_events",
            c.ingest.max_batch_events,
            1..=100_000,
        )?;
        in_range(
            "ingest.publish_timeout_ms",
            c.ingest.publish_timeout_ms,
            1..=DAY_MS,
        )?;
        if let Some(workers) = c.ingest.workers {
            in_range("ingest.workers", workers, 1..=1024)?;
        }
        in_range("writer.pool_size", c.writer.pool_size, 1..=1_000)?;
        in_range("writer.batch_size", c.writer.batch_size, 1..=1_000_000)?;
        in_range(
            "writer.batch_timeout_ms",
            c.writer.batch_timeout_ms,
            1..=DAY_MS,
        )?;
        // librdkafka's prefetch limit (`queued.max.messages.kbytes`) follows it: 1 KiB to 2 GiB.
        in_range(
            "writer.max_batch_bytes",
            c.writer.max_batch_bytes,
            1024..=2_097_151 * 1024,
        )?;
        in_range(
            "writer.retry_initial_ms",
            c.writer.retry_initial_ms,
            1..=DAY_MS,
        )?;
        in_range(
            "writer.retry_max_ms",
            c.writer.retry_max_ms,
            c.writer.retry_initial_ms..=DAY_MS,
        )?;
        // Kafka brokers accept 6 s to 30 min by default (group.min/max.session.timeout.ms).
        in_range(
            "writer.session_timeout_ms",
            c.writer.session_timeout_ms,
            1_000..=3_600_000,
        )?;
        in_range(
            "writer.max_poll_interval_ms",
            c.writer.max_poll_interval_ms,
            c.writer.session_timeout_ms..=DAY_MS,
        )?;
        in_range("smtp.port", c.smtp.port, 1..=u16::MAX)?;
        in_range("smtp.timeout_ms", c.smtp.timeout_ms, 1..=DAY_MS)?;
        in_range("smtp.retry_initial_ms", c.smtp.retry_initial_ms, 1..=DAY_MS)?;
        in_range("smtp.max_attempts", c.smtp.max_attempts, 1..=100)?;
        in_range("alerts.window_ms", c.alerts.window_ms, 1..=30 * DAY_MS)?;
        in_range("alerts.group_wait_ms", c.alerts.group_wait_ms, 0..=DAY_MS)?;
        in_range("alerts.max_examples", c.alerts.max_examples, 1..=1_000)?;
        in_range(
            "alerts.database_after_ms",
            c.alerts.database_after_ms,
            0..=DAY_MS,
        )?;
        in_range(
            "alerts.broker_after_ms",
            c.alerts.broker_after_ms,
            0..=DAY_MS,
        )?;
        in_range(
            "alerts.crash_loop_crashes",
            c.alerts.crash_loop_crashes,
            1..=10_000,
        )?;
        in_range(
            "alerts.probe_interval_ms",
            c.alerts.probe_interval_ms,
            100..=DAY_MS,
        )?;
        in_range("stats.pool_size", c.stats.pool_size, 1..=1_000)?;
        in_range(
            "stats.statement_timeout_ms",
            c.stats.statement_timeout_ms,
            1..=DAY_MS,
        )?;
        in_range("stats.pool_wait_ms", c.stats.pool_wait_ms, 1..=600_000)?;
        in_range(
            "stats.max_concurrent_per_user",
            c.stats.max_concurrent_per_user,
            1..=10_000,
        )?;
        in_range(
            "stats.max_page_bytes",
            c.stats.max_page_bytes,
            4 * 1024..=256 * MIB,
        )?;
        in_range(
            "stats.export_max_rows",
            c.stats.export_max_rows,
            1..=u64::MAX,
        )?;
        in_range("stats.export_max_ms", c.stats.export_max_ms, 1..=DAY_MS)?;
        in_range(
            "stats.export_send_timeout_ms",
            c.stats.export_send_timeout_ms,
            1..=3_600_000,
        )?;
        in_range("stats.tail_poll_ms", c.stats.tail_poll_ms, 10..=600_000)?;
        in_range(
            "stats.tail_heartbeat_ms",
            c.stats.tail_heartbeat_ms,
            100..=3_600_000,
        )?;
        in_range(
            "stats.tail_max_streams_per_user",
            c.stats.tail_max_streams_per_user,
            1..=100_000,
        )?;
        in_range(
            "stats.tail_max_streams",
            c.stats.tail_max_streams,
            1..=100_000,
        )?;
        in_range(
            "stats.tail_send_timeout_ms",
            c.stats.tail_send_timeout_ms,
            1..=3_600_000,
        )?;
        in_range(
            "stats.field_usage_flush_ms",
            c.stats.field_usage_flush_ms,
            100..=3_600_000,
        )?;
        in_range(
            "stats.auto_index_refresh_ms",
            c.stats.auto_index_refresh_ms,
            100..=3_600_000,
        )?;
        in_range(
            "writer.commit_log_retention_ms",
            c.writer.commit_log_retention_ms,
            60_000..=365 * DAY_MS,
        )?;
        if let Some(workers) = c.stats.workers {
            in_range("stats.workers", workers, 1..=1024)?;
        }
        in_range("limits.max_json_depth", c.limits.max_json_depth, 1..=1_000)?;
        in_range(
            "limits.query_max_body_bytes",
            c.limits.query_max_body_bytes,
            1..=256 * MIB,
        )?;
        in_range(
            "limits.request_head_timeout_ms",
            c.limits.request_head_timeout_ms,
            1..=3_600_000,
        )?;
        in_range(
            "limits.body_timeout_ms",
            c.limits.body_timeout_ms,
            1..=3_600_000,
        )?;
        in_range(
            "limits.keep_alive_secs",
            c.limits.keep_alive_secs,
            0..=86_400,
        )?;
        // 0 per second turns a limit off (documented); a burst must let one request through.
        in_range(
            "ratelimit.writes_burst",
            c.ratelimit.writes_burst,
            1..=u32::MAX,
        )?;
        in_range(
            "ratelimit.queries_burst",
            c.ratelimit.queries_burst,
            1..=u32::MAX,
        )?;
        // Writes are counted in events: a full batch must fit in a user's budget, and within a second,
        // which is what the `Retry-After: 1` of every 429 promises (`core/src/ratelimit.rs`).
        let writes = c.ratelimit.writes_per_second as usize;
        if writes > 0 && writes < c.ingest.max_batch_events {
            return Err(invalid(
                "ratelimit.writes_per_second",
                format!(
                    "{writes} events per second is below ingest.max_batch_events ({}): a full batch \
                     could never be written; raise it or lower ingest.max_batch_events",
                    c.ingest.max_batch_events
                ),
            ));
        }
        in_range(
            "telemetry.sampling_ratio",
            c.telemetry.sampling_ratio,
            0.0..=1.0,
        )?;
        in_range(
            "telemetry.kafka_stats_interval_ms",
            c.telemetry.kafka_stats_interval_ms,
            0..=DAY_MS,
        )?;
        in_range("shutdown.timeout_ms", c.shutdown.timeout_ms, 1..=3_600_000)?;
        in_range(
            "shutdown.drain_ms",
            c.shutdown.drain_ms,
            0..=c.shutdown.timeout_ms,
        )?;

        not_placeholder("writer.database_url", &c.writer.database_url)?;
        not_placeholder(
            "writer.migration_database_url",
            &c.writer.migration_database_url,
        )?;
        not_placeholder("stats.database_url", &c.stats.database_url)?;
        not_placeholder("stats.cursor_secret", &c.stats.cursor_secret)?;
        if let Some(url) = &c.stats.usage_database_url {
            not_placeholder("stats.usage_database_url", url)?;
        }
        if let Some(password) = &c.smtp.password {
            not_placeholder("smtp.password", password)?;
        }
        check_kafka_security(&c.kafka)?;
        check_storage(&c.storage)?;
        Ok(())
    }
}

/// A span must tile days (so partitions start at midnight UTC whatever the span) and the idempotency
/// window must be a lookup across a few partitions, not the whole history.
fn check_storage(s: &super::StorageConfig) -> Result<(), ConfigError> {
    let span = s.partition_span.seconds();
    let day = 86_400;
    if span < 3_600
        || (span < day && !day.is_multiple_of(span))
        || (span > day && !span.is_multiple_of(day))
    {
        return Err(invalid(
            "storage.partition_span",
            format!(
                "{} neither divides a day into whole hours nor is whole days",
                s.partition_span
            ),
        ));
    }
    in_range("storage.partitions_ahead", s.partitions_ahead, 1..=366)?;
    in_range(
        "storage.maintenance_interval_ms",
        s.maintenance_interval_ms,
        0..=86_400_000,
    )?;
    in_range(
        "storage.maintenance_lock_timeout_ms",
        s.maintenance_lock_timeout_ms,
        1..=600_000,
    )?;
    in_range(
        "storage.idempotency_window_ms",
        s.idempotency_window_ms,
        0..=7 * 86_400_000,
    )?;
    // The window is how far back uses are summed and how long an unused auto-index is kept: under a
    // day, an index built CONCURRENTLY over a large topic might be dropped before it paid off.
    in_range(
        "storage.auto_index_window",
        s.auto_index_window.seconds(),
        86_400..=366 * 86_400,
    )?;
    in_range(
        "storage.auto_index_min_uses",
        s.auto_index_min_uses,
        1..=u64::MAX,
    )?;
    // Each index slows every insert into the topic's partitions a little.
    in_range(
        "storage.auto_index_max_per_topic",
        s.auto_index_max_per_topic,
        0..=16,
    )?;
    Ok(())
}

/// The JWKS settings: an https URL (http only when explicitly allowed), a readable CA file, keys that do
/// not expire between two regular refreshes.
fn check_auth(a: &AuthConfig) -> Result<(), ConfigError> {
    if let Some(url) = a.jwks_url.as_deref().filter(|url| !url.trim().is_empty()) {
        crate::auth::check_jwks_url(url, a.jwks_allow_http)
            .map_err(|reason| invalid("auth.jwks_url", reason))?;
    }
    readable_file("auth.jwks_ca_file", &a.jwks_ca_file)?;
    if let Some(url) = a.token_provider_url.as_deref() {
        // A redirect target that is not an absolute URL would send clients somewhere relative to us.
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !scheme_ok || !clean || url.len() > 2048 {
            return Err(invalid(
                "auth.token_provider_url",
                "must be an absolute http:// or https:// URL without spaces".to_owned(),
            ));
        }
    }
    in_range(
        "auth.jwks_max_stale_secs",
        a.jwks_max_stale_secs,
        a.jwks_refresh_secs.saturating_mul(2)..=30 * 86_400,
    )?;
    in_range(
        "auth.jwks_min_refetch_secs",
        a.jwks_min_refetch_secs,
        1..=86_400,
    )?;
    Ok(())
}

impl Config {
    /// What is allowed but unsafe outside development (`auth.development`, set by `make run`): each a
    /// sentence naming the setting and the risk, logged as a warning at start-up by the APIs.
    pub fn warnings(&self) -> Vec<String> {
        let a = &self.auth;
        if a.development {
            return Vec::new();
        }
        let unset = |value: &Option<String>| value.as_deref().is_none_or(|v| v.trim().is_empty());
        let mut warnings = Vec::new();
        match (unset(&a.issuer), unset(&a.audience)) {
            (false, false) => {}
            (issuer, audience) => {
                let missing = match (issuer, audience) {
                    (true, true) => "auth.issuer and auth.audience are",
                    (true, false) => "auth.issuer is",
                    _ => "auth.audience is",
                };
                warnings.push(format!(
                    "{missing} not set: tokens issued by your identity provider for any other \
                     application are accepted (set EVENTGATE_AUTH__ISSUER and EVENTGATE_AUTH__AUDIENCE \
                     to the values of your tokens; docs/SECURITY.md, \"Issuer and audience\")"
                ));
            }
        }
        if a.jwks_allow_http {
            warnings.push(
                "auth.jwks_allow_http is on: the JWKS may be fetched over plain http, where anyone on \
                 the path can replace the keys and have any token accepted (development only)"
                    .to_owned(),
            );
        }
        warnings
    }

    /// Logs [`Config::warnings`], one warning each.
    pub fn log_warnings(&self) {
        for warning in self.warnings() {
            tracing::warn!("{warning}");
        }
    }
}

/// librdkafka properties `kafka.client` may not set, with the setting to use instead or why eventgate
/// owns it (what the ingest-api's producer and the writer's consumer set: `ingest-api/src/publisher.rs`,
/// `db-writer/src/writer.rs`).
const RESERVED_CLIENT_PROPERTIES: [(&str, &str); 30] = [
    ("bootstrap.servers", "set kafka.brokers"),
    ("metadata.broker.list", "set kafka.brokers"),
    ("security.protocol", "set kafka.security_protocol"),
    ("sasl.mechanism", "set kafka.sasl_mechanism"),
    ("sasl.mechanisms", "set kafka.sasl_mechanism"),
    ("sasl.username", "set kafka.sasl_username"),
    ("sasl.password", "set kafka.sasl_password"),
    ("ssl.ca.location", "set kafka.ssl_ca_location"),
    (
        "ssl.certificate.location",
        "set kafka.ssl_certificate_location",
    ),
    ("ssl.key.location", "set kafka.ssl_key_location"),
    ("ssl.key.password", "set kafka.ssl_key_password"),
    ("group.id", "set writer.group_id"),
    ("message.timeout.ms", "set ingest.publish_timeout_ms"),
    ("delivery.timeout.ms", "set ingest.publish_timeout_ms"),
    ("session.timeout.ms", "set writer.session_timeout_ms"),
    ("max.poll.interval.ms", "set writer.max_poll_interval_ms"),
    (
        "statistics.interval.ms",
        "set telemetry.kafka_stats_interval_ms",
    ),
    (
        "heartbeat.interval.ms",
        "it follows writer.session_timeout_ms",
    ),
    (
        "acks",
        "a 202 needs the acknowledgement of all in-sync replicas",
    ),
    (
        "request.required.acks",
        "a 202 needs the acknowledgement of all in-sync replicas",
    ),
    (
        "enable.idempotence",
        "retries must not duplicate or reorder events",
    ),
    (
        "enable.auto.commit",
        "offsets are committed only after the rows",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only after the rows",
    ),
    (
        "auto.offset.reset",
        "a new consumer group must start at the beginning",
    ),
    (
        "partition.assignment.strategy",
        "the writer's rebalance handling is built for cooperative-sticky",
    ),
    (
        "fetch.wait.max.ms",
        "eventgate sets it (db-writer/src/writer.rs)",
    ),
    (
        "topic.metadata.refresh.interval.ms",
        "eventgate sets it (db-writer/src/writer.rs)",
    ),
    (
        "sasl.jaas.config",
        "a Java client setting: set kafka.sasl_username and kafka.sasl_password",
    ),
    (
        "client.dns.lookup",
        "a Java client setting that librdkafka does not know",
    ),
    (
        "ssl.truststore.location",
        "a Java client setting: set kafka.ssl_ca_location (PEM)",
    ),
];

/// The producer refuses, locally, a record larger than its `message.max.bytes`: when `kafka.client`
/// sets it, it must hold the largest event the ingest-api accepts plus the record's overhead (unset, the
/// ingest-api sets it so: `ingest-api/src/publisher.rs`).
fn check_producer_message_size(c: &Config) -> Result<(), ConfigError> {
    let properties = c.kafka.client.properties();
    let Some(value) = properties.get("message.max.bytes") else {
        return Ok(());
    };
    let needed = c.ingest.max_event_bytes + crate::ingest::RECORD_OVERHEAD_BYTES;
    match value.trim().parse::<usize>() {
        Ok(bytes) if bytes < needed => Err(invalid(
            "kafka.client",
            format!(
                "message.max.bytes {bytes} is below ingest.max_event_bytes {} plus {} bytes of record \
                 overhead ({needed}): the producer would refuse events the ingest-api accepts",
                c.ingest.max_event_bytes,
                crate::ingest::RECORD_OVERHEAD_BYTES
            ),
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(
            "kafka.client",
            format!("message.max.bytes {value:?} is not a number of bytes"),
        )),
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// A file named by a setting must be there and readable now, not at the first TLS handshake.
fn readable_file(key: &'static str, path: &Option<std::path::PathBuf>) -> Result<(), ConfigError> {
    let Some(path) = path else { return Ok(()) };
    std::fs::File::open(path)
        .map(drop)
        .map_err(|error| invalid(key, format!("cannot read {}: {error}", path.display())))
}

/// The Kafka security settings fit together: SASL settings only with a SASL protocol and then complete,
/// TLS files only with a TLS protocol and readable, no pass-through property that a typed setting or
/// eventgate owns, no placeholder secrets.
fn check_kafka_security(k: &KafkaConfig) -> Result<(), ConfigError> {
    let protocol = k.security_protocol.as_str();
    if k.security_protocol.uses_sasl() {
        if k.sasl_mechanism.is_none() {
            return Err(invalid(
                "kafka.sasl_mechanism",
                format!("required with security_protocol {protocol}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
            ));
        }
        if k.sasl_username.as_deref().unwrap_or("").is_empty() {
            return Err(invalid(
                "kafka.sasl_username",
                format!("required with security_protocol {protocol}"),
            ));
        }
        match &k.sasl_password {
            Some(password) if !password.expose().is_empty() => {
                not_placeholder("kafka.sasl_password", password)?
            }
            _ => {
                return Err(invalid(
                    "kafka.sasl_password",
                    format!("required with security_protocol {protocol}"),
                ))
            }
        }
    } else {
        let sasl_settings: [(&'static str, bool); 3] = [
            ("kafka.sasl_mechanism", k.sasl_mechanism.is_some()),
            ("kafka.sasl_username", k.sasl_username.is_some()),
            ("kafka.sasl_password", k.sasl_password.is_some()),
        ];
        if let Some((key, _)) = sasl_settings.iter().find(|(_, set)| *set) {
            return Err(invalid(
                key,
                format!(
                    "set, but security_protocol {protocol} does not use SASL: set \
                     kafka.security_protocol to SASL_SSL (or SASL_PLAINTEXT), or remove it"
                ),
            ));
        }
    }
    let tls_settings: [(&'static str, bool); 4] = [
        ("kafka.ssl_ca_location", k.ssl_ca_location.is_some()),
        (
            "kafka.ssl_certificate_location",
            k.ssl_certificate_location.is_some(),
        ),
        ("kafka.ssl_key_location", k.ssl_key_location.is_some()),
        ("kafka.ssl_key_password", k.ssl_key_password.is_some()),
    ];
    if !k.security_protocol.uses_tls() {
        if let Some((key, _)) = tls_settings.iter().find(|(_, set)| *set) {
            return Err(invalid(
                key,
                format!(
                    "set, but security_protocol {protocol} does not use TLS: set \
                     kafka.security_protocol to SSL or SASL_SSL, or remove it"
                ),
            ));
        }
    }
    match (&k.ssl_certificate_location, &k.ssl_key_location) {
        (Some(_), None) => return Err(invalid(
            "kafka.ssl_key_location",
            "required with kafka.ssl_certificate_location (the client certificate's private key)",
        )),
        (None, Some(_)) => {
            return Err(invalid(
                "kafka.ssl_certificate_location",
                "required with kafka.ssl_key_location (the certificate of the client key)",
            ))
        }
        _ => {}
    }
    if k.ssl_key_password.is_some() && k.ssl_key_location.is_none() {
        return Err(invalid(
            "kafka.ssl_key_password",
            "set, but there is no kafka.ssl_key_location it would unlock",
        ));
    }
    readable_file("kafka.ssl_ca_location", &k.ssl_ca_location)?;
    readable_file(
        "kafka.ssl_certificate_location",
        &k.ssl_certificate_location,
    )?;
    readable_file("kafka.ssl_key_location", &k.ssl_key_location)?;
    if let Some(password) = &k.ssl_key_password {
        not_placeholder("kafka.ssl_key_password", password)?;
    }
    for (key, value) in k.client.raw() {
        let property = KafkaClientProperties::property_name(key);
        if property.is_empty() || property.starts_with('.') || property.ends_with('.') {
            return Err(invalid(
                "kafka.client",
                format!("`{key}` is not a property name"),
            ));
        }
        if let Some((_, instead)) = RESERVED_CLIENT_PROPERTIES
            .iter()
            .find(|(reserved, _)| *reserved == property)
        {
            return Err(invalid(
                "kafka.client",
                format!("`{property}` cannot be set here: {instead}"),
            ));
        }
        if KafkaClientProperties::is_secret(&property) {
            let value = Secret::new(value.clone());
            not_placeholder("kafka.client", &value).map_err(|_| {
                invalid(
                    "kafka.client",
                    format!(
                        "`{property}` still holds a template's placeholder: set the real value"
                    ),
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaSecurityProtocol, SaslMechanism};

    fn invalid_key(config: &Config) -> Option<&'static str> {
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let mut config = Config::default();
        config.writer.batch_size = 0;
        assert_eq!(invalid_key(&config), Some("writer.batch_size"));

        let mut config = Config::default();
        config.writer.max_batch_bytes = 0;
        assert_eq!(invalid_key(&config), Some("writer.max_batch_bytes"));

        let mut config = Config::default();
        config.stats.pool_size = 0;
        assert_eq!(invalid_key(&config), Some("stats.pool_size"));

        let mut config = Config::default();
        config.stats.max_concurrent_per_user = 0;
        assert_eq!(invalid_key(&config), Some("stats.max_concurrent_per_user"));

        let mut config = Config::default();
        config.stats.max_page_bytes = 100;
        assert_eq!(invalid_key(&config), Some("stats.max_page_bytes"));

        let mut config = Config::default();
        config.writer.retry_max_ms = config.writer.retry_initial_ms - 1;
        assert_eq!(invalid_key(&config), Some("writer.retry_max_ms"));

        let mut config = Config::default();
        config.telemetry.sampling_ratio = 1.5;
        assert_eq!(invalid_key(&config), Some("telemetry.sampling_ratio"));
    }

    #[test]
    fn auto_index_keys_are_checked() {
        let mut config = Config::default();
        config.stats.field_usage_flush_ms = 0;
        assert_eq!(invalid_key(&config), Some("stats.field_usage_flush_ms"));

        let mut config = Config::default();
        config.stats.auto_index_refresh_ms = 10;
        assert_eq!(invalid_key(&config), Some("stats.auto_index_refresh_ms"));

        let mut config = Config::default();
        config.storage.auto_index_window = "2h".parse().expect("2h");
        assert_eq!(invalid_key(&config), Some("storage.auto_index_window"));

        let mut config = Config::default();
        config.storage.auto_index_min_uses = 0;
        assert_eq!(invalid_key(&config), Some("storage.auto_index_min_uses"));

        let mut config = Config::default();
        config.storage.auto_index_max_per_topic = 17;
        assert_eq!(
            invalid_key(&config),
            Some("storage.auto_index_max_per_topic")
        );

        // 0 turns auto-indexes off: valid.
        let mut config = Config::default();
        config.storage.auto_index_max_per_topic = 0;
        assert!(config.validate().is_ok());

        let mut config = Config::default();
        config.stats.usage_database_url = Some(Secret::new(
            "postgres://eventgate_usage:CHANGE-ME@db:5432/eventgate",
        ));
        assert_eq!(invalid_key(&config), Some("stats.usage_database_url"));
    }

    #[test]
    fn a_full_batch_fits_in_the_write_budget() {
        let mut config = Config::default();
        config.ratelimit.writes_per_second = (config.ingest.max_batch_events - 1) as u32;
        assert_eq!(invalid_key(&config), Some("ratelimit.writes_per_second"));
        assert!(invalid_reason(&config).contains("ingest.max_batch_events"));
        config.ingest.max_batch_events -= 1;
        assert!(config.validate().is_ok());
        // 0 turns the limit off, whatever the batch size.
        config.ratelimit.writes_per_second = 0;
        assert!(config.validate().is_ok());
    }

    fn invalid_reason(config: &Config) -> String {
        match config.validate() {
            Err(error) => error.to_string(),
            Ok(()) => panic!("expected the configuration to be refused"),
        }
    }

    #[test]
    fn kafka_sasl_settings_need_a_sasl_protocol_and_each_other() {
        let mut config = Config::default();
        config.kafka.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        assert_eq!(invalid_key(&config), Some("kafka.sasl_mechanism"));
        assert!(invalid_reason(&config).contains("PLAINTEXT does not use SASL"));

        config.kafka.security_protocol = KafkaSecurityProtocol::SaslSsl;
        assert_eq!(invalid_key(&config), Some("kafka.sasl_username"));
        config.kafka.sasl_username = Some("eventgate".into());
        assert_eq!(invalid_key(&config), Some("kafka.sasl_password"));
        config.kafka.sasl_password = Some(Secret::new("change-me"));
        assert_eq!(invalid_key(&config), Some("kafka.sasl_password"));
        config.kafka.sasl_password = Some(Secret::new("s3cret"));
        assert!(config.validate().is_ok());

        config.kafka.sasl_mechanism = None;
        assert_eq!(invalid_key(&config), Some("kafka.sasl_mechanism"));
    }

    #[test]
    fn kafka_tls_files_must_exist_and_fit_the_protocol() {
        let mut config = Config::default();
        config.kafka.ssl_ca_location = Some("/nonexistent/ca.pem".into());
        assert_eq!(invalid_key(&config), Some("kafka.ssl_ca_location"));
        assert!(invalid_reason(&config).contains("does not use TLS"));

        config.kafka.security_protocol = KafkaSecurityProtocol::Ssl;
        assert_eq!(invalid_key(&config), Some("kafka.ssl_ca_location"));
        assert!(invalid_reason(&config).contains("/nonexistent/ca.pem"));

        let existing = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        config.kafka.ssl_ca_location = Some(existing.clone());
        assert!(config.validate().is_ok());
        config.kafka.ssl_certificate_location = Some(existing.clone());
        assert_eq!(invalid_key(&config), Some("kafka.ssl_key_location"));
        config.kafka.ssl_key_location = Some(existing);
        config.kafka.ssl_key_password = Some(Secret::new("key-pass"));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn kafka_client_properties_cannot_shadow_typed_or_owned_settings() {
        let mut config = Config::default();
        config.kafka.client = KafkaClientProperties::new([("socket_keepalive_enable", "true")]);
        assert!(config.validate().is_ok());

        config.kafka.client = KafkaClientProperties::new([("sasl.password", "x")]);
        assert_eq!(invalid_key(&config), Some("kafka.client"));
        assert!(invalid_reason(&config).contains("kafka.sasl_password"));

        // The environment's spelling of the same property.
        config.kafka.client = KafkaClientProperties::new([("enable_auto_commit", "true")]);
        assert!(invalid_reason(&config).contains("`enable.auto.commit`"));

        config.kafka.client = KafkaClientProperties::new([("ssl.keystore.password", "CHANGE-ME")]);
        assert_eq!(invalid_key(&config), Some("kafka.client"));
    }

    #[test]
    fn event_limits_are_in_range_and_fit_the_producer() {
        let mut config = Config::default();
        config.ingest.max_event_bytes = 100;
        assert_eq!(invalid_key(&config), Some("ingest.max_event_bytes"));
        config.ingest.max_event_bytes = 256 * 1024;
        config.ingest.max_event_nodes = 0;
        assert_eq!(invalid_key(&config), Some("ingest.max_event_nodes"));
        config.ingest.max_event_nodes = 10_000;
        config.kafka.client = KafkaClientProperties::new([("message.max.bytes", "200000")]);
        assert_eq!(invalid_key(&config), Some("kafka.client"));
        let reason = invalid_reason(&config);
        assert!(
            reason.contains("200000") && reason.contains("262144"),
            "{reason}"
        );
        config.kafka.client = KafkaClientProperties::new([("message_max_bytes", "2000000")]);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn the_token_provider_is_an_absolute_url() {
        let mut config = Config::default();
        for bad in [
            "/login",
            "login.example.com",
            "https://idp/a b",
            "javascript:alert(1)",
        ] {
            config.auth.token_provider_url = Some(bad.into());
            assert_eq!(
                invalid_key(&config),
                Some("auth.token_provider_url"),
                "{bad}"
            );
        }
        config.auth.token_provider_url = Some("https://login.example.com/token".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn jwks_settings_are_checked_at_start_up() {
        let mut config = Config::default();
        config.auth.jwks_url = Some("http://idp.internal/jwks.json".into());
        assert_eq!(invalid_key(&config), Some("auth.jwks_url"));
        let reason = invalid_reason(&config);
        assert!(reason.contains("plain http"), "{reason}");
        assert!(reason.contains("auth.jwks_allow_http"), "{reason}");
        config.auth.jwks_allow_http = true;
        assert!(config.validate().is_ok());
        config.auth.jwks_url = Some("https://idp.example.com/jwks.json".into());
        config.auth.jwks_allow_http = false;
        assert!(config.validate().is_ok());

        config.auth.jwks_ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(invalid_key(&config), Some("auth.jwks_ca_file"));
        config.auth.jwks_ca_file = None;

        // Keys must outlive the refresh interval, with room for a failed refresh.
        config.auth.jwks_max_stale_secs = config.auth.jwks_refresh_secs;
        assert_eq!(invalid_key(&config), Some("auth.jwks_max_stale_secs"));
        config.auth.jwks_max_stale_secs = 2 * config.auth.jwks_refresh_secs;
        assert!(config.validate().is_ok());
        config.auth.jwks_min_refetch_secs = 0;
        assert_eq!(invalid_key(&config), Some("auth.jwks_min_refetch_secs"));
    }

    #[test]
    fn missing_issuer_or_audience_is_a_warning_outside_development() {
        let mut config = Config::default();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("auth.issuer and auth.audience are not set"),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains(
                "tokens issued by your identity provider for any other application are accepted"
            ),
            "{warnings:?}"
        );
        config.auth.issuer = Some("https://login.example.com".into());
        assert!(config.warnings()[0].starts_with("auth.audience is not set"));
        config.auth.audience = Some("eventgate".into());
        assert!(config.warnings().is_empty());
        config.auth.issuer = Some(" ".into());
        assert!(config.warnings()[0].starts_with("auth.issuer is not set"));

        config.auth.jwks_allow_http = true;
        assert_eq!(config.warnings().len(), 2);
        assert!(config.warnings()[1].contains("auth.jwks_allow_http"));

        config.auth.development = true;
        assert!(config.warnings().is_empty(), "make run is not warned");
    }

    #[test]
    fn warnings_are_logged() {
        use tracing_subscriber::layer::SubscriberExt;
        let lines = crate::json_log::tests::Lines::default();
        let writer = lines.clone();
        let telemetry = crate::config::TelemetryConfig {
            log_format: crate::config::LogFormat::Json,
            ..Default::default()
        };
        let subscriber = tracing_subscriber::registry()
            .with(crate::telemetry::log_layer(&telemetry, move || {
                writer.clone()
            }));
        tracing::subscriber::with_default(subscriber, || Config::default().log_warnings());
        let logged = lines.parsed();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(logged[0]["level"], "WARN");
        assert!(
            logged[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("for any other application are accepted")),
            "{logged:?}"
        );
    }

    #[test]
    fn placeholders_are_refused_and_named() {
        let mut config = Config::default();
        config.stats.database_url =
            Secret::new("postgres://eventgate_stats:CHANGE-ME@db:5432/eventgate");
        let error = config.validate().expect_err("placeholder");
        assert!(error.to_string().contains("stats.database_url"), "{error}");
        assert!(
            !error.to_string().contains("postgres://"),
            "the secret itself is never in the error: {error}"
        );
    }
}
