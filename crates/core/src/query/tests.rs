use std::cmp::Ordering;

use proptest::prelude::*;
use serde_json::{json, Value};
use time::macros::datetime;
use uuid::Uuid;

use super::value::{
    format_micros, parse_client_time, parse_client_time_text, parse_stored_time, MAX_CLIENT_MICROS,
    MIN_CLIENT_MICROS,
};
use super::*;
use crate::envelope::Event;
use crate::error::{ApiError, ErrorDetail, ErrorKind};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "source_app": {"type": "string"},
            "run_id": {"type": "integer"},
            "score": {"type": ["number", "null"]},
            "ok": {"type": "boolean"},
            "timestamp_start": {"type": "integer", "x-eventgate-type": "epoch-ms"},
            "finished_at": {"type": "string", "format": "date-time"},
            "day": {"type": ["string", "null"], "format": "date"},
            "level": {"enum": ["info", "warn", null]},
            "count_enum": {"enum": [1, 2, 3]},
            "additional_info": {
                "type": "object",
                "properties": {"region": {"type": "string"}, "zone": {"$ref": "#/$defs/zone"}}
            },
            "ref_obj": {"$ref": "#/definitions/Thing"},
            "choice": {"oneOf": [{"type": "null"}, {"type": "integer"}, {"type": "string"}]},
            "any_obj": {"anyOf": [{"$ref": "#/definitions/Thing"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "mixed": {"type": ["string", "integer"]},
            "id": {"type": "string"},
            "x_in": {"type": "string"},
            "payload": {"type": "object", "properties": {"x": {"type": "string"}}},
            "x": {"type": "integer"},
            "dotted.name": {"type": "string"},
            "untyped": {}
        },
        "$defs": {
            "zone": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "deep": {"type": "object", "properties": {"er": {"type": "integer"}}}
                }
            }
        },
        "definitions": {"Thing": {"type": "object", "properties": {"size": {"type": "number"}}}}
    })
}

fn catalogue() -> FieldCatalogue {
    FieldCatalogue::from_schema(&schema())
}

fn key() -> CursorKey {
    CursorKey::new(b"test-secret-test-secret-test-secret")
}

fn event(payload: Value) -> Event {
    Event {
        id: Uuid::new_v4(),
        topic: "jobs".into(),
        timestamp: datetime!(2025-01-15 10:30:00 UTC),
        producer: "alice".into(),
        payload,
    }
}

fn request(body: Value) -> QueryRequest {
    QueryRequest::from_json(&body).expect("valid body")
}

fn plan_body(body: Value) -> Result<QueryPlan, ApiError> {
    plan(
        "jobs",
        &request(body),
        &catalogue(),
        &QueryLimits::default(),
        &key(),
    )
}

fn ok_plan(body: Value) -> QueryPlan {
    match plan_body(body) {
        Ok(p) => p,
        Err(e) => panic!("expected a plan, got {e:?}"),
    }
}

fn errors(body: Value) -> Vec<ErrorDetail> {
    match plan_body(body) {
        Ok(p) => panic!("expected errors, got {p:?}"),
        Err(e) => {
            assert_eq!(e.status(), 400);
            assert!(e.details.iter().all(|d| d.kind == ErrorKind::Validation));
            e.details
        }
    }
}

fn error_for(body: Value, field: &str) -> String {
    let details = errors(body);
    details
        .iter()
        .find(|d| d.field.as_deref() == Some(field))
        .map(|d| d.message.clone())
        .unwrap_or_else(|| panic!("no error for {field}: {details:?}"))
}

fn filter_matches(filter: Value, payload: Value) -> bool {
    ok_plan(json!({"filter": filter})).matches(&event(payload))
}

fn ms(text: &str) -> i64 {
    parse_client_time_text(text).expect("valid time") / 1000
}

// ---------------------------------------------------------------- catalogue

#[test]
fn catalogue_has_envelope_and_schema_fields_with_types() {
    let c = catalogue();
    let ty = |name: &str| c.lookup(name).map(|d| d.ty);
    assert_eq!(ty("id"), Some(FieldType::Uuid));
    assert_eq!(ty("timestamp"), Some(FieldType::DateTime));
    assert_eq!(ty("producer"), Some(FieldType::String));
    assert_eq!(ty("source_app"), Some(FieldType::String));
    assert_eq!(ty("payload.source_app"), Some(FieldType::String));
    assert_eq!(ty("run_id"), Some(FieldType::Integer));
    assert_eq!(ty("score"), Some(FieldType::Number));
    assert_eq!(ty("ok"), Some(FieldType::Boolean));
    assert_eq!(ty("timestamp_start"), Some(FieldType::EpochMillis));
    assert_eq!(ty("finished_at"), Some(FieldType::DateTime));
    assert_eq!(ty("day"), Some(FieldType::DateTime));
    assert_eq!(ty("level"), Some(FieldType::String));
    assert_eq!(ty("count_enum"), Some(FieldType::Integer));
    assert_eq!(ty("additional_info"), Some(FieldType::Other));
    assert_eq!(ty("additional_info.region"), Some(FieldType::String));
    assert_eq!(ty("additional_info.zone"), Some(FieldType::Other));
    assert_eq!(ty("additional_info.zone.name"), Some(FieldType::String));
    assert_eq!(ty("additional_info.zone.deep.er"), Some(FieldType::Integer));
    assert_eq!(ty("ref_obj.size"), Some(FieldType::Number));
    assert_eq!(
        ty("choice"),
        Some(FieldType::Integer),
        "first non-null oneOf branch"
    );
    assert_eq!(
        ty("any_obj.size"),
        Some(FieldType::Number),
        "anyOf branch behind a $ref"
    );
    assert_eq!(ty("tags"), Some(FieldType::Other));
    assert_eq!(ty("mixed"), Some(FieldType::Other));
    assert_eq!(ty("untyped"), Some(FieldType::Other));
    assert_eq!(
        ty("dotted.name"),
        None,
        "names with dots cannot be addressed"
    );
    assert_eq!(ty("nope"), None);
}

// ---------------------------------------------------------------- fields inside arrays

/// The shipped runs topic's schema: `jobs` is an array of objects.
fn runs_catalogue() -> FieldCatalogue {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/topics/public.cps.za.runs.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema file")).expect("JSON");
    FieldCatalogue::from_schema(&schema)
}

#[test]
fn fields_inside_arrays_are_written_with_brackets() {
    let c = runs_catalogue();
    let status = c.lookup("jobs[].status").expect("jobs[].status");
    assert_eq!(status.ty, FieldType::String);
    assert_eq!(
        status.source,
        FieldSource::Items {
            array: vec!["jobs".into()],
            item: vec!["status".into()]
        }
    );
    assert!(status.is_array_item() && !status.is_envelope());
    assert_eq!(
        c.lookup("payload.jobs[].timestamp_start").map(|d| d.ty),
        Some(FieldType::EpochMillis)
    );
    assert_eq!(
        c.lookup("jobs[].additional_info").map(|d| d.ty),
        Some(FieldType::Other)
    );
    assert_eq!(c.lookup("jobs").map(|d| d.ty), Some(FieldType::Other));
    assert_eq!(c.lookup("jobs.status"), None);
    // An array of scalars: the element itself.
    let tags = catalogue();
    let tag = tags.lookup("tags[]").expect("tags[]");
    assert_eq!(tag.ty, FieldType::String);
    assert_eq!(
        tag.source,
        FieldSource::Items {
            array: vec!["tags".into()],
            item: vec![]
        }
    );
}

