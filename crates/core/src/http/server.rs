//! The server set-up both APIs share: [`ApiServer`] binds the listener, starts actix-web with the
//! common settings, the request telemetry, the 404 envelope and the gate's data, and stops gracefully.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::Service;

use super::openapi::OpenApiJson;
use super::{not_found, RequestTelemetry};
use crate::config::{Config, ShutdownConfig};
use crate::gate::Gatekeeping;
use crate::metrics::HttpMetrics;
use crate::shutdown::{Deadline, Lifecycle};

/// The server settings both APIs share: shutdown driven by the application (not actix's own signal
/// handlers), the grace period for requests in flight, the slow-client limits, the worker count.
pub fn with_common_settings<F, I, S, B>(
    server: actix_web::HttpServer<F, I, S, B>,
    config: &Config,
    workers: Option<usize>,
) -> actix_web::HttpServer<F, I, S, B>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_web::dev::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig>
        + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_web::dev::Response<B>> + 'static,
    <S::Service as Service<actix_http::Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let server = server
        .disable_signals()
        .shutdown_timeout(crate::shutdown::request_grace_secs(&config.shutdown))
        // A slow client cannot hold a connection: the head must arrive in time, idle ones are closed.
        .client_request_timeout(Duration::from_millis(config.limits.request_head_timeout_ms))
        .keep_alive(
            (config.limits.keep_alive_secs > 0)
                .then(|| Duration::from_secs(config.limits.keep_alive_secs)),
        );
    match workers {
        Some(workers) => server.workers(workers),
        None => server,
    }
}

/// Starts an API on `listener`: the routes `configure` adds, with `state` as app data, in every worker;
/// unknown routes answer 404 in the envelope; every response goes through [`RequestTelemetry`] (the
/// outermost layer); the settings are [`with_common_settings`]. The caller drives and stops the server.
/// `docs`: the OpenAPI document, served with its page beside the routes (never on the admin listener).
// Its two callers are in this file, each argument is one thing the server needs: a settings struct
// would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn start_server<T: Send + Sync + 'static>(
    listener: std::net::TcpListener,
    state: Arc<T>,
    gate: Arc<Gatekeeping>,
    http_metrics: HttpMetrics,
    routes: Vec<fn(&mut actix_web::web::ServiceConfig)>,
    docs: Option<Arc<OpenApiJson>>,
    config: &Config,
    workers: Option<usize>,
) -> std::io::Result<actix_web::dev::Server> {
    use actix_web::{web, App, HttpServer};
    let data = web::Data::from(state);
    let gate = web::Data::from(gate);
    let token_provider =
        web::Data::new(super::TokenProvider(config.auth.token_provider_url.clone()));
    let telemetry = RequestTelemetry::new(http_metrics);
    let docs = docs.map(web::Data::from);
    let server = HttpServer::new(move || {
        let app = App::new();
        // The document and its page, beside the API (never on the admin listener).
        let app = match &docs {
            Some(docs) => app
                .app_data(docs.clone())
                .configure(super::openapi::configure_docs),
            None => app,
        };
        routes
            .iter()
            .fold(
                app.app_data(data.clone())
                    .app_data(gate.clone())
                    .app_data(token_provider.clone()),
                |app, configure| app.configure(configure),
            )
            .default_service(web::to(not_found))
            // Registered last, so it is the outermost layer: every response gets its request id, log
            // line and count, whatever an inner layer answered.
            .wrap(telemetry.clone())
    });
    Ok(with_common_settings(server, config, workers)
        .listen(listener)?
        .run())
}

