use eventgate_core::config::Config;
use eventgate_db_writer::Writer;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    eventgate_core::telemetry::init(&config.telemetry);
    let writer = Writer::build(&config).await?;
    let (health, port) = eventgate_db_writer::health::serve(
        &config.writer.listen,
        writer.pool().clone(),
        writer.metrics.clone(),
    )?;
    tracing::info!(port, "writer health and metrics listening");
    let health_handle = health.handle();
    tokio::spawn(health);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let result = writer.run(shutdown).await;
    health_handle.stop(true).await;
    result
}

/// SIGINT or SIGTERM: finish the batch in hand, commit, leave the group.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