fn runs_event(payload: Value) -> Event {
    Event {
        id: Uuid::nil(),
        topic: "runs".into(),
        timestamp: datetime!(2025-01-15 10:00 UTC),
        producer: "p".into(),
        payload,
    }
}

fn runs_plan(filter: Value) -> Result<QueryPlan, ApiError> {
    plan(
        "runs",
        &request(json!({ "filter": filter })),
        &runs_catalogue(),
        &QueryLimits::default(),
        &key(),
    )
}

#[test]
fn a_filter_inside_an_array_holds_when_some_element_passes() {
    let failed_second = runs_event(json!({"jobs": [
        {"status": "succeeded", "timestamp_start": 1000},
        {"status": "failed", "timestamp_start": 5000, "message": "Out of memory"}
    ]}));
    let all_good = runs_event(json!({"jobs": [{"status": "succeeded", "timestamp_start": 2000}]}));
    let no_jobs = runs_event(json!({"jobs": []}));
    let odd = runs_event(json!({"jobs": {"status": "failed"}}));
    let nested = runs_event(json!({"jobs": [[{"status": "failed"}]], "status": "failed"}));
    let events = [&failed_second, &all_good, &no_jobs, &odd, &nested];
    let hits = |filter: Value| -> Vec<usize> {
        let p = runs_plan(filter.clone()).unwrap_or_else(|e| panic!("{filter}: {e:?}"));
        (0..events.len())
            .filter(|&i| p.matches(events[i]))
            .collect()
    };
    assert_eq!(hits(json!({"jobs[].status": "failed"})), [0]);
    assert_eq!(hits(json!({"jobs[].status_in": ["failed", "killed"]})), [0]);
    assert_eq!(
        hits(json!({"jobs[].status_ne": "failed"})),
        [0, 1],
        "some element differs"
    );
    assert_eq!(
        hits(json!({"jobs[].timestamp_start_gt": 4000})),
        [0],
        "5,000 ms after the epoch"
    );
    assert_eq!(hits(json!({"jobs[].timestamp_start_lt": 3000})), [0, 1]);
    assert_eq!(
        hits(json!({"jobs[].timestamp_start_between": [2000, 4000]})),
        [1],
        "one element within both bounds"
    );
    assert_eq!(
        hits(json!({"jobs[].timestamp_start_gte": 2000, "jobs[].timestamp_start_lte": 4000})),
        [0, 1],
        "two filters may be passed by two elements"
    );
    assert_eq!(hits(json!({"jobs[].message_exists": true})), [0]);
    assert_eq!(hits(json!({"jobs[].message_exists": false})), [1, 2, 3, 4]);
    assert_eq!(hits(json!({"jobs[].message": null})), [1, 2, 3, 4]);
    assert_eq!(
        hits(json!({"jobs[].message_in": ["x", null]})),
        [1, 2, 3, 4]
    );
    assert_eq!(hits(json!({"jobs[].message_contains": "MEMORY"})), [0]);
}

#[test]
fn fields_inside_arrays_cannot_be_sorted_grouped_or_restricted() {
    let c = runs_catalogue();
    let err = plan(
        "runs",
        &request(json!({"sort": ["jobs[].status"]})),
        &c,
        &QueryLimits::default(),
        &key(),
    )
    .expect_err("sort");
    assert_eq!(err.details[0].field.as_deref(), Some("sort[0]"));
    assert!(
        err.details[0].message.contains("one value per element"),
        "{}",
        err.details[0].message
    );
    assert!(restriction(&c, "jobs[].status", &[json!("failed")]).is_err());
    // `jobs.status` is not a field; the message shows how to write it.
    let err = runs_plan(json!({"jobs.status": "failed"})).expect_err("unknown");
    assert!(
        err.details[0]
            .message
            .contains("did you mean `jobs[].status`"),
        "{}",
        err.details[0].message
    );
    let mut indexed = runs_catalogue();
    assert!(indexed.mark_indexed(&["jobs[].status".to_owned()]).is_err());
}

