//! The aggregate planner: an [`AggregateRequest`] validated into an [`AggregatePlan`]; the filters go
//! through the query planner itself, the rest shares its steps (`query::planning`).

use super::calendar::{is_time_zone_name, TimeUnit, DEFAULT_TIME_ZONE};
use super::request::{AggregateRequest, IntervalRequest};
use super::{
    AggregateLimits, AggregatePlan, AggregateSortKey, Bucketing, Metric, MetricKind, SortTarget,
};
use crate::error::{ApiError, ErrorDetail};
use crate::query::fields::{FieldCatalogue, FieldDef, FieldType};
use crate::query::planning::{
    key_field, parse_limit, parse_list, sort_direction, unknown_field_message, KeyList,
};
use crate::query::value::shorten;
use crate::query::{plan_restricted, CursorKey, Filter, QueryLimits, QueryRequest};

/// Validates `req` for `topic` into a plan; every problem is reported at once as a 400 `validation`
/// error naming the filter key, `group_by[i]`, `interval.*`, `metrics[i]`, `sort[i]` or `limit`.
/// `restrictions` are the reader's mandatory filters (see [`crate::query::plan_restricted`]).
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
        Some(field) if field.is_array_item() => {
            errors.push(ErrorDetail::validation(
                "interval.field",
                format!(
                    "`{}` is inside an array (one value per element): time buckets need a field \
                     with one value per event",
                    field.name
                ),
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
    if field.is_array_item() {
        return Err(format!(
            "`{}` cannot take `{}`: a field inside an array has one value per element, not one per \
             event; filter on it instead",
            kind.as_str(),
            field.name
        ));
    }
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
