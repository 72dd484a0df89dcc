//! Property-based fuzzing of everything a client's bytes go through before a database or a broker sees
//! them: the query body parser and planner (with a reader's restrictions), the GET form, the ingest body
//! path (depth check → parse → schema → write restrictions), tokens and the access file parser.
//! Properties: no input panics, and every refusal is a 4xx in the error envelope.

use std::path::Path;
use std::sync::OnceLock;

use eventgate_core::access::AccessRules;
use eventgate_core::auth::{JwtVerifier, Principal};
use eventgate_core::catalogue::{Catalogue, Topic};
use eventgate_core::config::AuthConfig;
use eventgate_core::error::ApiError;
use eventgate_core::ingest::{self, IngestRules};
use eventgate_core::limits::check_json_depth;
use eventgate_core::query::{self, CursorKey, QueryLimits, QueryRequest};
use proptest::prelude::*;
use serde_json::{json, Value};

fn runs() -> &'static Topic {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE
        .get_or_init(|| {
            Catalogue::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics"))
                .expect("shipped topics load")
        })
        .get("public.cps.za.runs")
        .expect("runs topic")
}

fn rules() -> AccessRules {
    AccessRules::from_json(
        &json!({"public.cps.za.*": {
            "write": [{"user": "bot", "fields": {"environment": ["dev"], "source_app": {"regex": "unify.*"}}}],
            "read": [{"user": "partner", "fields": {"tenant_id": ["avms"], "additional_info.region": ["eu"]}}]
        }})
        .to_string(),
    )
    .expect("rules")
}

/// The filters the restricted reader `partner` gets on every query of `topic`.
fn partner_read_filters(topic: &Topic) -> Vec<query::Filter> {
    rules()
        .read_access(&Principal::user("partner"), &topic.name)
        .expect("partner reads")
        .read_filters(&topic.fields, "partner", &topic.name)
        .expect("expressible")
}

fn is_client_error(error: &ApiError) -> bool {
    (400..500).contains(&error.status())
        && !error.details.is_empty()
        && error.body()["statusCode"] == json!(error.status())
}

/// Field names the topic knows, operator suffixes, and hostile text.
fn key() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "tenant_id",
        "source_app",
        "environment",
        "run_id",
        "timestamp_start",
        "jobs",
        "additional_info.region",
        "payload.tenant_id",
        "id",
        "timestamp",
        "producer",
        "event_id",
    ]);
    let suffixes = prop::sample::select(vec![
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
    ]);
    prop_oneof![
        (names, suffixes).prop_map(|(n, s)| format!("{n}{s}")),
        "[a-z_.]{0,20}",
        any::<String>(),
        Just("tenant_id'; DROP TABLE events; --".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            "avms",
            "eu",
            "dev",
            "unify",
            "2025-01-01",
            "-timestamp",
            "' OR 1=1 --"
        ])
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn query_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        (
            prop::collection::btree_map(key(), json_value(), 0..5),
            prop::option::of(prop::collection::vec(
                prop_oneof![key(), key().prop_map(|k| format!("-{k}"))],
                0..4
            )),
            prop::option::of(prop_oneof![any::<String>(), "[A-Za-z0-9_-]{0,60}"]),
            prop::option::of(json_value()),
        )
            .prop_map(|(filter, sort, cursor, limit)| {
                let mut body = json!({"filter": filter});
                if let Some(sort) = sort {
                    body["sort"] = json!(sort);
                }
                if let Some(cursor) = cursor {
                    body["cursor"] = json!(cursor);
                }
                if let Some(limit) = limit {
                    body["limit"] = limit;
                }
                body
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// POST bodies: parsed, planned for a restricted reader; the restriction is always part of the plan.
    #[test]
    fn query_bodies_are_planned_or_refused_with_a_4xx(body in query_body()) {
        let topic = runs();
        let restrictions = partner_read_filters(topic);
        let text = body.to_string();
        let outcome = check_json_depth(text.as_bytes(), 32, false)
            .and_then(|()| QueryRequest::from_json(&body))
            .and_then(|request| {
                query::plan_restricted(
                    &topic.name,
                    &request,
                    &topic.fields,
                    &QueryLimits::default(),
                    &CursorKey::new(b"fuzz-secret-of-some-length"),
                    &restrictions,
                )
            });
        match outcome {
            Ok(plan) => {
                for restriction in &restrictions {
                    prop_assert!(plan.filters.contains(restriction));
                }
            }
            Err(error) => prop_assert!(is_client_error(&error), "{:?}", error),
        }
    }

    /// The GET form: any pairs of strings.
    #[test]
    fn query_strings_are_planned_or_refused_with_a_4xx(
        pairs in prop::collection::vec((key(), any::<String>()), 0..6),
    ) {
        let topic = runs();
        let outcome = QueryRequest::from_query_pairs(&pairs, &topic.fields).and_then(|request| {
            query::plan(
                &topic.name,
                &request,
                &topic.fields,
                &QueryLimits::default(),
                &CursorKey::new(b"fuzz-secret-of-some-length"),
            )
        });
        if let Err(error) = outcome {
            prop_assert!(is_client_error(&error), "{:?}", error);
        }
    }

    /// The ingest body path, on arbitrary bytes and arbitrary JSON (objects and batches).
    #[test]
    fn ingest_bodies_are_accepted_or_refused_with_a_4xx(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(json_value(), 0..4).prop_map(|v| Value::from(v).to_string().into_bytes()),
        ],
    ) {
        let topic = runs();
        let restrictions = rules()
            .write_access(&Principal::user("bot"), &topic.name)
            .expect("bot writes");
        let rules = IngestRules {
            id_field: "event_id".into(),
            max_batch_events: 100,
            max_event_nodes: 50,
            max_event_bytes: 2048,
        };
        let outcome = check_json_depth(&body, 32, true)
            .and_then(|()| ingest::prepare(&body, topic, "bot", &rules, time::OffsetDateTime::now_utc()))
            .and_then(|mut prepared| {
                restrictions.check_write(&prepared, "bot")?;
                prepared.records(topic, rules.max_event_bytes);
                match prepared.all_rejected_error() {
                    Some(error) => Err(error),
                    None => Ok(prepared),
                }
            });
        match outcome {
            Ok(prepared) => {
                // Whatever is accepted satisfies the writer's restrictions.
                for event in prepared.accepted() {
                    prop_assert!(restrictions.violations(&event.payload, "", "bot").is_empty());
                }
            }
            Err(error) => prop_assert!(is_client_error(&error), "{:?}", error),
        }
    }

    /// Any Authorization header: a 401, never a panic.
    #[test]
    fn arbitrary_tokens_are_refused(
        header in prop_oneof![
            any::<String>(),
            "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}".prop_map(|t| format!("Bearer {t}")),
            json_value().prop_map(|v| {
                use base64::Engine;
                let part = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
                format!("Bearer {part}.{part}.{part}")
            }),
        ],
    ) {
        let pem = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys/es256-public.pem"),
        )
        .expect("fixture");
        let verifier = JwtVerifier::from_pems(&[(Path::new("es256.pem"), pem)], &AuthConfig::default())
            .expect("verifier");
        let error = verifier.authenticate(Some(&header)).expect_err("no key signed it");
        prop_assert_eq!(error.status(), 401);
    }

    /// The access file parser takes any JSON without panicking.
    #[test]
    fn access_files_parse_or_fail_cleanly(value in json_value()) {
        let _ = AccessRules::from_json(&value.to_string());
    }
}

