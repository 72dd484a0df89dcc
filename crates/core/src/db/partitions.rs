//! The event history's partitions and their maintenance (`eventgate maintain`, and each writer every
//! `storage.maintenance_interval_ms`, one at a time under [`MAINTENANCE_LOCK_KEY`]).
//!
//! Layout (migration `2025-04-01-000000_partitioned_events`, ARCHITECTURE.md "The event history's
//! layout"): `events` is partitioned by RANGE of `received_at` into spans (`events_p20261203`, a day by
//! default), each span by LIST of `topic` into one leaf per topic (`events_p20261203_web_events_1a2b3c`)
//! and a default leaf for topics without one. Below the spans, from MINVALUE, `events_before` (or
//! `events_legacy`, the history from before partitioning); above them, to MAXVALUE, `events_after`. The
//! ranges tile all of time with no DEFAULT partition: a default would stop Postgres from reading the
//! partitions in time order, and the newest-first page would open every partition (one row each, by a
//! Merge Append) instead of stopping in the newest one.
//!
//! One run ([`maintain`]):
//! 1. creates the current span and `storage.partitions_ahead` spans after it, by splitting them off
//!    `events_after` (events that reached it move into their span);
//! 2. gives every topic of the catalogue its leaf in the current and future spans, and in past spans
//!    where its events reached the span's default leaf (moved into it);
//! 3. builds the per-leaf indexes ([`desired_indexes`]): the key `(id, topic, producer)` everywhere, the
//!    topic's field indexes and its GIN index if it asked for one; builds again those left invalid by an
//!    interrupted build, drops those no longer asked for;
//! 4. drops the leaves whose span ended longer ago than their topic's retention (a whole span once all
//!    its leaves are gone) — never a `DELETE` of events;
//! 5. deletes dead letters resolved longer ago than `storage.resolved_dead_letter_retention`.
//!
//! Plain declarative partitioning with this loop rather than pg_partman: pg_partman cannot split by
//! topic under each time span with a retention per topic, and this needs nothing installed on a managed
//! Postgres. Every DDL statement runs with `lock_timeout`; one that cannot get its lock is reported and
//! left for the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use time::{Duration, OffsetDateTime};
use tokio_postgres::Client;

use super::rollups::{self, TopicsOfPartition};
use super::DbError;
use crate::catalogue::Catalogue;
use crate::config::StorageConfig;
use crate::retention::{Period, Retention};

/// The advisory lock one maintenance run holds ("eventmnt" in ASCII).
pub const MAINTENANCE_LOCK_KEY: i64 = 0x6576_656e_746d_6e74;

/// What the maintenance keeps for one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicStorage {
    pub name: String,
    pub retention: Retention,
    pub containment_index: bool,
    /// The SQL expressions of its indexed fields ([`super::indexed_expression`]).
    pub field_expressions: Vec<String>,
    /// The fields it does not declare indexed that could be (name → expression): what may get an
    /// auto-index ([`super::auto_index`]).
    pub auto_candidates: BTreeMap<String, String>,
    /// What a sort may be indexed by (name → the column or expression an index orders it by): the
    /// payload fields an expression index could serve, declared or not, plus `id` and `timestamp`.
    /// The auto sort indexes' definitions are made from it ([`super::auto_index::sort_index_definition`]).
    pub sort_columns: BTreeMap<String, String>,
    /// The definitions of the run's auto sort indexes, `(topic, <key>, …, id)`, built on each leaf as
    /// `<leaf>_s<hash of the definition>` (set by [`super::auto_index::choose`] for the run).
    pub sort_indexes: Vec<String>,
}

/// The catalogue's topics and the storage settings, as the maintenance needs them.
#[derive(Debug, Clone)]
pub struct StoragePolicy {
    pub span: Period,
    pub ahead: u32,
    pub default_retention: Retention,
    pub resolved_dead_letter_retention: Retention,
    pub lock_timeout_ms: u64,
    pub topics: BTreeMap<String, TopicStorage>,
    /// Auto-indexes ([`super::auto_index`]): uses are summed over this window, and an auto-index
    /// unused for as long is dropped.
    pub auto_index_window: Period,
    pub auto_index_min_uses: u64,
    /// 0: none (those made are dropped).
    pub auto_index_max_per_topic: u32,
}

