//! What `topics list` and `topics describe` read: the topics directory as the services load it, the
//! broker's metadata (and a topic's offsets), and the database's counts. The broker and the database
//! are both optional: each is asked within `--timeout`, and what cannot be read is shown as unknown
//! with a warning, never waited for (docs/CLI.md "eventgate topics list").

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use eventgate_core::catalogue::Catalogue;
use eventgate_core::config::{Config, KafkaConfig};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::render::{self, Format};
use crate::error::{Failure, EXIT_REFUSED, EXIT_UNREACHABLE};

/// `list` counts a topic's events exactly when the planner expects at most this many rows (an
/// index-only scan of that many entries takes milliseconds), and shows the planner's estimate beyond.
pub const EXACT_BELOW: u64 = 100_000;

#[derive(Args, Debug)]
pub struct Sources {
    /// The database to count in: any role that may read events, dead_letters and topic_watermarks
    /// (the schema owner's, as for `migrate`, or the stats-api's). Default: the configuration's
    /// `writer.migration_database_url`. Empty: no database (its columns are `-`).
    #[arg(
        long,
        env = "EVENTGATE_WRITER__MIGRATION_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// Do not ask the database (its columns are `-`), whatever URL is set.
    #[arg(long)]
    no_database: bool,
    /// Seconds to wait for the broker and for each database statement.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    sources: Sources,
    /// `table` (the default on a terminal) or `json` (the default in a pipe).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The topic, as named in the topics directory.
    topic: String,
    #[command(flatten)]
    sources: Sources,
    /// `table` (the default on a terminal) or `json` (the default in a pipe).
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// A topic's Kafka topic as the broker told.
#[derive(Debug, Clone, PartialEq)]
pub enum KafkaTopic {
    Present(Vec<Partition>),
    /// The broker answered and has no such topic.
    Missing,
    /// The broker did not answer.
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub id: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The partition's error in the metadata (`LeaderNotAvailable`, …), if any.
    pub error: Option<String>,
    /// (low, high) offsets, for `describe` only and when the broker told within the timeout.
    pub watermarks: Option<(i64, i64)>,
}

/// How many events a topic has stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCount {
    pub count: u64,
    /// Counted (`count(*)`) rather than the planner's estimate.
    pub exact: bool,
}

/// The writers' watermark of a topic (`topic_watermarks`), with the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub newest_event_at: OffsetDateTime,
    pub stored_at: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// Whether a source was asked and answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceState {
    Read,
    NotConfigured,
    Unreachable(String),
}

/// One topic as `list` shows it; `describe` adds the `Details`.
#[derive(Debug, Clone)]
pub struct TopicView {
    pub name: String,
    pub versions: Vec<u32>,
    pub compatibility: String,
    pub kafka_topic: String,
    pub partitions_configured: i32,
    pub kafka: KafkaTopic,
    /// `x-eventgate.retention` of the latest version, as written (unset: `storage.retention` applies).
    pub retention: Option<Value>,
    /// `None`: the database was not read (not configured, unreachable, or the statement failed).
    pub events: Option<EventCount>,
    pub dead_letters_unresolved: Option<i64>,
    pub details: Option<Details>,
}

#[derive(Debug, Clone)]
pub struct Details {
    pub key_field: Option<String>,
    pub indexed_fields: Vec<String>,
    pub naive_time_zone: Option<String>,
    /// The latest version's `x-eventgate` object as written (every setting, known or not).
    pub settings: serde_json::Map<String, Value>,
    pub schema_versions: Vec<render::VersionFields>,
    pub freshness: Option<Freshness>,
    /// Unresolved dead letters by reason; `None` when the database was not read.
    pub dead_letters_by_reason: Option<BTreeMap<String, i64>>,
}

/// Everything one run found, for the renderer.
#[derive(Debug, Clone)]
pub struct Report {
    pub topics: Vec<TopicView>,
    pub broker: SourceState,
    pub database: SourceState,
    /// Topics of the directory that do not load (as `topics check` says them).
    pub problems: Vec<String>,
    /// What could not be read, besides an unreachable source.
    pub warnings: Vec<String>,
}

impl Report {
    /// The exit code: 1 when a topic of the directory is broken, else 3 when no live source could be
    /// read (the broker did not answer and the database did not either, or was not asked), else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.problems.is_empty() {
            EXIT_REFUSED
        } else if self.broker != SourceState::Read && self.database != SourceState::Read {
            EXIT_UNREACHABLE
        } else {
            0
        }
    }
}

