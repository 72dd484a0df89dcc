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
    /// Keep the stats-api's truncation marker (an export stopped at its row or time cap) instead of
    /// asking for the rest with its cursor.
    #[arg(long)]
    pub no_resume: bool,
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
    let mut cursor: Option<String> = None;
    let result: Result<(), Failure> = loop {
        let mut part_params = params.clone();
        if let Some(cursor) = &cursor {
            part_params.push(("cursor".into(), cursor.clone()));
        }
        let request = api
            .get(api.stats(&["stats", &args.topic, "export"]))
            .query(&part_params);
        let response = match api.send(STATS, request).await {
            Ok(response) => response,
            Err(failure) => break Err(failure),
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            break Err(error_of(status, &headers, &body).into_failure(STATS, "the export"));
        }
        // A continuation repeats the CSV header: the file keeps the first one only.
        let mut holdback = Holdback::new(cursor.is_some() && args.format == ExportFormat::Csv);
        let mut stream = response.bytes_stream();
        let streamed: Result<(), Failure> = loop {
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
            match holdback.push(&chunk, &mut out) {
                Ok(written) => bytes += written,
                Err(e) => break Err(Failure::from_output(e)),
            }
            if let Some(bar) = &progress {
                bar.set_position(bytes);
            }
        };
        if let Err(failure) = streamed {
            // What was held back is complete lines: keep it with the rest.
            let _ = out.write_all(&holdback.tail);
            break Err(failure);
        }
        let (rest, marker) = holdback.finish(args.format);
        if let Err(e) = out.write_all(rest) {
            break Err(Failure::from_output(e));
        }
        bytes += rest.len() as u64;
        match marker {
            Some(marker) if !args.no_resume => {
                if !args.quiet {
                    eprintln!(
                        "the stats-api stopped the export at its {} after {} events; asking for the rest",
                        marker.reason.replace('_', " "),
                        marker.rows
                    );
                }
                cursor = Some(marker.cursor);
            }
            Some(marker) => {
                if let Err(e) = out.write_all(&marker.line) {
                    break Err(Failure::from_output(e));
                }
                if !args.quiet {
                    eprintln!(
                        "the export stopped at the stats-api's {} (--no-resume): the last line holds the cursor of the rest",
                        marker.reason.replace('_', " ")
                    );
                }
                break Ok(());
            }
            None => break Ok(()),
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
        (Err(failure), Some(partial), _) if bytes == 0 => {
            let _ = std::fs::remove_file(&partial);
            Err(failure)
        }
        (Err(failure), Some(partial), _) => Err(match failure {
            Failure::Unreachable(message) => {
                Failure::Unreachable(format!("{message} (kept in {})", partial.display()))
            }
            other => other,
        }),
        (Err(failure), None, _) => Err(failure),
    }
}

/// The end of one export answer, held back until it is known whether it is the truncation marker: the
/// last complete line and whatever follows it.
struct Holdback {
    tail: Vec<u8>,
    skip_first_line: bool,
}

/// The stats-api's truncation marker (docs/API.md, "Exports").
struct Marker {
    reason: String,
    rows: u64,
    cursor: String,
    line: Vec<u8>,
}

impl Holdback {
    fn new(skip_first_line: bool) -> Holdback {
        Holdback {
            tail: Vec::new(),
            skip_first_line,
        }
    }

    /// Writes every line of `chunk` that cannot be the last one; returns the bytes written.
    fn push(&mut self, mut chunk: &[u8], out: &mut dyn Write) -> std::io::Result<u64> {
        if self.skip_first_line {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    chunk = &chunk[end + 1..];
                    self.skip_first_line = false;
                }
                None => return Ok(0),
            }
        }
        self.tail.extend_from_slice(chunk);
        let Some(last) = self.tail.iter().rposition(|&b| b == b'\n') else {
            return Ok(0);
        };
        let Some(before) = self.tail[..last].iter().rposition(|&b| b == b'\n') else {
            return Ok(0);
        };
        out.write_all(&self.tail[..=before])?;
        self.tail.drain(..=before);
        Ok(before as u64 + 1)
    }

    /// What remains to be written, and the marker when the answer ended with one.
    fn finish(&self, format: ExportFormat) -> (&[u8], Option<Marker>) {
        let body = self.tail.strip_suffix(b"\n").unwrap_or(&self.tail);
        let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = &self.tail[start..];
        match parse_marker(line, format) {
            Some(marker) => (&self.tail[..start], Some(marker)),
            None => (&self.tail, None),
        }
    }
}

fn parse_marker(line: &[u8], format: ExportFormat) -> Option<Marker> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let (reason, rows, cursor) = match format {
        ExportFormat::Ndjson => {
            let value: serde_json::Value = serde_json::from_str(text).ok()?;
            if value["truncated"] != serde_json::Value::Bool(true) || value.get("id").is_some() {
                return None;
            }
            (
                value["reason"].as_str()?.to_owned(),
                value["rows"].as_u64()?,
                value["cursor"].as_str()?.to_owned(),
            )
        }
        ExportFormat::Csv => {
            if !text.starts_with("#eventgate-export-truncated,") {
                return None;
            }
            let mut cells = text.split(',');
            cells.next();
            (
                cells.next()?.to_owned(),
                cells.next()?.parse().ok()?,
                cells.next()?.to_owned(),
            )
        }
    };
    Some(Marker {
        reason,
        rows,
        cursor,
        line: line.to_vec(),
    })
}

fn partial_path(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str], format: ExportFormat, skip_header: bool) -> (String, Option<Marker>) {
        let mut holdback = Holdback::new(skip_header);
        let mut out = Vec::new();
        let mut written = 0;
        for chunk in chunks {
            written += holdback.push(chunk.as_bytes(), &mut out).expect("write");
        }
        assert_eq!(written as usize, out.len());
        let (rest, marker) = holdback.finish(format);
        out.extend_from_slice(rest);
        (String::from_utf8(out).expect("utf-8"), marker)
    }

    #[test]
    fn an_ndjson_marker_is_taken_off_and_read() {
        let marker =
            r#"{"truncated":true,"reason":"row_limit","rows":2,"cursor":"eyJ","message":"…"}"#;
        let (out, found) = run(
            &["{\"id\":1}\n{\"i", "d\":2}\n", marker, "\n"],
            ExportFormat::Ndjson,
            false,
        );
        assert_eq!(out, "{\"id\":1}\n{\"id\":2}\n");
        let found = found.expect("marker");
        assert_eq!(
            (found.reason.as_str(), found.rows, found.cursor.as_str()),
            ("row_limit", 2, "eyJ")
        );
        let (out, found) = run(
            &["{\"id\":1}\n", "{\"id\":2}\n"],
            ExportFormat::Ndjson,
            false,
        );
        assert_eq!(out, "{\"id\":1}\n{\"id\":2}\n");
        assert!(found.is_none());
    }

    #[test]
    fn a_csv_continuation_drops_its_header_and_the_marker() {
        let (out, found) = run(
            &[
                "seq,name\r\n1,a\r",
                "\n#eventgate-export-truncated,time_limit,1,eyJ\r\n",
            ],
            ExportFormat::Csv,
            false,
        );
        assert_eq!(out, "seq,name\r\n1,a\r\n");
        assert_eq!(found.expect("marker").cursor, "eyJ");
        let (out, found) = run(&["seq,na", "me\r\n2,b\r\n"], ExportFormat::Csv, true);
        assert_eq!(out, "2,b\r\n");
        assert!(found.is_none());
    }
}
