//! The query language against real Postgres: for random events, filters and sorts, walking every page
//! with the cursor returns exactly the events `QueryPlan::matches` selects, in `QueryPlan::compare` order,
//! none twice and none missing.
//!
//! Values are drawn from small domains (with ties, nulls, missing and wrong-typed values, tricky
//! date-time strings, numbers that are equal but written differently, byte-order traps like `B < a < é`)
//! so that filters hit and sort keys collide. Arrays (`jobs`, `labels`) hold elements of every kind —
//! objects with and without the field, wrong types, nested arrays, `null` — and are sometimes not arrays
//! at all, for the filters on `jobs[].status`, `jobs[].n`, `jobs[].at`, `jobs[].note` and `labels[]`.

mod common;

use std::cell::Cell;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use common::property::{self, check, insert, maybe, object_of, runtime, RawEvent};
use eventgate_core::db::EventRow;
use eventgate_core::envelope::Event;
use eventgate_core::error::ApiError;
use eventgate_core::query::{plan, CursorKey, QueryLimits, QueryPlan, QueryRequest};
use eventgate_stats_api::db::page::load_events;
use eventgate_stats_api::db::query_sql::{page_sql, SqlParts};

const STRINGS: &[&str] = &[
    "a", "b", "B", "ab", "é", "É", "a%b", "A_b", "", "unify", "Unify", "x\\y", "zz",
];
const TIMES: &[&str] = &[
    "2025-01-01",
    "2025-01-01T00:00:00Z",
    "2025-01-01T01:00:00+01:00",
    "2024-12-31T23:59:59.9999996Z",
    "2025-01-01T00:00:00.0000005Z",
    "2025-01-01T00:00:00.0000015Z",
    "2025-01-01T00:00:00.123456789Z",
    "2025-01-01T00:00:00.000001Z",
    "2024-02-29",
    "2023-02-29",
    "2100-02-29",
    "2000-02-29T12:00:00-15:59",
    "0001-01-01T00:00:00+15:00",
    "9999-12-31T23:59:59-15:59",
    "2025-01-01T00:00:00+16:00",
    "2025-01-01T00:00:00",
    "2025-01-01 00:00:00Z",
    "2025-01-01t00:00:00z",
    "2025-01-01T24:00:00Z",
    "2025-13-01",
    "0000-01-01",
    "today",
    "epoch",
    "",
];

fn numbers() -> Vec<Value> {
    let mut numbers = property::numbers();
    numbers.extend([
        json!(1e-7),
        json!(1e20),
        json!(1.5e300),
        json!(9_007_199_254_740_993_u64),
        json!(-9_007_199_254_740_993_i64),
    ]);
    numbers
}

fn millis() -> Vec<Value> {
    vec![
        json!(1_735_689_600_000_i64),
        json!(1_735_689_600_001_i64),
        json!(1_735_689_599_999_i64),
        json!(0),
        json!(-1),
        json!(1_735_689_600_000.5),
        json!(253_402_300_799_999_i64),
    ]
}

fn one_of(values: Vec<Value>) -> BoxedStrategy<Value> {
    select(values).boxed()
}

fn strings() -> BoxedStrategy<Value> {
    one_of(STRINGS.iter().map(|s| json!(s)).collect())
}

fn times() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => one_of(TIMES.iter().map(|s| json!(s)).collect()),
        1 => "20[0-9]{2}-(0[1-9]|1[0-3])-[0-3][0-9](T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,10})?(Z|[+-]1[0-7]:[0-5][0-9]))?"
            .prop_map(Value::from),
    ]
    .boxed()
}

