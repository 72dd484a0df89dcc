//! eventgate-stats-api: the analysts' read-only view of the event history.
//!
//! `POST /stats/{topic}` (or the equivalent `GET` with query parameters) → authenticate (401) → topic
//! exists (404) → may read (403) → plan the query with the core query language (400 on any mistake) →
//! one parameterised SQL statement (`db::query_sql`) → a page of events with an opaque, signed cursor.
//! The gate (token, rate, topic, permission) is `eventgate_core::gate`, taken by every handler as the
//! `TopicReader` extractor; every statement lives in `db/`; store failures become HTTP answers in
//! `error.rs`. The same path, restrictions included, serves `POST /stats/{topic}/aggregate` (`aggregate`,
//! `db::aggregate_sql`: groups, time buckets, metrics) and `GET /stats/{topic}/export` (`export`: every
//! matching event streamed as NDJSON or CSV in keyset batches); `GET /` is the explorer page (`explorer`,
//! static assets from `assets/` embedded in the binary).
//! Invariant: this service never writes. It connects as a role that can only SELECT, with
//! `default_transaction_read_only` on (a read replica in production).

mod aggregate;
mod compat;
pub mod db;
pub mod dead_letters;
mod error;
mod explorer;
pub mod export;
mod export_csv;
pub mod fair_use;
pub mod field_usage;
pub mod freshness;
mod lookup;
pub mod metrics;
pub mod openapi;
pub mod raw_json;
mod routes;
mod status;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use eventgate_core::config::{Config, LimitsConfig, StatsConfig};
use eventgate_core::db::pool::PoolSettings;
use eventgate_core::db::PgPool;
use eventgate_core::http::{ApiServer, ApiServerSettings};
use eventgate_core::query::{CursorKey, QueryLimits};
use eventgate_core::shutdown::Lifecycle;

/// What the handlers need besides the gate (token, rate, topic, permission: `eventgate_core::gate`,
/// registered beside this state and passed by the `TopicReader` extractor).
pub struct AppState {
    /// Body size, nesting and timeouts of a request (the query's own bounds are `limits`).
    pub request_limits: LimitsConfig,
    pub pool: PgPool,
    pub cursor_key: CursorKey,
    pub limits: QueryLimits,
    pub metrics: metrics::StatsMetrics,
    /// Statements running per user (`stats.max_concurrent_per_user`).
    pub slots: fair_use::UserSlots,
    /// Byte budget of answers, export caps.
    pub answers: AnswerLimits,
    /// Readiness answers 503 once a shutdown started.
    pub lifecycle: Lifecycle,
    /// The topics' watermarks, cached (`Eventgate-Freshness`).
    pub freshness: freshness::FreshnessCache,
    /// Live tails: their wake-ups (one LISTEN connection) and stream permits.
    pub tail: Arc<tail::TailHub>,
    /// Auto-indexes: the fields queries use, counted; the fields auto-indexed, treated as indexed.
    pub field_usage: Arc<field_usage::FieldUsage>,
}

impl AppState {
    /// A slot of the user's concurrent statements, or 429 (counted).
    pub fn slot(&self, user: &str) -> Result<fair_use::Slot, eventgate_core::error::ApiError> {
        self.slots.acquire(user).inspect_err(|_| {
            self.metrics.limit_hit("concurrency");
        })
    }

    /// The HTTP answer to a store failure; a pool that stayed busy is counted.
    pub fn store_error(&self, error: db::StoreError) -> eventgate_core::error::ApiError {
        if matches!(error, db::StoreError::Busy(_)) {
            self.metrics.limit_hit("pool_wait");
        }
        error.into()
    }
}

/// What one answer may hold and how long an export may run (from `[stats]`).
#[derive(Debug, Clone)]
pub struct AnswerLimits {
    pub max_page_bytes: usize,
    pub export_max_rows: u64,
    pub export_max_time: Duration,
    pub export_send_timeout: Duration,
}

