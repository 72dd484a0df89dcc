//! `eventgate-bench`: the measured speed of the real services, against the physical limits of the same
//! machine, in one run (`make bench`, `make bench-quick`).
//!
//! The tool is given a PostgreSQL cluster (superuser URL) and a Kafka broker — `scripts/bench.sh` starts a
//! private pair like `make run` does, or points at running ones — and the directory of the service
//! binaries. It spawns the services itself, as separate processes (so each one's CPU and peak memory can be
//! read from `/proc`), in a database `eventgate_bench` of its own and under Kafka topic prefixes of its
//! own, and measures, in order (each phase on fresh topics, so no phase drains another's backlog):
//!
//! 1. [`ingest`]: events/s accepted (202) over HTTP by N keep-alive clients, single events (16, 64 and
//!    256 clients) then batches of 100, with p50/p99 latency and the ingest-api's CPU per request
//!    (ingest-api alone), beside the broker's own acknowledgement time.
//! 2. [`e2e`]: at a fixed offered rate, the time from a 202 to the event being returned by the stats
//!    API (ingest-api + db-writer + stats-api).
//! 3. [`writer`]: rows/s of a db-writer draining a pre-filled topic into the indexed `events` table,
//!    beside a raw `COPY` of the same rows into the emptied table (same partitions, same indexes): the
//!    ratio is the figure.
//! 4. [`queries`]: a history of millions of events generated straight into Postgres, then first page vs
//!    a cursor page deep in the history (and OFFSET to the same depth), and typical filters and sorts.
//!    Then, on the same history and stats-api: the equality on a payload field the topic did not declare
//!    indexed again, after the stats-api recorded its use and the maintenance ran (auto-indexes).
//! 5. [`aggregates`]: count per day, top groups, a distinct count and the explorer's chart through
//!    `POST /stats/{topic}/aggregate`, each beside the hand-written SQL of the same answer.
//! 6. [`exports`]: NDJSON and CSV exports of the same rows against `COPY (SELECT …) TO STDOUT`, and the
//!    stats-api's peak memory while exporting.
//! 7. [`explorer`]: the explorer page's first page of events in headless Chromium.
//! 8. Peak RSS (`VmHWM`) of each service, and in every phase the CPU each process used: what limits a
//!    figure on 2 cores is usually visible there.
//!
//! It prints a Markdown table and writes `target/bench/results.json` (see [`report`]). The targets (full
//! mode) and whether they were met are shown beside the figures, but nothing fails because a figure
//! missed one: the exit status says whether the measurements could be taken.

#![recursion_limit = "512"]

mod aggregates;
mod cpu;
mod db;
mod e2e;
mod explorer;
mod exports;
mod ingest;
mod load;
mod queries;
mod report;
mod services;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::report::Results;
use crate::services::Bench;

