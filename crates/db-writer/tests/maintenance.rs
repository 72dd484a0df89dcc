//! The writers' turn at the history's upkeep (`eventgate_db_writer::maintenance`) against a real Postgres:
//! a run as the schema owner records what it saw in the writer's metrics (partitions and bytes per
//! topic, where the spans end, when it last succeeded); a run that finds another one holding the
//! advisory lock skips its turn and says so; a run whose role may not create partitions fails.

use eventgate_core::config::{Config, Secret};
use eventgate_core::db::partitions::MAINTENANCE_LOCK_KEY;
use eventgate_db_writer::maintenance::{run_once, MaintenanceMetrics};

fn config(owner_url: &str) -> Config {
    let mut config = Config::default();
    config.catalogue.topics_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics");
    config.writer.migration_database_url = Secret::new(owner_url);
    config
}

fn gauge(metrics: &MaintenanceMetrics, name: &str, topic: &str) -> i64 {
    match name {
        "partitions" => metrics.partitions.with_label_values(&[topic]).get(),
        "bytes" => metrics.bytes.with_label_values(&[topic]).get(),
        _ => metrics.oldest_partition.with_label_values(&[topic]).get(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_records_the_layout_and_a_busy_lock_skips_the_turn() {
    let db = eventgate_test_support::stack().await.fresh_database().await;
    let registry = prometheus::Registry::new();
    let metrics = MaintenanceMetrics::new(&registry);

    let ran = run_once(&config(&db.writer_url), &metrics)
        .await
        .expect("a run as the owner");
    assert!(ran, "no other run held the lock");
    assert_eq!(metrics.runs.with_label_values(&["ok"]).get(), 1);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - metrics.last_success.get()).abs() < 60);
    // Today and the three spans after it: events received up to then find their partition.
    let day = 86_400;
    assert!(
        metrics.covered_until.get() >= now - now % day + 4 * day,
        "{}",
        metrics.covered_until.get()
    );
    for topic in ["audit.logs", "web.events", "public.cps.za.runs"] {
        assert!(gauge(&metrics, "partitions", topic) >= 4, "{topic}");
        assert!(gauge(&metrics, "bytes", topic) > 0, "{topic}");
        assert!(gauge(&metrics, "oldest", topic) > 0, "{topic}");
    }

    // Another run holds the lock: this writer skips its turn.
    let (holder, connection) = tokio_postgres::connect(&db.writer_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&MAINTENANCE_LOCK_KEY])
        .await
        .expect("lock");
    let ran = run_once(&config(&db.writer_url), &metrics)
        .await
        .expect("no error");
    assert!(!ran);
    assert_eq!(metrics.runs.with_label_values(&["skipped"]).get(), 1);
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LOCK_KEY])
        .await
        .expect("unlock");

    // The writer's own role may insert events but not create partitions: the run fails, loudly.
    let error = run_once(&config(&db.writer_role_url), &metrics)
        .await
        .expect_err("the writer's role cannot maintain");
    assert!(
        format!("{error:#}").contains("owner") || format!("{error:#}").contains("permission"),
        "{error:#}"
    );
}