fn arb_payload() -> impl Strategy<Value = Value> {
    let info = prop_oneof![
        4 => (maybe(strings(), json!(5)), maybe(one_of(numbers()), json!("1"))).prop_map(|(region, zero)| {
            Value::Object(object_of([("region", region), ("0", zero)]))
        }),
        1 => one_of(vec![json!(["a", 1]), json!([1, "a"]), json!([2.5])]),
        1 => Just(json!("info")),
    ];
    let tags = one_of(vec![
        json!([]),
        json!(["a"]),
        json!({}),
        json!({"a": 1}),
        json!("s"),
        json!(5),
    ]);
    (
        maybe(strings(), json!(5)),
        maybe(one_of(numbers()), json!("1")),
        maybe(one_of(numbers()), json!("0.5")),
        maybe(one_of(vec![json!(true), json!(false)]), json!("true")),
        maybe(one_of(millis()), json!("2025-01-01")),
        maybe(times(), json!(1_735_689_600_000_i64)),
        maybe(info.boxed(), json!(null)),
        maybe(tags, json!(null)),
        maybe(arb_jobs(), json!({"status": "a"})),
        maybe(arb_labels(), json!("a")),
    )
        .prop_map(
            |(source_app, run_id, score, ok, ts_ms, finished_at, info, tags, jobs, labels)| {
                Value::Object(object_of([
                    ("source_app", source_app),
                    ("run_id", run_id),
                    ("score", score),
                    ("ok", ok),
                    ("ts_ms", ts_ms),
                    ("finished_at", finished_at),
                    ("info", info),
                    ("tags", tags),
                    ("jobs", jobs),
                    ("labels", labels),
                ]))
            },
        )
}

/// An array of jobs: objects with or without each field (of the wrong type sometimes), and elements
/// that are no object (a nested array of a job, a string, `null`).
fn arb_jobs() -> BoxedStrategy<Value> {
    let job = (
        maybe(strings(), json!(5)),
        maybe(one_of(numbers()), json!("1")),
        maybe(times(), json!(1_735_689_600_000_i64)),
        maybe(
            one_of(vec![json!({}), json!({"a": 1}), json!([])]),
            json!(null),
        ),
    )
        .prop_map(|(status, n, at, note)| {
            Value::Object(object_of([
                ("status", status),
                ("n", n),
                ("at", at),
                ("note", note),
            ]))
        });
    let element = prop_oneof![
        6 => job.clone().boxed(),
        1 => job.prop_map(|j| json!([j])).boxed(),
        1 => one_of(vec![json!("a"), json!(null), json!(1)]),
    ];
    prop::collection::vec(element, 0..4)
        .prop_map(Value::Array)
        .boxed()
}

/// An array of strings, with elements of other kinds among them.
fn arb_labels() -> BoxedStrategy<Value> {
    let element = prop_oneof![
        6 => strings(),
        1 => one_of(vec![json!(["a"]), json!(null), json!(1), json!({"a": "a"})]),
    ];
    prop::collection::vec(element, 0..4)
        .prop_map(Value::Array)
        .boxed()
}

fn arb_timestamp() -> impl Strategy<Value = OffsetDateTime> {
    let bases: Vec<i128> = vec![
        1_735_689_600_000_000_000, // 2025-01-01
        1_735_689_600_000_001_000, // + 1 µs
        946_684_799_999_999_000,   // 1999-12-31T23:59:59.999999
        -500_000_000,              // 1969-12-31T23:59:59.5
    ];
    (
        select(bases),
        select(vec![0_i128, 0, 0, 1, 999, 1_000]),
        any::<bool>(),
    )
        .prop_map(|(base, extra, later)| {
            let nanos = base + extra + if later { 3_600_000_000_000 } else { 0 };
            OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        })
}

fn arb_event() -> impl Strategy<Value = RawEvent> {
    (
        any::<u128>(),
        arb_timestamp(),
        select(vec!["alice", "bob", "Alice", "é"]),
        arb_payload(),
    )
        .prop_map(|(id, ts, producer, payload)| (id, ts, producer.to_owned(), payload))
}

