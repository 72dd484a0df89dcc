//! The results of a run: the Markdown table printed at the end and `target/bench/results.json`, whose
//! top-level keys are the figures (`null` for a phase that did not run), with the details beside them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use crate::aggregates::{AggregateResults, Shape};
use crate::cpu;
use crate::e2e::E2eResults;
use crate::explorer::ExplorerResults;
use crate::exports::ExportResults;
use crate::ingest::{ingest_cpu_us_per_request, IngestResults};
use crate::load::Latency;
use crate::queries::QueryResults;
use crate::writer::WriterResults;
use crate::{Phase, Sizes};

/// The targets of the full mode on a 2-core machine (issue "make bench").
pub const TARGET_BATCH_EVENTS_PER_S: f64 = 50_000.0;
/// Issue #18: events visible in 150 ms at 10,000 events/s, 50 ms nearly idle; the writer at 0.85 of COPY.
pub const TARGET_E2E_P99_MS: f64 = 150.0;
pub const TARGET_E2E_IDLE_P99_MS: f64 = 50.0;
pub const TARGET_WRITER_COPY_RATIO: f64 = 0.85;
pub const TARGET_DEEP_P99_MS: f64 = 20.0;
pub const TARGET_DEEP_FIRST_RATIO: f64 = 2.0;
/// Issue #18: single events at 16 clients, and the ingest-api's CPU per single-event request.
pub const TARGET_SINGLE_C16_P50_MS: f64 = 1.0;
pub const TARGET_SINGLE_C16_EVENTS_PER_S: f64 = 10_000.0;
pub const TARGET_INGEST_CPU_US_PER_REQUEST: f64 = 20.0;
/// Issue #18: every query shape under 20 ms, unindexed equality included; aggregates within 1.2× of
/// their hand-written SQL, the chart from rollups under 50 ms; exports at half of COPY at least.
pub const TARGET_QUERY_SHAPE_P99_MS: f64 = 20.0;
pub const TARGET_AGGREGATE_SQL_RATIO: f64 = 1.2;
pub const TARGET_ROLLUP_P99_MS: f64 = 50.0;
pub const TARGET_EXPORT_COPY_RATIO: f64 = 0.5;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gb: f64,
    pub kernel: String,
    pub load_average_1m: f64,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown CPU".to_owned(), |m| m.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gb: (memory_kb / 1048576.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            load_average_1m: cpu::load_average(),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} CPUs ({}), {:.0} GB RAM, Linux {}, load average {:.1} at start",
            self.cpus, self.cpu_model, self.memory_gb, self.kernel, self.load_average_1m
        )
    }
}

pub struct Results {
    pub sizes: Sizes,
    pub phases: Vec<Phase>,
    pub machine: Machine,
    pub started_at: String,
    started: Instant,
    pub duration_s: f64,
    pub ingest: Option<IngestResults>,
    pub e2e: Option<E2eResults>,
    pub writer: Option<WriterResults>,
    pub queries: Option<QueryResults>,
    pub aggregates: Option<AggregateResults>,
    pub exports: Option<ExportResults>,
    pub explorer: Option<ExplorerResults>,
    pub peak_rss_mb: BTreeMap<String, f64>,
}

impl Results {
    pub fn new(sizes: &Sizes, phases: &[Phase]) -> Results {
        let now = time::OffsetDateTime::now_utc();
        Results {
            sizes: sizes.clone(),
            phases: phases.to_vec(),
            machine: Machine::read(),
            started_at: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            started: Instant::now(),
            duration_s: 0.0,
            ingest: None,
            e2e: None,
            writer: None,
            queries: None,
            aggregates: None,
            exports: None,
            explorer: None,
            peak_rss_mb: BTreeMap::new(),
        }
    }

    pub fn finish(&mut self) {
        self.duration_s = self.started.elapsed().as_secs_f64().round();
    }

