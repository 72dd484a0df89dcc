//! The writer's small HTTP side: `GET /health` (alive), `GET /health/ready` (the database answers) and
//! `GET /metrics` for Prometheus.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;

use eventgate_core::schema::PgPool;

use crate::metrics::WriterMetrics;

struct HealthState {
    pool: PgPool,
    metrics: Arc<WriterMetrics>,
}

/// Binds `listen` and returns the server (to be awaited or spawned) and its port.
pub fn serve(
    listen: &str,
    pool: PgPool,
    metrics: Arc<WriterMetrics>,
) -> std::io::Result<(Server, u16)> {
    let listener = TcpListener::bind(listen)?;
    let port = listener.local_addr()?.port();
    let state = web::Data::new(HealthState { pool, metrics });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/health", web::get().to(live))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/metrics", web::get().to(render_metrics))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, port))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<HealthState>) -> HttpResponse {
    let database = match state.pool.get().await {
        Ok(mut conn) => crate::store::ping(&mut conn).await,
        Err(_) => false,
    };
    let body = json!({
        "status": if database { "ok" } else { "degraded" },
        "dependencies": {"postgres": if database { "ok" } else { "unreachable" }},
    });
    if database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn render_metrics(state: web::Data<HealthState>) -> HttpResponse {
    eventgate_core::http::metrics_response(&state.metrics.registry)
}
