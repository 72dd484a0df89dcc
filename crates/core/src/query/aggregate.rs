//! Aggregates of `POST /stats/{topic}/aggregate`: counts, distinct counts and numeric summaries of the
//! events a filter selects, grouped by up to three fields and/or time buckets. Pure code, no I/O.
//!
//! An [`AggregateRequest`] is validated by [`plan_aggregate`] into an [`AggregatePlan`]; its filters go
//! through the query language's own planning ([`super::plan_restricted`]), so filters, read restrictions
//! and limits mean exactly what they mean for queries. The stats-api turns the plan into one SQL
//! statement (`eventgate_stats_api::aggregate_sql`); [`AggregatePlan::evaluate`] is the reference
//! semantics in memory, which the SQL must reproduce (a property test checks it against Postgres).
//!
//! Semantics, in short (the analyst-facing description is `docs/API.md`, "Aggregates"):
//! - A group is a distinct combination of the typed values ([`super::field_value`]) of the `group_by`
//!   fields and, with an `interval`, the time bucket; "no value" is a group of its own (`null`).
//! - A bucket is Postgres' `date_trunc(unit, instant, time_zone)`: the instant's wall-clock time in the
//!   zone, truncated, and turned back into an instant. Minutes and hours keep the instant's own offset
//!   (the two 01:00 hours of a fall-back night are two buckets); from days on, the offset of the
//!   truncated wall-clock time is looked up again (one that does not exist, in a spring-forward gap,
//!   takes the offset from before the change; an ambiguous one, in a fall-back fold, the offset from
//!   after it). Weeks start on Monday. An epoch-ms value counts as an instant when it lies
//!   in years 0001–9999, rounded to the microsecond.
//! - Metrics: `count` (events), `count_distinct(f)` (distinct values, "no value" not counted), and
//!   `min`/`max`/`sum`/`avg(f)` over the values of an integer or number field (`min`/`max` of an epoch-ms
//!   field too, in milliseconds), `null` when there are none.
//! - Groups are ordered by `sort` (default: buckets ascending with an `interval`, else the first metric
//!   descending), then by every group key ascending, so the order is total; "no value" sorts last in
//!   both directions. `limit` groups are returned, with the number of groups in all and the metrics over
//!   every selected event (`total`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::fields::{FieldCatalogue, FieldDef, FieldSource, FieldType};
use super::planning::{
    key_field, parse_limit, parse_list, sort_direction, unknown_field_message, KeyList,
};
use super::value::{civil_from_days, event_micros, shorten, Decimal, Micros, PG_EPOCH_MICROS};
use super::value::{MAX_CLIENT_MICROS, MIN_CLIENT_MICROS};
use super::{field_value, plan_restricted, CursorKey, Filter, QueryLimits, QueryRequest};
use super::{Scalar, SortValue};
use crate::envelope::Event;
use crate::error::{ApiError, ErrorDetail};

/// Bounds on an aggregate request (filters are bounded by [`QueryLimits`] as for queries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateLimits {
    /// Fields in `group_by`.
    pub max_group_by: usize,
    /// Entries in `metrics`.
    pub max_metrics: usize,
    /// Groups returned when the request gives no `limit`.
    pub default_limit: u32,
    /// Largest `limit` (a week of minute buckets is 10,080).
    pub max_limit: u32,
}

impl Default for AggregateLimits {
    fn default() -> Self {
        AggregateLimits {
            max_group_by: 3,
            max_metrics: 10,
            default_limit: 100,
            max_limit: 10_000,
        }
    }
}

/// The time-bucket part of a request as the client wrote it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalRequest {
    /// A time field; `None` means `timestamp`.
    pub field: Option<String>,
    pub unit: String,
    /// An IANA time zone name; `None` means UTC.
    pub time_zone: Option<String>,
}

/// The body of `POST /stats/{topic}/aggregate`, before validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggregateRequest {
    /// Filters, exactly as in a query.
    pub filter: Map<String, Value>,
    pub group_by: Vec<String>,
    pub interval: Option<IntervalRequest>,
    /// Metric names (`count`, `count_distinct(f)`, `min(f)`, …); empty means `["count"]`.
    pub metrics: Vec<String>,
    /// Metric names, group-by fields or `bucket`, `-` first for descending.
    pub sort: Option<Vec<String>>,
    pub limit: Option<u64>,
}

/// The top-level keys of an aggregate body.
const BODY_KEYS: [&str; 6] = ["filter", "group_by", "interval", "metrics", "sort", "limit"];

impl AggregateRequest {
    /// Parses a POST body; an unknown key or a wrongly shaped member is a 400 naming it.
    pub fn from_json(body: &Value) -> Result<AggregateRequest, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ErrorDetail::validation("", "the body must be a JSON object").into());
        };
        let mut details = Vec::new();
        for key in object.keys() {
            if !BODY_KEYS.contains(&key.as_str()) {
                details.push(ErrorDetail::validation(
                    shorten(key, 100),
                    "unknown key; the body may have `filter`, `group_by`, `interval`, `metrics`, `sort` and `limit`",
                ));
            }
        }
        let mut request = AggregateRequest::default();
        match object.get("filter") {
            None | Some(Value::Null) => {}
            Some(Value::Object(filter)) => request.filter = filter.clone(),
            Some(_) => details.push(ErrorDetail::validation(
                "filter",
                "must be an object of filters",
            )),
        }
        for (key, target) in [
            ("group_by", &mut request.group_by),
            ("metrics", &mut request.metrics),
        ] {
            match string_list(object.get(key)) {
                Ok(list) => *target = list.unwrap_or_default(),
                Err(()) => details.push(ErrorDetail::validation(key, "must be a list of strings")),
            }
        }
        match string_list(object.get("sort")) {
            Ok(list) => request.sort = list,
            Err(()) => details.push(ErrorDetail::validation(
                "sort",
                "must be a list of metric names, group-by fields or `bucket`",
            )),
        }
        match object.get("limit") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) => request.limit = Some(n),
                None => details.push(ErrorDetail::validation(
                    "limit",
                    "must be a positive integer",
                )),
            },
        }
        match object.get("interval") {
            None | Some(Value::Null) => {}
            Some(Value::String(unit)) => {
                request.interval = Some(IntervalRequest {
                    unit: unit.clone(),
                    ..IntervalRequest::default()
                })
            }
            Some(Value::Object(spec)) => match interval_object(spec) {
                Ok(interval) => request.interval = Some(interval),
                Err(mut problems) => details.append(&mut problems),
            },
            Some(_) => details.push(ErrorDetail::validation(
                "interval",
                "must be a unit (`\"day\"`) or an object {\"unit\": …, \"field\": …, \"time_zone\": …}",
            )),
        }
        if details.is_empty() {
            Ok(request)
        } else {
            Err(ApiError::from_details(details))
        }
    }
}

