//! Aggregates of `POST /stats/{topic}/aggregate`: counts, distinct counts and numeric summaries of the
//! events a filter selects, grouped by up to three fields and/or time buckets. Pure code, no I/O.
//!
//! An [`AggregateRequest`] is validated by [`plan_aggregate`] into an [`AggregatePlan`]; its filters go
//! through the query language's own planning ([`super::plan_restricted`]), so filters, read restrictions
//! and limits mean exactly what they mean for queries. The stats-api turns the plan into one SQL
//! statement (`eventgate_stats_api::aggregate_sql`); `AggregatePlan::evaluate` (`reference`, built for
//! tests and the `testing` feature) is the reference semantics in memory, which the SQL must reproduce
//! (a property test checks it against Postgres).
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
//!
//! Map of the module: `request` (the body as the client writes it), `plan` (request → [`AggregatePlan`]),
//! `calendar` (time units, zone names, truncation of wall-clock time), `json` (the answer's JSON),
//! `reference` and `decimal` (the reference semantics and its exact sums: tests and `testing` only).

mod calendar;
#[cfg(any(test, feature = "testing"))]
mod decimal;
mod json;
mod plan;
#[cfg(any(test, feature = "testing"))]
mod reference;
mod request;

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "testing"))]
pub use calendar::{epoch_ms_instant, truncate_local, Utc, ZoneRules};
pub use calendar::{format_instant, is_time_zone_name, TimeUnit, DEFAULT_TIME_ZONE};
#[cfg(any(test, feature = "testing"))]
pub use decimal::decimal_add;
pub use plan::{parse_metric, plan_aggregate};
pub use request::{AggregateRequest, IntervalRequest};

use super::fields::FieldDef;
use super::value::{Decimal, SortValue};
use super::Filter;

/// Bounds on an aggregate request (filters are bounded by [`QueryLimits`](super::QueryLimits) as for
/// queries).
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
    /// The group key at this index in key order: the [`AggregatePlan::group_by`] fields, then the bucket.
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
    /// The typed values of the group-by fields, then the bucket's instant (as
    /// [`Scalar::Instant`](super::Scalar::Instant)).
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
