//! Aggregates against real Postgres: for random events, filters, groupings, time buckets (in UTC and in
//! zones with daylight-saving changes, half-hour offsets and half-hour DST), metrics, orders and limits,
//! the SQL of `aggregate_sql` answers exactly what `AggregatePlan::evaluate` computes in memory (averages
//! to 12 significant digits: Postgres rounds its exact decimal average), with the number of groups and
//! the totals.

mod common;

use std::cell::Cell;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use common::property::{self, check, insert, maybe, object_of, runtime, Db, RawEvent};
use eventgate_core::error::ApiError;
use eventgate_core::query::aggregate::{
    plan_aggregate, AggregateLimits, AggregatePlan, AggregateRequest, AggregateResult,
    IntervalRequest, MetricValue, ZoneRules,
};
use eventgate_core::query::{Micros, QueryLimits};
use eventgate_stats_api::db::aggregate::load_rows;
use eventgate_stats_api::db::aggregate_sql::{aggregate_sql, decode, AggregateRow, RollupRange};

/// Instants (µs) of daylight-saving changes in the test zones, and of a year boundary.
const TRANSITIONS: &[i64] = &[
    1_743_296_400_000_000, // 2025-03-30T01:00Z, Europe/Berlin springs forward
    1_761_440_400_000_000, // 2025-10-26T01:00Z, Europe/Berlin falls back
    1_741_503_600_000_000, // 2025-03-09T07:00Z, America/New_York springs forward
    1_762_063_200_000_000, // 2025-11-02T06:00Z, America/New_York falls back
    1_743_867_000_000_000, // 2025-04-05T15:30Z, Australia/Lord_Howe falls back half an hour
    1_759_593_600_000_000, // 2025-10-04T16:00Z, Australia/Lord_Howe springs forward half an hour
    1_735_689_600_000_000, // 2025-01-01T00:00Z
];

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
];

const STRINGS: &[&str] = &["a", "b", "B", "é", "", "unify"];

const TIMES: &[&str] = &[
    "2025-01-01",
    "2025-01-01T00:00:00Z",
    "2025-03-30T01:30:00+01:00",
    "2025-10-26T02:30:00+02:00",
    "2024-12-31T23:59:59.9999996Z",
    "2025-11-02T01:30:00-04:00",
    "2025-11-02T01:30:00-05:00",
    "2023-02-29",
    "2025-01-01T00:00:00",
    "today",
];

/// An instant near a transition: up to two days either side, on quarter hours, sometimes off them.
fn near_transition() -> impl Strategy<Value = i64> {
    (
        select(TRANSITIONS.to_vec()),
        -192i64..192,
        select(vec![0i64, 0, 1, 59_999_999]),
    )
        .prop_map(|(base, quarters, extra)| base + quarters * 15 * 60_000_000 + extra)
}

fn numbers() -> Vec<Value> {
    let mut numbers = property::numbers();
    numbers.extend([json!(1e20), json!(9_007_199_254_740_993_u64)]);
    numbers
}

fn arb_payload() -> impl Strategy<Value = Value> {
    let strings = select(STRINGS.iter().map(|s| json!(s)).collect::<Vec<_>>()).boxed();
    let millis = prop_oneof![
        near_transition().prop_map(|us| json!(us / 1000)),
        // (Instants beyond 9999-12-30 are out of jiff's range: `far_epoch_ms_values_in_utc` has them.)
        select(vec![
            json!(1_735_689_600_000.5_f64),
            json!(1e20),
            json!(-1),
            json!(-62_135_596_800_001_i64)
        ]),
    ]
    .boxed();
    (
        maybe(strings.clone(), json!(5)),
        maybe(select(numbers()).boxed(), json!("1")),
        maybe(select(numbers()).boxed(), json!("0.5")),
        maybe(
            select(vec![json!(true), json!(false)]).boxed(),
            json!("true"),
        ),
        maybe(millis, json!("2025-01-01")),
        maybe(
            select(TIMES.iter().map(|s| json!(s)).collect::<Vec<_>>()).boxed(),
            json!(1),
        ),
        maybe(strings.clone(), json!(5)),
        // Jobs, for the filters inside the array: elements with and without a status, and not objects.
        maybe(
            prop::collection::vec(
                prop_oneof![
                    4 => maybe(strings, json!(5))
                        .prop_map(|status| Value::Object(object_of([("status", status)]))),
                    1 => select(vec![json!(null), json!([{"status": "a"}]), json!("a")]),
                ],
                0..3,
            )
            .prop_map(Value::Array)
            .boxed(),
            json!({"status": "a"}),
        ),
    )
        .prop_map(
            |(source_app, run_id, score, ok, ts_ms, finished_at, region, jobs)| {
                let mut m = object_of([
                    ("source_app", source_app),
                    ("run_id", run_id),
                    ("score", score),
                    ("ok", ok),
                    ("ts_ms", ts_ms),
                    ("finished_at", finished_at),
                    ("jobs", jobs),
                ]);
                if let Some(r) = region {
                    m.insert("info".into(), json!({"region": r}));
                }
                Value::Object(m)
            },
        )
}