impl StoragePolicy {
    pub fn new(catalogue: &Catalogue, storage: &StorageConfig) -> StoragePolicy {
        let topics = catalogue
            .topics()
            .map(|topic| {
                let mut field_expressions: Vec<String> = topic
                    .fields
                    .fields()
                    .filter_map(super::indexed_expression)
                    .collect();
                field_expressions.sort();
                field_expressions.dedup();
                // The expression the field would have if declared; two names of one path (`x`,
                // `payload.x`) have one expression, and a declared one needs no auto-index.
                let auto_candidates = topic
                    .fields
                    .fields()
                    .filter(|field| !field.indexed)
                    .filter_map(|field| {
                        let declared_like = crate::query::FieldDef {
                            indexed: true,
                            ..field.clone()
                        };
                        super::indexed_expression(&declared_like)
                            .filter(|e| !field_expressions.contains(e))
                            .map(|e| (field.name.clone(), e))
                    })
                    .collect();
                let mut sort_columns: BTreeMap<String, String> = topic
                    .fields
                    .fields()
                    .filter_map(|field| {
                        let declared_like = crate::query::FieldDef {
                            indexed: true,
                            ..field.clone()
                        };
                        super::indexed_expression(&declared_like).map(|e| (field.name.clone(), e))
                    })
                    .collect();
                sort_columns.insert("id".to_owned(), "id".to_owned());
                sort_columns.insert("timestamp".to_owned(), "received_at".to_owned());
                let storage_of = TopicStorage {
                    name: topic.name.clone(),
                    retention: topic.settings.retention.unwrap_or(storage.retention),
                    containment_index: topic.settings.containment_index,
                    field_expressions,
                    auto_candidates,
                    sort_columns,
                    sort_indexes: Vec::new(),
                };
                (topic.name.clone(), storage_of)
            })
            .collect();
        StoragePolicy {
            span: storage.partition_span,
            ahead: storage.partitions_ahead,
            default_retention: storage.retention,
            resolved_dead_letter_retention: storage.resolved_dead_letter_retention,
            lock_timeout_ms: storage.maintenance_lock_timeout_ms,
            topics,
            auto_index_window: storage.auto_index_window,
            auto_index_min_uses: storage.auto_index_min_uses,
            auto_index_max_per_topic: storage.auto_index_max_per_topic,
        }
    }

    /// The retention of a leaf holding `topic`'s events, or several topics' (`None`): the longest that
    /// may apply to what it holds.
    fn retention_of(&self, topic: Option<&str>) -> Retention {
        match topic.and_then(|name| self.topics.get(name)) {
            Some(topic) => topic.retention,
            None if topic.is_some() => self.default_retention,
            None => self
                .topics
                .values()
                .fold(self.default_retention, |longest, t| {
                    longest.max(t.retention)
                }),
        }
    }

    /// The start of the span holding `at` ([`Period::start_of`]).
    fn span_start(&self, at: OffsetDateTime) -> OffsetDateTime {
        self.span.start_of(at)
    }

    /// The span boundary after `at` (the end of the span holding it).
    fn next_boundary(&self, at: OffsetDateTime) -> OffsetDateTime {
        self.span_start(at) + self.span.duration()
    }

    /// The span boundary before `at` (`at` itself excluded).
    fn previous_boundary(&self, at: OffsetDateTime) -> OffsetDateTime {
        let start = self.span_start(at);
        if start == at {
            at - self.span.duration()
        } else {
            start
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MaintenanceReport {
    /// Spans and leaves created.
    pub created: Vec<String>,
    /// Events moved into their own partition: out of `events_after` (or `events_before`, for a bulk
    /// load) as their span was created, or out of a span's default leaf as their topic's leaf was.
    pub moved_events: u64,
    /// Leaves and spans dropped for retention, and the bytes they held.
    pub dropped: Vec<String>,
    pub dropped_bytes: i64,
    /// Indexes built (missing), built again (invalid) and dropped (no longer asked for).
    pub indexes_built: Vec<String>,
    pub indexes_rebuilt: Vec<String>,
    pub indexes_dropped: Vec<String>,
    pub dead_letters_deleted: u64,
    /// Auto-indexes chosen and given up in this run (`<topic> <field>`, [`super::auto_index`]).
    pub auto_indexes_chosen: Vec<String>,
    pub auto_indexes_dropped: Vec<String>,
    /// Rollup rows folded into their minute's one row ([`rollups::fold_counts`]).
    pub rollup_rows_folded: u64,
    /// What could not be done in this run, and why (a lock not granted within the lock timeout, …).
    pub deferred: Vec<String>,
}

/// One topic's (or the mixed partitions') share of the history after a run: what the metrics and
/// `eventgate maintain` show.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TopicPartitions {
    pub partitions: u64,
    /// The start of the oldest span with a leaf of the topic (Unix seconds); `None` for the legacy range.
    pub oldest_span_start: Option<i64>,
    pub bytes: i64,
}

/// The layout after a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LayoutSummary {
    /// Per topic; partitions of several topics under `"(legacy)"`, `"(before)"`, `"(after)"` and
    /// `"(default)"` (the spans' default leaves).
    pub topics: BTreeMap<String, TopicPartitions>,
    /// Where the spans end (Unix seconds): later events land in `events_after`.
    pub covered_until: Option<i64>,
    /// Events in `events_after` and the spans' default leaves (the planner's estimate): waiting for the
    /// next run to move them into their own partitions.
    pub default_events_estimate: i64,
}

/// A run's outcome.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Maintained {
    pub report: MaintenanceReport,
    pub layout: LayoutSummary,
    /// Every topic's auto-indexed fields after the run.
    pub auto_indexes: BTreeMap<String, Vec<String>>,
    /// The payload fields analysts used within `storage.auto_index_window`, most used first.
    pub field_usage: Vec<super::auto_index::FieldUse>,
}

#[derive(Debug, Clone)]
struct Leaf {
    name: String,
    /// `None`: the span's default leaf, or a leaf holding several topics.
    topic: Option<String>,
    bytes: i64,
}

#[derive(Debug, Clone)]
struct Span {
    name: String,
    /// `None`: from MINVALUE (`events_before`, `events_legacy`).
    lower: Option<OffsetDateTime>,
    /// `None`: to MAXVALUE (`events_after`).
    upper: Option<OffsetDateTime>,
    /// A span split by topic; otherwise `leaves` holds the partition itself, a table of every topic.
    split: bool,
    leaves: Vec<Leaf>,
}

