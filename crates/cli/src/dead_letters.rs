//! `eventgate dead-letters list|show|replay|discard`: the operator's side of the `dead_letters` table
//! (docs/CLI.md, docs/OPERATIONS.md "Replaying dead letters"). It talks to Postgres as the schema owner
//! (the URL `eventgate migrate` takes: no service role may resolve a dead letter) and, to replay, to
//! the broker with the services' own configuration (`Config::load`: `EVENTGATE_CONFIG`,
//! `config/eventgate.toml`, `EVENTGATE_*`), so TLS and SASL settings are the ones the services use.
//!
//! A replay decodes the parked message as the writer does, checks its event against the topic's current
//! schema as the ingest-api does, produces it to the topic's Kafka topic with its original envelope
//! (id, producer, received-at) and key, waits for the broker's acknowledgement, and only then records
//! the dead letter `replayed`. The writer stores an event once per (id, topic, producer), so no replay
//! — repeated, forced or concurrent — stores it twice.

mod db;
mod replay;

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::Config;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::{Failure, EXIT_REFUSED};
use db::DeadLetterRow;

#[derive(Args, Debug)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    action: Action,
    /// The schema owner's database URL (what `eventgate migrate` takes): only it may resolve dead
    /// letters. Default: the configuration's `writer.migration_database_url`.
    #[arg(
        long,
        global = true,
        env = "EVENTGATE_WRITER__MIGRATION_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// List dead letters, newest first: those waiting for a decision, or all of them with --all.
    List(ListArgs),
    /// One dead letter in full: where it was read, why it was parked, its resolution, its raw message.
    Show(ShowArgs),
    /// Produce dead letters' events to Kafka again with their original ids, once the cause is fixed.
    Replay(ReplayArgs),
    /// Record that dead letters are not to be replayed, and why.
    Discard(DiscardArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// For a person.
    Table,
    /// JSON: an array for `list`, an object for `show`.
    Json,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only this topic's dead letters.
    #[arg(long)]
    topic: Option<String>,
    /// Resolved ones too (replayed, discarded).
    #[arg(long)]
    all: bool,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// The dead letter's id (see `list`).
    id: i64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Dead letter ids (see `list`).
    #[arg(
        required_unless_present = "all_unresolved",
        conflicts_with = "all_unresolved"
    )]
    ids: Vec<i64>,
    /// The topic: with --all-unresolved, whose dead letters; with ids, each must be of it.
    #[arg(long)]
    topic: Option<String>,
    /// Every unresolved dead letter of --topic, oldest first.
    #[arg(long, requires = "topic")]
    all_unresolved: bool,
    /// Check each one (decoding, the current schema) and say what would be sent; send and record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replay dead letters resolved already too (an event stored already is not stored again).
    #[arg(long)]
    force: bool,
    /// Who replays, as recorded. Default: the login name ($USER).
    #[arg(long)]
    by: Option<String>,
    /// Seconds to wait for the broker's acknowledgement of each event.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

#[derive(Args, Debug)]
struct DiscardArgs {
    /// Dead letter ids (see `list`).
    #[arg(required = true)]
    ids: Vec<i64>,
    /// Why (recorded with it).
    #[arg(long)]
    reason: Option<String>,
    /// Who discards, as recorded. Default: the login name ($USER).
    #[arg(long)]
    by: Option<String>,
}

pub async fn run(args: DeadLettersArgs) -> Result<u8, Failure> {
    let config = Config::load().map_err(|e| Failure::Usage(format!("configuration: {e}")))?;
    let url = database_url(args.database_url, &config)?;
    let mut client = db::connect(&url).await?;
    match args.action {
        Action::List(list) => {
            let rows = db::list(
                &client,
                &db::Listing {
                    topic: list.topic.as_deref(),
                    all: list.all,
                    limit: list.limit,
                },
            )
            .await?;
            print_list(&rows, list.format, list.all, list.topic.as_deref())
        }
        Action::Show(show) => match db::get(&client, show.id).await? {
            Some(row) => print_one(&row, show.format),
            None => Err(Failure::Refused(format!("no dead letter {}", show.id))),
        },
        Action::Replay(replay) => replay_all(&mut client, &config, replay).await,
        Action::Discard(discard) => {
            let by = who(discard.by)?;
            let marked = db::discard(&client, &discard.ids, &by, discard.reason.as_deref()).await?;
            let mut refused = 0;
            for id in &discard.ids {
                if marked.contains(id) {
                    println!("dead letter {id}: discarded");
                    continue;
                }
                refused += 1;
                match db::get(&client, *id).await? {
                    None => eprintln!("dead letter {id}: not found"),
                    Some(row) => eprintln!(
                        "dead letter {id}: not discarded: {} already{}",
                        row.resolution.as_deref().unwrap_or("resolved"),
                        resolved_when_by(&row)
                    ),
                }
            }
            Ok(if refused > 0 { EXIT_REFUSED } else { 0 })
        }
    }
}

