//! eventgate-stats-api: the analysts' read-only view of the event history.
//!
//! `POST /stats/{topic}` (or the equivalent `GET` with query parameters) → authenticate (401) → topic
//! exists (404) → may read (403) → plan the query with the core query language (400 on any mistake) →
//! one parameterised SQL statement (`query_sql`) → a page of events with an opaque, signed cursor.
//! Invariant: this service never writes. It connects as a role that can only SELECT, with
//! `default_transaction_read_only` on (a read replica in production).

pub mod query_sql;
mod routes;
pub mod store;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::{bail, Context};

use eventgate_core::access::AccessRules;
use eventgate_core::auth::JwtVerifier;
use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::Config;
use eventgate_core::query::{CursorKey, QueryLimits};
use eventgate_core::schema::PgPool;

pub struct AppState {
    pub catalogue: Catalogue,
    pub access: AccessRules,
    pub verifier: JwtVerifier,
    pub pool: PgPool,
    pub cursor_key: CursorKey,
    pub limits: QueryLimits,
    pub registry: prometheus::Registry,
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let catalogue =
            Catalogue::load_dir(&config.catalogue.topics_dir).context("loading topics")?;
        let access =
            AccessRules::load(&config.catalogue.access_file).context("loading access rules")?;
        let verifier = JwtVerifier::from_config(&config.auth).context("loading token keys")?;
        let secret = config.stats.cursor_secret.expose();
        if secret.len() < 16 {
            bail!("stats.cursor_secret must be set to at least 16 characters (EVENTGATE_STATS__CURSOR_SECRET)");
        }
        let url = eventgate_core::schema::with_statement_timeout(
            config.stats.database_url.expose(),
            config.stats.statement_timeout_ms,
        );
        let pool = eventgate_core::schema::build_pool(&url, config.stats.pool_size).await?;
        let state = Arc::new(AppState {
            catalogue,
            access,
            verifier,
            pool,
            cursor_key: CursorKey::new(secret.as_bytes()),
            limits: QueryLimits::default(),
            registry: prometheus::Registry::new(),
        });
        let listener = TcpListener::bind(&config.stats.listen)
            .with_context(|| format!("binding {}", config.stats.listen))?;
        let port = listener.local_addr()?.port();
        let data = web::Data::from(state);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(routes::configure)
                .default_service(web::to(eventgate_core::http::not_found))
        })
        .listen(listener)?;
        if let Some(workers) = config.stats.workers {
            server = server.workers(workers);
        }
        tracing::info!(port, "stats-api listening");
        Ok(Application {
            port,
            server: server.run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