/// Measured speed of ingest, writer and queries on the real services.
#[derive(Parser, Debug, Clone)]
#[command(name = "eventgate-bench", version)]
pub struct Cli {
    /// Small sizes (about a minute): proves the tool works; the figures are not the full-mode ones.
    #[arg(long)]
    pub quick: bool,
    /// Superuser URL of the PostgreSQL cluster, without a database: postgres://postgres@127.0.0.1:PORT.
    #[arg(long, env = "BENCH_PG_URL")]
    pub pg_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "BENCH_KAFKA_BROKERS")]
    pub kafka: String,
    /// Where the service binaries are (eventgate-ingest-api, eventgate-db-writer, eventgate-stats-api).
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// The repository root: the services run there (config/eventgate.toml, config/topics).
    #[arg(long, default_value = ".")]
    pub repo_root: PathBuf,
    /// The JSON results file; service logs go to `logs/` beside it.
    #[arg(long, default_value = "target/bench/results.json")]
    pub out: PathBuf,
    /// Which phases to run, comma-separated: ingest, e2e, writer, queries, aggregates, exports,
    /// explorer. The last four share one generated history (made once, by the first of them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ingest,e2e,writer,queries,aggregates,exports,explorer"
    )]
    pub phases: Vec<Phase>,
    /// Keep the database `eventgate_bench` at the end (it is dropped otherwise).
    #[arg(long)]
    pub keep_database: bool,

    /// Concurrent keep-alive clients sending single events, one run per number, comma-separated [full
    /// 16,64,256, quick 16,32]. Each request waits for the broker's acknowledgement, so a few clients
    /// measure latency (a producer's few connections) and hundreds keep 2 cores busy (throughput).
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Concurrent clients sending batches of 100 [full 32, quick 8].
    #[arg(long)]
    pub batch_clients: Option<usize>,
    /// Records produced one at a time straight to the broker, to time its acknowledgement [full 500,
    /// quick 100].
    #[arg(long)]
    pub broker_acks: Option<usize>,
    /// Events per batch request.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Seconds measured per ingest run, after the warm-up [full 20, quick 4].
    #[arg(long)]
    pub ingest_secs: Option<f64>,
    /// Seconds of load before measuring starts [full 3, quick 1].
    #[arg(long)]
    pub warmup_secs: Option<f64>,
    /// End to end: offered events/s [full 10000, quick 2000].
    #[arg(long)]
    pub e2e_rate: Option<f64>,
    /// End to end: events per request.
    #[arg(long, default_value_t = 10)]
    pub e2e_batch: usize,
    /// End to end: seconds of offered load [full 30, quick 5].
    #[arg(long)]
    pub e2e_secs: Option<f64>,
    /// End to end, nearly idle: offered events/s, as requests of one event, before the loaded run.
    #[arg(long, default_value_t = 100.0)]
    pub e2e_idle_rate: f64,
    /// End to end, nearly idle: seconds [full 20, quick 3].
    #[arg(long)]
    pub e2e_idle_secs: Option<f64>,
    /// Writer: messages pre-filled into the topic [full 1000000, quick 50000].
    #[arg(long)]
    pub writer_rows: Option<u64>,
    /// Writer: db-writer processes in the consumer group (the topic has 3 partitions).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Queries: events in the generated history [full 10000000, quick 200000].
    #[arg(long)]
    pub history_rows: Option<u64>,
    /// Queries: depth of the deep page [full 1000000, quick half the history].
    #[arg(long)]
    pub deep_depth: Option<u64>,
    /// Queries: requests per query kind [full 500, quick 30].
    #[arg(long)]
    pub query_iterations: Option<usize>,
    /// Queries: OFFSET statements at the deep depth [full 20, quick 5].
    #[arg(long)]
    pub offset_iterations: Option<usize>,
    /// Queries: seconds waited after the unindexed equality before the maintenance runs, and again
    /// after it, before measuring the equality again: the stats-api flushes what analysts filter by
    /// every 10 s and re-reads the auto-indexed fields every 10 s [full 12, quick 1].
    #[arg(long)]
    pub auto_index_wait_secs: Option<f64>,
    /// Aggregates: measured repeats of each aggregate and of its SQL [full 10, quick 3] (at least 3;
    /// fewer than asked when a shape has used up its 30 s).
    #[arg(long)]
    pub aggregate_iterations: Option<usize>,
    /// Exports: rows of each export, a time range of the history [full 1000000, quick 20000; at most
    /// the history].
    #[arg(long)]
    pub export_rows: Option<u64>,
    /// Explorer: page loads timed in headless Chromium [full 10, quick 3].
    #[arg(long)]
    pub explorer_iterations: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Ingest,
    E2e,
    Writer,
    Queries,
    Aggregates,
    Exports,
    Explorer,
}

impl Phase {
    /// The phases measured on the generated history, with one stats-api.
    pub fn on_history(self) -> bool {
        matches!(
            self,
            Phase::Queries | Phase::Aggregates | Phase::Exports | Phase::Explorer
        )
    }
}

/// The sizes of one run: the mode's defaults, overridden by the flags given.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    pub mode: &'static str,
    /// Clients of the single-event runs, fewest first.
    pub clients: Vec<usize>,
    pub broker_acks: usize,
    pub batch_clients: usize,
    pub batch_size: usize,
    pub ingest_secs: f64,
    pub warmup_secs: f64,
    pub e2e_rate: f64,
    pub e2e_batch: usize,
    pub e2e_secs: f64,
    pub e2e_idle_rate: f64,
    pub e2e_idle_secs: f64,
    pub writer_rows: u64,
    pub writers: usize,
    pub history_rows: u64,
    pub deep_depth: u64,
    pub query_iterations: usize,
    pub offset_iterations: usize,
    pub auto_index_wait_secs: f64,
    pub aggregate_iterations: usize,
    pub export_rows: u64,
    pub explorer_iterations: usize,
}

