use eventgate_core::config::Config;
use eventgate_ingest_api::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    let telemetry = eventgate_core::telemetry::init(&config.telemetry, "eventgate-ingest-api");
    let result = match Application::build(config).await {
        Ok(application) => application.run_until_stopped().await.map_err(Into::into),
        Err(error) => Err(error),
    };
    telemetry.shutdown();
    result
}