/// The flag or variable, else the configuration's migration URL (or the writer's, whose role may read
/// dead letters but not resolve them: the statement says so then).
fn database_url(flag: Option<String>, config: &Config) -> Result<String, Failure> {
    let url = flag.unwrap_or_else(|| config.writer.migration_url().to_owned());
    if url.trim().is_empty() {
        return Err(Failure::Usage(
            "--database-url: no database URL (the flag, EVENTGATE_WRITER__MIGRATION_DATABASE_URL or \
             writer.migration_database_url): the schema owner's, as for `eventgate migrate`"
                .to_owned(),
        ));
    }
    Ok(url)
}

/// Who resolves: `--by`, else the login name.
fn who(by: Option<String>) -> Result<String, Failure> {
    let name = by.or_else(|| {
        ["USER", "LOGNAME", "USERNAME"]
            .iter()
            .find_map(|var| std::env::var(var).ok())
    });
    match name.map(|n| n.trim().to_owned()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Failure::Usage(
            "--by: say who resolves the dead letters (no login name in $USER or $LOGNAME)"
                .to_owned(),
        )),
    }
}

async fn replay_all(
    client: &mut tokio_postgres::Client,
    config: &Config,
    args: ReplayArgs,
) -> Result<u8, Failure> {
    let by = if args.dry_run {
        String::new()
    } else {
        who(args.by.clone())?
    };
    let dir = &config.catalogue.topics_dir;
    let catalogue = Catalogue::load_dir(dir)
        .map_err(|e| Failure::Usage(format!("catalogue.topics_dir ({}): {e}", dir.display())))?;
    let ids = match (&args.topic, args.all_unresolved) {
        (Some(topic), true) => db::unresolved_ids(client, topic).await?,
        _ => args.ids.clone(),
    };
    if ids.is_empty() {
        eprintln!(
            "no unresolved dead letters of topic {}",
            args.topic.as_deref().unwrap_or_default()
        );
        return Ok(0);
    }
    let producer = if args.dry_run {
        None
    } else {
        Some(kafka_producer(config, args.timeout)?)
    };
    let mut refused = 0;
    for id in ids {
        let transaction = db::begin(client).await?;
        let Some(dead) = db::lock(&transaction, id).await? else {
            eprintln!("dead letter {id}: not found");
            refused += 1;
            continue;
        };
        if let Some(topic) = args.topic.as_deref() {
            if dead.topic.as_deref() != Some(topic) {
                eprintln!(
                    "dead letter {id}: not replayed: it is of topic {}, not {topic}",
                    dead.topic.as_deref().unwrap_or("(none)")
                );
                refused += 1;
                continue;
            }
        }
        let record = match replay::prepare(&dead, &catalogue, &config.ingest.id_field, args.force) {
            Ok(record) => record,
            Err(refusal) => {
                // The transaction rolls back when dropped: the dead letter stays as it was.
                eprintln!("dead letter {id}: not replayed: {refusal}");
                refused += 1;
                continue;
            }
        };
        let kafka_topic = config.kafka.kafka_topic(&record.topic);
        let Some(producer) = &producer else {
            println!(
                "dead letter {id}: would replay event {} (producer {}) to {kafka_topic}, key {:?}",
                record.event_id, record.producer, record.key
            );
            continue;
        };
        let (partition, offset) = produce(producer, &kafka_topic, &record, args.timeout)
            .await
            .map_err(|e| {
                Failure::Unreachable(format!(
                    "dead letter {id}: the broker did not acknowledge its event ({e}); it stays \
                     unresolved, and replaying it again stores it at most once"
                ))
            })?;
        let note = format!("produced to {kafka_topic} partition {partition} offset {offset}");
        let recorded = async {
            db::mark_replayed(&transaction, id, &by, &note).await?;
            transaction
                .commit()
                .await
                .map_err(|e| db::failure(e.into(), "recording the replay"))
        }
        .await;
        if let Err(failure) = recorded {
            return Err(Failure::Unreachable(format!(
                "dead letter {id}: its event was {note}, but the replay could not be recorded \
                 ({failure}); it stays unresolved, and replaying it again stores nothing new"
            )));
        }
        println!(
            "dead letter {id}: replayed event {} (producer {}) to {kafka_topic} partition \
             {partition} offset {offset}",
            record.event_id, record.producer
        );
    }
    Ok(if refused > 0 { EXIT_REFUSED } else { 0 })
}