fn string_list(value: Option<&Value>) -> Result<Option<Vec<String>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

fn interval_object(spec: &Map<String, Value>) -> Result<IntervalRequest, Vec<ErrorDetail>> {
    let mut problems = Vec::new();
    for key in spec.keys() {
        if !["unit", "field", "time_zone"].contains(&key.as_str()) {
            problems.push(ErrorDetail::validation(
                format!("interval.{}", shorten(key, 100)),
                "unknown key; an interval has `unit`, `field` and `time_zone`",
            ));
        }
    }
    let mut text = |key: &str, required: bool| -> Option<String> {
        match spec.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) if !required => None,
            _ => {
                problems.push(ErrorDetail::validation(
                    format!("interval.{key}"),
                    "must be a string",
                ));
                None
            }
        }
    };
    let unit = text("unit", true);
    let field = text("field", false);
    let time_zone = text("time_zone", false);
    if problems.is_empty() {
        Ok(IntervalRequest {
            field,
            unit: unit.unwrap_or_default(),
            time_zone,
        })
    } else {
        Err(problems)
    }
}

/// The unit of a time bucket; each is a Postgres `date_trunc` field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    Minute,
    Hour,
    Day,
    /// Weeks start on Monday (ISO 8601).
    Week,
    Month,
    Quarter,
    Year,
}

impl TimeUnit {
    pub const ALL: [TimeUnit; 7] = [
        TimeUnit::Minute,
        TimeUnit::Hour,
        TimeUnit::Day,
        TimeUnit::Week,
        TimeUnit::Month,
        TimeUnit::Quarter,
        TimeUnit::Year,
    ];

    /// The `date_trunc` field name (also the name clients write).
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Minute => "minute",
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
            TimeUnit::Month => "month",
            TimeUnit::Quarter => "quarter",
            TimeUnit::Year => "year",
        }
    }

    pub fn parse(name: &str) -> Option<TimeUnit> {
        TimeUnit::ALL.into_iter().find(|u| u.as_str() == name)
    }
}

/// The time zone used when a request names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// Whether `name` looks like an IANA time zone name (`Europe/Berlin`, `America/Argentina/Buenos_Aires`,
/// `Etc/GMT+5`, `UTC`). Whether the zone exists is checked by the stats-api against the database's own
/// list, which is what interprets it.
pub fn is_time_zone_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
        && !name.contains("//")
        && !name.ends_with('/')
}

/// The time buckets of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucketing {
    /// A date-time or epoch-ms field.
    pub field: FieldDef,
    pub unit: TimeUnit,
    /// An IANA name as the client wrote it (the stats-api replaces it by the database's spelling).
    pub time_zone: String,
}

/// What a metric computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Count,
    CountDistinct,
    Min,
    Max,
    Sum,
    Avg,
}

impl MetricKind {
    const WITH_FIELD: [MetricKind; 5] = [
        MetricKind::CountDistinct,
        MetricKind::Min,
        MetricKind::Max,
        MetricKind::Sum,
        MetricKind::Avg,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Count => "count",
            MetricKind::CountDistinct => "count_distinct",
            MetricKind::Min => "min",
            MetricKind::Max => "max",
            MetricKind::Sum => "sum",
            MetricKind::Avg => "avg",
        }
    }
}

/// One validated metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The canonical name, the key of the metric in answers: `count`, `sum(duration_ms)`.
    pub name: String,
    pub kind: MetricKind,
    /// The field of every metric but `count`.
    pub field: Option<FieldDef>,
}

/// What a sort entry orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortTarget {
    /// The group key at this index of [`AggregatePlan::keys`] order (group-by fields, then the bucket).
    Key(usize),
    /// The metric at this index of [`AggregatePlan::metrics`].
    Metric(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateSortKey {
    pub target: SortTarget,
    pub descending: bool,
}

/// A validated aggregate: what [`plan_aggregate`] returns and the stats-api translates.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatePlan {
    /// The client's filters and the reader's restrictions, as a query would have them.
    pub filters: Vec<Filter>,
    pub group_by: Vec<FieldDef>,
    pub interval: Option<Bucketing>,
    pub metrics: Vec<Metric>,
    /// The order of the groups, total: it ends with every group key ascending.
    pub sort: Vec<AggregateSortKey>,
    pub limit: u32,
}

/// One metric's value for one group (or for all selected events).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// `count` and `count_distinct`.
    Count(i64),
    /// `min`, `max`, `sum`: exact; `None` when the group has no value of the field.
    Number(Option<Decimal>),
    /// `avg`: rounded (Postgres computes it as an exact decimal to at least 16 significant digits).
    Average(Option<f64>),
}

/// One group of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    /// The typed values of the group-by fields, then the bucket's instant (as [`Scalar::Instant`]).
    pub keys: Vec<SortValue>,
    /// One per metric of the plan, in order.
    pub metrics: Vec<MetricValue>,
}

/// The answer to an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateResult {
    /// At most `limit` groups, in the plan's order.
    pub groups: Vec<GroupRow>,
    /// The number of groups in all.
    pub total_groups: u64,
    /// The metrics over every selected event.
    pub totals: Vec<MetricValue>,
}

