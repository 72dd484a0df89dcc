//! Plain tokio-postgres connections for what the services do not do: creating the database, COPY,
//! generating the history, OFFSET pages.

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// Connects and drives the connection on a task of its own.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("bench: database connection ended: {error}");
        }
    });
    Ok(client)
}

/// The postmaster's pid when the cluster runs on this machine: the parent of this connection's backend.
pub async fn postmaster_pid(client: &Client) -> Option<u32> {
    let row = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()?;
    let backend: i32 = row.get(0);
    let backend = u32::try_from(backend).ok()?;
    let parent = crate::cpu::parent_of(backend)?;
    // A backend of a local cluster is a child of the postmaster, whose command line says `postgres`.
    let cmdline = std::fs::read(format!("/proc/{parent}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("postgres")
        .then_some(parent)
}

/// `SELECT count(*)`-like statements.
pub async fn count(client: &Client, sql: &str) -> anyhow::Result<i64> {
    let row = client
        .query_one(sql, &[])
        .await
        .with_context(|| format!("running {sql}"))?;
    Ok(row.get(0))
}

/// Whether the rollups table `event_counts` (counts of events per topic and minute, which the writer
/// keeps in the same transaction as the rows) exists in this database: the bench works before and after
/// its migration.
pub async fn has_rollups(client: &Client) -> anyhow::Result<bool> {
    let row = client
        .query_one("SELECT to_regclass('event_counts') IS NOT NULL", &[])
        .await
        .context("looking for event_counts")?;
    Ok(row.get(0))
}

/// Empties `events` (with `extra`, e.g. `dead_letters`) and, when they exist, its rollups: the bench
/// never leaves counts of rows that are gone.
pub async fn empty_events(client: &Client, extra: &[&str]) -> anyhow::Result<()> {
    let mut tables = vec!["events"];
    tables.extend_from_slice(extra);
    if has_rollups(client).await? {
        tables.push("event_counts");
    }
    client
        .batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
        .await
        .with_context(|| format!("emptying {}", tables.join(", ")))
}

/// Fills the rollups of events written straight into the table (the generated history), as the writer
/// would have: one row per topic and minute (tagged with this transaction's id when the table has the
/// `xact_id` column of the append-only layout). Nothing when the table does not exist. Returns the rows
/// written.
pub async fn fill_rollups(client: &Client) -> anyhow::Result<Option<u64>> {
    if !has_rollups(client).await? {
        return Ok(None);
    }
    let tagged: bool = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'event_counts'::regclass \
             AND attname = 'xact_id' AND NOT attisdropped)",
            &[],
        )
        .await
        .context("reading event_counts' columns")?
        .get(0);
    let (column, value) = if tagged {
        (", xact_id", ", pg_current_xact_id()::text::bigint")
    } else {
        ("", "")
    };
    let rows = client
        .execute(
            &format!(
                "INSERT INTO event_counts (topic, minute{column}, events) \
                 SELECT topic, date_trunc('minute', received_at, 'UTC'){value}, count(*) \
                 FROM events GROUP BY 1, 2"
            ),
            &[],
        )
        .await
        .context("filling event_counts from the generated events")?;
    Ok(Some(rows))
}
