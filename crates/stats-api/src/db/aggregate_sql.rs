//! Translation of an [`AggregatePlan`] into one parameterised SQL statement over `events`, and decoding
//! of its rows.
//!
//! The statement has three layers:
//! 1. `selected`: the topic's events that pass the filters (the same fragments as the page query, from
//!    [`SqlBuilder::filter`], so that the field indexes still match), with each group key (`k0`…) and each
//!    metric argument (`a0`…) computed once as the field's typed value; a bucket is
//!    `date_trunc(unit, instant, $zone)`. A payload path is looked up once per event (`payload -> $a -> …
//!    AS j0`, in a subquery the planner keeps: `OFFSET 0`), and the typed values are written over that
//!    jsonb value ([`selected_events`]).
//! 2. `grouped`: when every metric can be totalled from the groups (all but `count_distinct`), a plain
//!    `GROUP BY` of the keys (which Postgres can hash), and the totals row computed from the groups: sum of
//!    counts, sum of sums, least minimum, greatest maximum, and an average as the sum of the groups' sums
//!    over the sum of their counts (exactly what `avg` does: the exact sum divided by the count). With a
//!    `count_distinct`, `GROUP BY GROUPING SETS ((k0, …), ())`, so one scan yields the groups and the
//!    totals row (`GROUPING(…) <> 0`).
//! 3. The answer: the totals row first, then the groups in the plan's order (`NULLS LAST` both ways), at
//!    most `limit`, each with `count(*) OVER ()` (computed before the limit: the number of groups in all).
//!
//! A count over time of the envelope's `timestamp` (the explorer's chart: no groups, only `count`,
//! filtered by nothing but the `timestamp` itself) is answered from the rollups instead
//! ([`RollupRange`]): `event_counts` holds the topic's events per minute, exact (the writers add to it in
//! the transactions that store the events), so `selected` sums those minutes, plus the events of the
//! partial minutes at the ends of the time range, read from `events`. Same statement shape, same rows.
//!
//! Every cell is returned as text in one `text[]` (instants as epoch microseconds, numbers as Postgres
//! writes `numeric`, exactly), so one row type decodes any plan. As in `query_sql`, no client text enters
//! the SQL: aliases, units and operators are this file's static fragments; the time zone, the topic and
//! every filter value are bind parameters.

use eventgate_core::query::aggregate::{
    AggregatePlan, AggregateResult, GroupRow, MetricKind, MetricValue, SortTarget, TimeUnit,
};
use eventgate_core::query::{
    Decimal, FieldDef, FieldSource, FieldType, FilterOp, Scalar, SortValue,
};

use eventgate_core::db::typed_value::{typed_value, ValueSql};

use super::query_sql::{Bind, Instant, SqlBuilder, SqlParts};

const KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
const METRICS: [&str; 16] = [
    "m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11", "m12", "m13", "m14",
    "m15",
];
const ARGUMENTS: [&str; 16] = [
    "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10", "a11", "a12", "a13", "a14",
    "a15",
];
/// An average's parts in `grouped`: the sum and the number of the values.
const SUMS: [&str; 16] = [
    "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
    "s15",
];
const COUNTS: [&str; 16] = [
    "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "c13", "c14",
    "c15",
];
/// The jsonb values of the payload paths `selected` reads.
const RAW: [&str; 24] = [
    "j0", "j1", "j2", "j3", "j4", "j5", "j6", "j7", "j8", "j9", "j10", "j11", "j12", "j13", "j14",
    "j15", "j16", "j17", "j18", "j19", "j20", "j21", "j22", "j23",
];

/// One row of the statement.
#[derive(Debug)]
pub struct AggregateRow {
    /// Group keys then metrics, as text.
    pub cells: Vec<Option<String>>,
    /// The totals row (over every selected event).
    pub is_total: bool,
    /// Rows in all, the totals row included.
    pub total_rows: i64,
}

impl AggregateRow {
    /// The row's columns `cells, is_total, total_rows`, in the statement's order.
    pub fn from_row(row: &tokio_postgres::Row) -> Result<AggregateRow, tokio_postgres::Error> {
        Ok(AggregateRow {
            cells: row.try_get(0)?,
            is_total: row.try_get(1)?,
            total_rows: row.try_get(2)?,
        })
    }
}

/// What kind of value a group key holds, for decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyKind {
    Uuid,
    Text,
    Number,
    Bool,
    Instant,
}

fn key_kind(field: &FieldDef) -> KeyKind {
    match field.ty {
        FieldType::Uuid => KeyKind::Uuid,
        FieldType::Integer | FieldType::Number | FieldType::EpochMillis => KeyKind::Number,
        FieldType::Boolean => KeyKind::Bool,
        FieldType::DateTime => KeyKind::Instant,
        // Other-typed fields cannot be grouped by (the planner refuses them).
        FieldType::String | FieldType::Other => KeyKind::Text,
    }
}

