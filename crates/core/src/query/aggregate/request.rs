//! The body of `POST /stats/{topic}/aggregate` as the client writes it, checked for shape only (what
//! the names mean is the planner's business).

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorDetail};
use crate::query::value::shorten;

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