/// Validates `req` for `topic` into a plan; every problem is reported at once as a 400 `validation`
/// error naming the filter key, `group_by[i]`, `interval.*`, `metrics[i]`, `sort[i]` or `limit`.
/// `restrictions` are the reader's mandatory filters (see [`super::plan_restricted`]).
pub fn plan_aggregate(
    topic: &str,
    req: &AggregateRequest,
    fields: &FieldCatalogue,
    query_limits: &QueryLimits,
    limits: &AggregateLimits,
    restrictions: &[Filter],
) -> Result<AggregatePlan, ApiError> {
    let mut errors: Vec<ErrorDetail> = Vec::new();

    // The filters go through the query planner itself; its key is irrelevant without a cursor.
    let filter_request = QueryRequest {
        filter: req.filter.clone(),
        ..QueryRequest::default()
    };
    let filters = match plan_restricted(
        topic,
        &filter_request,
        fields,
        query_limits,
        &CursorKey::new(b"aggregate"),
        restrictions,
    ) {
        Ok(plan) => plan.filters,
        Err(e) => {
            errors.extend(e.details);
            Vec::new()
        }
    };

    let group_by = parse_group_by(&req.group_by, fields, limits, &mut errors);
    let interval = req
        .interval
        .as_ref()
        .and_then(|i| parse_interval(i, fields, &mut errors));
    let metrics = parse_metrics(&req.metrics, fields, limits, &mut errors);

    let key_count = group_by.len() + usize::from(interval.is_some());
    let sort = if errors.is_empty() {
        parse_aggregate_sort(
            req.sort.as_deref(),
            fields,
            &group_by,
            interval.is_some(),
            &metrics,
            &mut errors,
        )
    } else {
        Vec::new()
    };
    let mut sort = sort;
    for key in 0..key_count {
        if !sort.iter().any(|s| s.target == SortTarget::Key(key)) {
            sort.push(AggregateSortKey {
                target: SortTarget::Key(key),
                descending: false,
            });
        }
    }

    let limit = parse_limit(
        req.limit,
        limits.default_limit,
        limits.max_limit,
        &mut errors,
    );

    if !errors.is_empty() {
        return Err(ApiError::from_details(errors));
    }
    Ok(AggregatePlan {
        filters,
        group_by,
        interval,
        metrics,
        sort,
        limit,
    })
}

fn parse_group_by(
    names: &[String],
    fields: &FieldCatalogue,
    limits: &AggregateLimits,
    errors: &mut Vec<ErrorDetail>,
) -> Vec<FieldDef> {
    parse_list(
        "group_by",
        "fields",
        names,
        limits.max_group_by,
        errors,
        |name, chosen: &[FieldDef]| key_field(name, fields, chosen, KeyList::GroupBy).cloned(),
    )
}