fn key_kinds(plan: &AggregatePlan) -> Vec<KeyKind> {
    let mut kinds: Vec<KeyKind> = plan.group_by.iter().map(key_kind).collect();
    if plan.interval.is_some() {
        kinds.push(KeyKind::Instant);
    }
    kinds
}

/// The statement for `plan` over `topic`; `Err` only when the plan has more keys or metrics than this
/// file has aliases for (the planner's limits are well below).
pub fn aggregate_sql(topic: &str, plan: &AggregatePlan) -> Result<SqlParts, &'static str> {
    let kinds = key_kinds(plan);
    if kinds.len() > KEYS.len()
        || plan.metrics.len() > METRICS.len()
        || payload_paths(plan).len() > RAW.len()
    {
        return Err("too many group keys or metrics for the SQL translation");
    }
    let rollup = RollupRange::of(plan);
    let mut b = SqlBuilder::default();
    // Distinct counts do not add up: only those plans need a grouping set for their totals.
    let totalled = !kinds.is_empty()
        && plan
            .metrics
            .iter()
            .all(|m| m.kind != MetricKind::CountDistinct);
    if totalled {
        b.push("WITH grouped AS MATERIALIZED (SELECT ");
        for alias in KEYS.iter().take(kinds.len()) {
            b.push(alias);
            b.push(", ");
        }
        group_metric_columns(&mut b, plan, rollup.is_some());
        b.push(" FROM (");
        selected(&mut b, topic, plan, rollup);
        b.push(") AS selected GROUP BY ");
        key_list(&mut b, kinds.len());
        b.push(") ");
    }
    b.push("SELECT ARRAY[");
    let mut first = true;
    let mut comma = |b: &mut SqlBuilder| {
        if !std::mem::take(&mut first) {
            b.push(", ");
        }
    };
    for (i, kind) in kinds.iter().enumerate() {
        comma(&mut b);
        if *kind == KeyKind::Instant {
            b.push("(extract(epoch FROM ");
            b.push(KEYS[i]);
            b.push(") * 1000000)::bigint::text");
        } else {
            b.push(KEYS[i]);
            b.push("::text");
        }
    }
    for alias in METRICS.iter().take(plan.metrics.len()) {
        comma(&mut b);
        b.push(alias);
        b.push("::text");
    }
    if kinds.is_empty() {
        b.push("]::text[] AS cells, TRUE AS is_total, 1::bigint AS total_rows FROM (SELECT ");
        metric_columns(&mut b, plan, rollup.is_some());
        b.push(" FROM (");
        selected(&mut b, topic, plan, rollup);
        b.push(") AS selected) AS grouped");
        return Ok(b.finish());
    }
    b.push(
        "]::text[] AS cells, grp <> 0 AS is_total, count(*) OVER () AS total_rows FROM (SELECT ",
    );
    if totalled {
        // The groups, then the totals row computed from them.
        for alias in KEYS.iter().take(kinds.len()) {
            b.push(alias);
            b.push(", ");
        }
        for (i, metric) in plan.metrics.iter().enumerate() {
            if metric.kind == MetricKind::Avg {
                b.push(SUMS[i]);
                b.push(" / NULLIF(");
                b.push(COUNTS[i]);
                b.push(", 0)::numeric AS ");
            }
            b.push(METRICS[i]);
            b.push(", ");
        }
        b.push("0 AS grp FROM grouped UNION ALL SELECT ");
        for _ in 0..kinds.len() {
            b.push("NULL, ");
        }
        for (i, metric) in plan.metrics.iter().enumerate() {
            match metric.kind {
                MetricKind::Count => {
                    b.push("coalesce(sum(");
                    b.push(METRICS[i]);
                    b.push("), 0)::bigint");
                }
                MetricKind::Sum => {
                    b.push("sum(");
                    b.push(METRICS[i]);
                    b.push(")");
                }
                MetricKind::Min => {
                    b.push("min(");
                    b.push(METRICS[i]);
                    b.push(")");
                }
                MetricKind::Max => {
                    b.push("max(");
                    b.push(METRICS[i]);
                    b.push(")");
                }
                MetricKind::Avg => {
                    b.push("sum(");
                    b.push(SUMS[i]);
                    b.push(") / NULLIF(sum(");
                    b.push(COUNTS[i]);
                    b.push("), 0)");
                }
                MetricKind::CountDistinct => unreachable!("not totalled"),
            }
            b.push(", ");
        }
        b.push("1 FROM grouped) AS answer ORDER BY grp DESC");
    } else {
        for alias in KEYS.iter().take(kinds.len()) {
            b.push(alias);
            b.push(", ");
        }
        metric_columns(&mut b, plan, rollup.is_some());
        b.push(", GROUPING(");
        key_list(&mut b, kinds.len());
        b.push(") AS grp FROM (");
        selected(&mut b, topic, plan, rollup);
        b.push(") AS selected GROUP BY GROUPING SETS ((");
        key_list(&mut b, kinds.len());
        b.push("), ())) AS grouped ORDER BY grp DESC");
    }
    for key in &plan.sort {
        b.push(", ");
        b.push(match key.target {
            SortTarget::Key(i) => KEYS[i],
            SortTarget::Metric(i) => METRICS[i],
        });
        b.push(if key.descending {
            " DESC NULLS LAST"
        } else {
            " ASC NULLS LAST"
        });
    }
    b.push(" LIMIT ");
    // The totals row plus `limit` groups.
    b.bind(Bind::BigInt(i64::from(plan.limit) + 1), "::bigint");
    Ok(b.finish())
}