impl Span {
    fn has_leaf_for(&self, topic: &str) -> bool {
        self.leaves
            .iter()
            .any(|l| l.topic.as_deref() == Some(topic))
    }

    fn default_leaf(&self) -> Option<&Leaf> {
        self.leaves
            .iter()
            .find(|l| l.topic.is_none() && l.name != self.name)
    }
}

#[derive(Debug, Default)]
struct Layout {
    /// In time order: `events_before` or `events_legacy`, the spans, `events_after`.
    spans: Vec<Span>,
}

impl Layout {
    /// Every leaf with the topic it holds (`None`: several), for the indexes.
    fn leaves(&self) -> impl Iterator<Item = &Leaf> {
        self.spans.iter().flat_map(|s| s.leaves.iter())
    }

    /// The partition from MINVALUE.
    fn before(&self) -> Option<&Span> {
        self.spans.iter().find(|s| !s.split && s.lower.is_none())
    }

    /// The partition to MAXVALUE.
    fn after(&self) -> Option<&Span> {
        self.spans.iter().find(|s| !s.split && s.upper.is_none())
    }
}

/// The partition tree of `events` as the catalogue describes it. Bounds are read back by casting the
/// literals of `pg_get_expr(relpartbound)` (the session is in UTC).
const READ_LAYOUT: &str = "SELECT c.relname::text, p.relname::text, c.relkind = 'p', \
       pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', \
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']*)''\\)'))[1]::timestamptz, \
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)'))[1]::timestamptz, \
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'IN \\(''([^'']*)''\\)'))[1], \
       pg_total_relation_size(c.oid) \
     FROM pg_partition_tree('events') t \
     JOIN pg_class c ON c.oid = t.relid \
     JOIN pg_class p ON p.oid = t.parentrelid \
     WHERE t.level > 0 ORDER BY t.level, c.relname";

async fn read_layout(client: &Client) -> Result<Layout, DbError> {
    let rows = client.query(READ_LAYOUT, &[]).await?;
    let mut layout = Layout::default();
    for row in &rows {
        let name: String = row.get(0);
        let parent: String = row.get(1);
        let partitioned: bool = row.get(2);
        let is_default: bool = row.get(3);
        let lower: Option<OffsetDateTime> = row.get(4);
        let upper: Option<OffsetDateTime> = row.get(5);
        let topic: Option<String> = row.get(6);
        let bytes: i64 = row.get(7);
        if parent == "events" {
            let leaves = if partitioned {
                Vec::new()
            } else {
                vec![Leaf {
                    name: name.clone(),
                    topic: None,
                    bytes,
                }]
            };
            layout.spans.push(Span {
                name,
                lower,
                upper,
                split: partitioned,
                leaves,
            });
        } else if let Some(span) = layout.spans.iter_mut().find(|s| s.name == parent) {
            span.leaves.push(Leaf {
                name,
                topic: if is_default { None } else { topic },
                bytes,
            });
        }
    }
    // MINVALUE first, MAXVALUE last.
    layout
        .spans
        .sort_by_key(|s| (s.lower.is_some(), s.lower, s.upper.is_none()));
    Ok(layout)
}

/// `events_p20261203`, or `events_p20261203_1300` for a span starting within a day.
fn span_name(start: OffsetDateTime) -> String {
    let mut name = format!(
        "events_p{:04}{:02}{:02}",
        start.year(),
        u8::from(start.month()),
        start.day()
    );
    if start.hour() != 0 || start.minute() != 0 {
        let _ = write!(name, "_{:02}{:02}", start.hour(), start.minute());
    }
    name
}

/// A topic's leaf in a span: readable (`events_p20261203_web_events_1a2b3c`) and short enough that
/// every index name built from it fits Postgres's 63 bytes ([`leaf_index_name`]).
fn leaf_name(span: &str, topic: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(topic.as_bytes());
    let hash: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    let room = 45usize.saturating_sub(span.len() + 1 + 1 + hash.len());
    let slug: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    format!("{span}_{slug}_{hash}")
}

/// An index of a leaf: `<leaf>_key`, `<leaf>_gin`, `<leaf>_f<hash of the expression>`.
fn leaf_index_name(leaf: &str, suffix: &str) -> String {
    format!("{leaf}_{suffix}")
}

/// The field index suffix of an expression: the same hash as the field index names before partitions
/// (`events_field_<hash>`), so the legacy history's indexes are recognised.
fn field_suffix(expression: &str) -> String {
    format!("f{}", super::field_index::expression_hash(expression))
}

/// The sort index suffix of a definition: `s<hash>`.
fn sort_suffix(definition: &str) -> String {
    format!("s{}", super::field_index::expression_hash(definition))
}

