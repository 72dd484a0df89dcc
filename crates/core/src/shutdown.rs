//! Graceful shutdown (feature `http`), driven by the application rather than by actix's own signal
//! handling (the servers are built with `disable_signals()`), so the order is ours:
//!
//! 1. SIGTERM or SIGINT arrives ([`signal`]).
//! 2. [`Lifecycle::begin_stop`]: readiness answers 503 `stopping` at once.
//! 3. The listener stays open `shutdown.drain_ms`, so load balancers see the 503 and stop sending.
//! 4. The server stops accepting and lets in-flight requests finish (`Server::handle().stop(true)`).
//! 5. The caller finishes its own work (flush the producer, write and commit the last batch) within
//!    what is left of `shutdown.timeout_ms` ([`Deadline::remaining`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ShutdownConfig;

/// Shared by the readiness handler and whoever drives the shutdown.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    stopping: Arc<AtomicBool>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Lifecycle::default()
    }

    /// From now on readiness answers 503.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// The moment by which the whole stop must be over.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Whole seconds actix may spend finishing in-flight requests (`HttpServer::shutdown_timeout`): what the
/// deadline leaves after the drain, at least one.
pub fn request_grace_secs(config: &ShutdownConfig) -> u64 {
    (config.timeout_ms.saturating_sub(config.drain_ms) / 1000).max(1)
}

/// Serves `server` until it stops by itself or `stop` resolves; then runs steps 2–4 of the module docs
/// and returns the deadline the caller's own clean-up must keep.
pub async fn serve_until(
    server: actix_web::dev::Server,
    stop: impl Future<Output = ()>,
    lifecycle: &Lifecycle,
    config: &ShutdownConfig,
) -> std::io::Result<Deadline> {
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => {
            result?;
            return Ok(Deadline::after(Duration::from_millis(config.timeout_ms)));
        }
        _ = stop => {}
    }
    let deadline = Deadline::after(Duration::from_millis(config.timeout_ms));
    lifecycle.begin_stop();
    tracing::info!(
        shutdown.drain_ms = config.drain_ms,
        shutdown.timeout_ms = config.timeout_ms,
        "shutdown started: readiness answers 503"
    );
    // Keep serving (and polling the server) while load balancers notice.
    let drain =
        tokio::time::sleep(Duration::from_millis(config.drain_ms).min(deadline.remaining()));
    tokio::select! {
        result = &mut server => {
            result?;
            return Ok(deadline);
        }
        _ = drain => {}
    }
    tracing::info!("closing the listener; waiting for in-flight requests");
    let stopped = async {
        let (_, result) = tokio::join!(handle.stop(true), &mut server);
        result
    };
    match tokio::time::timeout(deadline.remaining(), stopped).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("in-flight requests did not finish before the shutdown deadline"),
    }
    Ok(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_grace_leaves_room_for_the_drain() {
        let config = ShutdownConfig {
            timeout_ms: 20_000,
            drain_ms: 5_000,
        };
        assert_eq!(request_grace_secs(&config), 15);
        let tight = ShutdownConfig {
            timeout_ms: 500,
            drain_ms: 1_000,
        };
        assert_eq!(request_grace_secs(&tight), 1);
    }

    #[test]
    fn lifecycle_is_shared_by_clones() {
        let lifecycle = Lifecycle::new();
        let seen_by_handler = lifecycle.clone();
        assert!(!seen_by_handler.is_stopping());
        lifecycle.begin_stop();
        assert!(seen_by_handler.is_stopping());
    }
}
