use eventgate_core::config::Config;
use eventgate_stats_api::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    eventgate_core::telemetry::init(&config.telemetry);
    Application::build(config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