/// One filter: key and JSON value, of every operator, with operands from the data's domains.
fn arb_filter() -> BoxedStrategy<(String, Value)> {
    let string_fields = select(vec![
        "source_app",
        "payload.source_app",
        "producer",
        "info.region",
        "jobs[].status",
        "labels[]",
    ]);
    let number_fields = select(vec!["run_id", "score", "info.0", "jobs[].n"]);
    let time_fields = select(vec!["ts_ms", "finished_at", "timestamp", "jobs[].at"]);
    let time_operands = prop_oneof![
        times(),
        one_of(vec![
            json!("2025-01-01T00:00:00.000001Z"),
            json!("1999-12-31T23:59:59.999999Z"),
            json!("1970-01-01")
        ]),
        one_of(millis().into_iter().filter(|v| v.is_i64()).collect()),
    ]
    .boxed();
    let time_operands: BoxedStrategy<Value> = time_operands
        .prop_filter("a valid client time", |v| {
            eventgate_core::query::value::parse_client_time(v).is_ok()
        })
        .boxed();
    let with_ops =
        |fields: BoxedStrategy<&'static str>, operand: BoxedStrategy<Value>, text: bool| {
            let ops = if text {
                vec![
                    "",
                    "_in",
                    "_ne",
                    "_gt",
                    "_gte",
                    "_lt",
                    "_lte",
                    "_between",
                    "_exists",
                    "_contains",
                ]
            } else {
                vec![
                    "", "_in", "_ne", "_gt", "_gte", "_lt", "_lte", "_between", "_exists",
                ]
            };
            (
                fields,
                select(ops),
                operand.clone(),
                prop::collection::vec(
                    prop_oneof![4 => operand.clone(), 1 => Just(Value::Null)],
                    1..4,
                ),
                prop::option::weighted(0.2, Just(())),
                any::<bool>(),
            )
                .prop_map(|(field, op, v, list, null, b)| {
                    let value = match op {
                        "" if null.is_some() => Value::Null,
                        "_in" => Value::Array(list),
                        "_between" => Value::Array(
                            list.into_iter()
                                .chain([Value::Null, Value::Null])
                                .take(2)
                                .collect(),
                        ),
                        "_exists" => Value::Bool(b),
                        "_contains" => match v {
                            Value::String(s) => Value::String(s.chars().take(2).collect()),
                            other => other,
                        },
                        _ => v,
                    };
                    (format!("{field}{op}"), value)
                })
                .boxed()
        };
    prop_oneof![
        with_ops(string_fields.boxed(), strings(), true),
        with_ops(number_fields.boxed(), one_of(numbers()), false),
        with_ops(time_fields.boxed(), time_operands, false),
        (
            select(vec!["ok", "ok_ne", "ok_in", "ok_exists"]),
            any::<bool>()
        )
            .prop_map(|(k, b)| {
                let v = if k == "ok_in" { json!([b]) } else { json!(b) };
                (k.to_owned(), v)
            }),
        (
            select(vec![
                "tags_exists",
                "info_exists",
                "jobs_exists",
                "jobs[].note_exists"
            ]),
            any::<bool>()
        )
            .prop_map(|(k, b)| (k.to_owned(), json!(b))),
        any::<u128>().prop_map(|u| ("id_gt".to_owned(), json!(Uuid::from_u128(u).to_string()))),
    ]
    .boxed()
}

fn arb_sort() -> impl Strategy<Value = Vec<String>> {
    let fields = vec![
        "source_app",
        "run_id",
        "score",
        "ok",
        "ts_ms",
        "finished_at",
        "info.region",
        "info.0",
        "producer",
        "timestamp",
        "id",
    ];
    prop::collection::vec((select(fields), any::<bool>()), 0..4).prop_map(|keys| {
        let mut out: Vec<String> = Vec::new();
        for (field, desc) in keys {
            if !out.iter().any(|k| k.trim_start_matches('-') == field) {
                out.push(if desc {
                    format!("-{field}")
                } else {
                    field.to_owned()
                });
            }
        }
        out
    })
}

struct Ctx {
    db: property::Db,
    key: CursorKey,
}

