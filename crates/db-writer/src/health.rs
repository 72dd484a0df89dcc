//! The writer's small HTTP side on `writer.listen`: `GET /health/live` (alive; `/health` is the same),
//! `GET /health/ready` (Postgres answers `SELECT 1` and the broker answers a metadata request; 503 when
//! one does not, or once a shutdown started) and `GET /metrics` for Prometheus.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use rdkafka::consumer::Consumer;

use eventgate_core::health::HealthReport;
use eventgate_core::http::{check_dependency, health_response, RequestTelemetry};
use eventgate_core::schema::PgPool;
use eventgate_core::shutdown::Lifecycle;

use crate::metrics::WriterMetrics;
use crate::WriterConsumer;

const SERVICE: &str = "db-writer";
/// A readiness probe answers within this even when a dependency hangs.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The writer's dependencies, as the readiness probe sees them ([`crate::Writer::readiness`]).
#[derive(Clone)]
pub struct Readiness {
    pool: PgPool,
    consumer: Arc<WriterConsumer>,
}

impl Readiness {
    pub(crate) fn new(pool: PgPool, consumer: Arc<WriterConsumer>) -> Self {
        Readiness { pool, consumer }
    }

    async fn postgres(&self) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        if crate::store::ping(&mut conn).await {
            Ok(())
        } else {
            Err("SELECT 1 failed".to_owned())
        }
    }

    async fn kafka(&self) -> Result<(), String> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || {
            consumer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

struct HealthState {
    readiness: Readiness,
    metrics: Arc<WriterMetrics>,
    lifecycle: Lifecycle,
}

/// Binds `listen` and returns the server (to be awaited or spawned) and its port. The server ignores
/// signals: the writer's `main` stops it after the last batch is committed.
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
    );
    health_response(&report)
}

async fn render_metrics(state: web::Data<HealthState>) -> HttpResponse {
    eventgate_core::http::metrics_response(&state.metrics.registry)
}