pub async fn list(args: ListArgs) -> Result<u8, Failure> {
    let (config, catalogue, problems) = load()?;
    let names: Vec<String> = catalogue.names().map(str::to_owned).collect();
    let report = gather(&config, &catalogue, &names, problems, &args.sources, false).await?;
    render::print_list(&report, Format::choose(args.format))
}

pub async fn describe(args: DescribeArgs) -> Result<u8, Failure> {
    let (config, catalogue, problems) = load()?;
    if catalogue.get(&args.topic).is_none() {
        let known: Vec<&str> = catalogue.names().collect();
        let mut message = format!(
            "unknown topic {:?} in {}; known topics: {}",
            args.topic,
            config.catalogue.topics_dir.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
        if !problems.is_empty() {
            message.push_str(&format!(
                "\n  (and {} that do not load:\n  {})",
                problems.len(),
                problems.join("\n  ")
            ));
        }
        return Err(Failure::Refused(message));
    }
    let report = gather(
        &config,
        &catalogue,
        std::slice::from_ref(&args.topic),
        Vec::new(),
        &args.sources,
        true,
    )
    .await?;
    render::print_describe(&report, Format::choose(args.format))
}

/// The services' configuration and the topics of its directory that load, with the others' problems.
fn load() -> Result<(Config, Catalogue, Vec<String>), Failure> {
    let config = Config::load().map_err(|e| Failure::Usage(format!("configuration: {e}")))?;
    let (catalogue, problems) = load_topics(&config.catalogue.topics_dir)?;
    Ok((config, catalogue, problems))
}

/// The topics of `dir` that load, and one line per problem of the others: a broken topic is reported,
/// not fatal, so the rest can still be listed.
fn load_topics(dir: &Path) -> Result<(Catalogue, Vec<String>), Failure> {
    let checked = Catalogue::check_dir(dir)
        .map_err(|e| Failure::Usage(format!("catalogue.topics_dir ({}): {e}", dir.display())))?;
    let problems = checked
        .errors
        .iter()
        .flat_map(super::problem_lines)
        .collect();
    Ok((Catalogue::from_topics(checked.topics), problems))
}

async fn gather(
    config: &Config,
    catalogue: &Catalogue,
    names: &[String],
    problems: Vec<String>,
    sources: &Sources,
    details: bool,
) -> Result<Report, Failure> {
    let timeout = Duration::from_secs(sources.timeout);
    let offsets_of = details.then(|| {
        names
            .iter()
            .map(|name| config.kafka.kafka_topic(name))
            .collect::<Vec<_>>()
    });
    // The broker is asked on a thread of its own while the database is read.
    let broker = read_broker(&config.kafka, offsets_of.unwrap_or_default(), timeout);
    let url = database_url(sources, config);
    let mut warnings = Vec::new();
    let database = match url {
        None => None,
        Some(url) => Some(read_database(&url, names, details, timeout, &mut warnings).await),
    };
    let broker = broker.wait();
    let mut report = Report {
        topics: Vec::new(),
        broker: match &broker {
            Ok(_) => SourceState::Read,
            Err(why) => SourceState::Unreachable(why.clone()),
        },
        database: match &database {
            None => SourceState::NotConfigured,
            Some(Ok(_)) => SourceState::Read,
            Some(Err(why)) => SourceState::Unreachable(why.clone()),
        },
        problems,
        warnings,
    };
    let db = database.and_then(Result::ok);
    for name in names {
        let Some(topic) = catalogue.get(name) else {
            continue;
        };
        let kafka_topic = config.kafka.kafka_topic(name);
        let kafka = match &broker {
            Err(_) => KafkaTopic::Unknown,
            Ok(found) => match found.get(&kafka_topic) {
                Some(partitions) => KafkaTopic::Present(partitions.clone()),
                None => KafkaTopic::Missing,
            },
        };
        let x_eventgate = topic
            .schema
            .get("x-eventgate")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let db_topic = db.as_ref().and_then(|db| db.topics.get(name));
        report.topics.push(TopicView {
            name: name.clone(),
            versions: topic.versions().iter().map(|v| v.number).collect(),
            compatibility: topic.compatibility().to_string(),
            kafka_topic,
            partitions_configured: config.kafka.partitions,
            kafka,
            retention: x_eventgate.get("retention").cloned(),
            events: db_topic.and_then(|t| t.events),
            dead_letters_unresolved: db.as_ref().and_then(|db| {
                db.dead_letters
                    .as_ref()
                    .map(|counts| counts.get(name).copied().unwrap_or(0))
            }),
            details: details.then(|| Details {
                key_field: topic.settings.key_field.clone(),
                indexed_fields: topic.settings.indexed_fields.clone(),
                naive_time_zone: topic.settings.naive_time_zone.clone(),
                settings: x_eventgate,
                schema_versions: topic
                    .versions()
                    .iter()
                    .map(|v| render::VersionFields::of(v.number, &v.schema))
                    .collect(),
                freshness: db_topic.and_then(|t| t.freshness),
                dead_letters_by_reason: db_topic.and_then(|t| t.dead_letters_by_reason.clone()),
            }),
        });
    }
    Ok(report)
}

/// `--no-database` or an empty URL: none; else the flag (or its variable), else the configuration's
/// migration URL (the writer's when that is empty).
fn database_url(sources: &Sources, config: &Config) -> Option<String> {
    if sources.no_database {
        return None;
    }
    let url = sources
        .database_url
        .clone()
        .unwrap_or_else(|| config.writer.migration_url().to_owned());
    (!url.trim().is_empty()).then_some(url)
}

/// The broker's answer in the making: partitions by Kafka topic, or why there is none.
struct PendingBroker {
    answer: std::sync::mpsc::Receiver<Result<BTreeMap<String, Vec<Partition>>, String>>,
    deadline: Instant,
    timeout: Duration,
}

impl PendingBroker {
    fn wait(self) -> Result<BTreeMap<String, Vec<Partition>>, String> {
        // A second beyond the client's own timeouts: librdkafka honours them, this is the last guard.
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_add(Duration::from_secs(1));
        match self.answer.recv_timeout(left) {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} s", self.timeout.as_secs_f64())),
        }
    }
}