fn instant(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).expect("timestamp")
}

fn arb_event() -> impl Strategy<Value = RawEvent> {
    (
        any::<u128>(),
        near_transition().prop_map(instant),
        select(vec!["alice", "bob"]),
        arb_payload(),
    )
        .prop_map(|(id, ts, producer, payload)| (id, ts, producer.to_owned(), payload))
}

fn arb_filter() -> BoxedStrategy<(String, Value)> {
    prop_oneof![
        select(STRINGS.to_vec()).prop_map(|s| ("source_app_ne".to_owned(), json!(s))),
        select(numbers()).prop_map(|n| ("score_gte".to_owned(), n)),
        any::<bool>().prop_map(|b| ("ok".to_owned(), json!(b))),
        any::<bool>().prop_map(|b| ("score_exists".to_owned(), json!(b))),
        select(vec!["2025-03-30", "2025-10-26", "2025-11-02"])
            .prop_map(|d| ("timestamp_gte".to_owned(), json!(d))),
        select(STRINGS.to_vec()).prop_map(|s| ("jobs[].status".to_owned(), json!(s))),
        select(STRINGS.to_vec()).prop_map(|s| ("jobs[].status_gt".to_owned(), json!(s))),
        any::<bool>().prop_map(|b| ("jobs[].status_exists".to_owned(), json!(b))),
    ]
    .boxed()
}

const GROUP_FIELDS: &[&str] = &[
    "source_app",
    "run_id",
    "score",
    "ok",
    "info.region",
    "producer",
    "finished_at",
    "ts_ms",
];
const METRICS: &[&str] = &[
    "count",
    "count_distinct(source_app)",
    "count_distinct(run_id)",
    "count_distinct(finished_at)",
    "min(score)",
    "max(run_id)",
    "min(ts_ms)",
    "sum(score)",
    "sum(run_id)",
    "avg(score)",
];

fn arb_interval() -> impl Strategy<Value = Option<IntervalRequest>> {
    prop::option::weighted(
        0.7,
        (
            select(vec![
                "minute", "hour", "day", "week", "month", "quarter", "year",
            ]),
            select(vec!["timestamp", "timestamp", "ts_ms", "finished_at"]),
            select(ZONES.to_vec()),
        )
            .prop_map(|(unit, field, zone)| IntervalRequest {
                field: Some(field.to_owned()),
                unit: unit.to_owned(),
                time_zone: Some(zone.to_owned()),
            }),
    )
}

fn arb_request() -> impl Strategy<Value = AggregateRequest> {
    (
        prop::collection::vec(arb_filter(), 0..3),
        prop::sample::subsequence(GROUP_FIELDS.to_vec(), 0..3),
        arb_interval(),
        prop::sample::subsequence(METRICS.to_vec(), 1..4),
        prop::collection::vec((0usize..6, any::<bool>()), 0..3),
        1u64..8,
    )
        .prop_map(|(filters, group_by, interval, metrics, sort, limit)| {
            // Sort by metrics (averages excepted: Postgres orders its rounded decimal), group fields or
            // the bucket.
            let mut candidates: Vec<String> = metrics
                .iter()
                .filter(|m| !m.starts_with("avg"))
                .map(|m| (*m).to_owned())
                .collect();
            candidates.extend(group_by.iter().map(|g| (*g).to_owned()));
            if interval.is_some() {
                candidates.push("bucket".to_owned());
            }
            let mut entries: Vec<String> = Vec::new();
            for (pick, descending) in sort {
                if candidates.is_empty() {
                    break;
                }
                let name = candidates[pick % candidates.len()].clone();
                if !entries.iter().any(|e| e.trim_start_matches('-') == name) {
                    entries.push(if descending { format!("-{name}") } else { name });
                }
            }
            // Without a sort on an exact metric or key, the default (first metric descending) might be an
            // average: put an exact metric first.
            let mut metrics: Vec<String> = metrics.iter().map(|m| (*m).to_owned()).collect();
            if metrics[0].starts_with("avg") {
                metrics.insert(0, "count".to_owned());
            }
            AggregateRequest {
                filter: filters.into_iter().collect(),
                group_by: group_by.iter().map(|g| (*g).to_owned()).collect(),
                interval,
                metrics,
                sort: Some(entries),
                limit: Some(limit),
            }
        })
}