#[test]
fn envelope_names_win_and_payload_prefix_reaches_the_schema_property() {
    let c = catalogue();
    assert_eq!(c.lookup("id").map(|d| &d.source), Some(&FieldSource::Id));
    let payload_id = c.lookup("payload.id").expect("payload.id");
    assert_eq!(payload_id.source, FieldSource::Payload(vec!["id".into()]));
    assert_eq!(payload_id.name, "payload.id");
    // `payload.x` is the top-level property x; the nested property payload→x is `payload.payload.x`.
    assert_eq!(
        c.lookup("payload.x").map(|d| d.ty),
        Some(FieldType::Integer)
    );
    let nested = c.lookup("payload.payload.x").expect("nested");
    assert_eq!(
        nested.source,
        FieldSource::Payload(vec!["payload".into(), "x".into()])
    );
    assert_eq!(nested.name, "payload.payload.x");
    let names = c.names();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for expected in [
        "id",
        "payload.id",
        "source_app",
        "additional_info.zone.deep.er",
        "x_in",
        "payload.payload.x",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // Every canonical name looks up its own field.
    for def in c.fields() {
        assert_eq!(c.lookup(&def.name), Some(def), "{}", def.name);
    }
}

#[test]
fn catalogue_never_fails_and_is_bounded() {
    for schema in [
        json!(null),
        json!(42),
        json!("x"),
        json!({"properties": 3}),
        json!({"type": ["string", 3]}),
    ] {
        let c = FieldCatalogue::from_schema(&schema);
        assert_eq!(c.names(), vec!["id", "producer", "timestamp"]);
    }
    // A recursive schema stops at the depth limit.
    let recursive =
        json!({"type": "object", "properties": {"a": {"$ref": "#"}, "b": {"type": "string"}}});
    let c = FieldCatalogue::from_schema(&recursive);
    assert!(c.lookup("a.a.a.a.a.a.a.b").is_some());
    assert!(c.lookup("a.a.a.a.a.a.a.a.b").is_none());
    assert!(c
        .names()
        .iter()
        .all(|n| n.split('.').count() <= fields::MAX_SCHEMA_DEPTH));
    // A $ref cycle without properties terminates.
    let cycle = json!({"properties": {"c": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}});
    assert_eq!(
        FieldCatalogue::from_schema(&cycle)
            .lookup("c")
            .map(|d| d.ty),
        Some(FieldType::Other)
    );
    // A remote ref is left unresolved.
    let remote = json!({"properties": {"r": {"$ref": "https://example.com/s.json"}}});
    assert_eq!(
        FieldCatalogue::from_schema(&remote)
            .lookup("r")
            .map(|d| d.ty),
        Some(FieldType::Other)
    );
}

#[test]
fn epoch_ms_marking_applies_to_numbers_only() {
    let s = json!({"properties": {
        "a": {"type": "integer", "x-eventgate-type": "epoch-ms"},
        "b": {"type": "number", "x-eventgate-type": "epoch-ms"},
        "c": {"x-eventgate-type": "epoch-ms"},
        "d": {"type": "string", "x-eventgate-type": "epoch-ms"},
        "e": {"$ref": "#/$defs/ms"}
    }, "$defs": {"ms": {"type": "integer", "x-eventgate-type": "epoch-ms"}}});
    let c = FieldCatalogue::from_schema(&s);
    let ty = |name: &str| c.lookup(name).map(|d| d.ty);
    assert_eq!(ty("a"), Some(FieldType::EpochMillis));
    assert_eq!(ty("b"), Some(FieldType::EpochMillis));
    assert_eq!(ty("c"), Some(FieldType::EpochMillis));
    assert_eq!(ty("d"), Some(FieldType::String));
    assert_eq!(ty("e"), Some(FieldType::EpochMillis));
}

// ---------------------------------------------------------------- the seed request

#[test]
fn seed_request_plans_and_matches() {
    let p = ok_plan(json!({
        "filter": {"source_app": "unify", "timestamp_start_between": ["2025-01-01", "2025-01-31"], "run_id": 12345},
        "sort": ["-timestamp_start", "source_app"], "cursor": null, "limit": 50
    }));
    assert_eq!(p.limit, 50);
    assert!(p.after.is_none());
    let by_key = |k: &str| p.filters.iter().find(|f| f.key == k).map(|f| f.op.clone());
    assert_eq!(
        by_key("source_app"),
        Some(FilterOp::Eq(Scalar::Text("unify".into())))
    );
    assert_eq!(
        by_key("run_id"),
        Some(FilterOp::Eq(Scalar::Number(Decimal::from_i64(12345))))
    );
    assert_eq!(
        by_key("timestamp_start_between"),
        Some(FilterOp::Between(
            Some(Scalar::Number(Decimal::from_i64(1_735_689_600_000))),
            Some(Scalar::Number(Decimal::from_i64(1_738_281_600_000)))
        ))
    );
    let sort: Vec<(String, bool)> = p
        .sort
        .iter()
        .map(|k| (k.field.name.clone(), k.descending))
        .collect();
    assert_eq!(
        sort,
        vec![
            ("timestamp_start".into(), true),
            ("source_app".into(), false),
            ("id".into(), false)
        ]
    );
    let hit = json!({"source_app": "unify", "run_id": 12345, "timestamp_start": ms("2025-01-15T00:00:00Z")});
    assert!(p.matches(&event(hit.clone())));
    let mut edge = hit.clone();
    edge["timestamp_start"] = json!(ms("2025-01-31T00:00:00Z"));
    assert!(p.matches(&event(edge)), "upper bound is inclusive");
    let mut late = hit.clone();
    late["timestamp_start"] = json!(ms("2025-01-31T00:00:00Z") + 1);
    assert!(!p.matches(&event(late)));
    let mut other_run = hit;
    other_run["run_id"] = json!(12346);
    assert!(!p.matches(&event(other_run)));
}

#[test]
fn defaults_sort_newest_first_with_id_tie_breaker() {
    let p = ok_plan(json!({}));
    assert_eq!(p.limit, 50);
    let sort: Vec<(FieldSource, bool)> = p
        .sort
        .iter()
        .map(|k| (k.field.source.clone(), k.descending))
        .collect();
    assert_eq!(
        sort,
        vec![(FieldSource::Timestamp, true), (FieldSource::Id, true)]
    );
    let p = ok_plan(json!({"sort": []}));
    assert_eq!(p.sort.len(), 2);
    // Sorting by id explicitly adds no second id.
    let p = ok_plan(json!({"sort": ["-id", "source_app"]}));
    assert_eq!(p.sort.len(), 2);
}

// ---------------------------------------------------------------- operators and types

#[test]
fn equality_by_type() {
    assert!(filter_matches(
        json!({"source_app": "unify"}),
        json!({"source_app": "unify"})
    ));
    assert!(!filter_matches(
        json!({"source_app": "unify"}),
        json!({"source_app": "Unify"})
    ));
    assert!(
        filter_matches(json!({"run_id": 5}), json!({"run_id": 5.0})),
        "numbers compare by value"
    );
    assert!(filter_matches(
        json!({"score": 1.5}),
        json!({"score": 1.50})
    ));
    assert!(
        !filter_matches(json!({"run_id": 5}), json!({"run_id": "5"})),
        "wrong-typed value never equals"
    );
    assert!(filter_matches(json!({"ok": false}), json!({"ok": false})));
    assert!(!filter_matches(json!({"ok": false}), json!({})));
    assert!(filter_matches(
        json!({"additional_info.region": "eu"}),
        json!({"additional_info": {"region": "eu"}})
    ));
    assert!(filter_matches(
        json!({"payload.additional_info.region": "eu"}),
        json!({"additional_info": {"region": "eu"}})
    ));
    assert!(!filter_matches(
        json!({"additional_info.region": "eu"}),
        json!({"additional_info": [{"region": "eu"}]})
    ));
    assert!(
        filter_matches(json!({"x_in": "a"}), json!({"x_in": "a"})),
        "a field named like an operator"
    );
    assert!(filter_matches(
        json!({"x_in_in": ["a", "b"]}),
        json!({"x_in": "b"})
    ));
    assert!(filter_matches(
        json!({"payload.id": "p"}),
        json!({"id": "p"})
    ));
    let e = event(json!({}));
    let p = ok_plan(json!({"filter": {"id": e.id.to_string(), "producer": "alice"}}));
    assert!(p.matches(&e));
    assert!(!ok_plan(json!({"filter": {"id": Uuid::new_v4().to_string()}})).matches(&e));
}

#[test]
fn null_means_missing_null_or_wrong_type() {
    assert!(filter_matches(json!({"score": null}), json!({})));
    assert!(filter_matches(
        json!({"score": null}),
        json!({"score": null})
    ));
    assert!(filter_matches(
        json!({"score": null}),
        json!({"score": "high"})
    ));
    assert!(!filter_matches(json!({"score": null}), json!({"score": 0})));
    assert!(
        !filter_matches(json!({"timestamp": null}), json!({})),
        "envelope fields are never null"
    );
    assert!(filter_matches(
        json!({"score_exists": false}),
        json!({"score": null})
    ));
    assert!(filter_matches(
        json!({"score_exists": true}),
        json!({"score": 0})
    ));
    assert!(!filter_matches(
        json!({"score_exists": true}),
        json!({"score": "x"})
    ));
    assert!(filter_matches(
        json!({"additional_info_exists": true}),
        json!({"additional_info": {}})
    ));
    assert!(filter_matches(
        json!({"tags_exists": true}),
        json!({"tags": []})
    ));
    assert!(!filter_matches(
        json!({"tags_exists": true}),
        json!({"tags": null})
    ));
    assert!(filter_matches(json!({"producer_exists": true}), json!({})));
}

#[test]
fn ne_does_not_match_missing_values() {
    assert!(filter_matches(
        json!({"source_app_ne": "a"}),
        json!({"source_app": "b"})
    ));
    assert!(!filter_matches(
        json!({"source_app_ne": "a"}),
        json!({"source_app": "a"})
    ));
    assert!(!filter_matches(json!({"source_app_ne": "a"}), json!({})));
    assert!(!filter_matches(
        json!({"source_app_ne": "a"}),
        json!({"source_app": null})
    ));
    assert!(!filter_matches(
        json!({"run_id_ne": 1}),
        json!({"run_id": 1.0})
    ));
}

#[test]
fn in_lists_with_and_without_null() {
    assert!(filter_matches(
        json!({"run_id_in": [1, 2, 3]}),
        json!({"run_id": 2})
    ));
    assert!(!filter_matches(
        json!({"run_id_in": [1, 2, 3]}),
        json!({"run_id": 4})
    ));
    assert!(!filter_matches(json!({"run_id_in": [1, 2]}), json!({})));
    assert!(filter_matches(json!({"run_id_in": [1, null]}), json!({})));
    assert!(filter_matches(
        json!({"ok_in": [true]}),
        json!({"ok": true})
    ));
}

#[test]
fn ranges_by_type() {
    assert!(filter_matches(
        json!({"run_id_gt": 5}),
        json!({"run_id": 6})
    ));
    assert!(!filter_matches(
        json!({"run_id_gt": 5}),
        json!({"run_id": 5})
    ));
    assert!(filter_matches(
        json!({"run_id_gte": 5}),
        json!({"run_id": 5})
    ));
    assert!(filter_matches(
        json!({"score_lt": 0.5}),
        json!({"score": 0.25})
    ));
    assert!(filter_matches(
        json!({"score_lte": 0.5}),
        json!({"score": 0.5})
    ));
    assert!(!filter_matches(json!({"score_lt": 0.5}), json!({})));
    assert!(filter_matches(
        json!({"score_gt": -1e300}),
        json!({"score": -1e299})
    ));
    assert!(filter_matches(
        json!({"run_id_gt": 9007199254740992_u64}),
        json!({"run_id": 9007199254740993_u64})
    ));
    assert!(filter_matches(
        json!({"source_app_gt": "a"}),
        json!({"source_app": "b"})
    ));
    assert!(
        filter_matches(json!({"source_app_lt": "a"}), json!({"source_app": "B"})),
        "byte order: B < a"
    );
    assert!(
        filter_matches(json!({"source_app_gt": "z"}), json!({"source_app": "é"})),
        "byte order: z < é"
    );
    assert!(filter_matches(
        json!({"run_id_between": [1, 3]}),
        json!({"run_id": 3})
    ));
    assert!(filter_matches(
        json!({"run_id_between": [null, 3]}),
        json!({"run_id": -100})
    ));
    assert!(filter_matches(
        json!({"run_id_between": [1, null]}),
        json!({"run_id": 100})
    ));
    assert!(!filter_matches(
        json!({"run_id_between": [null, null]}),
        json!({})
    ));
    assert!(filter_matches(
        json!({"run_id_between": [null, null]}),
        json!({"run_id": 1})
    ));
    assert!(!filter_matches(
        json!({"run_id_between": [3, 1]}),
        json!({"run_id": 2})
    ));
}

#[test]
fn time_fields_accept_dates_datetimes_and_epoch_ms() {
    let at = ms("2025-01-15T10:00:00Z");
    // Epoch-ms field, filtered with each kind of value.
    assert!(filter_matches(
        json!({"timestamp_start_gte": "2025-01-15"}),
        json!({"timestamp_start": at})
    ));
    assert!(filter_matches(
        json!({"timestamp_start_gte": "2025-01-15T10:00:00Z"}),
        json!({"timestamp_start": at})
    ));
    assert!(filter_matches(
        json!({"timestamp_start_gte": "2025-01-15T12:00:00+02:00"}),
        json!({"timestamp_start": at})
    ));
    assert!(!filter_matches(
        json!({"timestamp_start_gt": "2025-01-15T12:00:00+02:00"}),
        json!({"timestamp_start": at})
    ));
    assert!(filter_matches(
        json!({"timestamp_start": at}),
        json!({"timestamp_start": at})
    ));
    assert!(filter_matches(
        json!({"timestamp_start_lt": "2025-01-15T10:00:00.001Z"}),
        json!({"timestamp_start": at})
    ));
    assert!(filter_matches(
        json!({"timestamp_start_lt": "2025-01-15T10:00:00.0001Z"}),
        json!({"timestamp_start": at})
    ));
    // Date-time string field.
    let p = json!({"finished_at": "2025-01-15T10:00:00.5+01:00"});
    assert!(
        filter_matches(
            json!({"finished_at": "2025-01-15T09:00:00.500Z"}),
            p.clone()
        ),
        "same instant"
    );
    assert!(filter_matches(
        json!({"finished_at_gt": "2025-01-15"}),
        p.clone()
    ));
    assert!(filter_matches(
        json!({"finished_at_lt": ms("2025-01-16T00:00:00Z")}),
        p.clone()
    ));
    assert!(filter_matches(
        json!({"finished_at_between": ["2025-01-15T09:00:00Z", "2025-01-15T09:00:01Z"]}),
        p
    ));
    assert!(
        filter_matches(
            json!({"finished_at": null}),
            json!({"finished_at": "yesterday"})
        ),
        "unparseable = missing"
    );
    assert!(filter_matches(
        json!({"day": "2025-01-15T00:00:00Z"}),
        json!({"day": "2025-01-15"})
    ));
    // Envelope timestamp.
    assert!(filter_matches(
        json!({"timestamp_between": ["2025-01-15", "2025-01-16"]}),
        json!({})
    ));
    assert!(filter_matches(
        json!({"timestamp": "2025-01-15T10:30:00Z"}),
        json!({})
    ));
    assert!(filter_matches(
        json!({"timestamp": 1_736_937_000_000_i64}),
        json!({})
    ));
}

#[test]
fn contains_is_substring_and_ascii_case_insensitive() {
    assert!(filter_matches(
        json!({"source_app_contains": "NIF"}),
        json!({"source_app": "unify"})
    ));
    assert!(filter_matches(
        json!({"source_app_contains": "50%_\\"}),
        json!({"source_app": "x50%_\\y"})
    ));
    assert!(!filter_matches(
        json!({"source_app_contains": "50%"}),
        json!({"source_app": "500"})
    ));
    assert!(
        !filter_matches(
            json!({"source_app_contains": "É"}),
            json!({"source_app": "é"})
        ),
        "ASCII folding only"
    );
    assert!(filter_matches(
        json!({"source_app_contains": ""}),
        json!({"source_app": ""})
    ));
    assert!(!filter_matches(
        json!({"source_app_contains": ""}),
        json!({})
    ));
    assert!(filter_matches(
        json!({"producer_contains": "LIC"}),
        json!({})
    ));
}

// ---------------------------------------------------------------- sort

#[test]
fn sort_puts_missing_values_last_ascending_first_descending() {
    let with = |v: Value| event(json!({"score": v}));
    let (one, two, none, wrong) = (
        with(json!(1)),
        with(json!(2)),
        event(json!({})),
        with(json!("x")),
    );
    let asc = ok_plan(json!({"sort": ["score"]}));
    assert_eq!(asc.compare(&one, &two), Ordering::Less);
    assert_eq!(asc.compare(&two, &none), Ordering::Less);
    assert_eq!(asc.compare(&one, &wrong), Ordering::Less);
    let desc = ok_plan(json!({"sort": ["-score"]}));
    assert_eq!(desc.compare(&two, &one), Ordering::Less);
    assert_eq!(desc.compare(&none, &two), Ordering::Less);
    // Ties are broken by id, in the direction of the last key.
    let (a, b) = (with(json!(1)), with(json!(1)));
    assert_eq!(asc.compare(&a, &b), a.id.cmp(&b.id));
    assert_eq!(desc.compare(&a, &b), b.id.cmp(&a.id));
    assert_eq!(asc.compare(&a, &a), Ordering::Equal);
}

#[test]
fn mixed_directions_sort_lexicographically() {
    let p = ok_plan(json!({"sort": ["source_app", "-run_id"]}));
    let e = |app: &str, run: i64| event(json!({"source_app": app, "run_id": run}));
    let mut events = [e("b", 1), e("a", 1), e("a", 3), e("b", 2)];
    events.sort_by(|x, y| p.compare(x, y));
    let got: Vec<(String, i64)> = events
        .iter()
        .map(|e| {
            (
                e.payload["source_app"].as_str().unwrap_or("").to_owned(),
                e.payload["run_id"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), 3),
            ("a".into(), 1),
            ("b".into(), 2),
            ("b".into(), 1)
        ]
    );
}

// ---------------------------------------------------------------- errors

#[test]
fn unknown_field_names_the_key_and_lists_valid_fields() {
    let m = error_for(json!({"filter": {"nope": 1}}), "nope");
    assert!(m.contains("unknown field `nope`"), "{m}");
    assert!(
        m.contains("source_app") && m.contains("timestamp") && m.contains("additional_info.region"),
        "{m}"
    );
    let m = error_for(json!({"filter": {"nope_in": [1]}}), "nope_in");
    assert!(m.contains("unknown field `nope`"), "{m}");
    let m = error_for(json!({"sort": ["source_app", "-nope"]}), "sort[1]");
    assert!(m.contains("unknown field `nope`"), "{m}");
}

#[test]
fn wrong_value_types_are_rejected() {
    for (filter, key) in [
        (json!({"run_id": "12345"}), "run_id"),
        (json!({"run_id": 1.5}), "run_id"),
        (json!({"score": "high"}), "score"),
        (json!({"source_app": 3}), "source_app"),
        (json!({"ok": "true"}), "ok"),
        (json!({"id": "not-a-uuid"}), "id"),
        (json!({"timestamp_gt": "yesterday"}), "timestamp_gt"),
        (json!({"timestamp_gt": "2025-02-30"}), "timestamp_gt"),
        (
            json!({"timestamp_gt": "2025-01-01T10:00:00"}),
            "timestamp_gt",
        ),
        (json!({"timestamp_gt": 1.5}), "timestamp_gt"),
        (json!({"timestamp_start_gt": true}), "timestamp_start_gt"),
        (json!({"timestamp_gt": "99999999999999999"}), "timestamp_gt"),
        (json!({"run_id_in": 1}), "run_id_in"),
        (json!({"run_id_in": []}), "run_id_in"),
        (json!({"run_id_in": [1, "2"]}), "run_id_in"),
        (json!({"run_id_between": [1]}), "run_id_between"),
        (json!({"run_id_between": "1,2"}), "run_id_between"),
        (json!({"run_id_gt": null}), "run_id_gt"),
        (json!({"run_id_ne": null}), "run_id_ne"),
        (json!({"run_id_exists": "yes"}), "run_id_exists"),
        (json!({"run_id_contains": "1"}), "run_id_contains"),
        (json!({"source_app_contains": 1}), "source_app_contains"),
        (json!({"ok_gt": false}), "ok_gt"),
        (json!({"tags": ["a"]}), "tags"),
        (json!({"tags": null}), "tags"),
        (json!({"additional_info_in": [1]}), "additional_info_in"),
        (json!({"source_app": "a\u{0}b"}), "source_app"),
    ] {
        let details = errors(json!({"filter": filter}));
        assert!(
            details.iter().any(|d| d.field.as_deref() == Some(key)),
            "{filter}: {details:?}"
        );
    }
    let m = error_for(json!({"filter": {"run_id": "12345"}}), "run_id");
    assert!(m.contains("integer") && m.contains("string"), "{m}");
    let m = error_for(
        json!({"filter": {"timestamp_gt": "2025-01-01T10:00:00"}}),
        "timestamp_gt",
    );
    assert!(m.contains("offset"), "{m}");
}

#[test]
fn limits_are_enforced() {
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("nope{i}"), json!(1))).collect();
    let details = errors(json!({"filter": many}));
    assert!(details
        .iter()
        .any(|d| d.field.as_deref() == Some("filter") && d.message.contains("too many")));
    let values: Vec<i64> = (0..101).collect();
    assert!(
        error_for(json!({"filter": {"run_id_in": values}}), "run_id_in")
            .contains("too many values")
    );
    let long = "x".repeat(1025);
    assert!(error_for(json!({"filter": {"source_app": long}}), "source_app").contains("too long"));
    assert!(
        plan_body(json!({"filter": {"source_app": "é".repeat(1024)}})).is_ok(),
        "characters, not bytes"
    );
    let sort: Vec<String> = ["source_app", "run_id", "score", "ok", "level", "day"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(error_for(json!({"sort": sort}), "sort").contains("too many sort fields"));
    let deep = "a.b.c.d.e.f.g.h.i";
    assert!(error_for(json!({"filter": {deep: 1}}), deep).contains("at most 8"));
    assert!(error_for(json!({"sort": [deep]}), "sort[0]").contains("at most 8"));
    assert!(error_for(json!({"limit": 0}), "limit").contains("at least 1"));
    assert!(error_for(json!({"limit": 1001}), "limit").contains("at most 1000"));
    assert_eq!(ok_plan(json!({"limit": 1000})).limit, 1000);
    // Configurable.
    let limits = QueryLimits {
        max_filters: 1,
        max_limit: 10,
        default_limit: 5,
        ..QueryLimits::default()
    };
    let p = plan("jobs", &request(json!({})), &catalogue(), &limits, &key()).expect("plan");
    assert_eq!(p.limit, 5);
    assert!(plan(
        "jobs",
        &request(json!({"limit": 11})),
        &catalogue(),
        &limits,
        &key()
    )
    .is_err());
    let two = request(json!({"filter": {"run_id": 1, "ok": true}}));
    assert!(plan("jobs", &two, &catalogue(), &limits, &key()).is_err());
}