fn key_list(b: &mut SqlBuilder, n: usize) {
    for (i, alias) in KEYS.iter().take(n).enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push(alias);
    }
}

/// The metrics over `selected`; from rollups, each selected row is a number of events (`weight`).
fn metric_columns(b: &mut SqlBuilder, plan: &AggregatePlan, weighted: bool) {
    for (i, metric) in plan.metrics.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push(match metric.kind {
            MetricKind::Count if weighted => "sum(weight)",
            MetricKind::Count => "count(*)",
            MetricKind::CountDistinct => "count(DISTINCT ",
            MetricKind::Min => "min(",
            MetricKind::Max => "max(",
            MetricKind::Sum => "sum(",
            MetricKind::Avg => "avg(",
        });
        if metric.kind != MetricKind::Count {
            b.push(ARGUMENTS[i]);
            b.push(")");
        }
        b.push(" AS ");
        b.push(METRICS[i]);
    }
}

/// The metrics of each group in `grouped`, where the totals row is computed from the groups: an
/// average as its sum (`s<i>`) and its number of values (`c<i>`), divided above.
fn group_metric_columns(b: &mut SqlBuilder, plan: &AggregatePlan, weighted: bool) {
    for (i, metric) in plan.metrics.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        if metric.kind == MetricKind::Avg {
            b.push("sum(");
            b.push(ARGUMENTS[i]);
            b.push(") AS ");
            b.push(SUMS[i]);
            b.push(", count(");
            b.push(ARGUMENTS[i]);
            b.push(") AS ");
            b.push(COUNTS[i]);
            continue;
        }
        b.push(match metric.kind {
            MetricKind::Count if weighted => "sum(weight)",
            MetricKind::Count => "count(*)",
            MetricKind::Min => "min(",
            MetricKind::Max => "max(",
            MetricKind::Sum => "sum(",
            MetricKind::CountDistinct | MetricKind::Avg => unreachable!("not totalled"),
        });
        if metric.kind != MetricKind::Count {
            b.push(ARGUMENTS[i]);
            b.push(")");
        }
        b.push(" AS ");
        b.push(METRICS[i]);
    }
}

/// `SELECT <keys>, <metric arguments> FROM events WHERE topic = $1 AND <filters>`; from rollups, the
/// minutes' counts and the partial minutes' events, each row with its `weight`.
fn selected(b: &mut SqlBuilder, topic: &str, plan: &AggregatePlan, rollup: Option<RollupRange>) {
    let Some(range) = rollup else {
        return selected_events(b, topic, plan, None);
    };
    b.push("SELECT ");
    bucket(b, plan, |b| b.push("minute"));
    b.push(", events AS weight FROM event_counts WHERE topic = ");
    b.bind(Bind::Text(topic.to_owned()), "::text");
    if let Some(from) = range.from {
        b.push(" AND minute >= ");
        b.bind(Bind::Timestamptz(Instant(from)), "::timestamptz");
    }
    if let Some(until) = range.until {
        b.push(" AND minute < ");
        b.bind(Bind::Timestamptz(Instant(until)), "::timestamptz");
    }
    if let Some(from) = range.from {
        b.push(" UNION ALL ");
        selected_events(b, topic, plan, Some(("received_at < ", from)));
    }
    if let Some(until) = range.until {
        b.push(" UNION ALL ");
        selected_events(b, topic, plan, Some(("received_at >= ", until)));
    }
}

/// The fields `selected` reads: the group keys, the interval's, the metric arguments.
fn read_fields(plan: &AggregatePlan) -> impl Iterator<Item = &FieldDef> {
    plan.group_by
        .iter()
        .chain(plan.interval.as_ref().map(|bucketing| &bucketing.field))
        .chain(
            plan.metrics
                .iter()
                .filter_map(|metric| metric.field.as_ref()),
        )
}

/// The payload paths `selected` reads, each once.
fn payload_paths(plan: &AggregatePlan) -> Vec<&[String]> {
    let mut paths: Vec<&[String]> = Vec::new();
    for field in read_fields(plan) {
        if let FieldSource::Payload(path) = &field.source {
            if !paths.contains(&path.as_slice()) {
                paths.push(path);
            }
        }
    }
    paths
}