impl Ctx {
    async fn setup() -> Ctx {
        Ctx {
            db: property::setup(&["source_app", "score", "ok", "ts_ms", "info.region"]).await,
            key: CursorKey::new(b"property-test-secret"),
        }
    }

    fn plan(&self, topic: &str, request: &QueryRequest) -> Result<QueryPlan, ApiError> {
        plan(
            topic,
            request,
            &self.db.fields,
            &QueryLimits::default(),
            &self.key,
        )
    }
}

/// Walks every page; returns the ids in page order, or a description of what went wrong.
async fn walk(
    ctx: &Ctx,
    topic: &str,
    request: &QueryRequest,
    max_pages: usize,
) -> Result<Vec<Uuid>, String> {
    let mut request = request.clone();
    let mut ids = Vec::new();
    for _ in 0..max_pages {
        let plan = ctx
            .plan(topic, &request)
            .map_err(|e| format!("page plan failed: {e:?}"))?;
        let parts = page_sql(topic, &plan);
        let rows: Vec<EventRow> = load_events(&ctx.db.reader, &parts)
            .await
            .map_err(|e| format!("SQL failed: {e}\n{parts:?}"))?;
        let limit = plan.limit as usize;
        let has_more = rows.len() > limit;
        let page: Vec<Event> = rows.into_iter().take(limit).map(Event::from).collect();
        ids.extend(page.iter().map(|e| e.id));
        match (has_more, page.last()) {
            (true, Some(last)) => request.cursor = Some(plan.next_cursor(last, &ctx.key)),
            _ => return Ok(ids),
        }
    }
    Err(format!("more than {max_pages} pages"))
}

fn expected(plan: &QueryPlan, events: &[Event]) -> Vec<Uuid> {
    let mut hits: Vec<&Event> = events.iter().filter(|e| plan.matches(e)).collect();
    hits.sort_by(|a, b| plan.compare(a, b));
    hits.iter().map(|e| e.id).collect()
}

#[test]
fn pages_equal_the_in_memory_semantics() {
    let rt = runtime();
    let ctx = rt.block_on(Ctx::setup());
    let cases = property::cases_from_env("QUERY_PROPERTY_CASES", 96);
    let strategy = (
        prop::collection::vec(arb_event(), 0..45),
        prop::collection::vec(arb_filter(), 0..4),
        arb_sort(),
        1u64..6,
    );
    let planned = Cell::new(0u32);
    let case_no = Cell::new(0u32);
    check(cases, &strategy, |(events, filters, sort, limit)| {
        case_no.set(case_no.get() + 1);
        let case_no = case_no.get();
        let topic = format!("t{case_no}-{}", Uuid::new_v4().simple());
        let filter: Map<String, Value> = filters.into_iter().collect();
        let request = QueryRequest {
            filter,
            sort: Some(sort),
            cursor: None,
            limit: Some(limit),
            ..QueryRequest::default()
        };
        let Ok(first) = ctx.plan(&topic, &request) else {
            return Ok(()); // e.g. a `_gt` on a boolean: nothing to compare
        };
        planned.set(planned.get() + 1);
        rt.block_on(async {
            let inserted = insert(&ctx.db, &topic, &events).await;
            // Noise in another topic must never show up.
            let other = format!("{topic}-other");
            insert(&ctx.db, &other, &events).await;
            let want = expected(&first, &inserted);
            let got = walk(&ctx, &topic, &request, inserted.len() + 2)
                .await
                .map_err(TestCaseError::fail)?;
            if got != want {
                let describe = |ids: &[Uuid]| -> Vec<String> {
                    ids.iter()
                        .filter_map(|id| inserted.iter().find(|e| e.id == *id))
                        .map(|e| format!("{} {} {}", e.id, e.timestamp, e.payload))
                        .collect()
                };
                return Err(TestCaseError::fail(format!(
                    "request {request:?}\nSQL {}\nexpected {:#?}\ngot {:#?}",
                    page_sql(&topic, &first).sql,
                    describe(&want),
                    describe(&got)
                )));
            }
            Ok(())
        })
    });
    let planned = planned.get();
    assert!(
        planned * 2 >= cases,
        "too few valid requests: {planned} of {cases}"
    );
}