/// A tz database zone, read by jiff from the same system tz files Debian's Postgres uses.
struct Zone(jiff::tz::TimeZone);

impl ZoneRules for Zone {
    fn to_local(&self, instant: Micros) -> Micros {
        let timestamp = jiff::Timestamp::from_microsecond(instant).expect("instant in range");
        instant + i64::from(self.0.to_offset(timestamp).seconds()) * 1_000_000
    }

    fn instant_of_local(&self, local: Micros) -> Micros {
        let wall = jiff::tz::TimeZone::UTC
            .to_datetime(jiff::Timestamp::from_microsecond(local).expect("wall time in range"));
        // Postgres: a gap takes the offset before it, a fold the offset after it; jiff's "later" is that.
        self.0
            .to_ambiguous_timestamp(wall)
            .later()
            .expect("resolvable")
            .as_microsecond()
    }
}

/// Declared-indexed fields have their own SQL expression: it must group the same way.
async fn setup() -> Db {
    property::setup(&["source_app", "ts_ms"]).await
}

fn aggregate_plan(
    db: &Db,
    topic: &str,
    request: &AggregateRequest,
) -> Result<AggregatePlan, ApiError> {
    plan_aggregate(
        topic,
        request,
        &db.fields,
        &QueryLimits::default(),
        &AggregateLimits::default(),
        &[],
    )
}

async fn run_sql(db: &Db, topic: &str, plan: &AggregatePlan) -> Result<AggregateResult, String> {
    let parts = aggregate_sql(topic, plan).map_err(str::to_owned)?;
    let rows: Vec<AggregateRow> = load_rows(&db.reader, &parts)
        .await
        .map_err(|e| format!("SQL failed: {e}\n{}", parts.sql))?;
    decode(plan, rows)
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn same_metrics(a: &[MetricValue], b: &[MetricValue]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (MetricValue::Average(Some(x)), MetricValue::Average(Some(y))) => close(*x, *y),
            (x, y) => x == y,
        })
}

fn same(a: &AggregateResult, b: &AggregateResult) -> bool {
    a.total_groups == b.total_groups
        && same_metrics(&a.totals, &b.totals)
        && a.groups.len() == b.groups.len()
        && a.groups
            .iter()
            .zip(&b.groups)
            .all(|(x, y)| x.keys == y.keys && same_metrics(&x.metrics, &y.metrics))
}

