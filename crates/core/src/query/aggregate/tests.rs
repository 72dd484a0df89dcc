use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;
use crate::envelope::Event;
use crate::error::ApiError;
use crate::query::{FieldCatalogue, QueryLimits};

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
            "jobs": {"type": "array", "items": {"type": "object", "properties": {
                "status": {"type": "string"}, "n": {"type": "number"},
                "at": {"type": "string", "format": "date-time"}
            }}},
        }
    }))
}

/// A field inside an array has one value per element: it filters aggregates (some element passes) but
/// is no group, bucket or metric argument.
#[test]
fn fields_inside_arrays_filter_but_do_not_group() {
    let plan = plan_of(json!({"filter": {"jobs[].status": "failed"}})).expect("a filter");
    assert_eq!(plan.filters.len(), 1);
    let err = plan_of(json!({
        "group_by": ["jobs[].status"],
        "metrics": ["count", "sum(jobs[].n)"],
        "interval": {"unit": "day", "field": "jobs[].at"}
    }))
    .expect_err("refused");
    assert_eq!(
        fields_of(&err),
        ["group_by[0]", "interval.field", "metrics[1]"],
        "{err:?}"
    );
    for detail in &err.details {
        assert!(
            detail.message.contains("inside an array") || detail.message.contains("per element"),
            "{}",
            detail.message
        );
    }
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
    let err = plan_of(json!({"bogus": 1, "interval": 5, "metrics": "count"})).expect_err("shape");
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
