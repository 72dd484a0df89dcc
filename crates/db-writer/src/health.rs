//! The writer's small HTTP side on `writer.listen`: `GET /health/live` (alive; `/health` is the same),
//! `GET /health/ready` (Postgres answers `SELECT 1` and the broker answers a metadata request; 503 when
//! one does not, or once a shutdown started) and `GET /metrics` for Prometheus.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};

use eventgate_core::db::PgPool;
use eventgate_core::health::HealthReport;
use eventgate_core::http::{check_dependency, health_response, RequestTelemetry};
use eventgate_core::shutdown::Lifecycle;

use crate::metrics::WriterMetrics;
use crate::writer::WriterConsumer;

const SERVICE: &str = "db-writer";
/// A readiness probe answers within this even when a dependency hangs.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the broker probe waits for metadata, within [`READY_TIMEOUT`].
const BROKER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The writer's dependencies, as the readiness probe sees them ([`crate::Writer::readiness`]).
#[derive(Clone)]
pub struct Readiness {
    pool: PgPool,
    consumer: Arc<WriterConsumer>,
    topics: Arc<crate::reload::TopicReloader>,
}

impl Readiness {
    pub(crate) fn new(
        pool: PgPool,
        consumer: Arc<WriterConsumer>,
        topics: Arc<crate::reload::TopicReloader>,
    ) -> Self {
        Readiness {
            pool,
            consumer,
            topics,
        }
    }

    async fn postgres(&self) -> Result<(), String> {
        eventgate_core::db::ping(&self.pool)
            .await
            .map_err(|error| error.to_string())
    }

    async fn kafka(&self) -> Result<(), String> {
        eventgate_core::kafka::broker_reachable(self.consumer.clone(), BROKER_PROBE_TIMEOUT).await
    }
}

struct HealthState {
    readiness: Readiness,
    metrics: Arc<WriterMetrics>,
    lifecycle: Lifecycle,
}

/// Binds `listen` and returns the server (to be awaited or spawned) and its port. The server ignores
/// signals: [`crate::Application`] stops it after the last batch is committed.
pub fn serve(
    listen: &str,
    readiness: Readiness,
    metrics: Arc<WriterMetrics>,
    lifecycle: Lifecycle,
) -> std::io::Result<(Server, u16)> {
    let listener = TcpListener::bind(listen)?;
    let port = listener.local_addr()?.port();
    let telemetry = RequestTelemetry::new(metrics.http.clone());
    let state = web::Data::new(HealthState {
        readiness,
        metrics,
        lifecycle,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/health", web::get().to(live))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/metrics", web::get().to(render_metrics))
            .default_service(web::to(eventgate_core::http::not_found))
            .wrap(telemetry.clone())
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((server, port))
}

async fn live() -> HttpResponse {
    eventgate_core::http::liveness_response(SERVICE)
}

async fn ready(state: web::Data<HealthState>) -> HttpResponse {
    let (postgres, kafka) = tokio::join!(
        check_dependency(READY_TIMEOUT, state.readiness.postgres()),
        check_dependency(READY_TIMEOUT, state.readiness.kafka()),
    );
    let report = HealthReport::ready(
        SERVICE,
        state.lifecycle.is_stopping(),
        [
            ("postgres".to_owned(), postgres),
            ("kafka".to_owned(), kafka),
        ],
    )
    .with_warnings(state.readiness.topics.warning());
    health_response(&report)
}

async fn render_metrics(state: web::Data<HealthState>) -> HttpResponse {
    eventgate_core::http::metrics_response(&state.metrics.registry)
}