fn parse_interval(
    req: &IntervalRequest,
    fields: &FieldCatalogue,
    errors: &mut Vec<ErrorDetail>,
) -> Option<Bucketing> {
    let before = errors.len();
    let unit = TimeUnit::parse(&req.unit);
    if unit.is_none() {
        let units: Vec<&str> = TimeUnit::ALL.iter().map(|u| u.as_str()).collect();
        errors.push(ErrorDetail::validation(
            "interval.unit",
            format!(
                "unknown unit `{}`; use one of {}",
                shorten(&req.unit, 64),
                units.join(", ")
            ),
        ));
    }
    let name = req.field.as_deref().unwrap_or("timestamp");
    let field = match fields.lookup(name) {
        None => {
            errors.push(ErrorDetail::validation(
                "interval.field",
                unknown_field_message(name, name, fields),
            ));
            None
        }
        Some(field) if !field.ty.is_time() => {
            errors.push(ErrorDetail::validation(
                "interval.field",
                format!(
                    "`{}` is a {} field; time buckets need a date-time or epoch-ms field",
                    field.name,
                    field.ty.as_str()
                ),
            ));
            None
        }
        Some(field) => Some(field.clone()),
    };
    let time_zone = req
        .time_zone
        .clone()
        .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_owned());
    if !is_time_zone_name(&time_zone) {
        errors.push(ErrorDetail::validation(
            "interval.time_zone",
            format!(
                "`{}` is not a time zone name; use an IANA name such as Europe/Berlin, or UTC",
                shorten(&time_zone, 64)
            ),
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(Bucketing {
        field: field?,
        unit: unit?,
        time_zone,
    })
}

/// Parses `count`, `count_distinct(f)`, `min(f)`, …; the error is a message for the client.
pub fn parse_metric(text: &str, fields: &FieldCatalogue) -> Result<Metric, String> {
    let trimmed = text.trim();
    if trimmed == "count" || trimmed == "count()" {
        return Ok(Metric {
            name: "count".to_owned(),
            kind: MetricKind::Count,
            field: None,
        });
    }
    let usage = "write `count`, `count_distinct(field)`, `min(field)`, `max(field)`, `sum(field)` or `avg(field)`";
    let Some((function, rest)) = trimmed.split_once('(') else {
        return Err(format!("unknown metric `{}`; {usage}", shorten(text, 100)));
    };
    let Some(kind) = MetricKind::WITH_FIELD
        .into_iter()
        .find(|k| k.as_str() == function.trim())
    else {
        return Err(format!("unknown metric `{}`; {usage}", shorten(text, 100)));
    };
    let Some(argument) = rest.strip_suffix(')') else {
        return Err(format!("`{}` lacks its closing `)`", shorten(text, 100)));
    };
    let name = argument.trim();
    let field = fields
        .lookup(name)
        .ok_or_else(|| unknown_field_message(name, name, fields))?;
    let applies = match kind {
        MetricKind::CountDistinct => field.ty != FieldType::Other,
        // An epoch-ms value is a number: its least and greatest are the earliest and latest instant.
        MetricKind::Min | MetricKind::Max => matches!(
            field.ty,
            FieldType::Integer | FieldType::Number | FieldType::EpochMillis
        ),
        _ => matches!(field.ty, FieldType::Integer | FieldType::Number),
    };
    if !applies {
        let needs = match kind {
            MetricKind::CountDistinct => {
                "a field with comparable values (not an object, array or untyped value)"
            }
            MetricKind::Min | MetricKind::Max => "an integer, number or epoch-ms field",
            _ => "an integer or number field",
        };
        return Err(format!(
            "`{}` needs {needs}; `{}` is {}",
            kind.as_str(),
            field.name,
            field.ty.as_str()
        ));
    }
    Ok(Metric {
        name: format!("{}({})", kind.as_str(), field.name),
        kind,
        field: Some(field.clone()),
    })
}

fn parse_metrics(
    names: &[String],
    fields: &FieldCatalogue,
    limits: &AggregateLimits,
    errors: &mut Vec<ErrorDetail>,
) -> Vec<Metric> {
    if names.is_empty() {
        return vec![Metric {
            name: "count".to_owned(),
            kind: MetricKind::Count,
            field: None,
        }];
    }
    parse_list(
        "metrics",
        "metrics",
        names,
        limits.max_metrics,
        errors,
        |text, chosen: &[Metric]| {
            let metric = parse_metric(text, fields)?;
            if chosen.iter().any(|m| m.name == metric.name) {
                return Err(format!("`{}` is asked for twice", metric.name));
            }
            Ok(metric)
        },
    )
}

fn parse_aggregate_sort(
    entries: Option<&[String]>,
    fields: &FieldCatalogue,
    group_by: &[FieldDef],
    has_bucket: bool,
    metrics: &[Metric],
    errors: &mut Vec<ErrorDetail>,
) -> Vec<AggregateSortKey> {
    let entries = match entries {
        Some(list) if !list.is_empty() => list,
        _ if has_bucket => {
            return vec![AggregateSortKey {
                target: SortTarget::Key(group_by.len()),
                descending: false,
            }]
        }
        _ => {
            return vec![AggregateSortKey {
                target: SortTarget::Metric(0),
                descending: true,
            }]
        }
    };
    let max = group_by.len() + usize::from(has_bucket) + metrics.len();
    if entries.len() > max {
        errors.push(ErrorDetail::validation(
            "sort",
            format!(
                "too many sort entries: {} given, at most {max} (one per group key and metric)",
                entries.len()
            ),
        ));
        return Vec::new();
    }
    let mut keys: Vec<AggregateSortKey> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("sort[{i}]");
        let (descending, name) = sort_direction(entry);
        let target = if name == "bucket" {
            if has_bucket {
                Ok(SortTarget::Key(group_by.len()))
            } else {
                Err("`bucket` needs an `interval`".to_owned())
            }
        } else if let Ok(metric) = parse_metric(name, fields) {
            metrics
                .iter()
                .position(|m| m.name == metric.name)
                .map(SortTarget::Metric)
                .ok_or_else(|| format!("`{}` is not among the requested metrics", metric.name))
        } else {
            match fields.lookup(name) {
                Some(field) => group_by
                    .iter()
                    .position(|g| g.source == field.source)
                    .map(SortTarget::Key)
                    .ok_or_else(|| format!("`{}` is not a group_by field", field.name)),
                None => Err(format!(
                    "unknown sort entry `{}`; sort by a requested metric, a group_by field or `bucket`",
                    shorten(name, 100)
                )),
            }
        };
        match target {
            Ok(target) if keys.iter().any(|k| k.target == target) => {
                errors.push(ErrorDetail::validation(at, "sorted by more than once"))
            }
            Ok(target) => keys.push(AggregateSortKey { target, descending }),
            Err(message) => errors.push(ErrorDetail::validation(at, message)),
        }
    }
    keys
}

/// How wall-clock time relates to instants in a time zone; the tz database itself lives outside core
/// (Postgres in production, a tz library in tests). Both functions work in microseconds, with wall-clock
/// times written as if they were UTC instants.
pub trait ZoneRules {
    /// The wall-clock time of `instant`.
    fn to_local(&self, instant: Micros) -> Micros;
    /// The instant of a wall-clock time, resolved as Postgres does: in a gap, with the offset in force
    /// before it; in a fold, with the offset in force after it.
    fn instant_of_local(&self, local: Micros) -> Micros;
}

/// UTC: wall-clock time is the instant.
pub struct Utc;

impl ZoneRules for Utc {
    fn to_local(&self, instant: Micros) -> Micros {
        instant
    }
    fn instant_of_local(&self, local: Micros) -> Micros {
        local
    }
}

const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Truncates a wall-clock time (microseconds, as if UTC) to the start of its `unit`.
pub fn truncate_local(local: Micros, unit: TimeUnit) -> Micros {
    let floor = |step: i64| local.div_euclid(step) * step;
    match unit {
        TimeUnit::Minute => floor(MICROS_PER_MINUTE),
        TimeUnit::Hour => floor(MICROS_PER_HOUR),
        TimeUnit::Day => floor(MICROS_PER_DAY),
        TimeUnit::Week => {
            let days = local.div_euclid(MICROS_PER_DAY);
            // 1970-01-01 was a Thursday: three days after a Monday.
            (days - (days + 3).rem_euclid(7)) * MICROS_PER_DAY
        }
        TimeUnit::Month | TimeUnit::Quarter | TimeUnit::Year => {
            let days = local.div_euclid(MICROS_PER_DAY);
            let (year, month, _) = civil_from_days(days);
            let month = match unit {
                TimeUnit::Month => month,
                TimeUnit::Quarter => (month - 1) / 3 * 3 + 1,
                _ => 1,
            };
            super::value::days_from_civil(year, month, 1) * MICROS_PER_DAY
        }
    }
}

/// The instant of an epoch-ms value as the SQL computes it (`to_timestamp(ms * 0.001)`): only within
/// years 0001–9999, rounded to the microsecond the way Postgres converts a double.
pub fn epoch_ms_instant(ms: &Decimal) -> Option<Micros> {
    let low = Decimal::from_i64(MIN_CLIENT_MICROS / 1000);
    let high = Decimal::from_i64((MAX_CLIENT_MICROS + 1) / 1000);
    if *ms < low || *ms >= high {
        return None;
    }
    // ms × 10⁻³ as an exact decimal string, then the correctly rounded double (as Postgres' numeric →
    // float8), then Postgres' float8 → timestamptz: shift to its epoch, scale, round half to even.
    let text = ms.to_string();
    let seconds_text = match text.split_once('e') {
        Some((mantissa, exponent)) => format!("{mantissa}e{}", exponent.parse::<i64>().ok()? - 3),
        None => format!("{text}e-3"),
    };
    let seconds: f64 = seconds_text.parse().ok()?;
    let shifted = seconds - (PG_EPOCH_MICROS / 1_000_000) as f64;
    let micros = (shifted * 1_000_000.0).round_ties_even();
    Some(micros as i64 + PG_EPOCH_MICROS)
}

/// The instant of a time field's value in an event, for bucketing.
fn instant_of(field: &FieldDef, event: &Event) -> Option<Micros> {
    if field.source == FieldSource::Timestamp {
        return Some(event_micros(event.timestamp));
    }
    match field_value(field, event)? {
        Scalar::Instant(micros) => Some(micros),
        Scalar::Number(ms) if field.ty == FieldType::EpochMillis => epoch_ms_instant(&ms),
        _ => None,
    }
}

/// Exact sum of two decimals (the reference `sum`).
pub fn decimal_add(a: &Decimal, b: &Decimal) -> Decimal {
    let (x, y) = (Digits::of(a), Digits::of(b));
    let exponent = x.exponent.min(y.exponent);
    let (xm, ym) = (x.scaled_to(exponent), y.scaled_to(exponent));
    let (negative, magnitude) = if x.negative == y.negative {
        (x.negative, add_magnitudes(&xm, &ym))
    } else {
        match cmp_magnitudes(&xm, &ym) {
            Ordering::Less => (y.negative, sub_magnitudes(&ym, &xm)),
            _ => (x.negative, sub_magnitudes(&xm, &ym)),
        }
    };
    let digits: String = magnitude.iter().map(|d| char::from(b'0' + d)).collect();
    let sign = if negative { "-" } else { "" };
    Decimal::parse(&format!("{sign}{digits}e{exponent}")).unwrap_or_else(Decimal::zero)
}

/// A decimal as sign, base-10 digits (most significant first) and exponent: ±digits × 10^exponent.
struct Digits {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Digits {
    fn of(value: &Decimal) -> Digits {
        let text = value.to_string();
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (mantissa, shift) = match rest.split_once('e') {
            Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        Digits {
            negative,
            digits,
            exponent: shift - frac.len() as i64,
        }
    }

    fn scaled_to(&self, exponent: i64) -> Vec<u8> {
        let mut digits = self.digits.clone();
        digits.extend(std::iter::repeat_n(0, (self.exponent - exponent) as usize));
        digits
    }
}

fn cmp_magnitudes(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |d: &[u8]| -> Vec<u8> { d.iter().copied().skip_while(|&x| x == 0).collect() };
    let (a, b) = (strip(a), strip(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
}

fn add_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0u8);
    while i > 0 || j > 0 || carry > 0 {
        let mut sum = carry;
        if i > 0 {
            i -= 1;
            sum += a[i];
        }
        if j > 0 {
            j -= 1;
            sum += b[j];
        }
        out.push(sum % 10);
        carry = sum / 10;
    }
    out.reverse();
    out
}

/// `a - b` for `a >= b`.
fn sub_magnitudes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let (mut i, mut j, mut borrow) = (a.len(), b.len(), 0i8);
    while i > 0 {
        i -= 1;
        let mut d = a[i] as i8 - borrow;
        if j > 0 {
            j -= 1;
            d -= b[j] as i8;
        }
        borrow = i8::from(d < 0);
        out.push((d + 10 * borrow) as u8);
    }
    out.reverse();
    out
}

/// Accumulates one metric over the events of a group.
#[derive(Default)]
struct Accumulator {
    count: i64,
    distinct: BTreeSet<Scalar>,
    min: Option<Decimal>,
    max: Option<Decimal>,
    sum: Option<Decimal>,
    values: i64,
}

impl Accumulator {
    fn add(&mut self, metric: &Metric, event: &Event) {
        self.count += 1;
        let Some(field) = &metric.field else { return };
        let Some(value) = field_value(field, event) else {
            return;
        };
        match (metric.kind, value) {
            (MetricKind::CountDistinct, v) => {
                self.distinct.insert(v);
            }
            (_, Scalar::Number(d)) => {
                self.values += 1;
                self.sum = Some(match &self.sum {
                    Some(s) => decimal_add(s, &d),
                    None => d.clone(),
                });
                if self.min.as_ref().is_none_or(|m| d < *m) {
                    self.min = Some(d.clone());
                }
                if self.max.as_ref().is_none_or(|m| d > *m) {
                    self.max = Some(d);
                }
            }
            _ => {}
        }
    }

    fn value(&self, kind: MetricKind) -> MetricValue {
        match kind {
            MetricKind::Count => MetricValue::Count(self.count),
            MetricKind::CountDistinct => MetricValue::Count(self.distinct.len() as i64),
            MetricKind::Min => MetricValue::Number(self.min.clone()),
            MetricKind::Max => MetricValue::Number(self.max.clone()),
            MetricKind::Sum => MetricValue::Number(self.sum.clone()),
            MetricKind::Avg => MetricValue::Average(self.sum.as_ref().and_then(|s| {
                let sum: f64 = s.to_string().parse().ok()?;
                Some(sum / self.values as f64)
            })),
        }
    }
}

/// Compares with "no value" last whatever the direction.
fn cmp_absent_last<T: Ord>(a: Option<&T>, b: Option<&T>, descending: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) if descending => y.cmp(x),
        (Some(x), Some(y)) => x.cmp(y),
    }
}