#[test]
fn stored_date_times_agree_with_postgres() {
    let rt = runtime();
    let ctx = rt.block_on(Ctx::setup());
    let strategy = prop::collection::vec(times(), 300..400);
    check(1, &strategy, |strings| {
        rt.block_on(async {
            let topic = format!("times-{}", Uuid::new_v4().simple());
            let events: Vec<RawEvent> = strings
                .iter()
                .chain(TIMES.iter().map(|s| json!(s)).collect::<Vec<_>>().iter())
                .enumerate()
                .map(|(i, s)| (i as u128 + 1, OffsetDateTime::UNIX_EPOCH, "p".to_owned(), json!({"finished_at": s})))
                .collect();
            let inserted = insert(&ctx.db, &topic, &events).await;
            for body in [
                json!({"sort": ["finished_at"], "limit": 1000}),
                json!({"filter": {"finished_at_exists": true}, "sort": ["-finished_at"], "limit": 1000}),
                json!({"filter": {"finished_at_gte": "2025-01-01"}, "sort": ["finished_at"], "limit": 7}),
                json!({"filter": {"finished_at": "2025-01-01T00:00:00.000001Z"}, "limit": 1000}),
            ] {
                let request = QueryRequest::from_json(&body).map_err(|e| TestCaseError::fail(e.summary()))?;
                let first = ctx.plan(&topic, &request)
                    .map_err(|e| TestCaseError::fail(e.summary()))?;
                let got = walk(&ctx, &topic, &request, 1000).await.map_err(TestCaseError::fail)?;
                let want = expected(&first, &inserted);
                if got != want {
                    let show = |ids: &[Uuid]| -> Vec<String> {
                        ids.iter()
                            .filter_map(|id| inserted.iter().find(|e| e.id == *id))
                            .map(|e| e.payload["finished_at"].to_string())
                            .collect()
                    };
                    return Err(TestCaseError::fail(format!("{body}\nexpected {:?}\ngot {:?}", show(&want), show(&got))));
                }
            }
            Ok(())
        })
    });
}

#[test]
fn default_order_is_served_by_the_btree() {
    let rt = runtime();
    let ctx = rt.block_on(Ctx::setup());
    rt.block_on(async {
        let events: Vec<_> = (0..50_u128)
            .map(|i| {
                (
                    i + 1,
                    OffsetDateTime::UNIX_EPOCH,
                    "p".to_owned(),
                    json!({"source_app": "a"}),
                )
            })
            .collect();
        let inserted = insert(&ctx.db, "btree", &events).await;
        let first = ctx.plan("btree", &QueryRequest::default()).expect("plan");
        let request = QueryRequest {
            cursor: Some(first.next_cursor(&inserted[10], &ctx.key)),
            ..QueryRequest::default()
        };
        let p = ctx.plan("btree", &request).expect("plan");
        let parts = page_sql("btree", &p);
        let explain = SqlParts {
            sql: format!("EXPLAIN {}", parts.sql),
            binds: parts.binds,
        };
        let reader = ctx.db.reader.get().await.expect("reader connection");
        reader
            .batch_execute("SET enable_seqscan = off")
            .await
            .expect("set");
        let lines = reader
            .query_typed(&explain.sql, &explain.params())
            .await
            .expect("explain");
        let text: Vec<String> = lines
            .iter()
            .map(|row| row.try_get::<_, String>(0).expect("a plan line"))
            .collect();
        let text = text.join("\n");
        assert!(
            text.contains("Index") && text.contains("topic_received_at_id"),
            "{text}"
        );
        assert!(!text.contains("Sort"), "the index gives the order: {text}");
        assert!(
            text.contains("Index Cond") && text.contains("ROW(received_at, id) <"),
            "keyset in the index condition: {text}"
        );
    });
}
