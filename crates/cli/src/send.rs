//! `eventgate send TOPIC [FILE|-]`: streams events to the ingest-api in batches, retries what the
//! service could not confirm with the same event ids (so a retry never stores an event twice), goes on
//! past refused events and ends with a summary.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::{Api, INGEST};
use crate::config::Connection;
use crate::error::{Failure, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE};
use crate::input::{spawn_reader, Item, Pending, Position, Preparation};
use crate::output::thousands;

mod deliver;

use deliver::{deliver, BatchReport, Refusal, Retrying};

/// Files at least this large get a progress bar (standard input always does, on a terminal).
const PROGRESS_MIN_BYTES: u64 = 1024 * 1024;
/// Refusals listed in the summary; `--refused FILE` keeps all of them.
const LISTED_REFUSALS: usize = 20;

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The topic to send to.
    pub topic: String,
    /// NDJSON (one event per line) or a JSON array of events; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Events per request (the ingest-api takes at most `ingest.max_batch_events`, 1000 by default).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    /// Bytes per request at most (under the ingest-api's body limit, 1 MiB by default); an event larger
    /// than this goes alone.
    #[arg(long, default_value_t = 512 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub batch_bytes: u64,
    /// Requests in flight at once; 1 keeps the input's order.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub concurrency: u64,
    /// Attempts after the first for a batch the service could not confirm (429, 5xx, lost connection).
    #[arg(long, default_value_t = 10)]
    pub retries: u32,
    /// Whether to give events without an id one before sending. The gateway takes its id field on every
    /// topic (it is the envelope's, not the schema's); `never` sends events as they are, and then an
    /// unconfirmed batch is not sent again, since that could store it twice.
    #[arg(long, value_enum, default_value_t = IdMode::Always)]
    pub ids: IdMode,
    /// The field that carries an event's id (the ingest-api's `ingest.id_field`) [default: the
    /// profile's `id_field`, else event_id].
    #[arg(long)]
    pub id_field: Option<String>,
    /// Append every refused event, with its position and the API's errors, to this NDJSON file.
    #[arg(long)]
    pub refused: Option<PathBuf>,
    /// No progress bar and no summary unless something was refused or failed.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdMode {
    Always,
    Never,
}

/// The outcome of a whole send.
#[derive(Debug, Default)]
struct Summary {
    accepted: u64,
    refused: u64,
    listed: Vec<Refusal>,
    retried_events: u64,
    retry_requests: u64,
    unconfirmed: u64,
    unconfirmed_first: Option<Position>,
    unconfirmed_reason: Option<String>,
    not_sent: u64,
    fatal: Option<Failure>,
    broken_input: Option<String>,
    interrupted: bool,
}

pub async fn run(args: SendArgs) -> Result<u8, Failure> {
    let settings = args.connection.resolve()?;
    let id_field = args
        .id_field
        .clone()
        .unwrap_or_else(|| settings.id_field.clone());
    let api = Arc::new(Api::new(settings)?);

    let (source, size) = open_input(args.file.as_ref())?;
    // The token and the topic are checked before anything is read (401, 403, 404).
    check_topic(&api, &args.topic).await?;
    let ids = args.ids == IdMode::Always;

    let bytes_read = Arc::new(AtomicU64::new(0));
    let (items_tx, mut items) = mpsc::channel::<Item>(2 * args.batch_size.min(10_000) as usize);
    let reader = spawn_reader(
        source,
        Preparation {
            id_field: ids.then(|| id_field.clone()),
        },
        items_tx,
        bytes_read.clone(),
    );
    let progress = progress_bar(args.quiet, size);
    let mut refused_file = match &args.refused {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Failure::Usage(format!("cannot open {}: {e}", path.display())))?,
        )),
        None => None,
    };

    let retrying = Arc::new(Retrying {
        api: api.clone(),
        topic: args.topic.clone(),
        retries: args.retries,
        resend_unconfirmed: ids,
    });
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut tasks: JoinSet<BatchReport> = JoinSet::new();
    let mut batch: Vec<Pending> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut reading = true;
    let linger = Duration::from_millis(200);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);

    while reading {
        let item = tokio::select! {
            item = items.recv() => item,
            // A slow producer on standard input (`tail -f … | eventgate send`) still gets its events out.
            () = tokio::time::sleep(linger), if !batch.is_empty() => {
                spawn_batch(&mut tasks, &retrying, std::mem::take(&mut batch), args.concurrency, &mut summary, &progress, &mut refused_file).await;
                batch_bytes = 0;
                continue;
            }
            _ = &mut interrupt => {
                summary.interrupted = true;
                break;
            }
        };
        match item {
            None => reading = false,
            Some(Item::Event(event)) => {
                let size = event.json.len() as u64 + 1;
                if !batch.is_empty() && batch_bytes + size > args.batch_bytes {
                    spawn_batch(
                        &mut tasks,
                        &retrying,
                        std::mem::take(&mut batch),
                        args.concurrency,
                        &mut summary,
                        &progress,
                        &mut refused_file,
                    )
                    .await;
                    batch_bytes = 0;
                }
                batch_bytes += size;
                batch.push(event);
                if batch.len() as u64 >= args.batch_size {
                    spawn_batch(
                        &mut tasks,
                        &retrying,
                        std::mem::take(&mut batch),
                        args.concurrency,
                        &mut summary,
                        &progress,
                        &mut refused_file,
                    )
                    .await;
                    batch_bytes = 0;
                }
            }
            Some(Item::Bad { at, message }) => {
                let refusal = Refusal::local(at, message);
                record_refusal(&mut summary, refusal, &mut refused_file);
            }
            Some(Item::Broken(message)) => {
                summary.broken_input = Some(message);
                reading = false;
            }
        }
        if summary.fatal.is_some() {
            break;
        }
        if let Some(bar) = &progress {
            bar.set_position(bytes_read.load(Ordering::Relaxed));
        }
    }
    if summary.fatal.is_none() && !summary.interrupted && !batch.is_empty() {
        spawn_batch(
            &mut tasks,
            &retrying,
            std::mem::take(&mut batch),
            args.concurrency,
            &mut summary,
            &progress,
            &mut refused_file,
        )
        .await;
    }
    // Stop the reader (it ends at its next event once nobody listens); what it had read is not sent.
    drop(items);
    while let Some(done) = tasks.join_next().await {
        merge(&mut summary, done, &progress, &mut refused_file);
    }
    summary.not_sent += batch.len() as u64;
    if !summary.interrupted && summary.fatal.is_none() {
        let _ = reader.join();
    }
    if let Some(file) = &mut refused_file {
        let _ = file.flush();
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    Ok(report(&args, &summary, started.elapsed()))
}

