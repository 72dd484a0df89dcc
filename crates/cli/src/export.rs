//! `eventgate export TOPIC --format csv|ndjson [-o FILE]`: the stats-api's export, written as it
//! arrives (the CLI holds one chunk at a time, whatever the size).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{error_of, Api, STATS};
use crate::config::Connection;
use crate::error::Failure;
use crate::query::filter_params;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

impl ExportFormat {
    fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The topic to export.
    pub topic: String,
    #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
    pub format: ExportFormat,
    /// CSV columns, comma-separated (envelope fields, payload paths) [default: the envelope fields
    /// and every payload field].
    #[arg(long)]
    pub fields: Option<String>,
    /// A filter as in `query` (repeat for more).
    #[arg(long = "filter", short = 'f', value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Sort fields, comma-separated; `-` sorts descending [default: -timestamp].
    #[arg(long, short = 's', allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Write to FILE (through FILE.partial, renamed when complete) instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// No progress on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: ExportArgs) -> Result<u8, Failure> {
    let mut connection = args.connection.clone();
    // An export may take long; the timeout is for each chunk's arrival, not the whole download.
    let chunk_timeout = Duration::from_secs(connection.timeout.max(1));
    connection.timeout = 24 * 3600;
    let api = Api::new(connection.resolve()?)?;
    let mut params = filter_params(&args.filters)?;
    params.push(("format".into(), args.format.as_str().into()));
    if let Some(fields) = &args.fields {
        params.push(("fields".into(), fields.clone()));
    }
    if let Some(sort) = &args.sort {
        params.push(("sort".into(), sort.clone()));
    }
    let request = api
        .get(api.stats(&["stats", &args.topic, "export"]))
        .query(&params);
    let response = api.send(STATS, request).await?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        return Err(error_of(status, &headers, &body).into_failure(STATS, "the export"));
    }

    let (mut out, partial): (Box<dyn Write>, Option<PathBuf>) = match &args.output {
        Some(path) => {
            let partial = partial_path(path);
            let file = std::fs::File::create(&partial)
                .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", partial.display())))?;
            (Box::new(std::io::BufWriter::new(file)), Some(partial))
        }
        None => (Box::new(std::io::stdout().lock()), None),
    };
    let progress = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} {binary_bytes} ({binary_bytes_per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });

    let mut bytes = 0u64;
    let mut stream = response.bytes_stream();
    let result: Result<(), Failure> = loop {
        let chunk = match tokio::time::timeout(chunk_timeout, stream.next()).await {
            Err(_) => {
                break Err(Failure::Unreachable(format!(
                    "the export stalled: nothing arrived for {} s after {bytes} bytes",
                    chunk_timeout.as_secs()
                )))
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => {
                break Err(Failure::Unreachable(format!(
                    "the export broke off after {bytes} bytes ({e}): the output is incomplete"
                )))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if let Err(e) = out.write_all(&chunk) {
            break Err(Failure::from_output(e));
        }
        bytes += chunk.len() as u64;
        if let Some(bar) = &progress {
            bar.set_position(bytes);
        }
    };
    let result = result.and_then(|()| out.flush().map_err(Failure::from_output));
    drop(out);
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    match (result, partial, &args.output) {
        (Ok(()), Some(partial), Some(path)) => {
            std::fs::rename(&partial, path).map_err(|e| {
                Failure::Usage(format!(
                    "cannot rename {} to {}: {e}",
                    partial.display(),
                    path.display()
                ))
            })?;
            if !args.quiet {
                eprintln!("{bytes} bytes written to {}", path.display());
            }
            Ok(0)
        }
        (Ok(()), _, _) => Ok(0),
        (Err(failure), Some(partial), _) => Err(match failure {
            Failure::Unreachable(message) => {
                Failure::Unreachable(format!("{message} (kept in {})", partial.display()))
            }
            other => other,
        }),
        (Err(failure), None, _) => Err(failure),
    }
}

fn partial_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}