/// A producer as the ingest-api's: idempotent, every replica's acknowledgement.
fn kafka_producer(config: &Config, timeout_secs: u64) -> Result<FutureProducer, Failure> {
    let timeout_ms = (timeout_secs * 1000).to_string();
    eventgate_core::kafka::client_config(&config.kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", &timeout_ms)
        .create()
        .map_err(|e| Failure::Usage(format!("kafka: cannot create a producer: {e}")))
}

/// Produces the record and waits for its acknowledgement: its partition and offset.
async fn produce(
    producer: &FutureProducer,
    kafka_topic: &str,
    record: &replay::Replay,
    timeout_secs: u64,
) -> Result<(i32, i64), rdkafka::error::KafkaError> {
    producer
        .send(
            FutureRecord::to(kafka_topic)
                .key(&record.key)
                .payload(&record.value),
            Duration::from_secs(timeout_secs),
        )
        .await
        .map(|delivery| (delivery.partition, delivery.offset))
        .map_err(|(error, _)| error)
}

fn rfc3339(time: time::OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn resolved_when_by(row: &DeadLetterRow) -> String {
    match (row.resolved_at, row.resolved_by.as_deref()) {
        (Some(at), Some(by)) => format!(" ({}, by {by})", rfc3339(at)),
        _ => String::new(),
    }
}

/// The error's first line, shortened for a table cell.
fn short(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn print_list(
    rows: &[DeadLetterRow],
    format: Format,
    all: bool,
    topic: Option<&str>,
) -> Result<u8, Failure> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let text = serde_json::to_string(rows)
                .map_err(|e| Failure::Usage(format!("cannot write JSON: {e}")))?;
            writeln!(out, "{text}").map_err(Failure::from_output)?;
        }
        Format::Table if rows.is_empty() => {
            eprintln!(
                "no {}dead letters{}",
                if all { "" } else { "unresolved " },
                topic.map(|t| format!(" of topic {t}")).unwrap_or_default()
            );
        }
        Format::Table => {
            use comfy_table::{presets, ContentArrangement, Table};
            let mut table = Table::new();
            let mut header = vec!["id", "topic", "reason", "parked", "event", "error"];
            if all {
                header.push("resolution");
            }
            table
                .load_preset(presets::UTF8_FULL_CONDENSED)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(header);
            for row in rows {
                let event = match (&row.event_id, &row.producer) {
                    (Some(id), Some(producer)) => format!("{id} ({producer})"),
                    _ => String::new(),
                };
                let mut cells = vec![
                    row.id.to_string(),
                    row.topic.clone().unwrap_or_default(),
                    row.reason.clone(),
                    rfc3339(row.created_at),
                    event,
                    short(&row.error, 80),
                ];
                if all {
                    cells.push(match &row.resolution {
                        Some(resolution) => format!("{resolution}{}", resolved_when_by(row)),
                        None => "unresolved".to_owned(),
                    });
                }
                table.add_row(cells);
            }
            writeln!(out, "{table}").map_err(Failure::from_output)?;
        }
    }
    Ok(0)
}