impl AnswerLimits {
    pub fn from_config(stats: &StatsConfig) -> AnswerLimits {
        AnswerLimits {
            max_page_bytes: stats.max_page_bytes,
            export_max_rows: stats.export_max_rows,
            export_max_time: Duration::from_millis(stats.export_max_ms),
            export_send_timeout: Duration::from_millis(stats.export_send_timeout_ms),
        }
    }
}

pub struct Application {
    server: ApiServer,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let gate = Arc::new(eventgate_core::reload::load_gatekeeping(&config).await?);
        let secret = config.stats.cursor_secret.expose();
        if secret.len() < 16 {
            bail!(
                "stats.cursor_secret must be set to at least 16 characters (EVENTGATE_STATS__CURSOR_SECRET)"
            );
        }
        let mut pool_settings = PoolSettings::new(config.stats.pool_size);
        // Set at connect time, so every statement on every connection has it (also the connection the
        // readiness probe opens when the pool is busy).
        pool_settings.statement_timeout_ms = Some(config.stats.statement_timeout_ms);
        pool_settings.connection_timeout = Duration::from_millis(config.stats.pool_wait_ms);
        let pool =
            eventgate_core::db::build_pool(config.stats.database_url.expose(), &pool_settings)?;
        let metrics = metrics::StatsMetrics::new(&pool, config.stats.pool_size);
        eventgate_core::metrics::JwksCollector::register(&metrics.registry, gate.verifier.clone());
        eventgate_core::metrics::TopicsCollector::register(
            &metrics.registry,
            gate.catalogue.clone(),
        );
        let lifecycle = Lifecycle::new();
        let tail = tail::TailHub::new(tail::TailSettings::from_config(&config), &metrics.registry);
        tail.listen(config.stats.database_url.expose().to_owned());
        let field_usage = Arc::new(field_usage::FieldUsage::new(&metrics.registry));
        // The usage's one write goes to the primary when the stats-api reads a replica.
        let usage_pool = match &config.stats.usage_database_url {
            Some(url) => {
                let mut settings = PoolSettings::new(1);
                settings.statement_timeout_ms = Some(config.stats.statement_timeout_ms);
                eventgate_core::db::build_pool(url.expose(), &settings)?
            }
            None => pool.clone(),
        };
        field_usage.spawn(
            pool.clone(),
            usage_pool,
            Duration::from_millis(config.stats.field_usage_flush_ms),
            Duration::from_millis(config.stats.auto_index_refresh_ms),
        );
        let state = Arc::new(AppState {
            request_limits: config.limits.clone(),
            pool,
            cursor_key: CursorKey::new(secret.as_bytes()),
            limits: QueryLimits::default(),
            metrics,
            slots: fair_use::UserSlots::new(config.stats.max_concurrent_per_user),
            answers: AnswerLimits::from_config(&config.stats),
            lifecycle: lifecycle.clone(),
            freshness: freshness::FreshnessCache::default(),
            tail,
            field_usage,
        });
        let http_metrics = state.metrics.http.clone();
        let server = ApiServer::start(
            ApiServerSettings {
                service: "stats-api",
                listen: config.stats.listen.clone(),
                admin_listen: config.stats.admin_listen.clone(),
                workers: config.stats.workers,
                routes: routes::configure,
                admin_routes: routes::configure_admin,
                openapi: openapi::document,
                admin_openapi: openapi::admin_document,
            },
            state,
            gate,
            http_metrics,
            lifecycle,
            &config,
        )?;
        Ok(Application { server })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Where `/metrics` and the probes answer (`stats.admin_listen`, or the API's port).
    pub fn admin_port(&self) -> u16 {
        self.server.admin_port()
    }

    /// Serves until SIGTERM or SIGINT, then stops gracefully (see [`Application::run_until`]).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(eventgate_core::shutdown::signal()).await
    }

    /// Serves until `stop` resolves, then: readiness 503, drain, in-flight queries answered, within
    /// `shutdown.timeout_ms`.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.server.serve_until(stop).await?;
        Ok(())
    }
}