    /// The JSON document: the figures at the top level, then the details.
    pub fn to_json(&self) -> Value {
        let ingest = self.ingest.as_ref();
        let e2e = self.e2e.as_ref();
        let writer = self.writer.as_ref();
        let queries = self.queries.as_ref();
        let aggregates = self.aggregates.as_ref();
        let exports = self.exports.as_ref();
        let explorer = self.explorer.as_ref().and_then(|e| e.first_page.as_ref());
        let c16 = ingest.and_then(|i| i.single_with(16));
        let c64 = ingest.and_then(|i| i.single_with(64));
        json!({
            "mode": self.sizes.mode,
            "phases": self.phases.iter().map(|p| format!("{p:?}").to_lowercase()).collect::<Vec<_>>(),
            "ingest_single_events_per_s": ingest.map(|i| i.single().events_per_s),
            "ingest_single_p50_ms": ingest.map(|i| i.single().latency.p50_ms),
            "ingest_single_p99_ms": ingest.map(|i| i.single().latency.p99_ms),
            "ingest_single_c16_events_per_s": c16.map(|o| o.events_per_s),
            "ingest_single_c16_p50_ms": c16.map(|o| o.latency.p50_ms),
            "ingest_single_c16_p99_ms": c16.map(|o| o.latency.p99_ms),
            "ingest_single_c64_events_per_s": c64.map(|o| o.events_per_s),
            "ingest_single_c64_p50_ms": c64.map(|o| o.latency.p50_ms),
            "ingest_cpu_us_per_request": ingest.and_then(|i| ingest_cpu_us_per_request(i.single())),
            "broker_ack_p50_ms": ingest.map(|i| i.broker_ack.p50_ms),
            "ingest_batch_events_per_s": ingest.map(|i| i.batch.events_per_s),
            "ingest_batch_p50_ms": ingest.map(|i| i.batch.latency.p50_ms),
            "ingest_batch_p99_ms": ingest.map(|i| i.batch.latency.p99_ms),
            "e2e_offered_events_per_s": e2e.map(|e| e.load.offered_events_per_s),
            "e2e_p50_ms": e2e.map(|e| e.load.visible.p50_ms),
            "e2e_p99_ms": e2e.map(|e| e.load.visible.p99_ms),
            "e2e_idle_offered_events_per_s": e2e.map(|e| e.idle.offered_events_per_s),
            "e2e_idle_p50_ms": e2e.map(|e| e.idle.visible.p50_ms),
            "e2e_idle_p99_ms": e2e.map(|e| e.idle.visible.p99_ms),
            "writer_rows_per_s": writer.map(|w| w.writer_rows_per_s),
            "copy_rows_per_s": writer.map(|w| w.copy_rows_per_s),
            "writer_copy_ratio": writer.map(|w| w.writer_copy_ratio),
            "history_rows": queries.map(|q| q.history_rows),
            "query_deep_depth": queries.map(|q| q.deep_depth),
            "query_first_page_p50_ms": queries.map(|q| q.first_page.p50_ms),
            "query_first_page_p99_ms": queries.map(|q| q.first_page.p99_ms),
            "query_deep_page_p50_ms": queries.map(|q| q.deep_page.p50_ms),
            "query_deep_page_p99_ms": queries.map(|q| q.deep_page.p99_ms),
            "query_offset_deep_p50_ms": queries.map(|q| q.offset_deep.p50_ms),
            "query_offset_deep_p99_ms": queries.map(|q| q.offset_deep.p99_ms),
            "deep_first_ratio": queries.map(|q| q.deep_first_ratio),
            "query_equality_p99_ms": queries.map(|q| q.equality.p99_ms),
            "query_time_range_p99_ms": queries.map(|q| q.time_range.p99_ms),
            "query_in_p99_ms": queries.map(|q| q.in_filter.p99_ms),
            "query_two_field_sort_p99_ms": queries.map(|q| q.two_field_sort.p99_ms),
            "query_two_field_sort_before_p99_ms": queries.map(|q| q.two_field_sort_before.p99_ms),
            "query_unindexed_eq_before_p99_ms": queries.map(|q| q.equality.p99_ms),
            "query_unindexed_eq_p50_ms": queries.map(|q| q.unindexed_eq.p50_ms),
            "query_unindexed_eq_p99_ms": queries.map(|q| q.unindexed_eq.p99_ms),
            "history_partitions": queries.map(|q| q.partitions),
            "drop_day_s": queries.and_then(|q| q.drop_day.as_ref()).map(|r| r.seconds),
            "drop_day_wal_bytes": queries.and_then(|q| q.drop_day.as_ref()).map(|r| r.wal_bytes),
            "delete_day_s": queries.and_then(|q| q.delete_day.as_ref()).map(|r| r.seconds),
            "delete_day_wal_bytes": queries.and_then(|q| q.delete_day.as_ref()).map(|r| r.wal_bytes),
            "aggregate_day_count_p50_ms": aggregates.map(|a| a.day_count.api.p50_ms),
            "aggregate_day_count_p99_ms": aggregates.map(|a| a.day_count.api.p99_ms),
            "aggregate_day_count_sql_p99_ms": aggregates.map(|a| a.day_count.sql_latency.p99_ms),
            "aggregate_day_count_ratio": aggregates.map(|a| a.day_count.ratio),
            "aggregate_top_groups_p50_ms": aggregates.map(|a| a.top_groups.api.p50_ms),
            "aggregate_top_groups_p99_ms": aggregates.map(|a| a.top_groups.api.p99_ms),
            "aggregate_top_groups_sql_p99_ms": aggregates.map(|a| a.top_groups.sql_latency.p99_ms),
            "aggregate_top_groups_ratio": aggregates.map(|a| a.top_groups.ratio),
            "aggregate_count_distinct_p50_ms": aggregates.map(|a| a.count_distinct.api.p50_ms),
            "aggregate_count_distinct_p99_ms": aggregates.map(|a| a.count_distinct.api.p99_ms),
            "aggregate_count_distinct_sql_p99_ms": aggregates.map(|a| a.count_distinct.sql_latency.p99_ms),
            "aggregate_count_distinct_ratio": aggregates.map(|a| a.count_distinct.ratio),
            "aggregate_rollup_p50_ms": aggregates.map(|a| a.rollup.api.p50_ms),
            "aggregate_rollup_p99_ms": aggregates.map(|a| a.rollup.api.p99_ms),
            "aggregate_rollup_events_sql_p99_ms": aggregates.map(|a| a.rollup.sql_latency.p99_ms),
            "export_rows": exports.map(|x| x.rows),
            "export_ndjson_rows_per_s": exports.map(|x| x.ndjson.rows_per_s),
            "export_csv_rows_per_s": exports.map(|x| x.csv.rows_per_s),
            "export_copy_rows_per_s": exports.map(|x| x.copy.rows_per_s),
            "export_copy_ratio": exports.map(|x| x.copy_ratio),
            "export_peak_rss_mb": exports.and_then(|x| x.peak_rss_mb),
            "explorer_first_page_ms": explorer.map(|l| l.p50_ms),
            "explorer_first_page_p99_ms": explorer.map(|l| l.p99_ms),
            "peak_rss_mb": self.peak_rss_mb,
            "targets": {
                "ingest_single_c16_p50_ms": TARGET_SINGLE_C16_P50_MS,
                "ingest_single_c16_events_per_s": TARGET_SINGLE_C16_EVENTS_PER_S,
                "ingest_cpu_us_per_request": TARGET_INGEST_CPU_US_PER_REQUEST,
                "ingest_batch_events_per_s": TARGET_BATCH_EVENTS_PER_S,
                "e2e_p99_ms": TARGET_E2E_P99_MS,
                "e2e_idle_p99_ms": TARGET_E2E_IDLE_P99_MS,
                "writer_copy_ratio": TARGET_WRITER_COPY_RATIO,
                "query_deep_page_p99_ms": TARGET_DEEP_P99_MS,
                "deep_first_ratio": TARGET_DEEP_FIRST_RATIO,
                "query_unindexed_eq_p99_ms": TARGET_QUERY_SHAPE_P99_MS,
                "query_time_range_p99_ms": TARGET_QUERY_SHAPE_P99_MS,
                "query_in_p99_ms": TARGET_QUERY_SHAPE_P99_MS,
                "query_two_field_sort_p99_ms": TARGET_QUERY_SHAPE_P99_MS,
                "aggregate_day_count_ratio": TARGET_AGGREGATE_SQL_RATIO,
                "aggregate_top_groups_ratio": TARGET_AGGREGATE_SQL_RATIO,
                "aggregate_count_distinct_ratio": TARGET_AGGREGATE_SQL_RATIO,
                "aggregate_rollup_p99_ms": TARGET_ROLLUP_P99_MS,
                "export_copy_ratio": TARGET_EXPORT_COPY_RATIO,
            },
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "machine": self.machine,
            "sizes": self.sizes,
            "details": {
                "ingest": self.ingest,
                "e2e": self.e2e,
                "writer": self.writer,
                "queries": self.queries,
                "aggregates": self.aggregates,
                "exports": self.exports,
                "explorer": self.explorer,
            },
        })
    }
}