fn print_one(row: &DeadLetterRow, format: Format) -> Result<u8, Failure> {
    let mut out = std::io::stdout().lock();
    let raw = row.raw.as_deref().map(String::from_utf8_lossy);
    match format {
        Format::Json => {
            let mut value = serde_json::to_value(row)
                .map_err(|e| Failure::Usage(format!("cannot write JSON: {e}")))?;
            value["raw"] = raw.as_deref().map_or(serde_json::Value::Null, Into::into);
            writeln!(out, "{value}").map_err(Failure::from_output)?;
        }
        Format::Table => {
            let mut text = format!("dead letter {}\n", row.id);
            let mut line = |name: &str, value: String| {
                text.push_str(&format!("  {name:<12}{value}\n"));
            };
            line("topic:", row.topic.clone().unwrap_or_default());
            line(
                "read from:",
                format!(
                    "{} partition {} offset {}",
                    row.kafka_topic, row.kafka_partition, row.kafka_offset
                ),
            );
            line("reason:", row.reason.clone());
            line("error:", row.error.clone());
            line("parked:", rfc3339(row.created_at));
            if let (Some(id), Some(producer)) = (&row.event_id, &row.producer) {
                line("event:", format!("{id} (producer {producer})"));
            }
            line(
                "resolution:",
                match &row.resolution {
                    Some(resolution) => format!(
                        "{resolution}{}{}",
                        resolved_when_by(row),
                        row.resolution_note
                            .as_deref()
                            .map(|note| format!(": {note}"))
                            .unwrap_or_default()
                    ),
                    None => "unresolved".to_owned(),
                },
            );
            match &raw {
                Some(raw) => text.push_str(&format!(
                    "  raw message ({} bytes):\n{raw}\n",
                    row.raw.as_ref().map_or(0, Vec::len)
                )),
                None => text.push_str("  raw message: none\n"),
            }
            out.write_all(text.as_bytes())
                .map_err(Failure::from_output)?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: DeadLettersArgs,
    }

    fn parse(args: &[&str]) -> Result<DeadLettersArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("dead-letters").chain(args.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn replay_takes_ids_or_a_topics_unresolved_ones_but_not_both() {
        let Ok(DeadLettersArgs {
            action: Action::Replay(replay),
            ..
        }) = parse(&["replay", "3", "4", "--dry-run"])
        else {
            panic!("ids parse");
        };
        assert_eq!(replay.ids, vec![3, 4]);
        assert!(replay.dry_run && !replay.force);
        assert!(parse(&["replay", "--topic", "t", "--all-unresolved"]).is_ok());
        for refused in [
            &["replay"][..],
            &["replay", "--all-unresolved"],
            &["replay", "3", "--topic", "t", "--all-unresolved"],
            &["replay", "not-an-id"],
            &["discard"],
            &["list", "--limit", "0"],
            &["list", "--format", "csv"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?} must be refused");
        }
    }

    #[test]
    fn who_is_the_flag_else_the_login_name() {
        assert_eq!(who(Some(" ops ".to_owned())).ok().as_deref(), Some("ops"));
        assert!(who(Some("  ".to_owned())).is_err());
    }

    #[test]
    fn an_empty_database_url_is_a_usage_error_naming_the_flag() {
        let mut config = Config::default();
        config.writer.migration_database_url = eventgate_core::config::Secret::new("");
        config.writer.database_url = eventgate_core::config::Secret::new("");
        let failure = database_url(None, &config).expect_err("no URL");
        assert_eq!(failure.exit_code(), crate::error::EXIT_USAGE);
        assert!(
            failure.to_string().starts_with("--database-url"),
            "{failure}"
        );
        config.writer.migration_database_url =
            eventgate_core::config::Secret::new("postgres://eventgate@db/eventgate");
        assert_eq!(
            database_url(None, &config).ok().as_deref(),
            Some("postgres://eventgate@db/eventgate")
        );
        assert_eq!(
            database_url(Some("postgres://x@y/z".to_owned()), &config)
                .ok()
                .as_deref(),
            Some("postgres://x@y/z")
        );
    }

    #[test]
    fn long_errors_are_cut_to_their_first_line() {
        assert_eq!(short("a\nb", 10), "a");
        assert_eq!(short("abcdef", 4), "abc…");
    }
}