/// Asks the broker for every topic's metadata (one request, which never creates a topic), then the
/// low and high offsets of each partition of `offsets_of`, all within `timeout`. librdkafka blocks
/// while it waits, so this runs on a thread of its own, which the program does not wait for if it hangs.
fn read_broker(config: &KafkaConfig, offsets_of: Vec<String>, timeout: Duration) -> PendingBroker {
    let (send, answer) = std::sync::mpsc::channel();
    let deadline = Instant::now() + timeout;
    let mut client = eventgate_core::kafka::client_config(config);
    if !config
        .client
        .properties()
        .contains_key("socket.connection.setup.timeout.ms")
    {
        let setup_ms = timeout.as_millis().clamp(1_000, 30_000);
        client.set("socket.connection.setup.timeout.ms", setup_ms.to_string());
    }
    let spawned = std::thread::Builder::new()
        .name("kafka-metadata".into())
        .spawn(move || {
            let result = (|| {
                let producer: BaseProducer = client
                    .create()
                    .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
                let metadata = producer
                    .client()
                    .fetch_metadata(None, timeout)
                    .map_err(|e| e.to_string())?;
                let mut topics = BTreeMap::new();
                for topic in metadata.topics() {
                    // Another error (a leader being elected) still means the topic exists.
                    let code = topic.error().map(RDKafkaErrorCode::from);
                    if code == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                        continue;
                    }
                    let mut partitions: Vec<Partition> = topic
                        .partitions()
                        .iter()
                        .map(|p| Partition {
                            id: p.id(),
                            leader: p.leader(),
                            replicas: p.replicas().to_vec(),
                            isr: p.isr().to_vec(),
                            error: p.error().map(|e| RDKafkaErrorCode::from(e).to_string()),
                            watermarks: None,
                        })
                        .collect();
                    partitions.sort_by_key(|p| p.id);
                    if offsets_of.iter().any(|name| name == topic.name()) {
                        for partition in &mut partitions {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            partition.watermarks = producer
                                .client()
                                .fetch_watermarks(topic.name(), partition.id, left)
                                .ok();
                        }
                    }
                    topics.insert(topic.name().to_owned(), partitions);
                }
                Ok(topics)
            })();
            // The receiver may have stopped waiting: nothing to do then.
            let _ = send.send(result);
        });
    if let Err(error) = spawned {
        let (send, failed) = std::sync::mpsc::channel();
        let _ = send.send(Err(format!("cannot start the Kafka thread: {error}")));
        return PendingBroker {
            answer: failed,
            deadline,
            timeout,
        };
    }
    PendingBroker {
        answer,
        deadline,
        timeout,
    }
}