#[test]
fn aggregates_equal_the_in_memory_computation() {
    let rt = runtime();
    let db = rt.block_on(setup());
    let cases = property::cases_from_env("AGGREGATE_PROPERTY_CASES", 96);
    let strategy = (prop::collection::vec(arb_event(), 0..40), arb_request());
    let planned = Cell::new(0u32);
    let several_groups = Cell::new(0u32);
    check(cases, &strategy, |(raw, request)| {
        let topic = format!("agg-{}", Uuid::new_v4().simple());
        let plan = aggregate_plan(&db, &topic, &request)
            .map_err(|e| TestCaseError::fail(format!("{request:?}: {}", e.summary())))?;
        planned.set(planned.get() + 1);
        let zone_name = plan
            .interval
            .as_ref()
            .map_or("UTC", |b| b.time_zone.as_str())
            .to_owned();
        let zone = Zone(jiff::tz::TimeZone::get(&zone_name).expect("zone in the tz database"));
        rt.block_on(async {
            let events = insert(&db, &topic, &raw).await;
            // Events of another topic never count.
            insert(&db, &format!("{topic}-other"), &raw).await;
            let want = plan.evaluate(&events, &zone);
            if want.groups.len() > 1 {
                several_groups.set(several_groups.get() + 1);
            }
            let got = run_sql(&db, &topic, &plan)
                .await
                .map_err(TestCaseError::fail)?;
            if !same(&want, &got) {
                return Err(TestCaseError::fail(format!(
                    "request {request:?}\nSQL {:?}\nexpected {want:#?}\ngot {got:#?}\nevents {:#?}",
                    aggregate_sql(&topic, &plan).map(|p| p.sql),
                    events
                        .iter()
                        .map(|e| format!("{} {} {}", e.timestamp, e.producer, e.payload))
                        .collect::<Vec<_>>()
                )));
            }
            Ok(())
        })
    });
    assert_eq!(planned.get(), cases, "every generated request is valid");
    assert!(
        several_groups.get() * 3 >= cases,
        "too few cases with several groups: {} of {cases}",
        several_groups.get()
    );
}

#[test]
fn bucket_boundaries_follow_postgres_in_each_zone() {
    // Every quarter hour across each transition, bucketed by hour and day in each zone: the in-memory
    // buckets (jiff + the core's truncation) equal date_trunc's.
    let rt = runtime();
    let db = rt.block_on(setup());
    rt.block_on(async {
        let topic = format!("agg-zones-{}", Uuid::new_v4().simple());
        let raw: Vec<RawEvent> = TRANSITIONS
            .iter()
            .flat_map(|base| (-16i64..16).map(move |q| base + q * 15 * 60_000_000))
            .enumerate()
            .map(|(i, ts)| (i as u128 + 1, instant(ts), "p".to_owned(), json!({})))
            .collect();
        let events = insert(&db, &topic, &raw).await;
        for zone_name in ZONES {
            for unit in ["minute", "hour", "day", "week"] {
                let request = AggregateRequest {
                    interval: Some(IntervalRequest {
                        field: None,
                        unit: unit.to_owned(),
                        time_zone: Some((*zone_name).to_owned()),
                    }),
                    limit: Some(10_000),
                    ..AggregateRequest::default()
                };
                let plan = aggregate_plan(&db, &topic, &request).expect("plan");
                let zone = Zone(jiff::tz::TimeZone::get(zone_name).expect("zone"));
                let want = plan.evaluate(&events, &zone);
                let got = run_sql(&db, &topic, &plan).await.expect("sql");
                assert!(want.total_groups > 1);
                assert_eq!(want, got, "{zone_name} {unit}");
            }
        }
    });
}

#[test]
fn far_epoch_ms_values_in_utc() {
    // The ends of the epoch-ms range, where a double no longer holds every microsecond and where
    // `to_timestamp` would fail beyond: the same buckets in SQL and in memory, and no error.
    let rt = runtime();
    let db = rt.block_on(setup());
    rt.block_on(async {
        let topic = format!("agg-far-{}", Uuid::new_v4().simple());
        let values = [
            json!(253_402_300_799_999_i64),
            json!(253_402_300_800_000_i64),
            json!(1e20),
            json!(-62_135_596_800_000_i64),
            json!(-62_135_596_800_001_i64),
            json!(1_735_689_599_999.999_5),
            json!(1_735_689_600_000.5),
        ];
        let raw: Vec<RawEvent> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    i as u128 + 1,
                    OffsetDateTime::UNIX_EPOCH,
                    "p".to_owned(),
                    json!({"ts_ms": v}),
                )
            })
            .collect();
        let events = insert(&db, &topic, &raw).await;
        for unit in ["minute", "year"] {
            let request = AggregateRequest {
                interval: Some(IntervalRequest {
                    field: Some("ts_ms".to_owned()),
                    unit: unit.to_owned(),
                    time_zone: None,
                }),
                ..AggregateRequest::default()
            };
            let plan = aggregate_plan(&db, &topic, &request).expect("plan");
            let want = plan.evaluate(&events, &eventgate_core::query::aggregate::Utc);
            let got = run_sql(&db, &topic, &plan).await.expect("sql");
            assert_eq!(want, got, "{unit}");
            // Out of range: one "no value" bucket of three.
            let none = want.groups.iter().find(|g| g.keys[0].is_none());
            assert_eq!(
                none.map(|g| g.metrics.clone()),
                Some(vec![MetricValue::Count(3)])
            );
        }
    });
}

