//! `eventgate tail TOPIC [--filter …]`: the stats-api's live tail (Server-Sent Events), printed as the
//! events are stored. Whatever ends the stream — a network failure, a restart of the stats-api, the
//! server dropping a slow reader — the tail reconnects with the id of the last event it printed
//! (`Last-Event-ID`), so nothing is missed and nothing printed twice. Refusals (400, 401, 403, 404) end
//! it; 429 and 503 are waited out.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde_json::Value;

use crate::client::{error_of, retry_after, Api, STATS};
use crate::config::Connection;
use crate::error::Failure;
use crate::query::filter_params;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    /// One line per event: time, producer, payload (the default on a terminal).
    Text,
    /// One event per line as JSON (the default in a pipe).
    Ndjson,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// The topic to follow.
    pub topic: String,
    /// A filter as in `query` (repeat for more).
    #[arg(long = "filter", short = 'f', value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// The fields each event keeps, comma-separated.
    #[arg(long)]
    pub fields: Option<String>,
    #[arg(long, value_enum)]
    pub format: Option<TailFormat>,
    /// Resume after this position (the `id` of an event of an earlier tail) instead of starting now.
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Stop after this many events.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Print each event's position (`id`) on standard error, to resume with `--after`.
    #[arg(long)]
    pub ids: bool,
    /// No reconnection notices on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// How long to wait before reconnecting: from 1 s, doubling up to 30 s, reset by an event.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(args: TailArgs) -> Result<u8, Failure> {
    let mut connection = args.connection.clone();
    // The stream lasts; the timeout bounds the silence between frames (heartbeats come every 15 s).
    let silence = Duration::from_secs(connection.timeout.max(1));
    connection.timeout = 365 * 24 * 3600;
    let api = Api::new(connection.resolve()?)?;
    let mut params = filter_params(&args.filters)?;
    if let Some(fields) = &args.fields {
        params.push(("fields".into(), fields.clone()));
    }
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        TailFormat::Text
    } else {
        TailFormat::Ndjson
    });
    let mut out = std::io::stdout().lock();
    let mut last_id = args.after.clone();
    let mut printed = 0u64;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut request = api
            .get(api.stats(&["stats", &args.topic, "tail"]))
            .query(&params)
            .header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let outcome: Result<(), String> = match api.send(STATS, request).await {
            Err(failure) => Err(failure.to_string()),
            Ok(response) => {
                let status = response.status().as_u16();
                if status == 429 || status == 503 {
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    let error = error_of(status, &headers, &body);
                    Err(format!(
                        "{} answered {status}: {}",
                        STATS,
                        error.lines().trim_end()
                    ))
                    .inspect_err(|_| {
                        if let Some(wait) = retry_after(&headers) {
                            backoff = wait.clamp(FIRST_BACKOFF, MAX_BACKOFF);
                        }
                    })
                } else if !(200..300).contains(&status) {
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    return Err(error_of(status, &headers, &body).into_failure(STATS, "the tail"));
                } else {
                    let mut frames = Frames::default();
                    let mut stream = response.bytes_stream();
                    loop {
                        let chunk = match tokio::time::timeout(silence, stream.next()).await {
                            Err(_) => {
                                break Err(format!(
                                    "nothing arrived for {} s (not even a heartbeat)",
                                    silence.as_secs()
                                ))
                            }
                            Ok(None) => break Err("the stream ended".to_owned()),
                            Ok(Some(Err(e))) => break Err(format!("the stream broke off: {e}")),
                            Ok(Some(Ok(chunk))) => chunk,
                        };
                        frames.push(&chunk);
                        let mut ended = None;
                        while let Some(frame) = frames.next() {
                            if let Some(id) = &frame.id {
                                last_id = Some(id.clone());
                            }
                            match frame.event.as_deref() {
                                None if !frame.data.is_empty() => {
                                    print_event(&mut out, format, &frame.data)
                                        .map_err(Failure::from_output)?;
                                    if args.ids {
                                        if let Some(id) = &frame.id {
                                            eprintln!("id: {id}");
                                        }
                                    }
                                    printed += 1;
                                    backoff = FIRST_BACKOFF;
                                    if args.count.is_some_and(|n| printed >= n) {
                                        out.flush().map_err(Failure::from_output)?;
                                        return Ok(0);
                                    }
                                }
                                Some("error") => ended = Some(describe_error(&frame.data)),
                                _ => {}
                            }
                        }
                        out.flush().map_err(Failure::from_output)?;
                        if let Some(reason) = ended {
                            break Err(reason);
                        }
                    }
                }
            }
        };
        if let Err(reason) = outcome {
            if !args.quiet {
                eprintln!(
                    "{reason}; reconnecting in {} s{}",
                    backoff.as_secs(),
                    if last_id.is_some() {
                        " from the last event"
                    } else {
                        ""
                    }
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The server's `event: error`: its reason and message.
fn describe_error(data: &str) -> String {
    match serde_json::from_str::<Value>(data) {
        Ok(error) => format!(
            "the stats-api ended the tail ({}): {}",
            error["reason"].as_str().unwrap_or("unknown"),
            error["message"].as_str().unwrap_or_default()
        ),
        Err(_) => format!("the stats-api ended the tail: {data}"),
    }
}

fn print_event(out: &mut impl Write, format: TailFormat, data: &str) -> std::io::Result<()> {
    match format {
        TailFormat::Ndjson => writeln!(out, "{data}"),
        TailFormat::Text => {
            let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            let payload = event
                .get("payload")
                .map(Value::to_string)
                .unwrap_or_default();
            writeln!(
                out,
                "{}  {}  {}",
                event["timestamp"].as_str().unwrap_or("-"),
                event["producer"].as_str().unwrap_or("-"),
                payload
            )
        }
    }
}

/// One Server-Sent Events frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Frames parsed out of the bytes as they arrive (a frame ends with a blank line; comments dropped).
#[derive(Default)]
pub struct Frames {
    buffer: Vec<u8>,
}

impl Frames {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame that says something (a comment alone says nothing).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            let mut frame = Frame::default();
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => frame.id = Some(value.to_owned()),
                    "event" => frame.event = Some(value.to_owned()),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            frame.data = data.join("\n");
            if frame.id.is_some() || frame.event.is_some() || !frame.data.is_empty() {
                return Some(frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_across_chunks_and_comments_dropped() {
        let mut frames = Frames::default();
        frames.push(b"retry: 1000\n\n: heartbeat\nid: p1\n\nid: e1\nda");
        assert_eq!(
            frames.next(),
            Some(Frame {
                id: Some("p1".into()),
                ..Frame::default()
            })
        );
        assert_eq!(frames.next(), None, "the rest is incomplete");
        frames.push(b"ta: {\"a\":1}\n\nevent: error\ndata: {\"reason\":\"x\"}\n\n");
        assert_eq!(
            frames.next(),
            Some(Frame {
                id: Some("e1".into()),
                event: None,
                data: "{\"a\":1}".into()
            })
        );
        let error = frames.next().expect("error frame");
        assert_eq!(error.event.as_deref(), Some("error"));
        assert!(describe_error(&error.data).contains("(x)"));
    }
}
