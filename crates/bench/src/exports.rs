//! Phase 6: exports. The same N rows of the generated history (a time range of `received_at` in the
//! middle of it, chosen so it holds exactly N events) are exported three times: `GET
//! /stats/{topic}/export?format=ndjson`, then `format=csv`, each streamed and its lines counted as they
//! arrive (nothing kept), then `COPY (SELECT id, received_at, producer, payload FROM events WHERE … ORDER
//! BY received_at DESC, id DESC) TO STDOUT` as the stats-api's role, the database's own fastest way out.
//! rows/s of each; the figure is the slower export ÷ COPY. Meanwhile the stats-api's resident memory
//! (`VmRSS`) is sampled every 50 ms: its peak is the memory an export takes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{pin_mut, StreamExt};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cpu::{self, Usage, Watched};
use crate::db;
use crate::load::round2;
use crate::queries::RUNS;
use crate::services::{Bench, DATABASE, USER};
use crate::Sizes;

const RSS_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Serialize)]
pub struct ExportResults {
    pub rows: u64,
    /// The range exported (`received_at`, from inclusive, to exclusive).
    pub from: String,
    pub to: String,
    pub ndjson: Export,
    pub csv: Export,
    pub copy: Export,
    /// The slower of NDJSON and CSV ÷ COPY (rows/s).
    pub copy_ratio: f64,
    /// The stats-api's resident memory before the exports and its peak during them, in MiB.
    pub rss_before_mb: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub cpu: Usage,
}

#[derive(Debug, Clone, Serialize)]
pub struct Export {
    pub rows_per_s: f64,
    pub seconds: f64,
    pub bytes: u64,
    /// Lines received (CSV: the header too).
    pub lines: u64,
    /// Time to the first byte of the answer, in ms.
    pub first_byte_ms: f64,
}

pub async fn run(
    bench: &Bench,
    sizes: &Sizes,
    stats_url: &str,
    stats_pid: u32,
    base_ms: i64,
    spacing_ms: i64,
    watched: &[Watched],
) -> anyhow::Result<ExportResults> {
    let rows = sizes.export_rows;
    // Event i was received at base + i × spacing: a range starting and ending half-way between two
    // events holds exactly `rows` of them, in the middle of the history.
    let first = (sizes.history_rows - rows) / 2;
    let from_ms = base_ms + first as i64 * spacing_ms - spacing_ms / 2;
    let to_ms = from_ms + rows as i64 * spacing_ms;
    let (from, to) = (instant(from_ms)?, instant(to_ms)?);
    let client = db::connect(&bench.url("eventgate_stats", DATABASE)).await?;
    client.batch_execute("SET statement_timeout = 0").await?;
    let counted: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE topic = $1 \
             AND received_at >= $2::text::timestamptz AND received_at < $3::text::timestamptz",
            &[&RUNS, &from, &to],
        )
        .await
        .context("counting the exported range")?
        .get(0);
    anyhow::ensure!(
        counted == rows as i64,
        "the range {from} – {to} holds {counted} events, not {rows}"
    );
    eprintln!("bench: exports: {rows} events received from {from} to {to}");
    // One unmeasured read of the rows first: otherwise the first export alone reads them from disk and
    // the later ones from the cache (measured: NDJSON first at 74 k rows/s, CSV then at 120 k).
    copy_out(&client, rows, &from, &to)
        .await
        .context("the warm-up read of the exported rows")?;

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(stats_pid, sampling.clone()));
    let rss_before_mb = rss_mb(stats_pid);
    let before = cpu::snapshot(watched);
    let token = eventgate_test_support::token(USER);
    let query = format!(
        "timestamp_gte={}&timestamp_lt={}",
        encode(&from),
        encode(&to)
    );
    let outcome = async {
        let ndjson = export(
            bench,
            &format!("{stats_url}/stats/{RUNS}/export?format=ndjson&{query}"),
            &token,
            rows,
            Format::Ndjson,
        )
        .await?;
        let csv = export(
            bench,
            &format!("{stats_url}/stats/{RUNS}/export?format=csv&{query}"),
            &token,
            rows,
            Format::Csv,
        )
        .await?;
        anyhow::Ok((ndjson, csv))
    }
    .await;
    sampling.store(false, Ordering::SeqCst);
    let peak_rss_mb = sampler.await.ok().flatten();
    let after = cpu::snapshot(watched);
    let (ndjson, csv) = outcome?;
    let copy = copy_out(&client, rows, &from, &to).await?;
    let copy_ratio = round2(ndjson.rows_per_s.min(csv.rows_per_s) / copy.rows_per_s.max(0.01));
    eprintln!(
        "bench: exports: NDJSON {:.0} rows/s, CSV {:.0} rows/s, COPY {:.0} rows/s (ratio {copy_ratio:.2}); \
         stats-api RSS {:.0} MiB before, {:.0} MiB at most",
        ndjson.rows_per_s,
        csv.rows_per_s,
        copy.rows_per_s,
        rss_before_mb.unwrap_or(0.0),
        peak_rss_mb.unwrap_or(0.0)
    );
    Ok(ExportResults {
        rows,
        from,
        to,
        ndjson,
        csv,
        copy,
        copy_ratio,
        rss_before_mb,
        peak_rss_mb,
        cpu: cpu::usage(&before, &after),
    })
}