#[test]
fn bad_sort_entries_are_named_by_position() {
    let details = errors(json!({"sort": ["source_app", "", "-tags", "source_app", "-"]}));
    let fields: Vec<&str> = details.iter().filter_map(|d| d.field.as_deref()).collect();
    assert_eq!(fields, vec!["sort[1]", "sort[2]", "sort[3]", "sort[4]"]);
    assert!(details[1].message.contains("cannot sort"));
    assert!(details[2].message.contains("more than once"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let details = errors(json!({
        "filter": {"nope": 1, "run_id": "x", "source_app": "ok"},
        "sort": ["bad"], "limit": 0, "cursor": "garbage"
    }));
    let fields: Vec<&str> = details.iter().filter_map(|d| d.field.as_deref()).collect();
    for expected in ["nope", "run_id", "sort[0]", "limit", "cursor"] {
        assert!(fields.contains(&expected), "{expected} not in {fields:?}");
    }
    assert_eq!(details.len(), 5);
}

#[test]
fn body_parsing_rejects_unknown_keys_and_wrong_shapes() {
    let e = QueryRequest::from_json(&json!({"filters": {}, "limit": "x"})).expect_err("invalid");
    assert_eq!(e.status(), 400);
    let fields: Vec<&str> = e
        .details
        .iter()
        .filter_map(|d| d.field.as_deref())
        .collect();
    assert_eq!(fields, vec!["filters", "limit"]);
    assert!(QueryRequest::from_json(&json!([])).is_err());
    assert!(QueryRequest::from_json(&json!({"sort": "x"})).is_err());
    assert!(QueryRequest::from_json(&json!({"limit": -1})).is_err());
    // serde agrees on unknown keys.
    assert!(serde_json::from_value::<QueryRequest>(json!({"filters": {}})).is_err());
    let r: QueryRequest =
        serde_json::from_value(json!({"filter": {"a": 1}, "limit": 3})).expect("valid");
    assert_eq!(r.limit, Some(3));
}

// ---------------------------------------------------------------- GET form

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn get_form_means_the_same_as_post() {
    let c = catalogue();
    let get = QueryRequest::from_query_pairs(
        &pairs(&[
            ("source_app", "unify"),
            ("timestamp_start_between", "2025-01-01,2025-01-31"),
            ("run_id", "12345"),
            ("sort", "-timestamp_start,source_app"),
            ("limit", "10"),
        ]),
        &c,
    )
    .expect("get form");
    let post = request(json!({
        "filter": {"source_app": "unify", "timestamp_start_between": ["2025-01-01", "2025-01-31"], "run_id": 12345},
        "sort": ["-timestamp_start", "source_app"], "limit": 10
    }));
    assert_eq!(get, post);
    let (pg, pp) = (
        plan("jobs", &get, &c, &QueryLimits::default(), &key()).expect("plan"),
        plan("jobs", &post, &c, &QueryLimits::default(), &key()).expect("plan"),
    );
    assert_eq!(pg, pp);
}

/// the-eye's documented query parameters: `timestamp_after` / `timestamp_before` are django-filter's
/// inclusive range, here `_gte` / `_lte` of any time field, in the GET form.
#[test]
fn get_form_takes_the_eyes_after_and_before() {
    let c = catalogue();
    let get = QueryRequest::from_query_pairs(
        &pairs(&[
            ("timestamp_after", "2021-01-01"),
            ("timestamp_before", "2021-01-02"),
            ("payload.finished_at_after", "2021-06-01"),
            ("timestamp_start_before", "1735689600000"),
        ]),
        &c,
    )
    .expect("get form");
    let post = request(json!({"filter": {
        "timestamp_gte": "2021-01-01",
        "timestamp_lte": "2021-01-02",
        "payload.finished_at_gte": "2021-06-01",
        "timestamp_start_lte": 1_735_689_600_000_i64,
    }}));
    assert_eq!(get, post);
    // Inclusive, like django-filter's range: an event at the bound matches.
    let p = plan("web", &get, &c, &QueryLimits::default(), &key()).expect("plan");
    let at = |ts: time::OffsetDateTime, finished: &str| Event {
        id: Uuid::nil(),
        topic: "web".into(),
        timestamp: ts,
        producer: "p".into(),
        payload: json!({"finished_at": finished, "timestamp_start": 1_735_689_600_000_i64}),
    };
    assert!(p.matches(&at(datetime!(2021-01-02 00:00 UTC), "2021-06-01T00:00:00Z")));
    assert!(!p.matches(&at(
        datetime!(2021-01-02 00:00:00.000001 UTC),
        "2021-06-01T00:00:00Z"
    )));
    // Not for fields without time, and the same bound twice is refused.
    let f = QueryRequest::from_query_pairs(&pairs(&[("source_app_after", "a")]), &c)
        .expect("get form")
        .filter;
    assert!(f.contains_key("source_app_after"));
    let err = QueryRequest::from_query_pairs(
        &pairs(&[
            ("timestamp_gte", "2021-01-01"),
            ("timestamp_after", "2021-01-02"),
        ]),
        &c,
    )
    .expect_err("twice");
    assert_eq!(err.details[0].field.as_deref(), Some("timestamp_gte"));
}

#[test]
fn get_form_converts_by_type() {
    let c = catalogue();
    let get = |items: &[(&str, &str)]| {
        QueryRequest::from_query_pairs(&pairs(items), &c)
            .expect("get form")
            .filter
    };
    let f = get(&[
        ("ok", "true"),
        ("score_gt", "1.5"),
        ("run_id_in", "1,2,null"),
        ("level", "null"),
        ("finished_at_between", ",2025-01-31"),
        ("timestamp_gte", "1735689600000"),
        ("source_app_in", "a,,b"),
        ("source_app_contains", "null"),
        ("run_id_exists", "false"),
        ("unknown_thing", "5"),
        ("source_app_ne", "12"),
        ("run_id_lt", "abc"),
    ]);
    assert_eq!(f["ok"], json!(true));
    assert_eq!(f["score_gt"], json!(1.5));
    assert_eq!(f["run_id_in"], json!([1, 2, null]));
    assert_eq!(f["level"], Value::Null);
    assert_eq!(f["finished_at_between"], json!([null, "2025-01-31"]));
    assert_eq!(f["timestamp_gte"], json!(1_735_689_600_000_i64));
    assert_eq!(f["source_app_in"], json!(["a", "", "b"]));
    assert_eq!(f["source_app_contains"], json!("null"));
    assert_eq!(f["run_id_exists"], json!(false));
    assert_eq!(f["unknown_thing"], json!("5"));
    assert_eq!(f["source_app_ne"], json!("12"));
    assert_eq!(f["run_id_lt"], json!("abc"), "left for plan to report");
    let r = QueryRequest::from_query_pairs(&pairs(&[("run_id_lt", "abc")]), &c).expect("get form");
    let e = plan("jobs", &r, &c, &QueryLimits::default(), &key()).expect_err("wrong type");
    assert_eq!(e.details[0].field.as_deref(), Some("run_id_lt"));
    let r =
        QueryRequest::from_query_pairs(&pairs(&[("sort", ""), ("cursor", "")]), &c).expect("empty");
    assert_eq!((r.sort, r.cursor), (Some(vec![]), None));
}

#[test]
fn get_form_rejects_repeated_keys_and_bad_limits() {
    let c = catalogue();
    let e = QueryRequest::from_query_pairs(
        &pairs(&[("run_id", "1"), ("run_id", "2"), ("limit", "ten")]),
        &c,
    )
    .expect_err("invalid");
    let fields: Vec<&str> = e
        .details
        .iter()
        .filter_map(|d| d.field.as_deref())
        .collect();
    assert_eq!(fields, vec!["run_id", "limit"]);
    assert_eq!(e.status(), 400);
}

// ---------------------------------------------------------------- cursor

fn page_body() -> Value {
    json!({"filter": {"source_app": "unify"}, "sort": ["-timestamp_start", "score"]})
}

#[test]
fn cursor_round_trips_the_sort_key() {
    let p = ok_plan(page_body());
    let last = event(json!({"source_app": "unify", "timestamp_start": 1_736_937_000_123_i64}));
    let token = p.next_cursor(&last, &key());
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    let mut body = page_body();
    body["cursor"] = json!(token);
    let next = ok_plan(body);
    assert_eq!(
        next.after,
        Some(vec![
            Some(Scalar::Number(Decimal::from_i64(1_736_937_000_123))),
            None,
            Some(Scalar::Uuid(last.id))
        ])
    );
    assert!(!next.is_after_cursor(&last));
    // Filters in another order and the payload. prefix are the same query; the limit may change.
    let mut body = json!({"filter": {"payload.source_app": "unify"}, "sort": ["-payload.timestamp_start", "score"], "limit": 7});
    body["cursor"] = json!(p.next_cursor(&last, &key()));
    assert!(plan_body(body).is_ok());
}

#[test]
fn cursor_keeps_microseconds_of_the_timestamp() {
    let p = ok_plan(json!({}));
    let mut last = event(json!({}));
    last.timestamp = datetime!(2025-01-15 10:30:00.123456789 UTC);
    let mut body = json!({});
    body["cursor"] = json!(p.next_cursor(&last, &key()));
    let next = ok_plan(body);
    let micros = parse_client_time_text("2025-01-15T10:30:00.123456Z").expect("time");
    assert_eq!(
        next.after,
        Some(vec![
            Some(Scalar::Instant(micros)),
            Some(Scalar::Uuid(last.id))
        ])
    );
}

#[test]
fn bad_cursors_are_a_400_on_cursor() {
    let p = ok_plan(page_body());
    let token = p.next_cursor(&event(json!({"timestamp_start": 5, "score": 1.5})), &key());
    let cursor_error = |token: String, body: Value| {
        let mut body = body;
        body["cursor"] = json!(token);
        let details = errors(body);
        assert_eq!(details.len(), 1, "{details:?}");
        assert_eq!(details[0].field.as_deref(), Some("cursor"));
        details[0].message.clone()
    };
    // Tampered: every single flipped character.
    let bytes = token.as_bytes();
    for i in 0..bytes.len() {
        let mut t = bytes.to_vec();
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(t).expect("ascii");
        if t != token {
            cursor_error(t, page_body());
        }
    }
    // Truncated, empty, garbage, huge.
    cursor_error(token[..token.len() - 1].to_owned(), page_body());
    cursor_error(token[..10].to_owned(), page_body());
    cursor_error(String::new(), page_body());
    cursor_error("!!!not base64!!!".into(), page_body());
    cursor_error("A".repeat(70_000), page_body());
    // Signed with another secret.
    let foreign = p.next_cursor(&event(json!({})), &CursorKey::new(b"another secret"));
    cursor_error(foreign, page_body());
    // Another query (filter, sort, topic).
    let m = cursor_error(
        token.clone(),
        json!({"filter": {"source_app": "other"}, "sort": ["-timestamp_start", "score"]}),
    );
    assert!(m.contains("different query"), "{m}");
    cursor_error(
        token.clone(),
        json!({"filter": {"source_app": "unify"}, "sort": ["timestamp_start", "score"]}),
    );
    cursor_error(token.clone(), json!({"filter": {"source_app": "unify"}}));
    let mut body = page_body();
    body["cursor"] = json!(token);
    let other_topic = plan(
        "other",
        &request(body),
        &catalogue(),
        &QueryLimits::default(),
        &key(),
    );
    assert!(other_topic.is_err());
}

// ---------------------------------------------------------------- values

#[test]
fn decimals_are_exact_and_normalised() {
    let d = |s: &str| Decimal::parse(s).unwrap_or_else(|| panic!("{s}"));
    assert_eq!(d("1"), d("1.0"));
    assert_eq!(d("1"), d("0.1e1"));
    assert_eq!(d("-0"), d("0"));
    assert_eq!(d("0.000"), Decimal::zero());
    assert!(d("0.1") < d("0.11"));
    assert!(d("-0.11") < d("-0.1"));
    assert!(d("-1") < d("0"));
    assert!(d("99") < d("100"));
    assert!(d("1e-7") < d("1e-6"));
    assert!(d("9007199254740993") > d("9007199254740992"));
    assert!(d("12.5").to_string() == "12.5");
    assert_eq!(d("1e40").to_string(), "1e40");
    assert_eq!(d("1.5e-40").to_string(), "15e-41");
    assert_eq!(d("-0.005").to_string(), "-0.005");
    assert_eq!(d("120").to_string(), "120");
    for s in [
        "0",
        "1",
        "-1",
        "12.5",
        "1e40",
        "1.5e-40",
        "-0.005",
        "123456789012345678901234567890",
    ] {
        assert_eq!(d(&d(s).to_string()), d(s), "{s}");
    }
    assert!(d("12").is_integer() && d("1.2e1").is_integer() && !d("1.5").is_integer());
    assert_eq!(
        d("5").to_json_number().map(|n| n.to_string()),
        Some("5".into())
    );
    assert_eq!(
        d("0.1").to_json_number().map(|n| n.to_string()),
        Some("0.1".into())
    );
    assert_eq!(
        d("1735689600000.123")
            .to_json_number()
            .map(|n| n.to_string()),
        Some("1735689600000.123".into())
    );
    assert_eq!(d("123456789012345678901234567890.5").to_json_number(), None);
    for bad in ["", "-", "1.", ".5", "1e", "e5", "1x", "--1", "1e999999"] {
        assert!(Decimal::parse(bad).is_none(), "{bad}");
    }
    assert_eq!(Decimal::millis_from_micros(1_500), d("1.5"));
    assert_eq!(Decimal::millis_from_micros(-1_500), d("-1.5"));
}

#[test]
fn client_times() {
    let t = |v: Value| parse_client_time(&v);
    assert_eq!(t(json!("1970-01-01")), Ok(0));
    assert_eq!(t(json!("1970-01-01T00:00:01Z")), Ok(1_000_000));
    assert_eq!(t(json!("1970-01-01t00:00:01z")), Ok(1_000_000));
    assert_eq!(t(json!("1970-01-01 01:00:01+01:00")), Ok(1_000_000));
    assert_eq!(
        t(json!("1970-01-01T01:00:01 01:00")),
        Ok(1_000_000),
        "a query string's `+`"
    );
    assert_eq!(parse_stored_time("1970-01-01T01:00:01 01:00"), None);
    assert_eq!(
        t(json!("1970-01-01T00:00:00.123456789Z")),
        Ok(123_456),
        "truncated to microseconds"
    );
    assert_eq!(t(json!("1969-12-31T23:59:59.9999999Z")), Ok(-1));
    assert_eq!(t(json!(1500)), Ok(1_500_000));
    assert_eq!(t(json!("-1500")), Ok(-1_500_000));
    assert_eq!(
        t(json!("2024-02-29")),
        Ok(parse_client_time_text("2024-02-29T00:00:00Z").unwrap_or(0))
    );
    assert_eq!(t(json!("0001-01-01")), Ok(MIN_CLIENT_MICROS));
    assert_eq!(
        t(json!("9999-12-31T23:59:59.999999Z")),
        Ok(MAX_CLIENT_MICROS)
    );
    for bad in [
        json!("2023-02-29"),
        json!("2025-13-01"),
        json!("0000-01-01"),
        json!("2025-01-01T24:00:00Z"),
        json!("2025-01-01T10:00Z"),
        json!("2025-01-01T10:00:00"),
        json!("2025-01-01T10:00:00+0100"),
        json!("9999-12-31T23:59:59-01:00"),
        json!(1.5),
        json!(true),
        json!(null),
        json!("253402300800000"),
        json!(i64::MAX),
    ] {
        assert!(t(bad.clone()).is_err(), "{bad}");
    }
    assert_eq!(format_micros(1_500_000), "1970-01-01T00:00:01.500000Z");
    assert_eq!(
        format_micros(MIN_CLIENT_MICROS),
        "0001-01-01T00:00:00.000000Z"
    );
}

#[test]
fn stored_times_mirror_postgres() {
    let base = parse_client_time_text("2025-01-01T10:00:00Z").expect("time");
    assert_eq!(parse_stored_time("2025-01-01T10:00:00Z"), Some(base));
    assert_eq!(parse_stored_time("2025-01-01T11:00:00+01:00"), Some(base));
    assert_eq!(
        parse_stored_time("2025-01-01T10:00:00.1234565Z"),
        Some(base + 123_456),
        "rint, ties even"
    );
    assert_eq!(
        parse_stored_time("2025-01-01T10:00:00.0000015Z"),
        Some(base + 2)
    );
    assert_eq!(
        parse_stored_time("2025-01-01T10:00:00.9999996Z"),
        Some(base + 1_000_000)
    );
    assert_eq!(
        parse_stored_time("2025-01-01"),
        parse_client_time_text("2025-01-01T00:00:00Z")
    );
    assert_eq!(
        parse_stored_time("0001-01-01T00:00:00+15:59").map(format_micros),
        Some("0000-12-31T08:01:00.000000Z".into())
    );
    for not_a_time in [
        "2025-01-01T10:00:00",
        "2025-01-01 10:00:00Z",
        "2025-01-01t10:00:00Z",
        "2025-01-01T10:00:00z",
        "2025-01-01T10:00:00+16:00",
        "2025-01-01T10:00:00.1234567890Z",
        "2025-02-29",
        "1900-02-29",
        "0000-01-01",
        "2025-1-01",
        "yesterday",
        "",
    ] {
        assert_eq!(parse_stored_time(not_a_time), None, "{not_a_time}");
    }
    assert!(parse_stored_time("2000-02-29").is_some());
    assert!(parse_stored_time("2024-02-29T00:00:00-15:59").is_some());
}

// ---------------------------------------------------------------- properties

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9_.,:+ -]{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("2025-01-01"),
            Just("2025-01-31T10:00:00Z"),
            Just("2025-01-31T10:00:00+02:00"),
            Just("1735689600000"),
            Just("null"),
            Just("9999-12-31"),
        ]
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_key() -> impl Strategy<Value = String> {
    let names = catalogue().names();
    let suffixes = [
        "",
        "_in",
        "_between",
        "_gt",
        "_gte",
        "_lt",
        "_lte",
        "_ne",
        "_exists",
        "_contains",
        "_x",
    ];
    prop_oneof![
        (
            prop::sample::select(names),
            prop::sample::select(suffixes.to_vec())
        )
            .prop_map(|(n, s)| format!("{n}{s}")),
        any::<String>(),
        "[a-z_.]{0,12}",
    ]
}

fn arb_sort() -> impl Strategy<Value = Option<Vec<String>>> {
    let names = catalogue().names();
    prop::option::of(prop::collection::vec(
        prop_oneof![
            (any::<bool>(), prop::sample::select(names)).prop_map(|(d, n)| if d {
                format!("-{n}")
            } else {
                n
            }),
            any::<String>(),
        ],
        0..7,
    ))
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        prop::collection::btree_map(arb_key(), arb_json(), 0..6),
        any::<u128>(),
        -62_000_000_000_i64..250_000_000_000,
    )
        .prop_map(|(payload, id, secs)| Event {
            id: Uuid::from_u128(id),
            topic: "jobs".into(),
            timestamp: time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            producer: "p".into(),
            payload: Value::Object(payload.into_iter().collect()),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_never_panic(
        filter in prop::collection::btree_map(arb_key(), arb_json(), 0..6),
        sort in arb_sort(),
        cursor in prop::option::of(prop_oneof![any::<String>(), "[A-Za-z0-9_-]{0,80}"]),
        limit in prop::option::of(0u64..2000),
        event in arb_event(),
    ) {
        let req = QueryRequest { filter: filter.into_iter().collect(), sort, cursor, limit, ..QueryRequest::default() };
        match plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()) {
            Ok(p) => {
                prop_assert!(p.limit >= 1 && p.limit <= 1000);
                prop_assert_eq!(p.sort.last().map(|k| &k.field.source), Some(&FieldSource::Id));
                let _ = p.matches(&event);
                prop_assert_eq!(p.compare(&event, &event), Ordering::Equal);
                // A cursor made from any event is accepted by the same query.
                let mut again = req.clone();
                again.cursor = Some(p.next_cursor(&event, &key()));
                let next = plan("jobs", &again, &catalogue(), &QueryLimits::default(), &key());
                prop_assert!(next.is_ok(), "{:?}", next);
                let next = next.map_err(|e| TestCaseError::fail(e.summary()))?;
                prop_assert_eq!(&next.after, &Some(p.sort_values(&event)));
                prop_assert!(!next.is_after_cursor(&event));
            }
            Err(e) => {
                prop_assert_eq!(e.status(), 400);
                prop_assert!(!e.details.is_empty());
                prop_assert!(e.details.iter().all(|d| d.kind == ErrorKind::Validation && d.field.is_some()));
            }
        }
    }

    #[test]
    fn arbitrary_get_forms_never_panic(
        items in prop::collection::vec((prop_oneof![arb_key(), Just("sort".to_owned()), Just("limit".to_owned()), Just("cursor".to_owned())], any::<String>()), 0..6),
    ) {
        match QueryRequest::from_query_pairs(&items, &catalogue()) {
            Ok(req) => {
                if let Err(e) = plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()) {
                    prop_assert_eq!(e.status(), 400);
                }
            }
            Err(e) => prop_assert_eq!(e.status(), 400),
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in arb_json()) {
        if let Ok(req) = QueryRequest::from_json(&body) {
            if let Err(e) = plan("jobs", &req, &catalogue(), &QueryLimits::default(), &key()) {
                prop_assert_eq!(e.status(), 400);
            }
        }
    }

    #[test]
    fn arbitrary_schemas_never_panic(schema in arb_json()) {
        let c = FieldCatalogue::from_schema(&schema);
        prop_assert!(c.lookup("id").is_some());
        for def in c.fields() {
            prop_assert_eq!(c.lookup(&def.name), Some(def));
        }
    }

    #[test]
    fn decimal_order_matches_f64_order(a in any::<f64>(), b in any::<f64>()) {
        prop_assume!(a.is_finite() && b.is_finite());
        let (da, db) = (Decimal::parse(&serde_json::Number::from_f64(a).map(|n| n.to_string()).unwrap_or_default()),
                        Decimal::parse(&serde_json::Number::from_f64(b).map(|n| n.to_string()).unwrap_or_default()));
        let (da, db) = (da.ok_or_else(|| TestCaseError::fail("a"))?, db.ok_or_else(|| TestCaseError::fail("b"))?);
        prop_assert_eq!(da.cmp(&db), a.partial_cmp(&b).unwrap_or(Ordering::Equal));
        prop_assert_eq!(Decimal::parse(&da.to_string()), Some(da.clone()));
    }

    #[test]
    fn decimal_order_matches_i128_order(a in any::<i64>(), b in any::<i64>(), sa in 0i64..6, sb in 0i64..6) {
        let (da, db) = (Decimal::from_scaled(a, sa), Decimal::from_scaled(b, sb));
        let scale = |v: i64, s: i64| i128::from(v) * 10_i128.pow((6 - s) as u32);
        prop_assert_eq!(da.cmp(&db), scale(a, sa).cmp(&scale(b, sb)));
    }

    #[test]
    fn client_time_strings_round_trip(micros in MIN_CLIENT_MICROS..=MAX_CLIENT_MICROS) {
        let text = format_micros(micros);
        prop_assert_eq!(parse_client_time_text(&text), Some(micros));
        prop_assert_eq!(parse_stored_time(&text), Some(micros));
    }
}
