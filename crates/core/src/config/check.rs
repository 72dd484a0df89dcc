//! [`Config::validate`]: every numeric setting within a range that works, and no placeholder left in a
//! secret, each failure naming its key. A `batch_size` of 0 would silently stop consumption, a
//! `pool_size` of 0 would panic in the pool, a `change-me` password would be tried against a real
//! database: all are start-up errors instead.

use std::ops::RangeInclusive;

use super::{Config, ConfigError, Secret};

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
        if let Some(password) = &c.smtp.password {
            not_placeholder("smtp.password", password)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        config.stats.pool_size = 0;
        assert_eq!(invalid_key(&config), Some("stats.pool_size"));

        let mut config = Config::default();
        config.writer.retry_max_ms = config.writer.retry_initial_ms - 1;
        assert_eq!(invalid_key(&config), Some("writer.retry_max_ms"));

        let mut config = Config::default();
        config.telemetry.sampling_ratio = 1.5;
        assert_eq!(invalid_key(&config), Some("telemetry.sampling_ratio"));
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
