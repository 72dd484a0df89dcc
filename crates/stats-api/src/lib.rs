//! eventgate-stats-api: the analysts' read-only view of the event history.
//!
//! `POST /stats/{topic}` (or the equivalent `GET` with query parameters) → authenticate (401) → topic
//! exists (404) → may read (403) → plan the query with the core query language (400 on any mistake) →
//! one parameterised SQL statement (`query_sql`) → a page of events with an opaque, signed cursor.
//! The same path, restrictions included, serves `POST /stats/{topic}/aggregate` (`aggregate`,
//! `aggregate_sql`: groups, time buckets, metrics) and `GET /stats/{topic}/export` (`export`: every
//! matching event streamed as NDJSON or CSV in keyset batches); `GET /` is the explorer page (`explorer`,
//! static assets from `assets/` embedded in the binary).
//! Invariant: this service never writes. It connects as a role that can only SELECT, with
//! `default_transaction_read_only` on (a read replica in production).

mod aggregate;
pub mod aggregate_sql;
pub mod dead_letters;
mod explorer;
pub mod export;
pub mod metrics;
pub mod query_sql;
mod routes;
pub mod store;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use anyhow::{bail, Context};

use eventgate_core::access::SharedAccess;
use eventgate_core::auth::JwtVerifier;
use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::{Config, LimitsConfig, ShutdownConfig};
use eventgate_core::query::{CursorKey, QueryLimits};
use eventgate_core::schema::PgPool;
use eventgate_core::shutdown::Lifecycle;

pub struct AppState {
    pub catalogue: Catalogue,
    /// Swapped whole on SIGHUP.
    pub access: Arc<SharedAccess>,
    pub verifier: Arc<JwtVerifier>,
    pub rate_limits: eventgate_core::ratelimit::RateLimits,
    /// Body size, nesting and timeouts of a request (the query's own bounds are `limits`).
    pub request_limits: LimitsConfig,
    pub pool: PgPool,
    pub cursor_key: CursorKey,
    pub limits: QueryLimits,
    pub metrics: metrics::StatsMetrics,
    /// Readiness answers 503 once a shutdown started.
    pub lifecycle: Lifecycle,
}

pub struct Application {
    port: u16,
    server: Server,
    lifecycle: Lifecycle,
    shutdown: ShutdownConfig,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let eventgate_core::reload::Gatekeeping {
            catalogue,
            access,
            verifier,
        } = eventgate_core::reload::load_gatekeeping(&config).await?;
        let secret = config.stats.cursor_secret.expose();
        if secret.len() < 16 {
            bail!("stats.cursor_secret must be set to at least 16 characters (EVENTGATE_STATS__CURSOR_SECRET)");
        }
        let url = eventgate_core::schema::with_statement_timeout(
            config.stats.database_url.expose(),
            config.stats.statement_timeout_ms,
        );
        let pool = eventgate_core::schema::build_pool(&url, config.stats.pool_size).await?;
        let metrics = metrics::StatsMetrics::new(&pool, config.stats.pool_size);
        let lifecycle = Lifecycle::new();
        let state = Arc::new(AppState {
            catalogue,
            access,
            verifier,
            rate_limits: eventgate_core::ratelimit::RateLimits::from_config(&config.ratelimit),
            request_limits: config.limits.clone(),
            pool,
            cursor_key: CursorKey::new(secret.as_bytes()),
            limits: QueryLimits::default(),
            metrics,
            lifecycle: lifecycle.clone(),
        });
        let listener = TcpListener::bind(&config.stats.listen)
            .with_context(|| format!("binding {}", config.stats.listen))?;
        let port = listener.local_addr()?.port();
        let http_metrics = state.metrics.http.clone();
        let server = eventgate_core::http::start_server(
            listener,
            state,
            http_metrics,
            routes::configure,
            &config,
            config.stats.workers,
        )?;
        tracing::info!(port, "stats-api listening");
        Ok(Application {
            port,
            server,
            lifecycle,
            shutdown: config.shutdown.clone(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
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
        eventgate_core::shutdown::serve_until(self.server, stop, &self.lifecycle, &self.shutdown)
            .await?;
        tracing::info!("stats-api stopped");
        Ok(())
    }
}
