use eventgate_core::config::Config;
use eventgate_db_writer::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    let telemetry = eventgate_core::telemetry::init(&config.telemetry, "eventgate-db-writer");
    let result = match Application::build(config).await {
        Ok(application) => application.run_until_stopped().await,
        Err(error) => Err(error),
    };
    telemetry.shutdown();
    result
}