fn cmp_metric(a: &MetricValue, b: &MetricValue, descending: bool) -> Ordering {
    match (a, b) {
        (MetricValue::Count(x), MetricValue::Count(y)) => {
            cmp_absent_last(Some(x), Some(y), descending)
        }
        (MetricValue::Number(x), MetricValue::Number(y)) => {
            cmp_absent_last(x.as_ref(), y.as_ref(), descending)
        }
        (MetricValue::Average(x), MetricValue::Average(y)) => cmp_absent_last(
            x.map(TotalF64).as_ref(),
            y.map(TotalF64).as_ref(),
            descending,
        ),
        _ => Ordering::Equal,
    }
}

#[derive(PartialEq)]
struct TotalF64(f64);
impl Eq for TotalF64 {}
impl PartialOrd for TotalF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TotalF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl AggregatePlan {
    /// The names of the group keys in answer order: the group-by fields, then `bucket`.
    pub fn key_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.group_by.iter().map(|f| f.name.as_str()).collect();
        if self.interval.is_some() {
            names.push("bucket");
        }
        names
    }

    /// The group keys of one event.
    pub fn keys_of(&self, event: &Event, zone: &dyn ZoneRules) -> Vec<SortValue> {
        let mut keys: Vec<SortValue> = self
            .group_by
            .iter()
            .map(|f| field_value(f, event))
            .collect();
        if let Some(bucketing) = &self.interval {
            keys.push(instant_of(&bucketing.field, event).map(|instant| {
                let local = zone.to_local(instant);
                let start = truncate_local(local, bucketing.unit);
                Scalar::Instant(match bucketing.unit {
                    // Postgres keeps the instant's own offset below a day (so the two 01:00 hours of a
                    // fall-back night stay apart) and looks the offset up again from a day on.
                    TimeUnit::Minute | TimeUnit::Hour => start - (local - instant),
                    _ => zone.instant_of_local(start),
                })
            }));
        }
        keys
    }

    /// The order of two groups under the plan's sort.
    pub fn compare_groups(&self, a: &GroupRow, b: &GroupRow) -> Ordering {
        for key in &self.sort {
            let ord = match key.target {
                SortTarget::Key(i) => {
                    cmp_absent_last(a.keys[i].as_ref(), b.keys[i].as_ref(), key.descending)
                }
                SortTarget::Metric(i) => cmp_metric(&a.metrics[i], &b.metrics[i], key.descending),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// The reference semantics: the answer computed in memory over `events` (of the plan's topic), with
    /// `zone` standing for the plan's time zone.
    pub fn evaluate(&self, events: &[Event], zone: &dyn ZoneRules) -> AggregateResult {
        let selected: Vec<&Event> = events
            .iter()
            .filter(|e| self.filters.iter().all(|f| f.holds(e)))
            .collect();
        let mut totals: Vec<Accumulator> = self
            .metrics
            .iter()
            .map(|_| Accumulator::default())
            .collect();
        let mut groups: BTreeMap<Vec<SortValue>, Vec<Accumulator>> = BTreeMap::new();
        for event in &selected {
            for (metric, acc) in self.metrics.iter().zip(totals.iter_mut()) {
                acc.add(metric, event);
            }
            if self.group_by.is_empty() && self.interval.is_none() {
                continue;
            }
            let accs = groups.entry(self.keys_of(event, zone)).or_insert_with(|| {
                self.metrics
                    .iter()
                    .map(|_| Accumulator::default())
                    .collect()
            });
            for (metric, acc) in self.metrics.iter().zip(accs.iter_mut()) {
                acc.add(metric, event);
            }
        }
        let values = |accs: &[Accumulator]| -> Vec<MetricValue> {
            self.metrics
                .iter()
                .zip(accs)
                .map(|(m, acc)| acc.value(m.kind))
                .collect()
        };
        let mut rows: Vec<GroupRow> = groups
            .iter()
            .map(|(keys, accs)| GroupRow {
                keys: keys.clone(),
                metrics: values(accs),
            })
            .collect();
        rows.sort_by(|a, b| self.compare_groups(a, b));
        let total_groups = rows.len() as u64;
        rows.truncate(self.limit as usize);
        AggregateResult {
            groups: rows,
            total_groups,
            totals: values(&totals),
        }
    }

    /// The JSON answer: `data` (one object per group: `group`, `bucket` with an interval, `metrics`),
    /// `total` (`groups` in all, `metrics` over every selected event), `has_more`, `limit`.
    pub fn to_json(&self, result: &AggregateResult) -> Value {
        let metrics_json = |values: &[MetricValue]| -> Value {
            let mut object = Map::new();
            for (metric, value) in self.metrics.iter().zip(values) {
                object.insert(metric.name.clone(), metric_json(value));
            }
            Value::Object(object)
        };
        let data: Vec<Value> = result
            .groups
            .iter()
            .map(|row| {
                let mut group = Map::new();
                for (field, value) in self.group_by.iter().zip(&row.keys) {
                    group.insert(field.name.clone(), scalar_json(value.as_ref()));
                }
                let mut object = Map::new();
                object.insert("group".to_owned(), Value::Object(group));
                if self.interval.is_some() {
                    let bucket = row.keys.get(self.group_by.len()).cloned().flatten();
                    object.insert("bucket".to_owned(), scalar_json(bucket.as_ref()));
                }
                object.insert("metrics".to_owned(), metrics_json(&row.metrics));
                Value::Object(object)
            })
            .collect();
        let mut answer = json!({
            "success": true,
            "statusCode": 200,
            "data": data,
            "total": {"groups": result.total_groups, "metrics": metrics_json(&result.totals)},
            "has_more": result.total_groups > result.groups.len() as u64,
            "limit": self.limit,
        });
        if let Some(bucketing) = &self.interval {
            answer["interval"] = json!({
                "field": bucketing.field.name,
                "unit": bucketing.unit.as_str(),
                "time_zone": bucketing.time_zone,
            });
        }
        answer
    }
}

/// A number as JSON: exact when `serde_json` can hold it, else the nearest double.
fn decimal_json(value: &Decimal) -> Value {
    match value.to_json_number() {
        Some(number) => Value::Number(number),
        None => value
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
    }
}

fn metric_json(value: &MetricValue) -> Value {
    match value {
        MetricValue::Count(n) => json!(n),
        MetricValue::Number(Some(d)) => decimal_json(d),
        MetricValue::Average(Some(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        MetricValue::Number(None) | MetricValue::Average(None) => Value::Null,
    }
}

/// A group key as JSON: instants as RFC 3339 UTC strings.
fn scalar_json(value: Option<&Scalar>) -> Value {
    match value {
        None => Value::Null,
        Some(Scalar::Uuid(u)) => json!(u.to_string()),
        Some(Scalar::Text(s)) => json!(s),
        Some(Scalar::Number(d)) => decimal_json(d),
        Some(Scalar::Bool(b)) => json!(b),
        Some(Scalar::Instant(micros)) => json!(format_instant(*micros)),
    }
}

/// RFC 3339 in UTC, with as many fraction digits as needed (none for whole seconds).
pub fn format_instant(micros: Micros) -> String {
    let text = super::value::format_micros(micros);
    // format_micros always writes `.ffffffZ`.
    match text.strip_suffix("Z").and_then(|t| t.rsplit_once('.')) {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{fraction}Z")
            }
        }
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn catalogue() -> FieldCatalogue {
        FieldCatalogue::from_schema(&json!({
            "type": "object",
            "properties": {
                "source_app": {"type": "string"},
                "run_id": {"type": "integer"},
                "score": {"type": "number"},
                "ok": {"type": "boolean"},
                "ts_ms": {"type": "integer", "x-eventgate-type": "epoch-ms"},
                "finished_at": {"type": "string", "format": "date-time"},
                "info": {"type": "object", "properties": {"region": {"type": "string"}}},
            }
        }))
    }

    fn plan_of(body: Value) -> Result<AggregatePlan, ApiError> {
        let req = AggregateRequest::from_json(&body)?;
        plan_aggregate(
            "jobs",
            &req,
            &catalogue(),
            &QueryLimits::default(),
            &AggregateLimits::default(),
            &[],
        )
    }

    fn sort_key(target: SortTarget, descending: bool) -> AggregateSortKey {
        AggregateSortKey { target, descending }
    }

    fn fields_of(err: &ApiError) -> Vec<String> {
        err.details
            .iter()
            .map(|d| d.field.clone().unwrap_or_default())
            .collect()
    }

    fn event(ts_micros: i64, payload: Value) -> Event {
        Event {
            id: Uuid::new_v4(),
            topic: "jobs".into(),
            timestamp: OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_micros) * 1000)
                .expect("time"),
            producer: "p".into(),
            payload,
        }
    }

    #[test]
    fn defaults_count_everything_newest_bucket_last() {
        let plan = plan_of(json!({})).expect("plan");
        assert_eq!(plan.metrics.len(), 1);
        assert_eq!(plan.metrics[0].name, "count");
        assert!(plan.group_by.is_empty() && plan.interval.is_none());
        assert_eq!(plan.limit, 100);

        let plan = plan_of(json!({"interval": "day", "group_by": ["source_app"]})).expect("plan");
        assert_eq!(plan.key_names(), vec!["source_app", "bucket"]);
        assert_eq!(
            plan.interval.as_ref().map(|b| b.time_zone.as_str()),
            Some("UTC")
        );
        assert_eq!(
            plan.sort,
            vec![
                sort_key(SortTarget::Key(1), false),
                sort_key(SortTarget::Key(0), false),
            ]
        );
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let err = plan_of(json!({
            "filter": {"run_idd": 1},
            "group_by": ["nope", "info", "source_app"],
            "interval": {"unit": "fortnight", "field": "source_app", "time_zone": "Europe/Berlin'; --"},
            "metrics": ["sum(source_app)", "median(score)", "count_distinct(info)", "avg(score", "count", "count"],
            "limit": 0
        }))
        .expect_err("invalid");
        assert_eq!(err.status(), 400);
        let fields = fields_of(&err);
        for expected in [
            "run_idd",
            "group_by[0]",
            "group_by[1]",
            "interval.unit",
            "interval.field",
            "interval.time_zone",
            "metrics[0]",
            "metrics[1]",
            "metrics[2]",
            "metrics[3]",
            "metrics[5]",
            "limit",
        ] {
            assert!(
                fields.contains(&expected.to_owned()),
                "{expected} missing in {fields:?}"
            );
        }
        let err =
            plan_of(json!({"group_by": ["source_app", "payload.source_app"]})).expect_err("twice");
        assert_eq!(fields_of(&err), vec!["group_by[1]"]);
        let err = plan_of(json!({"group_by": ["a", "b", "c", "d"]})).expect_err("too many");
        assert_eq!(fields_of(&err), vec!["group_by"]);
        let err =
            plan_of(json!({"bogus": 1, "interval": 5, "metrics": "count"})).expect_err("shape");
        assert_eq!(fields_of(&err), vec!["bogus", "metrics", "interval"]);
    }

    #[test]
    fn sort_entries_resolve_to_metrics_keys_and_bucket() {
        let plan = plan_of(json!({
            "group_by": ["source_app"], "interval": "hour",
            "metrics": ["count", "sum(score)"], "sort": ["-sum(score)", "bucket"]
        }))
        .expect("plan");
        assert_eq!(
            plan.sort,
            vec![
                sort_key(SortTarget::Metric(1), true),
                sort_key(SortTarget::Key(1), false),
                sort_key(SortTarget::Key(0), false),
            ]
        );
        let err = plan_of(json!({"group_by": ["source_app"], "sort": ["bucket", "max(score)", "run_id", "count", "-count"]}))
            .expect_err("bad sort");
        assert_eq!(fields_of(&err), vec!["sort"]);
        let err = plan_of(json!({"group_by": ["source_app"], "metrics": ["count", "min(score)"], "sort": ["bucket", "max(score)", "run_id"]}))
            .expect_err("bad sort");
        assert_eq!(fields_of(&err), vec!["sort[0]", "sort[1]", "sort[2]"]);
    }

    #[test]
    fn time_zone_names_are_checked_for_shape() {
        for ok in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "EST5EDT",
        ] {
            assert!(is_time_zone_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "Europe//Berlin",
            "Europe/",
            "UTC'",
            "Europe/Berlin; DROP",
            "+05:00",
            "1UTC",
        ] {
            assert!(!is_time_zone_name(bad), "{bad}");
        }
    }

    #[test]
    fn truncation_to_each_unit() {
        // 2025-03-05T13:47:21.5Z, a Wednesday.
        let t = 1_741_182_441_500_000;
        let cases = [
            (TimeUnit::Minute, "2025-03-05T13:47:00Z"),
            (TimeUnit::Hour, "2025-03-05T13:00:00Z"),
            (TimeUnit::Day, "2025-03-05T00:00:00Z"),
            (TimeUnit::Week, "2025-03-03T00:00:00Z"),
            (TimeUnit::Month, "2025-03-01T00:00:00Z"),
            (TimeUnit::Quarter, "2025-01-01T00:00:00Z"),
            (TimeUnit::Year, "2025-01-01T00:00:00Z"),
        ];
        for (unit, want) in cases {
            assert_eq!(format_instant(truncate_local(t, unit)), want, "{unit:?}");
        }
        // Before 1970 and on a Monday itself.
        assert_eq!(
            format_instant(truncate_local(-1, TimeUnit::Week)),
            "1969-12-29T00:00:00Z"
        );
        assert_eq!(
            format_instant(truncate_local(-1, TimeUnit::Quarter)),
            "1969-10-01T00:00:00Z"
        );
        let monday = 1_740_960_000_000_000; // 2025-03-03T00:00:00Z
        assert_eq!(truncate_local(monday, TimeUnit::Week), monday);
    }

    #[test]
    fn epoch_ms_values_become_instants_within_years_1_to_9999() {
        let d = |s: &str| Decimal::parse(s).expect("decimal");
        assert_eq!(
            epoch_ms_instant(&d("1735689600000")),
            Some(1_735_689_600_000_000)
        );
        assert_eq!(
            epoch_ms_instant(&d("1735689600000.5")),
            Some(1_735_689_600_000_500)
        );
        assert_eq!(epoch_ms_instant(&d("-1")), Some(-1000));
        assert_eq!(epoch_ms_instant(&d("1e20")), None);
        assert_eq!(epoch_ms_instant(&d("253402300800000")), None);
        // Far from 1970 a double cannot hold every microsecond: Postgres is off by a few, and so are we.
        assert_eq!(
            epoch_ms_instant(&d("253402300799999")),
            Some(253_402_300_799_999_008)
        );
        assert_eq!(
            epoch_ms_instant(&d("-62135596800000")),
            Some(MIN_CLIENT_MICROS)
        );
        assert_eq!(epoch_ms_instant(&d("-62135596800001")), None);
    }

    #[test]
    fn decimal_sums_are_exact() {
        let d = |s: &str| Decimal::parse(s).expect("decimal");
        let cases = [
            ("1", "2", "3"),
            ("0.1", "0.2", "0.3"),
            ("1e20", "1", "100000000000000000001"),
            ("-1", "0.25", "-0.75"),
            ("0.5", "-0.5", "0"),
            ("1.5e300", "-1.5e300", "0"),
            ("9007199254740993", "9007199254740993", "18014398509481986"),
            ("-0.25", "-1e-7", "-0.2500001"),
        ];
        for (a, b, sum) in cases {
            assert_eq!(decimal_add(&d(a), &d(b)), d(sum), "{a} + {b}");
            assert_eq!(decimal_add(&d(b), &d(a)), d(sum), "{b} + {a}");
        }
    }

    #[test]
    fn reference_groups_counts_and_orders() {
        let plan = plan_of(json!({
            "group_by": ["source_app"],
            "metrics": ["count", "count_distinct(run_id)", "sum(score)", "avg(score)", "min(score)", "max(score)"],
            "filter": {"ok_ne": false},
            "limit": 2
        }))
        .expect("plan");
        let events = vec![
            event(
                0,
                json!({"source_app": "a", "run_id": 1, "score": 1, "ok": true}),
            ),
            event(
                0,
                json!({"source_app": "a", "run_id": 1.0, "score": 2.5, "ok": true}),
            ),
            event(0, json!({"source_app": "a", "run_id": 2, "ok": true})),
            event(
                0,
                json!({"source_app": "b", "run_id": 3, "score": -1, "ok": true}),
            ),
            event(0, json!({"run_id": 3, "score": "x", "ok": true})),
            event(0, json!({"run_id": 3, "ok": true})),
            event(0, json!({"source_app": "c", "ok": false})),
        ];
        let result = plan.evaluate(&events, &Utc);
        assert_eq!(result.total_groups, 3);
        assert_eq!(result.groups.len(), 2);
        let answer = plan.to_json(&result);
        assert_eq!(
            answer["data"],
            json!([
                {"group": {"source_app": "a"}, "metrics": {"count": 3, "count_distinct(run_id)": 2, "sum(score)": 3.5, "avg(score)": 1.75, "min(score)": 1, "max(score)": 2.5}},
                // Ties on count are broken by the group key, "no value" last.
                {"group": {"source_app": null}, "metrics": {"count": 2, "count_distinct(run_id)": 1, "sum(score)": null, "avg(score)": null, "min(score)": null, "max(score)": null}},
            ])
        );
        assert_eq!(answer["total"]["groups"], 3);
        assert_eq!(answer["total"]["metrics"]["count"], 6);
        assert_eq!(answer["has_more"], true);
    }

    #[test]
    fn reference_buckets_by_epoch_ms_fields() {
        let plan = plan_of(json!({"interval": {"unit": "day", "field": "ts_ms"}})).expect("plan");
        let events = vec![
            event(0, json!({"ts_ms": 1_735_689_600_000_i64})),
            event(0, json!({"ts_ms": 1_735_775_999_999_i64})),
            event(0, json!({"ts_ms": 1_735_776_000_000_i64})),
            event(0, json!({"ts_ms": 1e20})),
            event(0, json!({})),
        ];
        let answer = plan.to_json(&plan.evaluate(&events, &Utc));
        assert_eq!(
            answer["data"],
            json!([
                {"group": {}, "bucket": "2025-01-01T00:00:00Z", "metrics": {"count": 2}},
                {"group": {}, "bucket": "2025-01-02T00:00:00Z", "metrics": {"count": 1}},
                {"group": {}, "bucket": null, "metrics": {"count": 2}},
            ])
        );
        assert_eq!(
            answer["interval"],
            json!({"field": "ts_ms", "unit": "day", "time_zone": "UTC"})
        );
    }

    #[test]
    fn format_instant_drops_empty_fractions() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_instant(1_500), "1970-01-01T00:00:00.0015Z");
        assert_eq!(format_instant(-1), "1969-12-31T23:59:59.999999Z");
    }
}
