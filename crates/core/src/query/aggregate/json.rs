//! The JSON of an aggregate's answer: groups, totals and metric values (the HTTP envelope is the
//! stats-api's).

use serde_json::{json, Map, Value};

use super::calendar::format_instant;
use super::{AggregatePlan, AggregateResult, MetricValue};
use crate::query::value::{Decimal, Scalar};

impl AggregatePlan {
    /// The answer's members: `data` (one object per group: `group`, `bucket` with an interval,
    /// `metrics`), `total` (`groups` in all, `metrics` over every selected event), `has_more`, `limit`,
    /// and with an interval `interval`. The HTTP envelope (`success`, `statusCode`) is the caller's.
    pub fn to_json(&self, result: &AggregateResult) -> Map<String, Value> {
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
        let mut answer = Map::new();
        answer.insert("data".to_owned(), Value::Array(data));
        answer.insert(
            "total".to_owned(),
            json!({"groups": result.total_groups, "metrics": metrics_json(&result.totals)}),
        );
        answer.insert(
            "has_more".to_owned(),
            json!(result.total_groups > result.groups.len() as u64),
        );
        answer.insert("limit".to_owned(), json!(self.limit));
        if let Some(bucketing) = &self.interval {
            answer.insert(
                "interval".to_owned(),
                json!({
                    "field": bucketing.field.name,
                    "unit": bucketing.unit.as_str(),
                    "time_zone": bucketing.time_zone,
                }),
            );
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