pub fn write_json(results: &Results, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&results.to_json())?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// `12,345` (thousands separated, no decimals).
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn millis(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

fn percentiles(l: &Latency) -> String {
    format!("p50 {} · p99 {}", millis(l.p50_ms), millis(l.p99_ms))
}

/// `p50 1.23 ms · p99 4.56 ms`, for progress lines.
pub fn percentiles_text(l: &Latency) -> String {
    percentiles(l)
}

/// Whether a target is met; quick sizes are not the targets' conditions, so they get no verdict.
fn verdict(quick: bool, met: bool) -> &'static str {
    match (quick, met) {
        (true, _) => "(full mode)",
        (false, true) => "met",
        (false, false) => "**missed**",
    }
}

/// `31 buckets, 10,000,000 events`, `10 groups`, or the one figure of a total.
fn answer_size(shape: &Shape) -> String {
    if shape.request.get("interval").is_some() {
        format!(
            "{} bucket{}, {} events",
            shape.rows,
            if shape.rows == 1 { "" } else { "s" },
            thousands(shape.events as f64)
        )
    } else if shape.request.get("group_by").is_some() {
        format!("{} groups", shape.rows)
    } else {
        format!("= {}", thousands(shape.events as f64))
    }
}

/// The table printed at the end of a run (and pasted into docs/PERFORMANCE.md).
pub fn markdown(results: &Results) -> String {
    let s = &results.sizes;
    let quick = s.mode == "quick";
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### eventgate bench, {} mode ({}, {} s)\n",
        s.mode, results.started_at, results.duration_s
    );
    let _ = writeln!(out, "Machine: {}.", results.machine.summary());
    if quick {
        let _ = writeln!(
            out,
            "\nQuick sizes prove the tool works; the targets apply to the full mode only."
        );
    }
    let _ = writeln!(out, "\n| figure | value | target | |\n|---|---|---|---|");
    let mut row = |figure: String, value: String, target: &str, status: &str| {
        let _ = writeln!(out, "| {figure} | {value} | {target} | {status} |");
    };
    if let Some(i) = &results.ingest {
        row(
            "Broker acknowledgement, one record at a time (no HTTP, `linger.ms` 0)".to_owned(),
            format!(
                "{} ({} records)",
                percentiles(&i.broker_ack),
                i.broker_ack.samples
            ),
            "",
            "",
        );
        let linger = i
            .linger_ms
            .as_deref()
            .map_or_else(String::new, |l| format!(", `linger.ms` {l}"));
        for single in &i.singles {
            let (target, status) = if single.clients == 16 {
                (
                    "p50 ≤ 1 ms, ≥ 10,000 events/s",
                    verdict(
                        quick,
                        single.latency.p50_ms <= TARGET_SINGLE_C16_P50_MS
                            && single.events_per_s >= TARGET_SINGLE_C16_EVENTS_PER_S,
                    ),
                )
            } else if single.clients == i.single().clients {
                ("as high as actix + rdkafka allow", "")
            } else {
                ("", "")
            };
            row(
                format!("Ingest, single events ({} clients{linger})", single.clients),
                format!(
                    "{} events/s · {}",
                    thousands(single.events_per_s),
                    percentiles(&single.latency)
                ),
                target,
                status,
            );
        }
        if let Some(us) = ingest_cpu_us_per_request(i.single()) {
            row(
                format!(
                    "Ingest-api CPU per single-event request ({} clients)",
                    i.single().clients
                ),
                format!("{us:.1} µs"),
                "≤ 20 µs",
                verdict(quick, us <= TARGET_INGEST_CPU_US_PER_REQUEST),
            );
        }
        row(
            format!(
                "Ingest, batches of {} ({} clients)",
                i.batch.events_per_request, i.batch.clients
            ),
            format!(
                "{} events/s · {}",
                thousands(i.batch.events_per_s),
                percentiles(&i.batch.latency)
            ),
            "≥ 50,000 events/s",
            verdict(quick, i.batch.events_per_s >= TARGET_BATCH_EVENTS_PER_S),
        );
    }
    if let Some(e) = &results.e2e {
        for (run, idle) in [(&e.idle, true), (&e.load, false)] {
            let mut value = format!(
                "{} ({} probes)",
                percentiles(&run.visible),
                run.visible.samples
            );
            if run.probes_missing > 0 || run.failed_requests > 0 || run.skipped_requests > 0 {
                let _ = write!(
                    value,
                    "; {} probes never seen, {} requests failed, {} skipped",
                    run.probes_missing, run.failed_requests, run.skipped_requests
                );
            }
            let (target, met) = if idle {
                (
                    "p99 ≤ 50 ms at 100 events/s",
                    run.visible.p99_ms <= TARGET_E2E_IDLE_P99_MS,
                )
            } else {
                (
                    "p99 ≤ 150 ms at 10,000 events/s",
                    run.visible.p99_ms <= TARGET_E2E_P99_MS && run.offered_events_per_s >= 10_000.0,
                )
            };
            row(
                format!(
                    "End to end, 202 → returned by the stats API, {} events/s offered ({} per request)",
                    thousands(run.offered_events_per_s),
                    run.events_per_request
                ),
                value,
                target,
                verdict(quick, met && run.probes_missing == 0),
            );
        }
    }
    if let Some(w) = &results.writer {
        row(
            format!(
                "Writer{}, {} rows from a pre-filled topic",
                if w.writers > 1 {
                    format!("s ({} in one group)", w.writers)
                } else {
                    String::new()
                },
                thousands(w.rows as f64)
            ),
            format!(
                "{} rows/s (batches of {}, {} per write, {:.1} writes in flight on average)",
                thousands(w.writer_rows_per_s),
                thousands(w.mean_batch_rows),
                millis(w.mean_write_ms),
                w.writes_in_flight
            ),
            "",
            "",
        );
        row(
            "Raw `COPY` of the same rows, identical table".to_owned(),
            format!("{} rows/s", thousands(w.copy_rows_per_s)),
            "",
            "",
        );
        row(
            "Writer ÷ COPY".to_owned(),
            format!("{:.2}", w.writer_copy_ratio),
            "≥ 0.85",
            verdict(quick, w.writer_copy_ratio >= TARGET_WRITER_COPY_RATIO),
        );
    }
    if let Some(q) = &results.queries {
        row(
            "History".to_owned(),
            format!(
                "{} events (table {} MB, indexes {} MB; generated in {:.0} s)",
                thousands(q.history_rows as f64),
                thousands(q.table_mb),
                thousands(q.indexes_mb),
                q.generate_s
            ),
            "≥ 10,000,000",
            verdict(quick, q.history_rows >= 10_000_000),
        );
        row(
            "First page (50 events, newest first)".to_owned(),
            percentiles(&q.first_page),
            "",
            "",
        );
        row(
            format!("Page at depth {} (cursor)", thousands(q.deep_depth as f64)),
            percentiles(&q.deep_page),
            "p99 ≤ 20 ms, depth ≥ 1,000,000",
            verdict(
                quick,
                q.deep_page.p99_ms <= TARGET_DEEP_P99_MS && q.deep_depth >= 1_000_000,
            ),
        );
        row(
            "Deep ÷ first page (p99)".to_owned(),
            format!("{:.2}", q.deep_first_ratio),
            "≤ 2",
            verdict(quick, q.deep_first_ratio <= TARGET_DEEP_FIRST_RATIO),
        );
        row(
            "Same depth with OFFSET (raw SQL, for comparison)".to_owned(),
            percentiles(&q.offset_deep),
            "",
            "",
        );
        let shape = |l: &Latency| verdict(quick, l.p99_ms <= TARGET_QUERY_SHAPE_P99_MS);
        row(
            "Equality on a payload field not declared indexed (`tenant_id`, 0.01 %), before the service indexed it"
                .to_owned(),
            percentiles(&q.equality),
            "",
            "",
        );
        row(
            format!(
                "The same equality after the stats-api recorded its use and the maintenance ran \
                 ({:.1} s; {} of the partitions' indexes on `tenant_id` before, {} after)",
                q.auto_index.maintenance_s, q.auto_index.indexes_before, q.auto_index.indexes_after
            ),
            percentiles(&q.unindexed_eq),
            "p99 ≤ 20 ms",
            shape(&q.unindexed_eq),
        );
        row(
            "Range on a time field (`timestamp_start`, one hour, sorted by it)".to_owned(),
            percentiles(&q.time_range),
            "p99 ≤ 20 ms",
            shape(&q.time_range),
        );
        row(
            "`_in` filter (`source_app_in`, 5 of 1,000 values)".to_owned(),
            percentiles(&q.in_filter),
            "p99 ≤ 20 ms",
            shape(&q.in_filter),
        );
        row(
            "Two-field sort (`source_app`, `-timestamp_start`), before the service indexed it"
                .to_owned(),
            percentiles(&q.two_field_sort_before),
            "",
            "",
        );
        row(
            "The same sort after the stats-api recorded it and the maintenance ran".to_owned(),
            percentiles(&q.two_field_sort),
            "p99 ≤ 20 ms",
            shape(&q.two_field_sort),
        );
        if let (Some(drop), Some(delete)) = (&q.drop_day, &q.delete_day) {
            row(
                format!(
                    "Dropping one day's partition ({} events, of {} daily partitions)",
                    thousands(drop.events as f64),
                    q.partitions
                ),
                format!(
                    "{:.3} s, {:.1} MB of WAL",
                    drop.seconds,
                    drop.wal_bytes as f64 / 1048576.0
                ),
                "< 1 s",
                verdict(quick, drop.seconds < 1.0),
            );
            row(
                "`DELETE` of the same day's events (rolled back), for contrast".to_owned(),
                format!(
                    "{:.2} s, {:.1} MB of WAL",
                    delete.seconds,
                    delete.wal_bytes as f64 / 1048576.0
                ),
                "",
                "",
            );
        }
    }
    if let Some(a) = &results.aggregates {
        let history = thousands(a.history_rows as f64);
        for (what, shape) in [
            (
                format!("Aggregate: count per day of `timestamp_start` over the {history} events"),
                &a.day_count,
            ),
            (
                "Aggregate: top 10 `source_app` by count".to_owned(),
                &a.top_groups,
            ),
            (
                "Aggregate: `count_distinct(tenant_id)`".to_owned(),
                &a.count_distinct,
            ),
        ] {
            row(
                what,
                format!(
                    "{} ({} repeats; {}) · SQL {} · ratio {:.2}",
                    percentiles(&shape.api),
                    shape.api.samples,
                    answer_size(shape),
                    percentiles(&shape.sql_latency),
                    shape.ratio
                ),
                "API p99 ≤ 1.2 × SQL p99",
                verdict(quick, shape.ratio <= TARGET_AGGREGATE_SQL_RATIO),
            );
        }
        row(
            format!(
                "Aggregate: the explorer's chart, count per day of `timestamp` over the {history} events ({})",
                if a.rollups {
                    "rollups filled"
                } else {
                    "no rollups table"
                }
            ),
            format!(
                "{} ({} repeats; {}) · SQL over `events` {}",
                percentiles(&a.rollup.api),
                a.rollup.api.samples,
                answer_size(&a.rollup),
                percentiles(&a.rollup.sql_latency)
            ),
            "p99 ≤ 50 ms",
            verdict(quick, a.rollup.api.p99_ms <= TARGET_ROLLUP_P99_MS),
        );
    }
    if let Some(x) = &results.exports {
        let rows = thousands(x.rows as f64);
        row(
            format!("Export, NDJSON ({rows} events)"),
            format!(
                "{} rows/s ({:.1} s, {:.0} MB)",
                thousands(x.ndjson.rows_per_s),
                x.ndjson.seconds,
                x.ndjson.bytes as f64 / 1e6
            ),
            "",
            "",
        );
        row(
            format!("Export, CSV ({rows} events)"),
            format!(
                "{} rows/s ({:.1} s, {:.0} MB)",
                thousands(x.csv.rows_per_s),
                x.csv.seconds,
                x.csv.bytes as f64 / 1e6
            ),
            "",
            "",
        );
        row(
            "`COPY (SELECT …) TO STDOUT` of the same rows".to_owned(),
            format!(
                "{} rows/s ({:.1} s, {:.0} MB)",
                thousands(x.copy.rows_per_s),
                x.copy.seconds,
                x.copy.bytes as f64 / 1e6
            ),
            "",
            "",
        );
        row(
            "Slower export ÷ COPY".to_owned(),
            format!("{:.2}", x.copy_ratio),
            "≥ 0.5",
            verdict(quick, x.copy_ratio >= TARGET_EXPORT_COPY_RATIO),
        );
        row(
            "Stats-api memory during the exports (`VmRSS` every 50 ms)".to_owned(),
            match (x.rss_before_mb, x.peak_rss_mb) {
                (Some(before), Some(peak)) => format!("peak {peak:.0} MB ({before:.0} MB before)"),
                _ => "not readable".to_owned(),
            },
            "flat",
            "",
        );
    }
    if let Some(x) = &results.explorer {
        match (&x.first_page, &x.skipped) {
            (Some(first), _) => {
                row(
                    format!(
                        "Explorer, \"Run query\" → first page of {} events painted (headless Chromium)",
                        x.rows
                    ),
                    format!("{} ({} loads)", percentiles(first), first.samples),
                    "reported",
                    "",
                );
                if let Some(chart) = &x.chart {
                    row(
                        "Explorer, the same click → chart drawn".to_owned(),
                        percentiles(chart),
                        "",
                        "",
                    );
                }
            }
            (None, skipped) => row(
                "Explorer, first page of events".to_owned(),
                format!(
                    "not measured: {}",
                    skipped.as_deref().unwrap_or("no reason given")
                ),
                "reported",
                "",
            ),
        }
    }
    if !results.peak_rss_mb.is_empty() {
        let value = results
            .peak_rss_mb
            .iter()
            .map(|(name, mb)| format!("{name} {mb:.0} MB"))
            .collect::<Vec<_>>()
            .join(" · ");
        row("Peak RSS".to_owned(), value, "", "");
    }

    let mut cpu_rows: Vec<(String, &cpu::Usage)> = Vec::new();
    if let Some(i) = &results.ingest {
        for single in &i.singles {
            cpu_rows.push((
                format!("Ingest, single events ({} clients)", single.clients),
                &single.cpu,
            ));
        }
        cpu_rows.push(("Ingest, batches".into(), &i.batch.cpu));
    }
    if let Some(e) = &results.e2e {
        cpu_rows.push(("End to end, nearly idle".into(), &e.idle.cpu));
        cpu_rows.push(("End to end".into(), &e.load.cpu));
    }
    if let Some(w) = &results.writer {
        cpu_rows.push(("Writer".into(), &w.writer_cpu));
        cpu_rows.push(("COPY".into(), &w.copy_cpu));
    }
    if let Some(q) = &results.queries {
        cpu_rows.push(("Queries".into(), &q.cpu));
    }
    if let Some(a) = &results.aggregates {
        cpu_rows.push(("Aggregates (API and SQL)".into(), &a.cpu));
    }
    if let Some(x) = &results.exports {
        cpu_rows.push(("Exports (NDJSON and CSV)".into(), &x.cpu));
    }
    if !cpu_rows.is_empty() {
        let _ = writeln!(
            out,
            "\nWhere the CPU went (cores used on average; `bench` is the load generator):\n\n| measurement | cores |\n|---|---|"
        );
        for (name, usage) in cpu_rows {
            let _ = writeln!(out, "| {name} | {} |", usage.summary());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(10_000_000.0), "10,000,000");
        assert_eq!(thousands(-12345.0), "-12,345");
    }

    #[test]
    fn json_has_every_figure_key_even_when_a_phase_did_not_run() {
        let cli = <crate::Cli as clap::Parser>::parse_from([
            "eventgate-bench",
            "--quick",
            "--pg-url",
            "postgres://postgres@127.0.0.1:1",
            "--kafka",
            "127.0.0.1:2",
        ]);
        let sizes = Sizes::from_cli(&cli).unwrap();
        let mut results = Results::new(&sizes, &cli.phases);
        results.peak_rss_mb.insert("ingest-api".into(), 12.5);
        let value = results.to_json();
        for key in [
            "ingest_single_events_per_s",
            "ingest_single_c16_events_per_s",
            "ingest_single_c16_p50_ms",
            "ingest_cpu_us_per_request",
            "ingest_batch_events_per_s",
            "e2e_p50_ms",
            "e2e_p99_ms",
            "writer_rows_per_s",
            "copy_rows_per_s",
            "writer_copy_ratio",
            "query_first_page_p99_ms",
            "query_deep_page_p99_ms",
            "query_offset_deep_p99_ms",
            "deep_first_ratio",
            "history_rows",
            "peak_rss_mb",
            "e2e_idle_p50_ms",
            "e2e_idle_p99_ms",
            "query_unindexed_eq_before_p99_ms",
            "query_unindexed_eq_p99_ms",
            "query_equality_p99_ms",
            "aggregate_day_count_p99_ms",
            "aggregate_day_count_sql_p99_ms",
            "aggregate_day_count_ratio",
            "aggregate_top_groups_p99_ms",
            "aggregate_top_groups_sql_p99_ms",
            "aggregate_top_groups_ratio",
            "aggregate_count_distinct_p99_ms",
            "aggregate_count_distinct_sql_p99_ms",
            "aggregate_count_distinct_ratio",
            "aggregate_rollup_p99_ms",
            "aggregate_rollup_events_sql_p99_ms",
            "export_ndjson_rows_per_s",
            "export_csv_rows_per_s",
            "export_copy_rows_per_s",
            "export_copy_ratio",
            "export_peak_rss_mb",
            "explorer_first_page_ms",
            "explorer_first_page_p99_ms",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(value["peak_rss_mb"]["ingest-api"], 12.5);
        assert_eq!(value["targets"]["e2e_p99_ms"], 150.0);
        assert_eq!(value["targets"]["aggregate_rollup_p99_ms"], 50.0);
        assert_eq!(value["mode"], "quick");
        assert!(markdown(&results).contains("| figure | value | target |"));
    }
}
