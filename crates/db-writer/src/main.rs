use eventgate_core::config::Config;
use eventgate_core::shutdown::Lifecycle;
use eventgate_db_writer::Writer;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    let telemetry = eventgate_core::telemetry::init(&config.telemetry, "eventgate-db-writer");
    let result = run(config).await;
    telemetry.shutdown();
    result
}

async fn run(config: Config) -> anyhow::Result<()> {
    let writer = Writer::build(&config).await?;
    let lifecycle = Lifecycle::new();
    let (health, port) = eventgate_db_writer::health::serve(
        &config.writer.listen,
        writer.readiness(),
        writer.metrics.clone(),
        lifecycle.clone(),
    )?;
    tracing::info!(port, "writer health and metrics listening");
    let health_handle = health.handle();
    tokio::spawn(health);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone(), lifecycle));
    let result = writer.run(shutdown).await;
    health_handle.stop(true).await;
    result
}

/// SIGINT or SIGTERM: readiness 503, then finish the batch in hand, commit, leave the group (the
/// writer's `run` keeps to `shutdown.timeout_ms`).
async fn stop_on_signal(shutdown: CancellationToken, lifecycle: Lifecycle) {
    eventgate_core::shutdown::signal().await;
    lifecycle.begin_stop();
    tracing::info!("shutdown requested: writing and committing the batch in hand");
    shutdown.cancel();
}