impl Sizes {
    fn from_cli(cli: &Cli) -> anyhow::Result<Sizes> {
        let quick = cli.quick;
        let pick = |given: Option<f64>, full: f64, small: f64| {
            given.unwrap_or(if quick { small } else { full })
        };
        let history_rows = cli
            .history_rows
            .unwrap_or(if quick { 200_000 } else { 10_000_000 });
        let deep_depth = cli
            .deep_depth
            .unwrap_or(if quick { history_rows / 2 } else { 1_000_000 });
        anyhow::ensure!(
            deep_depth + 10_000 < history_rows,
            "--deep-depth ({deep_depth}) must leave at least 10,000 rows after it in the history ({history_rows})"
        );
        anyhow::ensure!(
            cli.batch_size >= 1 && cli.e2e_batch >= 1,
            "batch sizes must be at least 1"
        );
        let mut clients = cli.clients.clone().unwrap_or_else(|| {
            if quick {
                vec![16, 32]
            } else {
                vec![16, 64, 256]
            }
        });
        clients.retain(|&c| c > 0);
        clients.sort_unstable();
        clients.dedup();
        anyhow::ensure!(
            !clients.is_empty(),
            "--clients needs at least one number above 0"
        );
        Ok(Sizes {
            mode: if quick { "quick" } else { "full" },
            clients,
            broker_acks: cli
                .broker_acks
                .unwrap_or(if quick { 100 } else { 500 })
                .max(1),
            batch_clients: cli
                .batch_clients
                .unwrap_or(if quick { 8 } else { 32 })
                .max(1),
            batch_size: cli.batch_size,
            ingest_secs: pick(cli.ingest_secs, 20.0, 4.0),
            warmup_secs: pick(cli.warmup_secs, 3.0, 1.0),
            e2e_rate: pick(cli.e2e_rate, 10_000.0, 2_000.0),
            e2e_batch: cli.e2e_batch,
            e2e_secs: pick(cli.e2e_secs, 30.0, 5.0),
            e2e_idle_rate: cli.e2e_idle_rate.max(1.0),
            e2e_idle_secs: pick(cli.e2e_idle_secs, 20.0, 3.0),
            writer_rows: cli
                .writer_rows
                .unwrap_or(if quick { 50_000 } else { 1_000_000 }),
            writers: cli.writers.clamp(1, 3),
            history_rows,
            deep_depth,
            query_iterations: cli
                .query_iterations
                .unwrap_or(if quick { 30 } else { 500 })
                .max(2),
            offset_iterations: cli
                .offset_iterations
                .unwrap_or(if quick { 5 } else { 20 })
                .max(1),
            auto_index_wait_secs: pick(cli.auto_index_wait_secs, 12.0, 1.0).max(0.0),
            aggregate_iterations: cli
                .aggregate_iterations
                .unwrap_or(if quick { 3 } else { 10 })
                .max(3),
            export_rows: cli
                .export_rows
                .unwrap_or(if quick { 20_000 } else { 1_000_000 })
                .clamp(1, history_rows),
            explorer_iterations: cli
                .explorer_iterations
                .unwrap_or(if quick { 3 } else { 10 })
                .max(1),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sizes = Sizes::from_cli(&cli)?;
    // Two workers: enough to drive the services, and the load generator takes its share of the same
    // cores, which the CPU figures of every phase show.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = run(cli, sizes) => result,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        }
    })
}

async fn run(cli: Cli, sizes: Sizes) -> anyhow::Result<()> {
    if cli.phases.iter().any(|p| p.on_history()) {
        queries::check_disk_space(&cli.pg_url, sizes.history_rows).await?;
    }
    let bench = Bench::prepare(&cli).await?;
    let mut results = Results::new(&sizes, &cli.phases);
    eprintln!(
        "bench: {} mode; {}; services from {}",
        sizes.mode,
        results.machine.summary(),
        bench.bin_dir.display()
    );
    if results.machine.load_average_1m > results.machine.cpus as f64 * 0.5 {
        eprintln!(
            "bench: warning: the machine is busy (load average {:.1} on {} CPUs): figures will be noisy",
            results.machine.load_average_1m, results.machine.cpus
        );
    }

    let outcome = run_phases(&bench, &cli, &sizes, &mut results).await;
    results.peak_rss_mb = bench.peak_rss_mb();
    let cleanup = bench.finish(cli.keep_database).await;

    results.finish();
    let table = report::markdown(&results);
    println!("{table}");
    report::write_json(&results, &cli.out)?;
    eprintln!("bench: results written to {}", cli.out.display());
    outcome?;
    cleanup
}

async fn run_phases(
    bench: &Bench,
    cli: &Cli,
    sizes: &Sizes,
    results: &mut Results,
) -> anyhow::Result<()> {
    let on_history: Vec<Phase> = cli
        .phases
        .iter()
        .copied()
        .filter(|p| p.on_history())
        .collect();
    let mut history_done = false;
    for phase in &cli.phases {
        let started = std::time::Instant::now();
        match phase {
            Phase::Ingest => results.ingest = Some(ingest::run(bench, sizes).await?),
            Phase::E2e => results.e2e = Some(e2e::run(bench, sizes).await?),
            Phase::Writer => results.writer = Some(writer::run(bench, sizes).await?),
            Phase::Queries | Phase::Aggregates | Phase::Exports | Phase::Explorer => {
                // The first of them generates the history and runs them all, in their order.
                if history_done {
                    continue;
                }
                history_done = true;
                queries::run(bench, sizes, &on_history, results).await?;
            }
        }
        let what = if phase.on_history() {
            format!("{on_history:?} (on one history)")
        } else {
            format!("{phase:?}")
        };
        eprintln!(
            "bench: phase {what} done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        // Let the machine settle (background writes, checkpoints of the phase before) a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