/// Whether `index` is a sort index of `leaf` (`<leaf>_s` and 16 hex digits), not one Postgres named.
fn is_sort_index(leaf: &str, index: &str) -> bool {
    index
        .strip_prefix(leaf)
        .and_then(|rest| rest.strip_prefix("_s"))
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An index a leaf should have: its name and the `CREATE … INDEX` body after `ON <leaf>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IndexSpec {
    name: String,
    unique: bool,
    definition: String,
}

/// The indexes a leaf of `topic` (or of several topics: `None`) should have: the key everywhere; the
/// topic's field indexes and GIN index; on mixed leaves every topic's (what they hold is anyone's).
fn desired_indexes(policy: &StoragePolicy, leaf: &str, topic: Option<&str>) -> Vec<IndexSpec> {
    let mut specs = vec![IndexSpec {
        name: leaf_index_name(leaf, "key"),
        unique: true,
        definition: "(id, topic, producer)".to_owned(),
    }];
    let topics: Vec<&TopicStorage> = match topic {
        Some(name) => policy.topics.get(name).into_iter().collect(),
        None => policy.topics.values().collect(),
    };
    let expressions: BTreeSet<&String> = topics
        .iter()
        .flat_map(|t| t.field_expressions.iter())
        .collect();
    for expression in expressions {
        specs.push(IndexSpec {
            name: leaf_index_name(leaf, &field_suffix(expression)),
            unique: false,
            definition: format!("(topic, {expression}, id)"),
        });
    }
    let sorts: BTreeSet<&String> = topics.iter().flat_map(|t| t.sort_indexes.iter()).collect();
    for definition in sorts {
        specs.push(IndexSpec {
            name: leaf_index_name(leaf, &sort_suffix(definition)),
            unique: false,
            definition: definition.clone(),
        });
    }
    if topics.iter().any(|t| t.containment_index) {
        specs.push(IndexSpec {
            name: leaf_index_name(leaf, "gin"),
            unique: false,
            definition: "USING gin (payload jsonb_path_ops)".to_owned(),
        });
    }
    specs
}

fn create_index_sql(spec: &IndexSpec, leaf: &str, concurrently: bool) -> String {
    format!(
        "CREATE {unique}INDEX {concurrently}IF NOT EXISTS {name} ON {leaf} {definition}",
        unique = if spec.unique { "UNIQUE " } else { "" },
        concurrently = if concurrently { "CONCURRENTLY " } else { "" },
        name = spec.name,
        definition = spec.definition,
    )
}

/// The indexes of a leaf created in this transaction: built plainly, the table being empty and unseen.
fn new_leaf_indexes(policy: &StoragePolicy, leaf: &str, topic: Option<&str>) -> Vec<Step> {
    desired_indexes(policy, leaf, topic)
        .iter()
        .map(|spec| Step::ddl(create_index_sql(spec, leaf, false)))
        .collect()
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn timestamp_literal(at: OffsetDateTime) -> String {
    let format = time::format_description::well_known::Rfc3339;
    literal(&at.format(&format).unwrap_or_default())
}

const EVENT_COLUMNS: &str = "id, topic, received_at, producer, payload, schema_version";

/// Moves the events of `from` that match `condition` into `into`, in one statement.
fn move_events(from: &str, condition: &str, into: &str) -> Step {
    Step::moving(format!(
        "WITH moved AS (DELETE FROM {from} WHERE {condition} RETURNING {EVENT_COLUMNS}) \
         INSERT INTO {into} ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM moved"
    ))
}

/// Whether an error is a lock not granted within `lock_timeout` (55P03): left for the next run.
fn is_lock_timeout(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// One statement of a maintenance transaction; `moves` counts the rows it inserts as moved events.
struct Step {
    sql: String,
    moves: bool,
}

impl Step {
    fn ddl(sql: String) -> Step {
        Step { sql, moves: false }
    }

    fn moving(sql: String) -> Step {
        Step { sql, moves: true }
    }
}

/// Runs the steps in one transaction; a lock timeout rolls it back and is reported as deferred
/// (`Ok(None)`). Returns the events the moving steps moved.
async fn transaction(
    client: &Client,
    steps: &[Step],
    what: &str,
    report: &mut MaintenanceReport,
) -> Result<Option<u64>, DbError> {
    client.batch_execute("BEGIN").await?;
    let mut moved = 0;
    for step in steps {
        match client.execute(step.sql.as_str(), &[]).await {
            Ok(rows) if step.moves => moved += rows,
            Ok(_) => {}
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                if is_lock_timeout(&error) {
                    report
                        .deferred
                        .push(format!("{what}: a lock was not granted in time"));
                    return Ok(None);
                }
                return Err(error.into());
            }
        }
    }
    client.batch_execute("COMMIT").await?;
    Ok(Some(moved))
}

/// Runs one maintenance if no other is running (`None` then). `now` is the clock the spans and
/// retention are measured against (tests move it).
pub async fn maintain(
    client: &Client,
    policy: &StoragePolicy,
    now: OffsetDateTime,
) -> Result<Option<Maintained>, DbError> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MAINTENANCE_LOCK_KEY])
        .await?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let outcome = maintain_locked(client, policy, now, None).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LOCK_KEY])
        .await;
    outcome.map(Some)
}

/// One run, the lock held; with `since`, it also creates the spans from then on (a bulk load of past
/// events, the benchmark's history, goes straight into its partitions).
async fn maintain_locked(
    client: &Client,
    policy: &StoragePolicy,
    now: OffsetDateTime,
    since: Option<OffsetDateTime>,
) -> Result<Maintained, DbError> {
    client
        .batch_execute(&format!(
            "SET TIME ZONE 'UTC'; SET lock_timeout = {}",
            policy.lock_timeout_ms
        ))
        .await?;
    let mut report = MaintenanceReport::default();
    // First: the auto-indexes join the topics' indexes of every step (new leaves get them too).
    let (policy, field_usage) =
        &super::auto_index::choose(client, policy, now, &mut report).await?;
    create_spans(client, policy, now, since, &mut report).await?;
    create_leaves(client, policy, now, &mut report).await?;
    drop_expired(client, policy, now, &mut report).await?;
    build_indexes(client, policy, &mut report).await?;
    super::auto_index::mark_ready(client, now).await?;
    report.rollup_rows_folded = rollups::fold_counts(client).await?;
    prune_dead_letters(client, policy, now, &mut report).await?;
    let layout = summarise(client, &read_layout(client).await?).await?;
    Ok(Maintained {
        report,
        layout,
        auto_indexes: super::auto_index::per_topic(policy, field_usage),
        field_usage: field_usage.clone(),
    })
}

/// How many spans one run creates at most on either side: a clock far off (or years without
/// maintenance) must not make one transaction create thousands of tables; the next runs go on.
const MAX_SPANS_PER_RUN: usize = 400;

/// Which catch-all partition spans are split off.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    /// `events_after`, up to MAXVALUE: spans ahead.
    After,
    /// `events_before`, from MINVALUE: spans of the past, for a bulk load.
    Before,
}

/// Step 1: the current span and those ahead, split off `events_after`; with `since`, the spans from
/// then on, split off `events_before`.
async fn create_spans(
    client: &Client,
    policy: &StoragePolicy,
    now: OffsetDateTime,
    since: Option<OffsetDateTime>,
    report: &mut MaintenanceReport,
) -> Result<(), DbError> {
    let layout = read_layout(client).await?;
    let length = policy.span.duration();
    if let Some(after) = layout.after() {
        let end =
            policy.span_start(now) + length * (i32::try_from(policy.ahead).unwrap_or(366) + 1);
        let mut ranges = Vec::new();
        let mut lower = after.lower.unwrap_or(end);
        while lower < end && ranges.len() < MAX_SPANS_PER_RUN {
            let upper = policy.next_boundary(lower);
            ranges.push((lower, upper));
            lower = upper;
        }
        split_off(client, policy, after, Side::After, &ranges, report).await?;
    }
    if let (Some(since), Some(before)) = (since, layout.before()) {
        let start = policy.span_start(since);
        let mut ranges = Vec::new();
        let mut upper = before.upper.unwrap_or(start);
        while upper > start && ranges.len() < MAX_SPANS_PER_RUN {
            let lower = policy.previous_boundary(upper);
            ranges.push((lower, upper));
            upper = lower;
        }
        split_off(client, policy, before, Side::Before, &ranges, report).await?;
    }
    Ok(())
}

/// Creates the spans `ranges` (adjacent to `side`'s bound, in order away from it) out of the catch-all
/// partition `side`, in one transaction: the partition is detached, the spans created with their
/// topics' leaves and indexes, its events of their time moved into them, and it is attached again
/// beyond them. The detach takes `events`' ACCESS EXCLUSIVE lock for the moment of the transaction
/// (under `lock_timeout`: a long query on `events` defers it to the next run, ahead of need).
async fn split_off(
    client: &Client,
    policy: &StoragePolicy,
    catch_all: &Span,
    side: Side,
    ranges: &[(OffsetDateTime, OffsetDateTime)],
    report: &mut MaintenanceReport,
) -> Result<(), DbError> {
    let Some(&(first_lower, first_upper)) = ranges.first() else {
        return Ok(());
    };
    let table = &catch_all.name;
    let mut steps = vec![Step::ddl(format!(
        "ALTER TABLE events DETACH PARTITION {table}"
    ))];
    let mut created = Vec::new();
    for &(lower, upper) in ranges {
        let name = span_name(lower);
        steps.push(Step::ddl(format!(
            "CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS) \
             PARTITION BY LIST (topic)"
        )));
        let default_leaf = format!("{name}_default");
        steps.push(Step::ddl(format!(
            "CREATE TABLE {default_leaf} PARTITION OF {name} DEFAULT"
        )));
        let mut leaves = vec![(default_leaf, None)];
        for topic in policy.topics.keys() {
            let leaf = leaf_name(&name, topic);
            steps.push(Step::ddl(format!(
                "CREATE TABLE {leaf} PARTITION OF {name} FOR VALUES IN ({})",
                literal(topic)
            )));
            leaves.push((leaf, Some(topic.as_str())));
        }
        for (leaf, topic) in &leaves {
            steps.extend(new_leaf_indexes(policy, leaf, *topic));
        }
        let (lo, hi) = (timestamp_literal(lower), timestamp_literal(upper));
        steps.push(move_events(
            table,
            &format!("received_at >= {lo} AND received_at < {hi}"),
            &name,
        ));
        steps.push(Step::ddl(format!(
            "ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
        )));
        created.push(name);
        created.extend(leaves.into_iter().map(|(leaf, _)| leaf));
    }
    let last = ranges.last().map_or(first_upper, |r| match side {
        Side::After => r.1,
        Side::Before => r.0,
    });
    steps.push(Step::ddl(match side {
        Side::After => format!(
            "ALTER TABLE events ATTACH PARTITION {table} FOR VALUES FROM ({}) TO (MAXVALUE)",
            timestamp_literal(last)
        ),
        Side::Before => format!(
            "ALTER TABLE events ATTACH PARTITION {table} FOR VALUES FROM (MINVALUE) TO ({})",
            timestamp_literal(last)
        ),
    }));
    let what = format!("spans from {}", span_name(first_lower));
    if let Some(moved) = transaction(client, &steps, &what, report).await? {
        report.moved_events += moved;
        report.created.extend(created);
    }
    Ok(())
}

/// Step 2: every topic's leaf in the current and future spans, and in past spans whose default leaf
/// holds its events.
async fn create_leaves(
    client: &Client,
    policy: &StoragePolicy,
    now: OffsetDateTime,
    report: &mut MaintenanceReport,
) -> Result<(), DbError> {
    let layout = read_layout(client).await?;
    let split: Vec<&Span> = layout.spans.iter().filter(|s| s.split).collect();
    // The topics in each past span's default leaf, in one statement.
    let mut strays: BTreeSet<(String, String)> = BTreeSet::new();
    let past: Vec<(&Span, &Leaf)> = split
        .iter()
        .filter(|s| s.upper.is_some_and(|upper| upper <= now))
        .filter_map(|s| s.default_leaf().map(|d| (*s, d)))
        .collect();
    if !past.is_empty() {
        let union = past
            .iter()
            .map(|(span, leaf)| {
                format!(
                    "SELECT {} AS span, topic FROM {} GROUP BY topic",
                    literal(&span.name),
                    leaf.name
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for row in client.query(&union, &[]).await? {
            strays.insert((row.get(0), row.get(1)));
        }
    }
    for span in split {
        let Some(default_leaf) = span.default_leaf() else {
            continue;
        };
        for topic in policy.topics.keys() {
            let wanted = span.upper.is_none_or(|upper| upper > now)
                || strays.contains(&(span.name.clone(), topic.clone()));
            if !wanted || span.has_leaf_for(topic) {
                continue;
            }
            let leaf = leaf_name(&span.name, topic);
            let mut steps = vec![
                Step::ddl(format!(
                    "CREATE TABLE {leaf} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                )),
                move_events(
                    &default_leaf.name,
                    &format!("topic = {}", literal(topic)),
                    &leaf,
                ),
            ];
            steps.extend(new_leaf_indexes(policy, &leaf, Some(topic)));
            steps.push(Step::ddl(format!(
                "ALTER TABLE {} ATTACH PARTITION {leaf} FOR VALUES IN ({})",
                span.name,
                literal(topic)
            )));
            if let Some(moved) = transaction(client, &steps, &leaf, report).await? {
                report.moved_events += moved;
                report.created.push(leaf);
            }
        }
    }
    Ok(())
}

/// Step 3: per-leaf indexes. `CONCURRENTLY`, one at a time, so writers keep writing to a leaf while its
/// index is built.
async fn build_indexes(
    client: &Client,
    policy: &StoragePolicy,
    report: &mut MaintenanceReport,
) -> Result<(), DbError> {
    let layout = read_layout(client).await?;
    let leaves: Vec<&Leaf> = layout.leaves().collect();
    let names: Vec<&str> = leaves.iter().map(|l| l.name.as_str()).collect();
    // Every index of every leaf, with whether it is valid; the inherited (topic, received_at, id)
    // index is the partitioned table's, not ours to judge.
    let rows = client
        .query(
            "SELECT t.relname::text, i.relname::text, x.indisvalid \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             JOIN pg_class t ON t.oid = x.indrelid \
             WHERE t.relname = ANY($1) AND t.relnamespace = to_regnamespace(current_schema())::oid",
            &[&names],
        )
        .await?;
    let existing: BTreeMap<(String, String), bool> = rows
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    // A concurrent build waits for the transactions that use the leaf; it blocks no writer meanwhile,
    // so it may wait (under `lock_timeout` it would fail and leave an invalid index behind).
    client.batch_execute("SET lock_timeout = 0").await?;
    let outcome = build_leaf_indexes(client, policy, &leaves, &existing, report).await;
    client
        .batch_execute(&format!("SET lock_timeout = {}", policy.lock_timeout_ms))
        .await?;
    outcome
}

async fn build_leaf_indexes(
    client: &Client,
    policy: &StoragePolicy,
    leaves: &[&Leaf],
    existing: &BTreeMap<(String, String), bool>,
    report: &mut MaintenanceReport,
) -> Result<(), DbError> {
    for leaf in leaves {
        let wanted = desired_indexes(policy, &leaf.name, leaf.topic.as_deref());
        let field_index = format!("{}_f", leaf.name);
        // A field index built on a leaf that holds events has no statistics of its expression until
        // the leaf is analysed again, which autovacuum never does for a past day nobody writes to; the
        // planner then guesses instead of knowing how many rows a value has.
        let mut analyse = false;
        for spec in &wanted {
            analyse |= (spec.name.starts_with(&field_index)
                || is_sort_index(&leaf.name, &spec.name))
                && existing.get(&(leaf.name.clone(), spec.name.clone())) != Some(&true);
            match existing.get(&(leaf.name.clone(), spec.name.clone())) {
                Some(true) => continue,
                Some(false) => {
                    tracing::warn!(index = %spec.name, "index is invalid (an earlier build failed): building it again");
                    client
                        .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {}", spec.name))
                        .await?;
                    client
                        .batch_execute(&create_index_sql(spec, &leaf.name, true))
                        .await?;
                    report.indexes_rebuilt.push(spec.name.clone());
                }
                None => {
                    client
                        .batch_execute(&create_index_sql(spec, &leaf.name, true))
                        .await?;
                    report.indexes_built.push(spec.name.clone());
                }
            }
        }
        if analyse {
            client
                .batch_execute(&format!("ANALYZE {}", leaf.name))
                .await?;
        }
        // Ours (by name) but no longer asked for: a topic that turned its GIN index off, a field no
        // longer indexed. The key is always asked for.
        for (table, index) in existing.keys() {
            let ours = index.starts_with(&format!("{}_gin", leaf.name))
                || index.starts_with(&format!("{}_f", leaf.name))
                || is_sort_index(&leaf.name, index);
            if table == &leaf.name && ours && !wanted.iter().any(|w| &w.name == index) {
                client
                    .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                    .await?;
                report.indexes_dropped.push(index.clone());
            }
        }
    }
    Ok(())
}

/// Whether what a leaf holds has all expired: its span ended longer ago than its retention.
fn expired(retention: Retention, upper: OffsetDateTime, now: OffsetDateTime) -> bool {
    match retention.seconds() {
        None => false,
        // Beyond the calendar's end (a retention of millennia): never.
        Some(seconds) => i64::try_from(seconds)
            .ok()
            .and_then(|seconds| upper.checked_add(Duration::seconds(seconds)))
            .is_some_and(|end| end <= now),
    }
}

/// Step 4: leaves (and whole spans) past their retention, dropped.
async fn drop_expired(
    client: &Client,
    policy: &StoragePolicy,
    now: OffsetDateTime,
    report: &mut MaintenanceReport,
) -> Result<(), DbError> {
    let layout = read_layout(client).await?;
    for span in &layout.spans {
        // `events_after` never expires.
        let Some(upper) = span.upper.filter(|upper| *upper <= now) else {
            continue;
        };
        let retention_of = |leaf: &Leaf| {
            if span.split && leaf.topic.is_none() {
                // A span's default leaf holds topics without a leaf: unknown ones (step 2 moved the rest).
                policy.default_retention
            } else {
                policy.retention_of(leaf.topic.as_deref())
            }
        };
        let expired_leaves: Vec<&Leaf> = span
            .leaves
            .iter()
            .filter(|leaf| expired(retention_of(leaf), upper, now))
            .collect();
        if expired_leaves.is_empty() {
            continue;
        }
        // Each drop forgets its events' rollups in the same transaction.
        let forget = |topics| {
            Step::ddl(rollups::forget_counts_sql(
                topics,
                span.lower,
                span.upper,
                literal,
                timestamp_literal,
            ))
        };
        if !span.split || expired_leaves.len() == span.leaves.len() {
            let bytes: i64 = span.leaves.iter().map(|l| l.bytes).sum();
            let drop = [
                Step::ddl(format!("DROP TABLE {}", span.name)),
                forget(TopicsOfPartition::All),
            ];
            if transaction(client, &drop, &span.name, report)
                .await?
                .is_some()
            {
                report.dropped.push(span.name.clone());
                report.dropped_bytes += bytes;
            }
            continue;
        }
        let topics_with_leaves: Vec<&str> = span
            .leaves
            .iter()
            .filter_map(|l| l.topic.as_deref())
            .collect();
        for leaf in expired_leaves {
            let topics = match leaf.topic.as_deref() {
                Some(topic) => TopicsOfPartition::Only(topic),
                None => TopicsOfPartition::AllBut(&topics_with_leaves),
            };
            let drop = [
                Step::ddl(format!("DROP TABLE {}", leaf.name)),
                forget(topics),
            ];
            if transaction(client, &drop, &leaf.name, report)
                .await?
                .is_some()
            {
                report.dropped.push(leaf.name.clone());
                report.dropped_bytes += leaf.bytes;
            }
        }
    }
    Ok(())
}

/// Step 5: dead letters resolved longer ago than their retention (10,000 per statement).
async fn prune_dead_letters(
    client: &Client,
    policy: &StoragePolicy,
    now: OffsetDateTime,
    report: &mut MaintenanceReport,
) -> Result<(), DbError> {
    let Some(seconds) = policy.resolved_dead_letter_retention.seconds() else {
        return Ok(());
    };
    let Some(before) = i64::try_from(seconds)
        .ok()
        .and_then(|seconds| now.checked_sub(Duration::seconds(seconds)))
    else {
        return Ok(());
    };
    loop {
        let deleted = client
            .execute(
                "DELETE FROM dead_letters WHERE id = ANY(ARRAY( \
                   SELECT id FROM dead_letters WHERE resolution IS NOT NULL AND resolved_at < $1 \
                   LIMIT 10000))",
                &[&before],
            )
            .await?;
        report.dead_letters_deleted += deleted;
        if deleted < 10_000 {
            return Ok(());
        }
    }
}

async fn summarise(client: &Client, layout: &Layout) -> Result<LayoutSummary, DbError> {
    let mut summary = LayoutSummary {
        covered_until: layout
            .after()
            .and_then(|after| after.lower)
            .map(OffsetDateTime::unix_timestamp),
        ..LayoutSummary::default()
    };
    let mut defaults = Vec::new();
    for span in &layout.spans {
        for leaf in &span.leaves {
            let key = match (&leaf.topic, span.split) {
                (Some(topic), _) => topic.clone(),
                (None, true) => {
                    defaults.push(leaf.name.clone());
                    "(default)".to_owned()
                }
                (None, false) if span.upper.is_none() => {
                    defaults.push(leaf.name.clone());
                    "(after)".to_owned()
                }
                (None, false) if leaf.name == "events_legacy" => "(legacy)".to_owned(),
                (None, false) => "(before)".to_owned(),
            };
            let entry = summary.topics.entry(key).or_default();
            entry.partitions += 1;
            entry.bytes += leaf.bytes;
            if let Some(lower) = span.lower {
                let start = lower.unix_timestamp();
                entry.oldest_span_start =
                    Some(entry.oldest_span_start.map_or(start, |o| o.min(start)));
            }
        }
    }
    if !defaults.is_empty() {
        // reltuples is -1 before a table's first ANALYZE: no estimate yet, counted as 0.
        summary.default_events_estimate = client
            .query_one(
                "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class \
                 WHERE relname = ANY($1) AND relnamespace = to_regnamespace(current_schema())::oid",
                &[&defaults],
            )
            .await?
            .get(0);
    }
    Ok(summary)
}

/// Connects and runs one maintenance now, after the one running (if any) has finished: the writers at
/// start and after a reload (a new topic gets its leaves, a new indexed field its indexes at once) and
/// `eventgate migrate`.
pub async fn maintain_now(
    database_url: &str,
    policy: &StoragePolicy,
) -> Result<Maintained, DbError> {
    maintain_waiting(database_url, policy, None).await
}

/// [`maintain_now`], also creating the spans from `since` to now: for loading a history of past events.
pub async fn maintain_covering(
    database_url: &str,
    policy: &StoragePolicy,
    since: OffsetDateTime,
) -> Result<Maintained, DbError> {
    maintain_waiting(database_url, policy, Some(since)).await
}

/// One run on a connection of its own, after waiting for the lock (released when it ends).
async fn maintain_waiting(
    database_url: &str,
    policy: &StoragePolicy,
    since: Option<OffsetDateTime>,
) -> Result<Maintained, DbError> {
    let client = super::tls::connect(database_url).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MAINTENANCE_LOCK_KEY])
        .await?;
    let outcome = maintain_locked(&client, policy, OffsetDateTime::now_utc(), since).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LOCK_KEY])
        .await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("time")
    }

    #[test]
    fn names_fit_postgres_and_stay_readable() {
        assert_eq!(span_name(at("2026-12-03T00:00:00Z")), "events_p20261203");
        assert_eq!(
            span_name(at("2026-12-03T13:00:00Z")),
            "events_p20261203_1300"
        );
        let leaf = leaf_name("events_p20261203_1300", &"a.very.long.topic.name".repeat(8));
        assert!(leaf.len() <= 45, "{leaf}");
        assert!(
            leaf.starts_with("events_p20261203_1300_a_very_long"),
            "{leaf}"
        );
        let index = leaf_index_name(&leaf, &field_suffix("(payload->>'x')"));
        assert!(index.len() <= 63, "{index}");
        assert_ne!(
            leaf_name("events_p20261203", "web.events"),
            leaf_name("events_p20261203", "web_events"),
            "topics that read alike get different leaves"
        );
    }

    #[test]
    fn spans_follow_each_other_on_the_boundaries_of_their_length() {
        let storage = StorageConfig {
            partition_span: "6h".parse().expect("6h"),
            ..StorageConfig::default()
        };
        let policy = StoragePolicy::new(&Catalogue::from_topics([]), &storage);
        assert_eq!(
            policy.next_boundary(at("2026-12-03T07:30:00Z")),
            at("2026-12-03T12:00:00Z")
        );
        assert_eq!(
            policy.next_boundary(at("2026-12-03T12:00:00Z")),
            at("2026-12-03T18:00:00Z")
        );
        assert_eq!(
            policy.previous_boundary(at("2026-12-03T12:00:00Z")),
            at("2026-12-03T06:00:00Z")
        );
        assert_eq!(
            policy.previous_boundary(at("2026-12-03T07:30:00Z")),
            at("2026-12-03T06:00:00Z")
        );
        // Before 1970 too (rem_euclid, not %).
        assert_eq!(
            policy.span_start(at("1969-12-31T23:00:00Z")),
            at("1969-12-31T18:00:00Z")
        );
    }

    #[test]
    fn a_leaf_expires_when_its_span_ended_longer_ago_than_its_retention() {
        let week: Retention = "7d".parse().expect("7d");
        let end = at("2026-12-01T00:00:00Z");
        assert!(!expired(week, end, at("2026-12-07T23:59:59Z")));
        assert!(expired(week, end, at("2026-12-08T00:00:00Z")));
        assert!(!expired(
            Retention::Forever,
            end,
            at("2999-01-01T00:00:00Z")
        ));
    }
}
