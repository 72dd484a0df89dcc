//! What the APIs change while running (feature `reload`): on SIGHUP the topics directory and the access
//! file are read again and the token keys (PEM files, JWKS file and URL) are re-read; a JWKS source is
//! also refreshed periodically ([`JwtVerifier::spawn_jwks_refresh`]).
//!
//! A reload swaps the topics, rules or keys whole: requests in flight finish with what they started
//! with, new requests see the new ones, none is refused or delayed by the reload. An unreadable or
//! invalid file changes nothing and is logged (and counted: `eventgate_topic_reloads_total`).

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::access::SharedAccess;
use crate::auth::JwtVerifier;
use crate::gate::SharedCatalogue;

/// Installs the SIGHUP handler now (so a SIGHUP that arrives once this returns never takes the default
/// action, which would end the process) and spawns the task that reloads on each signal. Call it from
/// within the runtime, before serving.
pub fn reload_on_sighup(
    catalogue: Arc<SharedCatalogue>,
    access: Arc<SharedAccess>,
    verifier: Arc<JwtVerifier>,
) -> std::io::Result<JoinHandle<()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            reload_now(&catalogue, &access, &verifier).await;
        }
    }))
}

/// One reload of everything, as on SIGHUP.
pub async fn reload_now(
    catalogue: &SharedCatalogue,
    access: &SharedAccess,
    verifier: &JwtVerifier,
) {
    match catalogue.reload() {
        Ok(added) => tracing::info!(
            reloads = catalogue.reloads(),
            added = ?added,
            topics = catalogue.current().names().count(),
            "topics reloaded"
        ),
        Err(error) => {
            tracing::error!(%error, "topics not reloaded; the previous topics stay in use")
        }
    }
    match access.reload() {
        Ok(()) => tracing::info!(reloads = access.reloads(), "access rules reloaded"),
        Err(error) => {
            tracing::error!(%error, "access rules not reloaded; the previous rules stay in use")
        }
    }
    verifier.refresh_all().await;
}

/// Everything an API does at start-up for run-time changes: fetches the JWKS URL once (a failure is
/// logged, not fatal: the identity provider may be back before the first request, and the refresher
/// keeps trying), starts the periodic JWKS refresh and installs the SIGHUP handler.
pub async fn start_reloading(
    catalogue: Arc<SharedCatalogue>,
    access: Arc<SharedAccess>,
    verifier: Arc<JwtVerifier>,
) -> std::io::Result<()> {
    if verifier.jwks_url().is_some() {
        match verifier.fetch_jwks_url().await {
            Ok(keys) => tracing::info!(keys, "JWKS fetched"),
            Err(error) => tracing::error!(%error, "JWKS not fetched at start-up; retrying"),
        }
    }
    verifier.spawn_jwks_refresh();
    reload_on_sighup(catalogue, access, verifier)?;
    Ok(())
}

pub use crate::gate::Gatekeeping;

#[derive(Debug, thiserror::Error)]
pub enum GatekeepingError {
    #[error("loading topics: {0}")]
    Topics(#[from] crate::catalogue::CatalogueError),
    #[error("loading access rules: {0}")]
    Access(#[from] crate::access::AccessError),
    #[error("loading token keys: {0}")]
    Keys(#[from] crate::auth::KeyError),
    #[error("installing the SIGHUP handler: {0}")]
    Reload(#[from] std::io::Error),
}

/// Loads the catalogue, the access rules, the keys and the rate limits of `config`, and starts reloading the latter two
/// (SIGHUP, JWKS refresh). Any broken file fails start-up: a service must not serve half configured.
pub async fn load_gatekeeping(
    config: &crate::config::Config,
) -> Result<Gatekeeping, GatekeepingError> {
    // Here rather than in `Config::load`: logging is up by now, and only the APIs verify tokens.
    config.log_warnings();
    let catalogue = Arc::new(SharedCatalogue::load_dir(&config.catalogue.topics_dir)?);
    let access = Arc::new(SharedAccess::load(&config.catalogue.access_file)?);
    let verifier = Arc::new(JwtVerifier::from_config(&config.auth)?);
    start_reloading(catalogue.clone(), access.clone(), verifier.clone()).await?;
    Ok(Gatekeeping {
        catalogue,
        access,
        verifier,
        rate_limits: crate::ratelimit::RateLimits::from_config(&config.ratelimit),
    })
}