/// A restricted reader's plan never matches an event outside its restriction, whatever it asks for.
#[test]
fn restricted_plans_never_match_other_tenants() {
    use proptest::test_runner::{Config, TestRunner};
    let topic = runs();
    let restrictions = partner_read_filters(topic);
    let event = |tenant: &str, region: &str| eventgate_core::envelope::Event {
        id: uuid::Uuid::now_v7(),
        topic: topic.name.clone(),
        timestamp: time::OffsetDateTime::now_utc(),
        producer: "p".into(),
        payload: json!({"tenant_id": tenant, "additional_info": {"region": region}}),
    };
    let outsiders = [
        event("other", "eu"),
        event("avms", "us"),
        event("AVMS", "eu"),
        event("avms ", "eu"),
    ];
    let insider = event("avms", "eu");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    // Filters that plan: known fields with well-typed values (hostile ones come from `key()`).
    let value = prop_oneof![
        json_value(),
        prop::sample::select(vec!["avms", "other", "eu", "us", "AVMS"]).prop_map(Value::from),
        prop::collection::vec(
            prop::sample::select(vec!["avms", "other", "eu"]).prop_map(Value::from),
            1..3
        )
        .prop_map(Value::from),
    ];
    let filter = prop::collection::btree_map(key(), value, 0..4);
    let planned = std::cell::Cell::new(0u32);
    runner
        .run(&filter, |filter| {
            let request = QueryRequest {
                filter: filter.into_iter().collect(),
                ..QueryRequest::default()
            };
            if let Ok(plan) = query::plan_restricted(
                &topic.name,
                &request,
                &topic.fields,
                &QueryLimits::default(),
                &CursorKey::new(b"fuzz-secret-of-some-length"),
                &restrictions,
            ) {
                planned.set(planned.get() + 1);
                for outsider in &outsiders {
                    prop_assert!(!plan.matches(outsider), "{:?}", outsider.payload);
                }
                if request.filter.is_empty() {
                    prop_assert!(plan.matches(&insider));
                }
            }
            Ok(())
        })
        .expect("property holds");
    assert!(
        planned.get() >= 40,
        "too few plannable filters: {}",
        planned.get()
    );
}