/// What differs between the two APIs' servers.
pub struct ApiServerSettings {
    /// For logs: `ingest-api`, `stats-api`.
    pub service: &'static str,
    pub listen: String,
    /// Where [`ApiServerSettings::admin_routes`] are served; `None`: on `listen` with the API.
    pub admin_listen: Option<String>,
    pub workers: Option<usize>,
    /// The API.
    pub routes: fn(&mut actix_web::web::ServiceConfig),
    /// Metrics and health probes: for Prometheus and the orchestrator, not for clients.
    pub admin_routes: fn(&mut actix_web::web::ServiceConfig),
    /// The OpenAPI document of `routes` (generated from the handlers' annotations), served at
    /// `/openapi.json` with the page `/api` ([`super::openapi`]).
    pub openapi: fn() -> utoipa::openapi::OpenApi,
    /// The document of `admin_routes`: part of the API's document when they are served beside it.
    pub admin_openapi: fn() -> utoipa::openapi::OpenApi,
}

/// A started API: the listener bound, actix-web serving, stopped by [`ApiServer::serve_until`].
pub struct ApiServer {
    service: &'static str,
    port: u16,
    server: actix_web::dev::Server,
    admin: Option<AdminServer>,
    lifecycle: Lifecycle,
    shutdown: ShutdownConfig,
}

/// The admin listener, when it has an address of its own.
struct AdminServer {
    port: u16,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn bind(address: &str) -> std::io::Result<(std::net::TcpListener, u16)> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding {address}: {e}")))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

impl ApiServer {
    /// Binds `settings.listen` and starts serving `settings.routes` with `state` and `gate` as app data.
    /// `lifecycle` is the one the state's readiness probe reads.
    pub fn start<T: Send + Sync + 'static>(
        settings: ApiServerSettings,
        state: Arc<T>,
        gate: Arc<Gatekeeping>,
        http_metrics: HttpMetrics,
        lifecycle: Lifecycle,
        config: &Config,
    ) -> std::io::Result<ApiServer> {
        let (listener, port) = bind(&settings.listen)?;
        let admin = match &settings.admin_listen {
            Some(address) => {
                let (admin_listener, admin_port) = bind(address)?;
                // A couple of workers: probes and scrapes are light.
                let server = start_server(
                    admin_listener,
                    state.clone(),
                    gate.clone(),
                    http_metrics.clone(),
                    vec![settings.admin_routes],
                    None,
                    config,
                    Some(2),
                )?;
                tracing::info!(port = admin_port, "{} admin listening", settings.service);
                Some(AdminServer {
                    port: admin_port,
                    handle: server.handle(),
                    task: tokio::spawn(server),
                })
            }
            None => None,
        };
        let mut document = (settings.openapi)();
        let routes = match admin {
            Some(_) => vec![settings.routes],
            None => {
                document.merge((settings.admin_openapi)());
                vec![settings.routes, settings.admin_routes]
            }
        };
        let docs = OpenApiJson::new(&super::openapi::finish(document))
            .map_err(|e| std::io::Error::other(format!("the OpenAPI document: {e}")))?;
        let server = start_server(
            listener,
            state,
            gate,
            http_metrics,
            routes,
            Some(Arc::new(docs)),
            config,
            settings.workers,
        )?;
        tracing::info!(port, "{} listening", settings.service);
        Ok(ApiServer {
            service: settings.service,
            port,
            server,
            admin,
            lifecycle,
            shutdown: config.shutdown.clone(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the admin listener: its own, or the API's when it has none.
    pub fn admin_port(&self) -> u16 {
        self.admin.as_ref().map_or(self.port, |admin| admin.port)
    }

    /// Serves until `stop` resolves, then: readiness 503, drain, requests in flight answered, within
    /// `shutdown.timeout_ms`. Returns the deadline, for the service's own last steps.
    pub async fn serve_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<Deadline> {
        // The admin listener outlives the API's: readiness answers 503 there while the API drains.
        let deadline =
            crate::shutdown::serve_until(self.server, stop, &self.lifecycle, &self.shutdown)
                .await?;
        if let Some(admin) = self.admin {
            admin.handle.stop(false).await;
            match admin.task.await {
                Ok(result) => result?,
                Err(error) => tracing::warn!(%error, "the admin listener's task failed"),
            }
        }
        tracing::info!("{} stopped serving", self.service);
        Ok(deadline)
    }
}