/// The `selected` rows read from `events`; `edge`: only those on that side of a whole minute (from
/// rollups, each with a `weight` of 1).
///
/// A payload field's typed value names its jsonb value several times (the type check, the conversion;
/// and an epoch-ms bucket uses the typed value three times, see [`epoch_instant`]), and Postgres evaluates
/// each copy per row. So, in subqueries the planner keeps (`OFFSET 0`): `raw` looks each payload path up
/// once (`payload -> $a -> $b AS j<n>`, with the filters, unchanged); `typed` writes the typed values over
/// those (keys, metric arguments, and the bucket, or the epoch-ms value `ms`), each field's once; the
/// outer select buckets `ms` and names a value that two metrics (or a key and a metric) share once more.
/// Same rows as the typed values over `payload`.
fn selected_events(
    b: &mut SqlBuilder,
    topic: &str,
    plan: &AggregatePlan,
    edge: Option<(&'static str, i64)>,
) {
    let paths = payload_paths(plan);
    if paths.is_empty() {
        return events_columns(b, topic, plan, edge);
    }
    let epoch = plan
        .interval
        .as_ref()
        .filter(|bucketing| epoch_payload(&bucketing.field));
    b.push("SELECT ");
    for alias in KEYS.iter().take(plan.group_by.len()) {
        b.push(alias);
        b.push(", ");
    }
    if let Some(bucketing) = epoch {
        truncate(b, bucketing.unit);
        epoch_instant(b, |b| b.push("ms"));
        b.push(", ");
        b.bind(Bind::Text(bucketing.time_zone.clone()), "::text");
        b.push(") AS ");
        b.push(KEYS[plan.group_by.len()]);
        b.push(", ");
    } else if plan.interval.is_some() {
        b.push(KEYS[plan.group_by.len()]);
        b.push(", ");
    }
    for (i, metric) in plan.metrics.iter().enumerate() {
        if metric.field.is_some() {
            if let Some(earlier) = same_value(plan, i) {
                b.push(earlier);
                b.push(" AS ");
            }
            b.push(ARGUMENTS[i]);
            b.push(", ");
        }
    }
    b.push(if edge.is_some() { "weight" } else { "1 AS one" });
    b.push(" FROM (SELECT ");
    for (i, field) in plan.group_by.iter().enumerate() {
        typed_raw(b, field, &paths);
        b.push(" AS ");
        b.push(KEYS[i]);
        b.push(", ");
    }
    if let Some(bucketing) = &plan.interval {
        if epoch.is_some() {
            typed_raw(b, &bucketing.field, &paths);
            b.push(" AS ms");
        } else {
            bucket(b, plan, |b| typed_raw(b, &bucketing.field, &paths));
        }
        b.push(", ");
    }
    for (i, metric) in plan.metrics.iter().enumerate() {
        match &metric.field {
            Some(field) if same_value(plan, i).is_none() => {
                typed_raw(b, field, &paths);
                b.push(" AS ");
                b.push(ARGUMENTS[i]);
                b.push(", ");
            }
            _ => {}
        }
    }
    b.push(if edge.is_some() { "weight" } else { "1 AS one" });
    b.push(" FROM (SELECT ");
    for (path, alias) in paths.iter().zip(RAW) {
        // `jsonb -> text` walks objects only (NULL for anything else): the payload value at the path,
        // as `SqlBuilder`'s `payload #> path` (with its guards against array indexing) is, without
        // taking the `text[]` apart for every row.
        b.push("(payload");
        for part in *path {
            b.push(" -> ");
            b.bind(Bind::Text(part.clone()), "::text");
        }
        b.push(")");
        b.push(" AS ");
        b.push(alias);
        b.push(", ");
    }
    // The envelope columns the typed values read.
    let (mut id, mut received_at, mut producer) = (false, false, false);
    for field in read_fields(plan) {
        match field.source {
            FieldSource::Id => id = true,
            FieldSource::Timestamp => received_at = true,
            FieldSource::Producer => producer = true,
            FieldSource::Payload(_) | FieldSource::Items { .. } => {}
        }
    }
    for (wanted, column) in [
        (id, "id, "),
        (received_at, "received_at, "),
        (producer, "producer, "),
    ] {
        if wanted {
            b.push(column);
        }
    }
    b.push(if edge.is_some() {
        "1::bigint AS weight"
    } else {
        "1 AS one"
    });
    events_from(b, topic, plan, edge);
    b.push(" OFFSET 0) AS raw OFFSET 0) AS typed");
}

/// The column of `typed` that already holds the typed value of metric `i`'s argument: a group key's or an
/// earlier argument's of the same field (the value is computed once).
fn same_value(plan: &AggregatePlan, i: usize) -> Option<&'static str> {
    let field = plan.metrics[i].field.as_ref()?;
    if let Some(k) = plan.group_by.iter().position(|key| key == field) {
        return Some(KEYS[k]);
    }
    let j = plan.metrics[..i]
        .iter()
        .position(|m| m.field.as_ref() == Some(field))?;
    Some(ARGUMENTS[j])
}

/// The typed value of `field` over the `raw` subquery of [`selected_events`]: a payload field's over its
/// path's jsonb value `j<n>` (`paths[n]`), an envelope field's over its column.
fn typed_raw(b: &mut SqlBuilder, field: &FieldDef, paths: &[&[String]]) {
    let FieldSource::Payload(path) = &field.source else {
        return b.typed(field);
    };
    let n = paths
        .iter()
        .position(|p| *p == path.as_slice())
        .expect("every payload path is in `raw`");
    typed_value(&mut Raw { b, alias: RAW[n] }, field.ty, path);
}

