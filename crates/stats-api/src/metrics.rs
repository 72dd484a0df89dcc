//! The stats-api's Prometheus collectors (all listed in `docs/OPERATIONS.md`).

use std::time::Duration;

use prometheus::{HistogramVec, IntCounterVec, Registry};

use eventgate_core::db::PgPool;
use eventgate_core::error::ApiError;
use eventgate_core::metrics::{
    counter_vec, histogram_vec, HttpMetrics, PoolCollector, LATENCY_BUCKETS,
};

pub struct StatsMetrics {
    pub registry: Registry,
    pub http: HttpMetrics,
    /// Time to plan and run a query, by topic and outcome: `ok`, or the error kind of the answer
    /// (`validation` for a refused query, `database` for an outage or a statement timeout, `internal`).
    pub query_duration: HistogramVec,
    /// Times a fair-use limit acted, by limit: `concurrency` (429), `pool_wait` (503), `page_bytes` (an
    /// answer cut by the byte budget), `export_rows`, `export_time` (an export ended with its truncation
    /// marker), `export_send_timeout` (a client that stopped reading was dropped).
    pub limit_hits: IntCounterVec,
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
            limit_hits: counter_vec(
                &registry,
                "eventgate_stats_limit_hits_total",
                "Times a fair-use limit acted, by limit (concurrency, pool_wait, page_bytes, export_rows, export_time, export_send_timeout)",
                &["limit"],
            ),
            registry,
        }
    }

    pub fn limit_hit(&self, limit: &str) {
        self.limit_hits.with_label_values(&[limit]).inc();
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