/// An instant within two hours of a transition, on a minute, just after or before one, or in between:
/// dense enough that events and bounds often share a minute.
fn near_minute() -> impl Strategy<Value = i64> {
    (
        select(vec![TRANSITIONS[0], TRANSITIONS[4]]),
        -8i64..8,
        select(vec![0i64, 1, 30_000_000, 59_999_999, 60_000_000]),
    )
        .prop_map(|(base, quarters, extra)| base + quarters * 15 * 60_000_000 + extra)
}

fn arb_timed_event() -> impl Strategy<Value = RawEvent> {
    (any::<u128>(), near_minute().prop_map(instant))
        .prop_map(|(id, ts)| (id, ts, "p".to_owned(), json!({})))
}

/// A bound on the envelope's `timestamp`: on a minute or off it.
fn arb_time_filter() -> BoxedStrategy<(String, Value)> {
    let at = || {
        near_minute().prop_map(|us| {
            let text = instant(us)
                .format(&time::format_description::well_known::Rfc3339)
                .expect("RFC 3339");
            json!(text)
        })
    };
    prop_oneof![
        (select(vec!["gte", "gt", "lte", "lt"]), at())
            .prop_map(|(op, at)| (format!("timestamp_{op}"), at)),
        (at(), at()).prop_map(|(a, b)| ("timestamp_between".to_owned(), json!([a, b]))),
    ]
    .boxed()
}

#[test]
fn counts_over_time_from_the_rollups_equal_the_events() {
    // The explorer's chart (count per bucket of `timestamp`, filtered by time only) is answered from
    // `event_counts` plus the partial minutes at the range's ends: exactly what the events say, for any
    // unit, zone and bounds on or off a minute, with a minute's count spread over several rows.
    let rt = runtime();
    let db = rt.block_on(setup());
    let cases = property::cases_from_env("AGGREGATE_PROPERTY_CASES", 96);
    let strategy = (
        prop::collection::vec(arb_timed_event(), 0..60),
        1usize..4,
        prop::collection::vec(arb_time_filter(), 0..3),
        select(vec!["minute", "hour", "day", "week", "month"]),
        select(ZONES.to_vec()),
    );
    let from_rollups = Cell::new(0u32);
    check(
        cases,
        &strategy,
        |(raw, inserts, filters, unit, zone_name)| {
            let topic = format!("agg-rollup-{}", Uuid::new_v4().simple());
            let request = AggregateRequest {
                filter: filters.into_iter().collect(),
                interval: Some(IntervalRequest {
                    field: None,
                    unit: unit.to_owned(),
                    time_zone: Some(zone_name.to_owned()),
                }),
                limit: Some(10_000),
                ..AggregateRequest::default()
            };
            let plan = aggregate_plan(&db, &topic, &request)
                .map_err(|e| TestCaseError::fail(format!("{request:?}: {}", e.summary())))?;
            if RollupRange::of(&plan).is_some() {
                from_rollups.set(from_rollups.get() + 1);
            }
            let zone = Zone(jiff::tz::TimeZone::get(zone_name).expect("zone"));
            rt.block_on(async {
                // Stored in several inserts, like several batches: a minute may have several rows.
                let chunk = raw.len().div_ceil(inserts).max(1);
                let mut events = Vec::new();
                for part in raw.chunks(chunk) {
                    events.extend(insert(&db, &topic, part).await);
                }
                insert(&db, &format!("{topic}-other"), &raw).await;
                let want = plan.evaluate(&events, &zone);
                let got = run_sql(&db, &topic, &plan)
                    .await
                    .map_err(TestCaseError::fail)?;
                if want != got {
                    return Err(TestCaseError::fail(format!(
                        "request {request:?}\nSQL {:?}\nexpected {want:#?}\ngot {got:#?}",
                        aggregate_sql(&topic, &plan).map(|p| p.sql),
                    )));
                }
                Ok(())
            })
        },
    );
    assert!(
        from_rollups.get() * 2 >= cases,
        "too few cases answered from the rollups: {} of {cases}",
        from_rollups.get()
    );
}
