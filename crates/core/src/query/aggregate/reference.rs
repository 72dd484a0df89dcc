//! The reference semantics of an aggregate in memory: [`AggregatePlan::evaluate`] computes the answer
//! the SQL of the stats-api must reproduce (a property test checks it against Postgres). Only tests use
//! it, so it is built for tests and the `testing` feature only.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::calendar::{epoch_ms_instant, truncate_local, TimeUnit, ZoneRules};
use super::decimal::decimal_add;
use super::{
    AggregatePlan, AggregateResult, GroupRow, Metric, MetricKind, MetricValue, SortTarget,
};
use crate::envelope::Event;
use crate::query::fields::{field_value, FieldDef, FieldSource, FieldType};
use crate::query::value::{event_micros, Decimal, Micros, Scalar, SortValue};

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
}