fn instant(epoch_ms: i64) -> anyhow::Result<String> {
    Ok(
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000)?
            .format(&Rfc3339)?,
    )
}

/// An RFC 3339 instant as a query parameter (`+` of an offset and `:` escaped).
fn encode(text: &str) -> String {
    text.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Ndjson,
    Csv,
}

/// Streams one export, counting its lines as they arrive; checks that it held exactly `rows` events.
async fn export(
    bench: &Bench,
    url: &str,
    token: &str,
    rows: u64,
    format: Format,
) -> anyhow::Result<Export> {
    let started = Instant::now();
    let mut response = bench
        .http
        .get(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let first_byte_ms = round2(started.elapsed().as_secs_f64() * 1000.0);
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.text().await.unwrap_or_default();
        anyhow::bail!("the export {url} answered {status}: {text}");
    }
    let (mut lines, mut bytes) = (0u64, 0u64);
    // The start of the line being read, enough to recognise a truncation marker.
    let mut line_start: Vec<u8> = Vec::with_capacity(64);
    let mut truncated = false;
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading the export {url}"))?
    {
        bytes += chunk.len() as u64;
        for &byte in chunk.iter() {
            if byte == b'\n' {
                lines += 1;
                truncated |= is_marker(&line_start, format);
                line_start.clear();
            } else if line_start.len() < 40 {
                line_start.push(byte);
            }
        }
    }
    if !line_start.is_empty() {
        lines += 1;
        truncated |= is_marker(&line_start, format);
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    let header = u64::from(format == Format::Csv);
    let events = lines.saturating_sub(header + u64::from(truncated));
    anyhow::ensure!(
        events == rows,
        "the {format:?} export held {events} events ({lines} lines{}), expected {rows}",
        if truncated { ", truncated" } else { "" }
    );
    Ok(Export {
        rows_per_s: (rows as f64 / seconds).round(),
        seconds: round2(seconds),
        bytes,
        lines,
        first_byte_ms,
    })
}

/// Whether a line is the export's truncation marker (the last line when a cap was reached).
fn is_marker(line_start: &[u8], format: Format) -> bool {
    match format {
        Format::Ndjson => line_start.starts_with(b"{\"truncated\""),
        Format::Csv => line_start.starts_with(b"#eventgate-export-truncated"),
    }
}

/// The same rows with `COPY (SELECT …) TO STDOUT`, counted as they arrive.
async fn copy_out(
    client: &tokio_postgres::Client,
    rows: u64,
    from: &str,
    to: &str,
) -> anyhow::Result<Export> {
    // COPY takes no parameters: the topic and the instants are literals (ours, not a client's).
    let sql = format!(
        "COPY (SELECT id, received_at, producer, payload FROM events WHERE topic = '{RUNS}' \
         AND received_at >= '{from}' AND received_at < '{to}' \
         ORDER BY received_at DESC, id DESC) TO STDOUT"
    );
    let started = Instant::now();
    let stream = client
        .copy_out(&sql)
        .await
        .context("COPY (SELECT …) TO STDOUT")?;
    pin_mut!(stream);
    let first_byte_ms = round2(started.elapsed().as_secs_f64() * 1000.0);
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(data) = stream.next().await {
        let data = data.context("reading the COPY")?;
        bytes += data.len() as u64;
        // COPY's text format escapes newlines inside values: one line per row.
        lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    anyhow::ensure!(lines == rows, "COPY wrote {lines} rows, expected {rows}");
    Ok(Export {
        rows_per_s: (rows as f64 / seconds).round(),
        seconds: round2(seconds),
        bytes,
        lines,
        first_byte_ms,
    })
}

/// The largest `VmRSS` of the process seen every 50 ms until `running` is cleared, in MiB.
async fn sample_rss(pid: u32, running: Arc<AtomicBool>) -> Option<f64> {
    let mut peak: Option<f64> = None;
    loop {
        if let Some(mb) = rss_mb(pid) {
            peak = Some(peak.map_or(mb, |p: f64| p.max(mb)));
        }
        if !running.load(Ordering::SeqCst) {
            return peak.map(|mb| (mb * 10.0).round() / 10.0);
        }
        tokio::time::sleep(RSS_EVERY).await;
    }
}

/// `VmRSS` of a process now, in MiB.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_markers() {
        assert_eq!(
            instant(1_736_812_800_125).unwrap(),
            "2025-01-14T00:00:00.125Z"
        );
        assert_eq!(
            encode("2025-01-14T00:00:00+01:00"),
            "2025-01-14T00%3A00%3A00%2B01%3A00"
        );
        assert!(is_marker(b"{\"truncated\":true,\"rea", Format::Ndjson));
        assert!(!is_marker(b"{\"id\":\"019", Format::Ndjson));
        assert!(is_marker(
            b"#eventgate-export-truncated,row_li",
            Format::Csv
        ));
        assert!(rss_mb(std::process::id()).is_some_and(|mb| mb > 0.0));
    }
}