/// What the database holds of the asked topics.
#[derive(Debug, Default)]
struct DbView {
    topics: BTreeMap<String, DbTopic>,
    /// Unresolved dead letters by topic; `None` when the statement failed.
    dead_letters: Option<BTreeMap<String, i64>>,
}

#[derive(Debug, Default)]
struct DbTopic {
    events: Option<EventCount>,
    freshness: Option<Freshness>,
    dead_letters_by_reason: Option<BTreeMap<String, i64>>,
}

/// Connects within `timeout` and reads the counts, every statement bounded by the server's
/// `statement_timeout` and by `timeout` here. A statement that fails leaves its value unknown with a
/// warning; `Err` only when the database cannot be reached at all.
async fn read_database(
    url: &str,
    names: &[String],
    details: bool,
    timeout: Duration,
    warnings: &mut Vec<String>,
) -> Result<DbView, String> {
    let client = tokio::time::timeout(timeout, eventgate_core::db::tls::connect(url))
        .await
        .map_err(|_| format!("no connection within {} s", timeout.as_secs()))?
        .map_err(|e| error_text(&e))?;
    let db = Db { client, timeout };
    db.run(&format!(
        "SET statement_timeout = {}; SET default_transaction_read_only = on",
        timeout.as_millis()
    ))
    .await?;
    let mut view = DbView {
        dead_letters: match db.unresolved_by_topic().await {
            Ok(counts) => Some(counts),
            Err(why) => {
                warnings.push(format!("database: unresolved dead letters: {why}"));
                None
            }
        },
        ..DbView::default()
    };
    for name in names {
        let mut topic = DbTopic::default();
        match db.event_count(name, details).await {
            Ok(count) => topic.events = Some(count),
            Err(why) => warnings.push(format!("database: events of {name}: {why}")),
        }
        if details {
            match db.freshness(name).await {
                Ok(freshness) => topic.freshness = freshness,
                Err(why) => warnings.push(format!("database: watermark of {name}: {why}")),
            }
            match db.unresolved_by_reason(name).await {
                Ok(reasons) => topic.dead_letters_by_reason = Some(reasons),
                Err(why) => warnings.push(format!("database: dead letters of {name}: {why}")),
            }
        }
        view.topics.insert(name.clone(), topic);
    }
    Ok(view)
}

struct Db {
    client: tokio_postgres::Client,
    timeout: Duration,
}

impl Db {
    /// The server's statement timeout bounds each statement; this guards against a server that stops
    /// answering altogether.
    fn guard(&self) -> Duration {
        self.timeout + Duration::from_secs(1)
    }

