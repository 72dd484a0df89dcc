//! The stats-api's Prometheus collectors (all listed in `docs/OPERATIONS.md`).

use std::time::Duration;

use prometheus::{HistogramVec, Registry};

use eventgate_core::db::PgPool;
use eventgate_core::error::ApiError;
use eventgate_core::metrics::{histogram_vec, HttpMetrics, PoolCollector, LATENCY_BUCKETS};

pub struct StatsMetrics {
    pub registry: Registry,
    pub http: HttpMetrics,
    /// Time to plan and run a query, by topic and outcome: `ok`, or the error kind of the answer
    /// (`validation` for a refused query, `database` for an outage or a statement timeout, `internal`).
    pub query_duration: HistogramVec,
}

impl StatsMetrics {
    /// Registers the collectors, the read pool's usage among them.
    pub fn new(pool: &PgPool, pool_size: u32) -> StatsMetrics {
        let registry = Registry::new();
        eventgate_core::metrics::register_build_info(&registry, "stats-api");
        PoolCollector::register(&registry, "stats", pool.clone(), pool_size);
        StatsMetrics {
            http: HttpMetrics::new(&registry),
            query_duration: histogram_vec(
                &registry,
                "eventgate_stats_query_duration_seconds",
                "Time to plan and run a query, by topic and outcome (ok or the error kind)",
                &["topic", "outcome"],
                LATENCY_BUCKETS,
            ),
            registry,
        }
    }

    pub fn observe_query<T>(&self, topic: &str, result: &Result<T, ApiError>, elapsed: Duration) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => error.kind().as_str(),
        };
        self.query_duration
            .with_label_values(&[topic, outcome])
            .observe(elapsed.as_secs_f64());
    }
}
