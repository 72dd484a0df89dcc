use eventgate_core::config::Config;
use eventgate_stats_api::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    let telemetry = eventgate_core::telemetry::init(&config.telemetry, "eventgate-stats-api");
    let result = match Application::build(config).await {
        Ok(application) => application.run_until_stopped().await.map_err(Into::into),
        Err(error) => Err(error),
    };
    telemetry.shutdown();
    result
}