/// The input and its size when known (for the progress bar).
fn open_input(file: Option<&PathBuf>) -> Result<(Box<dyn Read + Send>, Option<u64>), Failure> {
    match file.filter(|path| path.as_os_str() != "-") {
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading events from the terminal (NDJSON; Ctrl-D ends)…");
            }
            Ok((Box::new(std::io::stdin()), None))
        }
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Failure::Usage(format!("cannot open {}: {e}", path.display())))?;
            let size = file
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            Ok((Box::new(file), size))
        }
    }
}

/// Asks the ingest-api for the topic: a wrong token, a topic the token may not write or an unknown
/// topic stops the run before any input is read.
async fn check_topic(api: &Api, topic: &str) -> Result<(), Failure> {
    let request = api.get(api.ingest(&["topics", topic]));
    api.get_json(INGEST, &format!("the topic {topic}"), request)
        .await
        .map(|_| ())
}

fn progress_bar(quiet: bool, size: Option<u64>) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match size {
        Some(size) if size < PROGRESS_MIN_BYTES => return None,
        Some(size) => ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} ({eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {binary_bytes} read {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// Starts delivering `batch` once fewer than `concurrency` batches are in flight, merging the
/// reports of those that finish meanwhile.
#[allow(clippy::too_many_arguments)]
async fn spawn_batch(
    tasks: &mut JoinSet<BatchReport>,
    retrying: &Arc<Retrying>,
    batch: Vec<Pending>,
    concurrency: u64,
    summary: &mut Summary,
    progress: &Option<ProgressBar>,
    refused_file: &mut Option<std::io::BufWriter<std::fs::File>>,
) {
    while tasks.len() as u64 >= concurrency {
        if let Some(done) = tasks.join_next().await {
            merge(summary, done, progress, refused_file);
        }
    }
    if summary.fatal.is_some() {
        summary.not_sent += batch.len() as u64;
        return;
    }
    tasks.spawn(deliver(retrying.clone(), batch));
}

fn merge(
    summary: &mut Summary,
    done: Result<BatchReport, tokio::task::JoinError>,
    progress: &Option<ProgressBar>,
    refused_file: &mut Option<std::io::BufWriter<std::fs::File>>,
) {
    let report = match done {
        Ok(report) => report,
        Err(e) => {
            summary.fatal.get_or_insert(Failure::Unreachable(format!(
                "a batch's delivery failed: {e}"
            )));
            return;
        }
    };
    summary.accepted += report.accepted;
    summary.retried_events += report.retried_events;
    summary.retry_requests += report.retry_requests;
    if report.unconfirmed > 0 {
        summary.unconfirmed += report.unconfirmed;
        summary.unconfirmed_first = match (summary.unconfirmed_first, report.unconfirmed_first) {
            (Some(a), Some(b)) => Some(earlier(a, b)),
            (a, b) => a.or(b),
        };
        summary.unconfirmed_reason = report
            .unconfirmed_reason
            .or(summary.unconfirmed_reason.take());
    }
    summary.not_sent += report.not_sent;
    for refusal in report.refused {
        record_refusal(summary, refusal, refused_file);
    }
    if let Some(fatal) = report.fatal {
        summary.fatal.get_or_insert(fatal);
    }
    if let Some(bar) = progress {
        let mut message = format!("{} accepted", thousands(summary.accepted));
        if summary.refused > 0 {
            message.push_str(&format!(" · {} refused", thousands(summary.refused)));
        }
        if summary.retried_events > 0 {
            message.push_str(&format!(" · {} retried", thousands(summary.retried_events)));
        }
        bar.set_message(message);
    }
}

fn earlier(a: Position, b: Position) -> Position {
    match (a, b) {
        (Position::Line(x), Position::Line(y)) => Position::Line(x.min(y)),
        (Position::Element(x), Position::Element(y)) => Position::Element(x.min(y)),
        (a, _) => a,
    }
}

fn record_refusal(
    summary: &mut Summary,
    refusal: Refusal,
    refused_file: &mut Option<std::io::BufWriter<std::fs::File>>,
) {
    summary.refused += 1;
    if let Some(file) = refused_file {
        let line = refusal.to_json();
        let _ = writeln!(file, "{line}");
    }
    if summary.listed.len() < LISTED_REFUSALS {
        summary.listed.push(refusal.without_event());
    }
}

/// Prints the summary to standard error; returns the exit code.
fn report(args: &SendArgs, summary: &Summary, elapsed: Duration) -> u8 {
    let problems = summary.refused > 0
        || summary.unconfirmed > 0
        || summary.not_sent > 0
        || summary.fatal.is_some()
        || summary.broken_input.is_some()
        || summary.interrupted;
    if !args.quiet || problems {
        let total = summary.accepted + summary.refused + summary.unconfirmed + summary.not_sent;
        let seconds = elapsed.as_secs_f64();
        let mut line = format!(
            "{}: {} accepted, {} refused",
            args.topic,
            thousands(summary.accepted),
            thousands(summary.refused)
        );
        if summary.unconfirmed > 0 {
            line.push_str(&format!(", {} unconfirmed", thousands(summary.unconfirmed)));
        }
        if summary.not_sent > 0 {
            line.push_str(&format!(", {} not sent", thousands(summary.not_sent)));
        }
        line.push_str(&format!(
            " of {} events in {seconds:.1} s",
            thousands(total)
        ));
        if seconds > 0.5 && summary.accepted > 0 {
            line.push_str(&format!(
                " ({}/s)",
                thousands((summary.accepted as f64 / seconds) as u64)
            ));
        }
        if summary.retry_requests > 0 {
            line.push_str(&format!(
                "; {} events retried in {} requests",
                thousands(summary.retried_events),
                thousands(summary.retry_requests)
            ));
        }
        eprintln!("{line}");
        if !summary.listed.is_empty() {
            eprintln!("refused:");
            for refusal in &summary.listed {
                eprintln!("{refusal}");
            }
            if summary.refused > summary.listed.len() as u64 {
                let more = summary.refused - summary.listed.len() as u64;
                match &args.refused {
                    Some(path) => eprintln!(
                        "  … and {} more (all in {})",
                        thousands(more),
                        path.display()
                    ),
                    None => eprintln!(
                        "  … and {} more (--refused FILE keeps them all)",
                        thousands(more)
                    ),
                }
            }
        }
        if summary.unconfirmed > 0 {
            let from = summary
                .unconfirmed_first
                .map(|at| format!(", the first at {at}"))
                .unwrap_or_default();
            eprintln!(
                "unconfirmed: {} events{from} were not confirmed by the ingest-api: {}",
                thousands(summary.unconfirmed),
                summary.unconfirmed_reason.as_deref().unwrap_or("no answer")
            );
        }
        if let Some(message) = &summary.broken_input {
            eprintln!("input: {message}");
        }
        if summary.interrupted {
            eprintln!("interrupted: the rest of the input was not sent");
        }
        if let Some(fatal) = &summary.fatal {
            eprintln!("error: {fatal}");
        }
    }
    if let Some(fatal) = &summary.fatal {
        fatal.exit_code()
    } else if summary.unconfirmed > 0 || summary.interrupted {
        EXIT_UNREACHABLE
    } else if summary.broken_input.is_some() {
        EXIT_USAGE
    } else if summary.refused > 0 {
        EXIT_REFUSED
    } else {
        0
    }
}
