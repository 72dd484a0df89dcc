//! eventgate-ingest-api: the HTTP front door for producers.
//!
//! `POST /topics/{topic}` → authenticate (401) → topic exists (404) → may write (403) → body valid (400)
//! → publish to Kafka and wait for the acknowledgement → 202 (or 207 for a partly invalid batch).
//! The rules themselves live in `eventgate_core` (`auth`, `access`, `ingest`); this crate wires them to
//! HTTP and Kafka. Invariant: a 202 is sent only after the broker acknowledged every accepted event.

pub mod metrics;
pub mod publisher;
mod routes;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use eventgate_core::access::AccessRules;
use eventgate_core::auth::JwtVerifier;
use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::Config;
use eventgate_core::ingest::IngestRules;

use crate::publisher::Publisher;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub catalogue: Catalogue,
    pub access: AccessRules,
    pub verifier: JwtVerifier,
    pub rules: IngestRules,
    pub publisher: Publisher,
    pub max_body_bytes: usize,
    pub metrics: metrics::IngestMetrics,
}

pub struct Application {
    port: u16,
    server: Server,
    state: Arc<AppState>,
}

impl Application {
    /// Loads topics, access rules and keys, connects the producer, binds the listener. Fails early on
    /// any configuration problem, so a broken deployment never starts serving.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let catalogue =
            Catalogue::load_dir(&config.catalogue.topics_dir).context("loading topics")?;
        let access =
            AccessRules::load(&config.catalogue.access_file).context("loading access rules")?;
        let verifier = JwtVerifier::from_config(&config.auth).context("loading token keys")?;
        let timeout = Duration::from_millis(config.ingest.publish_timeout_ms);
        let publisher =
            Publisher::new(&config.kafka, timeout).context("creating Kafka producer")?;
        if let Err(error) = eventgate_core::kafka::ensure_topics(&config.kafka, &catalogue).await {
            // Not fatal: the broker may come up later, and ops may own topic creation.
            tracing::warn!(%error, "could not ensure Kafka topics exist");
        }
        let state = Arc::new(AppState {
            catalogue,
            access,
            verifier,
            rules: IngestRules {
                id_field: config.ingest.id_field.clone(),
                max_batch_events: config.ingest.max_batch_events,
            },
            publisher,
            max_body_bytes: config.ingest.max_body_bytes,
            metrics: metrics::IngestMetrics::new(),
        });
        let listener = TcpListener::bind(&config.ingest.listen)
            .with_context(|| format!("binding {}", config.ingest.listen))?;
        let port = listener.local_addr()?.port();
        let data = web::Data::from(state.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(routes::configure)
                .default_service(web::to(eventgate_core::http::not_found))
        })
        .listen(listener)?;
        if let Some(workers) = config.ingest.workers {
            server = server.workers(workers);
        }
        tracing::info!(port, "ingest-api listening");
        Ok(Application {
            port,
            server: server.run(),
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server is stopped (SIGINT/SIGTERM), then flushes the producer.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || state.publisher.flush(Duration::from_secs(10)))
            .await;
        result
    }
}
