//! `eventgate status TOPIC ID [--wait SECS]`: what became of an event the caller sent
//! (`GET /stats/{topic}/events/{id}/status`, answered for a token allowed to write the topic, about the
//! token's own events only). Exit 0 stored, 1 dead-lettered (it will never be stored as sent),
//! 4 not found (not stored yet, or never accepted; `--wait` asks again until it is one of the others).

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::client::{Api, STATS};
use crate::config::Connection;
use crate::error::{Failure, EXIT_REFUSED};

/// The status was `not_found` (after `--wait`, if given).
pub const EXIT_NOT_FOUND: u8 = 4;
/// How often `--wait` asks again.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// One line for a person (and a line per dead letter).
    Text,
    /// The API's `data` object.
    Json,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The topic the event was sent to.
    pub topic: String,
    /// The event's id (its `event_id`, or the id the 202 answered).
    pub id: String,
    /// Ask again until the event is stored or dead-lettered, for at most this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: StatusArgs) -> Result<u8, Failure> {
    if uuid::Uuid::parse_str(&args.id).is_err() {
        return Err(Failure::Usage(format!(
            "`{}` is not an event id (a UUID)",
            args.id
        )));
    }
    let api = Api::new(args.connection.resolve()?)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let data = loop {
        let url = api.stats(&["stats", &args.topic, "events", &args.id, "status"]);
        let what = format!("the status of event {}", args.id);
        let (answer, _) = api.get_json(STATS, &what, api.get(url)).await?;
        let data = answer["data"].clone();
        if data["status"] != "not_found" || tokio::time::Instant::now() + POLL > deadline {
            break data;
        }
        tokio::time::sleep(POLL).await;
    };
    match args.format {
        StatusFormat::Json => println!("{data}"),
        StatusFormat::Text => print!("{}", describe(&data)),
    }
    Ok(exit_code(&data))
}

pub fn exit_code(data: &Value) -> u8 {
    match data["status"].as_str() {
        Some("stored") => 0,
        Some("dead_lettered") => EXIT_REFUSED,
        _ => EXIT_NOT_FOUND,
    }
}

/// The status as lines: `stored (received …)`, `dead_lettered`, or `not_found: <hint>`, then one line
/// per dead letter.
pub fn describe(data: &Value) -> String {
    let text = |key: &str| data[key].as_str().unwrap_or("?").to_owned();
    let mut out = match data["status"].as_str() {
        Some("stored") => format!("stored (received {})\n", text("received_at")),
        Some("dead_lettered") => "dead_lettered: it could not be stored\n".to_owned(),
        _ => format!("not_found: {}\n", text("hint")),
    };
    for dead in data["dead_letters"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  dead letter: {} (parked {})\n",
            dead["reason"].as_str().unwrap_or("?"),
            dead["parked_at"].as_str().unwrap_or("?")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_status_has_its_line_and_exit_code() {
        let stored = json!({"status": "stored", "received_at": "2025-01-15T10:00:00Z",
            "dead_letters": [{"reason": "conflicting_duplicate", "parked_at": "2025-01-15T10:01:00Z"}]});
        assert_eq!(
            describe(&stored),
            "stored (received 2025-01-15T10:00:00Z)\n  dead letter: conflicting_duplicate (parked 2025-01-15T10:01:00Z)\n"
        );
        assert_eq!(exit_code(&stored), 0);
        let dead = json!({"status": "dead_lettered", "dead_letters": [{"reason": "refused", "parked_at": "t"}]});
        assert!(describe(&dead).starts_with("dead_lettered"));
        assert_eq!(exit_code(&dead), 1);
        let missing = json!({"status": "not_found", "hint": "ask again", "dead_letters": []});
        assert_eq!(describe(&missing), "not_found: ask again\n");
        assert_eq!(exit_code(&missing), 4);
    }
}