/// The typed-value expression over a payload path's jsonb value, already looked up as `alias`.
struct Raw<'a> {
    b: &'a mut SqlBuilder,
    alias: &'static str,
}

impl ValueSql for Raw<'_> {
    fn push(&mut self, fragment: &'static str) {
        self.b.push(fragment);
    }

    fn value(&mut self, _path: &[String]) {
        self.b.push(self.alias);
    }

    fn value_operand(&mut self, _path: &[String]) {
        self.b.push("(");
        self.b.push(self.alias);
        self.b.push(")");
    }

    fn value_text(&mut self, _path: &[String]) {
        self.b.push("(");
        self.b.push(self.alias);
        self.b.push(" #>> '{}')");
    }

    fn time_pattern(&mut self) {
        ValueSql::time_pattern(self.b);
    }
}

/// `SELECT <keys>, <bucket>, <metric arguments> FROM events WHERE topic = $n AND <filters>`, when no
/// payload field is read (the typed values are columns).
fn events_columns(
    b: &mut SqlBuilder,
    topic: &str,
    plan: &AggregatePlan,
    edge: Option<(&'static str, i64)>,
) {
    b.push("SELECT ");
    let mut columns = 0;
    let mut next = |b: &mut SqlBuilder| {
        if columns > 0 {
            b.push(", ");
        }
        columns += 1;
    };
    for (i, field) in plan.group_by.iter().enumerate() {
        next(b);
        b.typed(field);
        b.push(" AS ");
        b.push(KEYS[i]);
    }
    if let Some(bucketing) = &plan.interval {
        next(b);
        bucket(b, plan, |b| b.typed(&bucketing.field));
    }
    for (i, metric) in plan.metrics.iter().enumerate() {
        if let Some(field) = &metric.field {
            next(b);
            b.typed(field);
            b.push(" AS ");
            b.push(ARGUMENTS[i]);
        }
    }
    if edge.is_some() {
        next(b);
        b.push("1::bigint AS weight");
    }
    if columns == 0 {
        // `count` alone needs no column.
        b.push("1 AS one");
    }
    events_from(b, topic, plan, edge);
}

/// ` FROM events WHERE topic = $n AND <filters>`, and the minute `edge`.
fn events_from(
    b: &mut SqlBuilder,
    topic: &str,
    plan: &AggregatePlan,
    edge: Option<(&'static str, i64)>,
) {
    b.push(" FROM events WHERE topic = ");
    b.bind(Bind::Text(topic.to_owned()), "::text");
    for filter in &plan.filters {
        b.push(" AND ");
        b.filter(filter);
    }
    if let Some((condition, at)) = edge {
        b.push(" AND ");
        b.push(condition);
        b.bind(Bind::Timestamptz(Instant(at)), "::timestamptz");
    }
}

fn truncate(b: &mut SqlBuilder, unit: TimeUnit) {
    b.push(match unit {
        TimeUnit::Minute => "date_trunc('minute', ",
        TimeUnit::Hour => "date_trunc('hour', ",
        TimeUnit::Day => "date_trunc('day', ",
        TimeUnit::Week => "date_trunc('week', ",
        TimeUnit::Month => "date_trunc('month', ",
        TimeUnit::Quarter => "date_trunc('quarter', ",
        TimeUnit::Year => "date_trunc('year', ",
    });
}

/// The bucket of the plan's interval, `date_trunc(unit, <instant>, $zone) AS k<n>`, of the instant
/// `instant` writes.
fn bucket(b: &mut SqlBuilder, plan: &AggregatePlan, instant: impl FnOnce(&mut SqlBuilder)) {
    if let Some(bucketing) = &plan.interval {
        truncate(b, bucketing.unit);
        instant(b);
        b.push(", ");
        b.bind(Bind::Text(bucketing.time_zone.clone()), "::text");
        b.push(") AS ");
        b.push(KEYS[plan.group_by.len()]);
    }
}

const MINUTE_MICROS: i64 = 60_000_000;

fn floor_minute(micros: i64) -> i64 {
    micros - micros.rem_euclid(MINUTE_MICROS)
}

/// The whole minutes of `received_at` a rollup-answerable plan selects: `[from, until)`, `None` where
/// unbounded. Every event in them passes the plan's filters; the events outside them that pass are read
/// from `events` (at most a minute's at each end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollupRange {
    pub from: Option<i64>,
    pub until: Option<i64>,
}

impl RollupRange {
    /// The range when the rollups can answer `plan`: a count over time of the envelope's `timestamp`
    /// (no group, no other metric) with no filter but bounds on `timestamp` (a reader's restrictions are
    /// filters too, so a restricted reader is always answered from `events`). Minutes are UTC minutes;
    /// every time zone's offset is whole minutes today, so a bucket of any unit holds whole minutes.
    pub fn of(plan: &AggregatePlan) -> Option<RollupRange> {
        let bucketing = plan.interval.as_ref()?;
        if !plan.group_by.is_empty()
            || bucketing.field.source != FieldSource::Timestamp
            || plan.metrics.is_empty()
            || plan.metrics.iter().any(|m| m.kind != MetricKind::Count)
        {
            return None;
        }
        // Each bound as the first whole minute after it / the end of the last one before it.
        let mut lowers = Vec::new();
        let mut uppers = Vec::new();
        for filter in &plan.filters {
            if filter.field.source != FieldSource::Timestamp {
                return None;
            }
            let instant = |value: &Scalar| match value {
                Scalar::Instant(micros) => Some(*micros),
                _ => None,
            };
            match &filter.op {
                FilterOp::Gte(v) => {
                    lowers.push(floor_minute(instant(v)?.checked_add(MINUTE_MICROS - 1)?))
                }
                FilterOp::Gt(v) => {
                    lowers.push(floor_minute(instant(v)?).checked_add(MINUTE_MICROS)?)
                }
                FilterOp::Lte(v) => uppers.push(floor_minute(instant(v)?.checked_add(1)?)),
                FilterOp::Lt(v) => uppers.push(floor_minute(instant(v)?)),
                FilterOp::Between(from, to) => {
                    if let Some(from) = from {
                        lowers.push(floor_minute(instant(from)?.checked_add(MINUTE_MICROS - 1)?));
                    }
                    if let Some(to) = to {
                        uppers.push(floor_minute(instant(to)?.checked_add(1)?));
                    }
                }
                _ => return None,
            }
        }
        let range = RollupRange {
            from: lowers.into_iter().max(),
            until: uppers.into_iter().min(),
        };
        match (range.from, range.until) {
            // No whole minute in between: the ends would overlap; `events` answers.
            (Some(from), Some(until)) if from >= until => None,
            _ => Some(range),
        }
    }
}

/// Whether a time field is an epoch-ms payload value (made an instant by [`epoch_instant`]).
fn epoch_payload(field: &FieldDef) -> bool {
    field.source != FieldSource::Timestamp && field.ty == FieldType::EpochMillis
}

/// The instant of the epoch-ms number `value` writes, as `timestamptz`: only within years 0001–9999
/// (beyond, `to_timestamp` could fail the whole statement; NULL there), as
/// `eventgate_core::query::aggregate::epoch_ms_instant`.
fn epoch_instant(b: &mut SqlBuilder, value: impl Fn(&mut SqlBuilder)) {
    b.push("(CASE WHEN ");
    value(b);
    b.push(" >= -62135596800000 AND ");
    value(b);
    b.push(" < 253402300800000 THEN to_timestamp(");
    value(b);
    // Multiplying a numeric by 0.001 is exact; to_timestamp then takes the nearest double.
    b.push(" * 0.001) END)");
}

/// Decodes the rows of [`aggregate_sql`] into the answer; `Err` describes a cell that does not decode
/// (a bug, never the client's fault).
pub fn decode(plan: &AggregatePlan, rows: Vec<AggregateRow>) -> Result<AggregateResult, String> {
    let kinds = key_kinds(plan);
    let mut totals = None;
    let mut groups = Vec::new();
    let mut total_rows = 0;
    for row in rows {
        total_rows = row.total_rows;
        if row.cells.len() != kinds.len() + plan.metrics.len() {
            return Err(format!("row has {} cells", row.cells.len()));
        }
        let (key_cells, metric_cells) = row.cells.split_at(kinds.len());
        let metrics = plan
            .metrics
            .iter()
            .zip(metric_cells)
            .map(|(m, cell)| decode_metric(m.kind, cell.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        if row.is_total {
            totals = Some(metrics);
            continue;
        }
        let keys = kinds
            .iter()
            .zip(key_cells)
            .map(|(kind, cell)| decode_key(*kind, cell.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(GroupRow { keys, metrics });
    }
    let totals = totals.ok_or("no totals row")?;
    let total_groups = if kinds.is_empty() {
        0
    } else {
        u64::try_from(total_rows - 1).unwrap_or(0)
    };
    Ok(AggregateResult {
        groups,
        total_groups,
        totals,
    })
}

fn decode_key(kind: KeyKind, cell: Option<&str>) -> Result<SortValue, String> {
    let Some(text) = cell else { return Ok(None) };
    let bad = || format!("cannot decode group key {text:?} as {kind:?}");
    let scalar = match kind {
        KeyKind::Uuid => Scalar::Uuid(uuid::Uuid::parse_str(text).map_err(|_| bad())?),
        KeyKind::Text => Scalar::Text(text.to_owned()),
        KeyKind::Number => Scalar::Number(Decimal::parse(text).ok_or_else(bad)?),
        KeyKind::Bool => Scalar::Bool(match text {
            "true" => true,
            "false" => false,
            _ => return Err(bad()),
        }),
        KeyKind::Instant => Scalar::Instant(text.parse().map_err(|_| bad())?),
    };
    Ok(Some(scalar))
}

fn decode_metric(kind: MetricKind, cell: Option<&str>) -> Result<MetricValue, String> {
    let bad = |text: &str| format!("cannot decode metric {text:?} of {kind:?}");
    Ok(match (kind, cell) {
        (MetricKind::Count | MetricKind::CountDistinct, Some(text)) => {
            MetricValue::Count(text.parse().map_err(|_| bad(text))?)
        }
        (MetricKind::Count | MetricKind::CountDistinct, None) => MetricValue::Count(0),
        (MetricKind::Avg, Some(text)) => {
            MetricValue::Average(Some(text.parse().map_err(|_| bad(text))?))
        }
        (MetricKind::Avg, None) => MetricValue::Average(None),
        (_, Some(text)) => {
            MetricValue::Number(Some(Decimal::parse(text).ok_or_else(|| bad(text))?))
        }
        (_, None) => MetricValue::Number(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventgate_core::query::aggregate::{plan_aggregate, AggregateLimits, AggregateRequest};
    use eventgate_core::query::{FieldCatalogue, QueryLimits};
    use serde_json::{json, Value};

    fn sql_for(body: Value) -> SqlParts {
        let fields = FieldCatalogue::from_schema(&json!({
            "type": "object",
            "properties": {
                "source_app": {"type": "string"},
                "score": {"type": "number"},
                "ts_ms": {"type": "integer", "x-eventgate-type": "epoch-ms"},
                "x'; DROP TABLE events; --": {"type": "integer"},
            }
        }));
        let req = AggregateRequest::from_json(&body).expect("body");
        let plan = plan_aggregate(
            "jobs",
            &req,
            &fields,
            &QueryLimits::default(),
            &AggregateLimits::default(),
            &[],
        )
        .expect("plan");
        aggregate_sql("jobs", &plan).expect("sql")
    }

    #[test]
    fn count_alone_is_one_row_without_grouping() {
        let parts = sql_for(json!({}));
        assert_eq!(
            parts.sql,
            "SELECT ARRAY[m0::text]::text[] AS cells, TRUE AS is_total, 1::bigint AS total_rows FROM \
             (SELECT count(*) AS m0 FROM (SELECT 1 AS one FROM events WHERE topic = $1::text) AS selected) AS grouped"
        );
        assert_eq!(parts.binds, vec![Bind::Text("jobs".into())]);
    }

    #[test]
    fn groups_buckets_and_metrics_are_one_statement_of_static_fragments() {
        let evil = "x'; DROP TABLE events; --";
        let parts = sql_for(json!({
            "filter": {"source_app_contains": "'; DELETE"},
            "group_by": ["source_app"],
            "interval": {"unit": "week", "field": "ts_ms", "time_zone": "Europe/Berlin"},
            "metrics": ["count", format!("sum({evil})"), "avg(score)"],
            "sort": ["-count"],
            "limit": 5
        }));
        for text in [evil, "DELETE", "Berlin", "jobs"] {
            assert!(!parts.sql.contains(text), "{text} in {}", parts.sql);
        }
        assert!(
            parts.sql.contains("date_trunc('week', (CASE WHEN"),
            "{}",
            parts.sql
        );
        // Count, sum and average total from the groups: a plain GROUP BY, no grouping sets.
        assert!(
            parts.sql.starts_with("WITH grouped AS MATERIALIZED (SELECT k0, k1, count(*) AS m0, sum(a1) AS m1, sum(a2) AS s2, count(a2) AS c2 FROM ("),
            "{}",
            parts.sql
        );
        assert!(
            parts.sql.contains(") AS selected GROUP BY k0, k1) "),
            "{}",
            parts.sql
        );
        assert!(!parts.sql.contains("GROUPING"), "{}", parts.sql);
        assert!(
            parts.sql.contains("s2 / NULLIF(c2, 0)::numeric AS m2, 0 AS grp FROM grouped UNION ALL SELECT NULL, NULL, coalesce(sum(m0), 0)::bigint, sum(m1), sum(s2) / NULLIF(sum(c2), 0), 1 FROM grouped"),
            "{}",
            parts.sql
        );
        assert!(
            parts.sql.ends_with("ORDER BY grp DESC, m0 DESC NULLS LAST, k0 ASC NULLS LAST, k1 ASC NULLS LAST LIMIT $9::bigint"),
            "{}",
            parts.sql
        );
        assert!(parts.binds.contains(&Bind::Text("Europe/Berlin".into())));
        assert!(parts.binds.contains(&Bind::Text(evil.into())));
        assert_eq!(parts.binds.last(), Some(&Bind::BigInt(6)));
    }

    #[test]
    fn distinct_counts_keep_the_grouping_sets() {
        let parts = sql_for(json!({
            "group_by": ["source_app"],
            "metrics": ["count", "count_distinct(score)", "min(score)"]
        }));
        assert!(!parts.sql.contains("WITH grouped"), "{}", parts.sql);
        assert!(
            parts.sql.contains("GROUP BY GROUPING SETS ((k0), ())"),
            "{}",
            parts.sql
        );
    }

    #[test]
    fn each_payload_path_is_looked_up_once_per_event() {
        let parts = sql_for(json!({
            "filter": {"score_gte": 1},
            "group_by": ["source_app", "producer"],
            "interval": {"unit": "day", "field": "ts_ms"},
            "metrics": ["count", "count_distinct(score)", "sum(score)", "max(ts_ms)"]
        }));
        // source_app, ts_ms and score once each in `raw`; the filter's own expression as before.
        assert_eq!(
            parts.sql.matches("(payload -> $").count(),
            3,
            "{}",
            parts.sql
        );
        assert_eq!(parts.sql.matches("payload #>").count(), 2, "{}", parts.sql);
        assert!(
            parts
                .sql
                .contains("producer, 1 AS one FROM events WHERE topic = "),
            "{}",
            parts.sql
        );
        assert!(
            parts.sql.contains(" OFFSET 0) AS raw OFFSET 0) AS typed"),
            "{}",
            parts.sql
        );
        // The filter's path, bound as a whole.
        let paths = parts
            .binds
            .iter()
            .filter(|b| matches!(b, Bind::TextArray(_)))
            .count();
        assert_eq!(paths, 1, "{:?}", parts.binds);
        // An argument of a field already typed (a key, an earlier argument) reuses its column.
        let parts = sql_for(json!({
            "group_by": ["score"],
            "metrics": ["count", "sum(score)", "min(ts_ms)", "max(ts_ms)"]
        }));
        assert!(
            parts
                .sql
                .contains("SELECT k0, k0 AS a1, a2, a2 AS a3, 1 AS one FROM (SELECT "),
            "{}",
            parts.sql
        );
        assert_eq!(
            parts.sql.matches("::numeric END) AS ").count(),
            2,
            "{}",
            parts.sql
        );
    }

    #[test]
    fn cells_decode_by_kind() {
        assert_eq!(
            decode_key(KeyKind::Number, Some("1.50")).expect("number"),
            Some(Scalar::Number(Decimal::parse("1.5").expect("decimal")))
        );
        assert_eq!(
            decode_key(KeyKind::Instant, Some("-1")).expect("instant"),
            Some(Scalar::Instant(-1))
        );
        assert_eq!(decode_key(KeyKind::Bool, None).expect("null"), None);
        assert!(decode_key(KeyKind::Bool, Some("t")).is_err());
        assert_eq!(
            decode_metric(MetricKind::Sum, None).expect("sum"),
            MetricValue::Number(None)
        );
        assert_eq!(
            decode_metric(MetricKind::Avg, Some("0.33333333333333333333")).expect("avg"),
            MetricValue::Average(Some(1.0 / 3.0))
        );
    }

    #[test]
    fn the_count_over_time_reads_the_rollups_and_the_partial_minutes() {
        let parts = sql_for(json!({
            "filter": {"timestamp_gte": "2025-01-01T00:00:30Z", "timestamp_lt": "2025-01-02T00:00:00Z"},
            "interval": {"unit": "hour", "time_zone": "Europe/Berlin"}
        }));
        assert!(
            parts.sql.contains("FROM event_counts WHERE topic = "),
            "{}",
            parts.sql
        );
        // The partial minutes at both ends (the third UNION ALL adds the totals row).
        assert_eq!(
            parts.sql.matches(" UNION ALL SELECT date_trunc(").count(),
            2,
            "{}",
            parts.sql
        );
        assert!(parts.sql.contains("sum(weight) AS m0"), "{}", parts.sql);
        // The first whole minute after 00:00:30, the end of the last one before midnight.
        let minute = |text: &str| {
            Bind::Timestamptz(Instant(
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .expect("time")
                    .unix_timestamp()
                    * 1_000_000,
            ))
        };
        assert!(parts.binds.contains(&minute("2025-01-01T00:01:00Z")));
        assert!(parts.binds.contains(&minute("2025-01-02T00:00:00Z")));
        // Without bounds, the rollups alone.
        let parts = sql_for(json!({"interval": "day"}));
        assert!(parts.sql.contains("FROM event_counts"), "{}", parts.sql);
        assert!(!parts.sql.contains("FROM events"), "{}", parts.sql);
    }

    #[test]
    fn other_aggregates_read_the_events() {
        for body in [
            json!({"interval": "day", "group_by": ["source_app"]}),
            json!({"interval": "day", "metrics": ["count", "sum(score)"]}),
            json!({"interval": "day", "filter": {"source_app": "a"}}),
            json!({"interval": {"unit": "day", "field": "ts_ms"}}),
            json!({"metrics": ["count"]}),
            // No whole minute between the bounds.
            json!({"interval": "day", "filter": {"timestamp_between": ["2025-01-01T00:00:10Z", "2025-01-01T00:00:50Z"]}}),
        ] {
            let parts = sql_for(body.clone());
            assert!(!parts.sql.contains("event_counts"), "{body}: {}", parts.sql);
        }
    }
}
