//! A stats-api of its own on a fresh database of the shared test stack, for tests that talk HTTP to it
//! (events are inserted straight into Postgres: no broker or writer is needed to read them back), and in
//! `property` what the property tests against Postgres share, in `writer` storing batches as the writers do.

// Every test binary that says `mod common;` compiles all of it and uses a part.
#![allow(dead_code)]

pub mod property;
pub mod writer;

use std::path::{Path, PathBuf};

use eventgate_core::config::{Config, Secret};
use eventgate_test_support::{stack, test_keys, TestDatabase};

pub struct StatsApi {
    pub url: String,
    pub database: TestDatabase,
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts the stats-api on port 0 with the repository's topics and access file (`dev` reads every topic).
pub async fn start_stats_api() -> StatsApi {
    let database = stack().await.fresh_database().await;
    start_stats_api_on(database, |_| {}).await
}

/// [`start_stats_api`] on a database prepared by the test, with its own configuration changes.
pub async fn start_stats_api_on(
    database: TestDatabase,
    change: impl FnOnce(&mut Config),
) -> StatsApi {
    let mut config = Config::default();
    config.catalogue.topics_dir = repo_root().join("config/topics");
    config.catalogue.access_file = repo_root().join("config/access.json");
    config.auth.public_keys = vec![test_keys().public_key_path.clone()];
    config.stats.listen = "127.0.0.1:0".into();
    config.stats.workers = Some(2);
    config.stats.database_url = Secret::new(database.reader_url.clone());
    config.stats.cursor_secret = Secret::new("a-test-cursor-secret-of-enough-length");
    change(&mut config);
    let app = eventgate_stats_api::Application::build(config)
        .await
        .expect("stats-api starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    StatsApi { url, database }
}