    async fn run(&self, sql: &str) -> Result<(), String> {
        tokio::time::timeout(self.guard(), self.client.batch_execute(sql))
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|e| error_text(&e))
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[(&(dyn tokio_postgres::types::ToSql + Sync), Type)],
    ) -> Result<Vec<tokio_postgres::Row>, StatementError> {
        tokio::time::timeout(self.guard(), self.client.query_typed(sql, params))
            .await
            .map_err(|_| StatementError::NoAnswer)?
            .map_err(StatementError::Pg)
    }

    async fn unresolved_by_topic(&self) -> Result<BTreeMap<String, i64>, String> {
        // The partial index dead_letters_unresolved holds exactly these rows.
        let rows = self
            .rows(
                "SELECT topic, count(*) FROM dead_letters \
                 WHERE resolution IS NULL AND topic IS NOT NULL GROUP BY topic",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| db_error_text(&e))
    }

    async fn unresolved_by_reason(&self, topic: &str) -> Result<BTreeMap<String, i64>, String> {
        let rows = self
            .rows(
                "SELECT reason, count(*) FROM dead_letters \
                 WHERE resolution IS NULL AND topic = $1 GROUP BY reason",
                &[(&topic, Type::TEXT)],
            )
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| db_error_text(&e))
    }

    async fn freshness(&self, topic: &str) -> Result<Option<Freshness>, String> {
        let rows = self
            .rows(
                "SELECT newest_event_at, stored_at, now() FROM topic_watermarks WHERE topic = $1",
                &[(&topic, Type::TEXT)],
            )
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        (|| {
            Ok(Some(Freshness {
                newest_event_at: row.try_get(0)?,
                stored_at: row.try_get(1)?,
                now: row.try_get(2)?,
            }))
        })()
        .map_err(|e: tokio_postgres::Error| db_error_text(&e))
    }

    /// The planner's estimate first (nothing read); an exact `count(*)` (an index-only scan of the
    /// topic's entries) when `exact` is asked or the estimate is at most [`EXACT_BELOW`]. A count that
    /// runs out of the statement timeout falls back to the estimate.
    async fn event_count(&self, topic: &str, exact: bool) -> Result<EventCount, String> {
        let estimate = self.estimate(topic).await?;
        if !exact && estimate > EXACT_BELOW {
            return Ok(EventCount {
                count: estimate,
                exact: false,
            });
        }
        match self
            .rows(
                "SELECT count(*) FROM events WHERE topic = $1",
                &[(&topic, Type::TEXT)],
            )
            .await
        {
            Ok(rows) => {
                let count: i64 = rows
                    .first()
                    .ok_or("count(*) returned no row")?
                    .try_get(0)
                    .map_err(|e| db_error_text(&e))?;
                Ok(EventCount {
                    count: u64::try_from(count).unwrap_or(0),
                    exact: true,
                })
            }
            Err(e) if e.canceled() => Ok(EventCount {
                count: estimate,
                exact: false,
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn estimate(&self, topic: &str) -> Result<u64, String> {
        let rows = self
            .rows(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM events WHERE topic = $1",
                &[(&topic, Type::TEXT)],
            )
            .await
            .map_err(|e| e.to_string())?;
        let plan: Value = rows
            .first()
            .ok_or("EXPLAIN returned no row")?
            .try_get(0)
            .map_err(|e| db_error_text(&e))?;
        plan_rows(&plan).ok_or_else(|| format!("EXPLAIN without a row estimate: {plan}"))
    }
}

/// `[{"Plan": {"Plan Rows": n, …}}]` → n.
fn plan_rows(plan: &Value) -> Option<u64> {
    let rows = plan.get(0)?.get("Plan")?.get("Plan Rows")?.as_f64()?;
    Some(rows.max(0.0).round() as u64)
}

/// A statement that failed, or whose answer did not come at all.
#[derive(Debug)]
enum StatementError {
    Pg(tokio_postgres::Error),
    NoAnswer,
}

impl StatementError {
    fn canceled(&self) -> bool {
        matches!(self, StatementError::Pg(e) if e.code() == Some(&SqlState::QUERY_CANCELED))
    }
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatementError::Pg(e) => f.write_str(&db_error_text(e)),
            StatementError::NoAnswer => f.write_str("no answer"),
        }
    }
}

fn db_error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error_text(error),
    }
}

/// The error with its causes ("Connection refused"), each said once.
fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(broker: SourceState, database: SourceState, problems: usize) -> Report {
        Report {
            topics: Vec::new(),
            broker,
            database,
            problems: vec!["topic x: broken".to_owned(); problems],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn the_exit_code_is_3_only_when_no_live_source_was_read() {
        let down = || SourceState::Unreachable("no".into());
        assert_eq!(report(SourceState::Read, down(), 0).exit_code(), 0);
        assert_eq!(report(down(), SourceState::Read, 0).exit_code(), 0);
        assert_eq!(
            report(SourceState::Read, SourceState::NotConfigured, 0).exit_code(),
            0
        );
        assert_eq!(report(down(), down(), 0).exit_code(), EXIT_UNREACHABLE);
        assert_eq!(
            report(down(), SourceState::NotConfigured, 0).exit_code(),
            EXIT_UNREACHABLE
        );
        // A broken topic says more than a down broker: the directory is what the operator fixes.
        assert_eq!(report(down(), down(), 1).exit_code(), EXIT_REFUSED);
    }

    #[test]
    fn the_database_url_is_the_flag_else_the_configuration_and_empty_means_none() {
        let sources = |url: Option<&str>, no_database| Sources {
            database_url: url.map(str::to_owned),
            no_database,
            timeout: 5,
        };
        let config = Config::default();
        assert_eq!(
            database_url(&sources(Some("postgres://x@y/z"), false), &config).as_deref(),
            Some("postgres://x@y/z")
        );
        assert_eq!(
            database_url(&sources(None, false), &config).as_deref(),
            Some(config.writer.migration_url())
        );
        assert_eq!(database_url(&sources(Some(" "), false), &config), None);
        assert_eq!(database_url(&sources(None, true), &config), None);
    }

    #[test]
    fn the_planners_row_estimate_is_read_from_explain() {
        let plan =
            serde_json::json!([{"Plan": {"Node Type": "Index Only Scan", "Plan Rows": 1234.0}}]);
        assert_eq!(plan_rows(&plan), Some(1234));
        assert_eq!(plan_rows(&serde_json::json!([{}])), None);
    }
}
