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
